import assert from "node:assert/strict";
import { test } from "node:test";

import { encodeFrame } from "../src/codec.js";
import { WireError } from "../src/errors.js";
import {
  decodeWsMessage,
  encodeWsMessage,
  WebSocketConnection,
  WS_SUBPROTOCOL,
  type WebSocketLike,
  type WsMessage,
} from "../src/websocket.js";
import { waitFor } from "./fake.js";
import { examples, spec } from "./spec.js";

const text = (s: string) => new TextEncoder().encode(s);

test("the fallback framing examples of PROTOCOL.md decode and encode byte for byte", () => {
  const found = examples(spec(), "ws-example");
  const expected: [string, WsMessage][] = [
    ["control-goodbye", { kind: "control", bytes: encodeFrame({ type: "GOODBYE" }) }],
    [
      "datagram",
      { kind: "datagram", bytes: Uint8Array.from([0x41, 0x2c, 0x07, 0xc0, 0x06, 0x0a, 0x24, 0x18, 0x1e, 0x40, 0x00, 0x68, 0x69]) },
    ],
    ["stream", { kind: "stream", streamId: 0n, bytes: Uint8Array.from([0x01, 0x41, 0x2c, 0x05, ...text("hello")]) }],
    ["stream-fin", { kind: "stream-fin", streamId: 0n }],
    ["close", { kind: "close", code: 6, reason: "bad frame" }],
  ];
  assert.deepEqual([...found.keys()].sort(), expected.map(([name]) => name).sort());
  for (const [name, message] of expected) {
    const bytes = found.get(name)!;
    assert.deepEqual(decodeWsMessage(bytes), message, `decode ${name}`);
    assert.deepEqual(encodeWsMessage(message), bytes, `encode ${name}`);
  }
});

test("malformed fallback messages are refused with the right code", () => {
  const code = (bytes: Uint8Array) => {
    try {
      decodeWsMessage(bytes);
      return "ok";
    } catch (err) {
      assert.ok(err instanceof WireError);
      return err.code;
    }
  };
  assert.equal(code(Uint8Array.of(0x09)), "PROTOCOL_VIOLATION");
  assert.equal(code(Uint8Array.of()), "PROTOCOL_VIOLATION");
  assert.equal(code(Uint8Array.of(0x02)), "PROTOCOL_VIOLATION", "stream without id");
  assert.equal(code(Uint8Array.of(0x03, 0x00, 0x00)), "PROTOCOL_VIOLATION", "trailing after fin");
  assert.equal(code(new Uint8Array(65553)), "LIMIT_EXCEEDED");
});

class FakeSocket implements WebSocketLike {
  binaryType = "blob";
  protocol = WS_SUBPROTOCOL;
  readyState = 1;
  sent: Uint8Array[] = [];
  closedWith: number | undefined;
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;

  send(data: Uint8Array): void {
    this.sent.push(data.slice());
  }
  close(code?: number): void {
    this.closedWith = code;
    this.readyState = 3;
  }
  deliver(message: WsMessage | Uint8Array | string): void {
    const bytes =
      typeof message === "string" ? message : message instanceof Uint8Array ? message : encodeWsMessage(message);
    const data = typeof bytes === "string" ? bytes : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
    this.onmessage?.({ data });
  }
}

test("a fallback connection carries control, datagrams and streams both ways", async () => {
  const socket = new FakeSocket();
  const conn = new WebSocketConnection(socket);
  assert.equal(socket.binaryType, "arraybuffer");
  assert.equal(conn.maxDatagramSize, 1162);
  const control = await conn.openControl();
  await control.write(new Uint8Array(40000));
  assert.deepEqual(
    socket.sent.map((m) => [m[0], m.length]),
    [[0, 16385], [0, 16385], [0, 7233]],
    "control bytes in 16 KiB chunks",
  );
  socket.sent = [];
  conn.sendDatagram(Uint8Array.of(1, 2));
  const uni = await conn.openUni();
  await uni.write(Uint8Array.of(1));
  await uni.close();
  const second = await conn.openUni();
  await second.write(Uint8Array.of(1));
  assert.deepEqual(socket.sent.map((m) => decodeWsMessage(m)), [
    { kind: "datagram", bytes: Uint8Array.of(1, 2) },
    { kind: "stream", streamId: 0n, bytes: Uint8Array.of(1) },
    { kind: "stream-fin", streamId: 0n },
    { kind: "stream", streamId: 1n, bytes: Uint8Array.of(1) },
  ]);

  socket.deliver({ kind: "control", bytes: Uint8Array.of(4, 0) });
  socket.deliver({ kind: "datagram", bytes: Uint8Array.of(7) });
  socket.deliver({ kind: "stream", streamId: 5n, bytes: Uint8Array.of(1, 2) });
  socket.deliver({ kind: "stream", streamId: 5n, bytes: Uint8Array.of(3) });
  socket.deliver({ kind: "stream-fin", streamId: 5n });
  const controlIn = control.readable[Symbol.asyncIterator]();
  assert.deepEqual((await controlIn.next()).value, Uint8Array.of(4, 0));
  assert.deepEqual((await conn.datagrams.next()).value, Uint8Array.of(7));
  const stream = (await conn.incomingUni.next()).value as AsyncIterable<Uint8Array>;
  const chunks: Uint8Array[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.deepEqual(chunks, [Uint8Array.of(1, 2), Uint8Array.of(3)]);

  socket.deliver({ kind: "close", code: 9, reason: "draining" });
  assert.deepEqual(await conn.closed, { code: 9, reason: "draining" });
  assert.equal(socket.closedWith, 1000);
});

test("a malformed or text message closes the fallback with PROTOCOL_VIOLATION", async () => {
  for (const bad of [Uint8Array.of(0x07), "text"]) {
    const socket = new FakeSocket();
    const conn = new WebSocketConnection(socket);
    socket.deliver(bad);
    const info = await conn.closed;
    assert.equal(info.code, 6);
    await waitFor(() => socket.closedWith === 1000, "socket closed");
    const close = decodeWsMessage(socket.sent.at(-1)!);
    assert.equal(close.kind === "close" && close.code, 6);
  }
});

test("a reused stream id is PROTOCOL_VIOLATION", async () => {
  const socket = new FakeSocket();
  const conn = new WebSocketConnection(socket);
  socket.deliver({ kind: "stream", streamId: 3n, bytes: Uint8Array.of(1) });
  socket.deliver({ kind: "stream-fin", streamId: 3n });
  socket.deliver({ kind: "stream", streamId: 3n, bytes: Uint8Array.of(1) });
  assert.equal((await conn.closed).code, 6);
});

test("too many incoming streams is LIMIT_EXCEEDED", async () => {
  const socket = new FakeSocket();
  const conn = new WebSocketConnection(socket);
  for (let id = 0n; id < 65n; id++) socket.deliver({ kind: "stream", streamId: id, bytes: Uint8Array.of(1) });
  assert.equal((await conn.closed).code, 7);
});
