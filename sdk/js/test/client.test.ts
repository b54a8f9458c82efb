import assert from "node:assert/strict";
import { test } from "node:test";

import { encodeMediaDatagram, encodeMessage, encodeMessageStreamHeader, type Frame } from "../src/codec.js";
import { Client, Session, type ClientEvent } from "../src/client.js";
import { RefusedError, TooLargeError } from "../src/errors.js";
import { AsyncQueue } from "../src/queue.js";
import { admits, FakeFleet, waitFor, welcome, type FakeTransport } from "./fake.js";

const JOIN = { app: "acme-health", channel: "room-1", token: "tok" };
const A = { node: "us-iad-1", addr: "127.20.0.1:4433" };
const B = { node: "eu-fra-1", addr: "127.10.0.1:4433" };
const C = { node: "eu-ams-1", addr: "127.11.0.1:4433" };

function collect(client: { on: Client["on"] }): ClientEvent[] {
  const events: ClientEvent[] = [];
  for (const type of ["track-added", "track-removed", "media", "message", "subscription-state", "closed", "reconnected"] as const) {
    client.on(type, (event) => events.push(event));
  }
  return events;
}

test("connect sends HELLO first and is admitted by WELCOME", async () => {
  const fleet = new FakeFleet({ [B.node]: admits(B.node) });
  const client = await Client.connect([B], JOIN, { connectors: [fleet.connector], sdk: { os: "test" } });
  assert.equal(client.node, "eu-fra-1");
  assert.equal(client.region, "eu");
  assert.equal(client.maxMediaPayload, 1138);
  assert.equal(client.redirects, 0);
  const hello = fleet.opened[0]!.frames[0]!;
  assert.equal(hello.type, "HELLO");
  assert.deepEqual(
    hello.type === "HELLO" && [hello.version, hello.app, hello.channel, hello.token, hello.sdk.name, hello.sdk.os],
    [1, "acme-health", "room-1", "tok", "georelay-js", "test"],
  );
});

test("GEOFENCE_REDIRECT is followed with the same HELLO, best target first", async () => {
  const fleet = new FakeFleet({
    [A.node]: async (t) => {
      await t.frame(0);
      t.send({ type: "ERROR", code: 2, message: "app not allowed here", redirect: [B, C] });
      t.end({ code: 2, reason: "redirect" });
    },
    [B.node]: admits(B.node),
  });
  const client = await Client.connect([A, C], JOIN, { connectors: [fleet.connector] });
  assert.equal(client.node, B.node);
  assert.equal(client.redirects, 1);
  assert.deepEqual(fleet.opened.map((t) => t.target.node), [A.node, B.node]);
  assert.deepEqual(fleet.opened[1]!.frames[0], fleet.opened[0]!.frames[0]);
  assert.deepEqual(fleet.opened[0]!.closes, [{ code: 0, reason: "refused" }]);
});

test("redirect loops stop after maxRedirects with the last refusal", async () => {
  const loop = (to: typeof A) => async (t: FakeTransport) => {
    await t.frame(0);
    t.send({ type: "ERROR", code: 2, message: "go away", redirect: [to] });
  };
  const fleet = new FakeFleet({ [A.node]: loop(B), [B.node]: loop(A) });
  await assert.rejects(Client.connect([A], JOIN, { connectors: [fleet.connector], maxRedirects: 3 }), (err) => {
    assert.ok(err instanceof RefusedError);
    assert.equal(err.code, "GEOFENCE_REDIRECT");
    return true;
  });
  assert.equal(fleet.opened.length, 4, "the first attempt and three redirects");
});

test("GEOFENCE_DENIED and UNAUTHORIZED are final: no other target is tried", async () => {
  for (const [code, name] of [[3, "GEOFENCE_DENIED"], [1, "UNAUTHORIZED"]] as const) {
    const fleet = new FakeFleet({
      [A.node]: async (t) => {
        await t.frame(0);
        t.send({ type: "ERROR", code, message: "no", redirect: [] });
      },
      [B.node]: admits(B.node),
    });
    await assert.rejects(Client.connect([A, B], JOIN, { connectors: [fleet.connector] }), (err) => {
      assert.ok(err instanceof RefusedError);
      assert.equal(err.code, name);
      assert.equal(err.reason, "no");
      return true;
    });
    assert.equal(fleet.opened.length, 1);
  }
});

test("a close with a code but no ERROR frame is still a typed refusal", async () => {
  const fleet = new FakeFleet({
    [A.node]: async (t) => {
      await t.frame(0);
      t.end({ code: 1, reason: "token rejected" });
    },
  });
  await assert.rejects(Client.connect([A], JOIN, { connectors: [fleet.connector] }), (err) => {
    assert.ok(err instanceof RefusedError);
    assert.equal(err.code, "UNAUTHORIZED");
    return true;
  });
});

test("an unreachable target falls through to the next; the fallback transport is tried per target", async () => {
  const wtDown = new FakeFleet({});
  const ws = new FakeFleet({ [B.node]: admits(B.node) }, "websocket");
  const client = await Client.connect([A, B], JOIN, { connectors: [wtDown.connector, ws.connector] });
  assert.equal(client.node, B.node);
  assert.equal(client.transportKind, "websocket");

  const none = new FakeFleet({});
  await assert.rejects(
    Client.connect([A], JOIN, { connectors: [none.connector] }),
    (err: Error) => err.name === "ConnectError" && err.message.includes("unreachable"),
  );
});

test("a relay that never answers times out", async () => {
  const fleet = new FakeFleet({ [A.node]: () => undefined });
  await assert.rejects(
    Client.connect([A], JOIN, { connectors: [fleet.connector], connectTimeoutMs: 50 }),
    (err: Error) => err.name === "ConnectError" && err.message.includes("timed out"),
  );
});

async function connected(): Promise<{ client: Client; relay: FakeTransport; events: ClientEvent[] }> {
  const fleet = new FakeFleet({ [B.node]: admits(B.node) });
  const client = await Client.connect([B], JOIN, { connectors: [fleet.connector] });
  return { client, relay: fleet.opened[0]!, events: collect(client) };
}

test("the media payload limit is the smaller of WELCOME's and the browser's datagram size", async () => {
  const { client, relay } = await connected();
  assert.equal(client.maxMediaPayload, 1138);
  // Chromium's WebTransport datagrams hold 1024 bytes on loopback.
  relay.maxDatagramSize = 1024;
  assert.equal(client.maxMediaPayload, 1000);
  assert.throws(() => client.sendMedia(1n, 0, 0, new Uint8Array(1001)), TooLargeError);
  client.sendMedia(1n, 0, 0, new Uint8Array(1000));
  assert.equal(relay.sentDatagrams.length, 1);
});

test("announce resolves to the relay's 62-bit key; media and messages use the wire framing", async () => {
  const { client, relay } = await connected();
  const key = (1n << 62n) - 3n;
  const announced = client.announce("video", "camera");
  const announce = await relay.frame(1);
  assert.deepEqual(announce, { type: "ANNOUNCE", trackId: 1n, kind: "video", e2ee: false, name: "camera" });
  relay.send({ type: "ANNOUNCE_OK", trackId: 1n, track: key });
  assert.equal(await announced, key);

  const payload = new Uint8Array([1, 2, 3]);
  client.sendMedia(key, 5, 1_700_000_000_000_000n, payload);
  assert.deepEqual(relay.sentDatagrams, [
    encodeMediaDatagram({ track: key, seq: 5n, timestampUs: 1_700_000_000_000_000n }, payload),
  ]);
  assert.throws(() => client.sendMedia(key, 6, 0, new Uint8Array(1139)), TooLargeError);

  await client.sendMessage(key, new TextEncoder().encode("a"));
  await client.sendMessage(key, new TextEncoder().encode("bc"));
  assert.equal(relay.uniStreams.length, 1, "one message stream for all messages");
  assert.deepEqual(relay.uniStreams[0], [
    encodeMessageStreamHeader(),
    encodeMessage(key, new TextEncoder().encode("a")),
    encodeMessage(key, new TextEncoder().encode("bc")),
  ]);
  await assert.rejects(client.sendMessage(key, new Uint8Array(65537)), TooLargeError);

  await client.subscribe();
  await client.unannounce(key);
  await client.unsubscribe();
  assert.deepEqual(
    relay.frames.slice(2).map((f) => f.type),
    ["SUBSCRIBE", "UNANNOUNCE", "UNSUBSCRIBE"],
  );
});

test("tracks, subscription state, media and messages arrive as events", async () => {
  const { relay, events } = await connected();
  const info = { track: 300n, publisher: "alice", kind: "audio" as const, e2ee: false, name: "mic" };
  relay.send({ type: "TRACK_ADDED", ...info });
  relay.send({ type: "SUBSCRIPTION_STATE", state: "unavailable", code: 4, message: "no allowed path" });
  relay.send({ type: "SUBSCRIPTION_STATE", state: "active", code: 0, message: "" });
  relay.datagrams.push(encodeMediaDatagram({ track: 300n, seq: 1n, timestampUs: 9n }, Uint8Array.of(7)));
  relay.datagrams.push(Uint8Array.of(0x41)); // too short: dropped
  const stream = new AsyncQueue<Uint8Array>();
  relay.incomingUni.push(stream);
  const bytes = new Uint8Array([...encodeMessageStreamHeader(), ...encodeMessage(300n, Uint8Array.of(1, 2))]);
  stream.push(bytes.subarray(0, 2));
  stream.push(bytes.subarray(2));
  relay.send({ type: "TRACK_REMOVED", track: 300n });
  await waitFor(() => events.length >= 6 || undefined, "six events");
  const byType = (type: string) => events.filter((e) => e.type === type);
  assert.deepEqual(byType("track-added"), [{ type: "track-added", track: info }]);
  assert.deepEqual(byType("subscription-state"), [
    { type: "subscription-state", state: "unavailable", code: "ROUTE_UNAVAILABLE", message: "no allowed path" },
    { type: "subscription-state", state: "active", code: undefined, message: "" },
  ]);
  assert.deepEqual(byType("media"), [
    { type: "media", header: { track: 300n, seq: 1n, timestampUs: 9n }, payload: Uint8Array.of(7) },
  ]);
  assert.deepEqual(byType("message"), [{ type: "message", track: 300n, payload: Uint8Array.of(1, 2) }]);
  assert.deepEqual(byType("track-removed"), [{ type: "track-removed", track: 300n }]);
});

test("events() yields the same events in order", async () => {
  const { client, relay } = await connected();
  relay.send({ type: "TRACK_REMOVED", track: 1n });
  relay.send({ type: "ERROR", code: 9, message: "draining", redirect: [C] });
  const seen: ClientEvent[] = [];
  for await (const event of client.events()) seen.push(event);
  assert.deepEqual(seen, [
    { type: "track-removed", track: 1n },
    { type: "closed", code: "SHUTTING_DOWN", reason: "draining", redirect: [C] },
  ]);
});

test("an unexpected frame from the relay closes with PROTOCOL_VIOLATION", async () => {
  const bad: Frame[] = [
    { type: "ANNOUNCE_OK", trackId: 99n, track: 1n },
    welcome("again"),
    { type: "SUBSCRIBE" },
  ];
  for (const frame of bad) {
    const { client, relay, events } = await connected();
    relay.send(frame);
    await waitFor(() => client.isClosed, "close");
    assert.equal(relay.closes[0]?.code, 6, frame.type);
    const last = events.at(-1);
    assert.equal(last?.type === "closed" && last.code, "PROTOCOL_VIOLATION");
  }
  const { client, relay } = await connected();
  relay.sendRaw(Uint8Array.of(0x05, 0x00)); // unknown frame type
  await waitFor(() => client.isClosed, "close");
  assert.equal(relay.closes[0]?.code, 6);
});

test("a pending announce fails with the relay's refusal", async () => {
  const { client, relay } = await connected();
  const announced = client.announce("data", "chat");
  await relay.frame(1);
  relay.send({ type: "ERROR", code: 1, message: "subscribers cannot publish", redirect: [] });
  await assert.rejects(announced, (err) => err instanceof RefusedError && err.code === "UNAUTHORIZED");
  assert.deepEqual(relay.closes, [{ code: 0, reason: "closing after relay error" }]);
});

test("an admitted client closed with a code and no ERROR frame reports the code", async () => {
  const { client, relay, events } = await connected();
  const announced = client.announce("data", "chat");
  await relay.frame(1);
  relay.end({ code: 1, reason: "a subscribe token may not send datagrams" });
  await assert.rejects(announced, (err) => err instanceof RefusedError && err.code === "UNAUTHORIZED");
  assert.deepEqual(events, [
    { type: "closed", code: "UNAUTHORIZED", reason: "a subscribe token may not send datagrams", redirect: [] },
  ]);
});

test("close sends GOODBYE, then closes with code 0", async () => {
  const { client, relay, events } = await connected();
  const closing = client.close();
  assert.equal((await relay.frame(1)).type, "GOODBYE");
  relay.end({ code: 0, reason: "" });
  await closing;
  assert.deepEqual(events, [{ type: "closed", code: undefined, reason: "", redirect: [] }]);
});

test("a session reconnects to the redirect target, re-announces and re-subscribes", async () => {
  let aDrains: FakeTransport | undefined;
  const fleet = new FakeFleet({
    [A.node]: async (t) => {
      await t.frame(0);
      t.send(welcome(A.node, "us"));
      aDrains = t;
      const announce = await t.frame(1);
      if (announce.type === "ANNOUNCE") t.send({ type: "ANNOUNCE_OK", trackId: announce.trackId, track: 111n });
    },
    [C.node]: async (t) => {
      await t.frame(0);
      t.send(welcome(C.node));
      const announce = await t.frame(1);
      if (announce.type === "ANNOUNCE") t.send({ type: "ANNOUNCE_OK", trackId: announce.trackId, track: 222n });
    },
  });
  const session = await Session.connect([A, B], JOIN, { connectors: [fleet.connector], reconnectPauseMs: 1 });
  const events = collect(session);
  const track = await session.announce("audio", "mic");
  await session.subscribe();
  assert.equal(track.key, 111n);
  aDrains!.send({ type: "ERROR", code: 9, message: "draining", redirect: [C] });
  await waitFor(() => events.find((e) => e.type === "reconnected"), "reconnected");
  assert.equal(session.client.node, C.node);
  assert.equal(session.reconnects, 1);
  assert.equal(track.key, 222n, "the handle follows the new key");
  const onC = fleet.opened.find((t) => t.target.node === C.node)!;
  await waitFor(() => onC.frames.length >= 3 || undefined, "frames on C");
  assert.deepEqual(onC.frames.map((f) => f.type), ["HELLO", "ANNOUNCE", "SUBSCRIBE"]);
  session.sendMedia(track, 1, 2, Uint8Array.of(9));
  assert.deepEqual(onC.sentDatagrams, [encodeMediaDatagram({ track: 222n, seq: 1n, timestampUs: 2n }, Uint8Array.of(9))]);
});

test("a session whose node dies without a word reconnects to another target", async () => {
  let first: FakeTransport | undefined;
  const fleet = new FakeFleet({
    [A.node]: async (t) => {
      await t.frame(0);
      t.send(welcome(A.node));
      first ??= t;
    },
    [B.node]: admits(B.node),
  });
  const session = await Session.connect([A, B], JOIN, { connectors: [fleet.connector], reconnectPauseMs: 1 });
  const events = collect(session);
  first!.end({ code: 0, reason: "idle timeout" });
  const reconnected = await waitFor(() => events.find((e) => e.type === "reconnected"), "reconnected");
  assert.deepEqual(reconnected, { type: "reconnected", node: B.node, transport: "webtransport" });
});

test("a session ends on UNAUTHORIZED instead of reconnecting", async () => {
  let first: FakeTransport | undefined;
  const fleet = new FakeFleet({
    [A.node]: async (t) => {
      await t.frame(0);
      t.send(welcome(A.node));
      first = t;
    },
    [B.node]: admits(B.node),
  });
  const session = await Session.connect([A, B], JOIN, { connectors: [fleet.connector] });
  const events = collect(session);
  first!.send({ type: "ERROR", code: 5, message: "token revoked", redirect: [] });
  // GEOFENCE_REVOKED without targets is not final: it reconnects to B.
  await waitFor(() => events.find((e) => e.type === "reconnected"), "reconnected");
  const onB = fleet.opened.at(-1)!;
  onB.send({ type: "ERROR", code: 1, message: "token expired", redirect: [] });
  const closed = await waitFor(() => events.find((e) => e.type === "closed"), "closed");
  assert.deepEqual(closed, { type: "closed", code: "UNAUTHORIZED", reason: "token expired", redirect: [] });
  assert.equal(fleet.opened.length, 2, "no further attempt");
});
