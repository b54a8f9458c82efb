import assert from "node:assert/strict";
import { test } from "node:test";

import {
  decodeFrame,
  encodeFrame,
  encodeMediaDatagram,
  encodeMessage,
  encodeMessageStreamHeader,
  FrameDecoder,
  frameTypeName,
  MessageDecoder,
  parseMediaDatagram,
  type Frame,
} from "../src/codec.js";
import { codeName, ERROR_CODES, WireError } from "../src/errors.js";
import { readVarint, writeVarint } from "../src/varint.js";
import { examples, spec, tableRows } from "./spec.js";

const TOKEN =
  "gr1.AAthY21lLWhlYWx0aAAGcm9vbS0xAAVhbGljZQIAAAAAaE7hgA.IT8iEseYh4PoiS2NaJ-KFPfN-SI5wDb958h-CXH0sGY";

const SPEC_FRAMES: [string, Frame][] = [
  [
    "hello",
    {
      type: "HELLO",
      version: 1,
      app: "acme-health",
      channel: "room-1",
      token: TOKEN,
      sdk: { name: "georelay-rust", version: "0.1.0", device: "desktop", os: "linux", network: "wifi" },
    },
  ],
  [
    "welcome",
    {
      type: "WELCOME",
      sessionId: 42n,
      node: "eu-fra-1",
      region: "eu",
      maxDatagramPayload: 1138,
      maxMessageBytes: 65536,
    },
  ],
  [
    "error-redirect",
    {
      type: "ERROR",
      code: 2,
      message: "app not allowed here",
      redirect: [{ node: "eu-fra-1", addr: "127.10.0.1:4433" }],
    },
  ],
  [
    "subscription-state-active",
    { type: "SUBSCRIPTION_STATE", state: "active", code: 0, message: "media path established from eu-fra-1" },
  ],
  ["mesh-subscribe-ok", { type: "MESH_SUBSCRIBE_OK", app: "acme-health", channel: "room-1", origin: "eu-fra-1" }],
  ["peer-hello", { type: "PEER_HELLO", version: 1, node: "eu-fra-1", policyVersion: "6a09e667bb67ae85" }],
  ["peer-hello-old-form", { type: "PEER_HELLO", version: 1, node: "eu-fra-1" }],
];

const hex = (text: string) => Uint8Array.from(text.split(" ").map((pair) => parseInt(pair, 16)));

test("the spec has exactly the examples tests/wire_spec.rs checks", () => {
  const names = [...examples(spec(), "wire-example").keys()].sort();
  assert.deepEqual(names, [
    "error-redirect",
    "hello",
    "media-datagram",
    "mesh-subscribe-ok",
    "message-stream",
    "peer-hello",
    "peer-hello-old-form",
    "subscription-state-active",
    "welcome",
  ]);
});

test("frame examples decode and encode byte for byte", () => {
  const found = examples(spec(), "wire-example");
  for (const [name, frame] of SPEC_FRAMES) {
    const bytes = found.get(name)!;
    assert.deepEqual(decodeFrame(bytes), { frame, length: bytes.length }, `decode ${name}`);
    assert.deepEqual(encodeFrame(frame), bytes, `encode ${name}`);
  }
});

test("the media datagram example parses and encodes byte for byte", () => {
  const bytes = examples(spec(), "wire-example").get("media-datagram")!;
  const header = { track: 300n, seq: 7n, timestampUs: 1_700_000_000_000_000n };
  const parsed = parseMediaDatagram(bytes);
  assert.deepEqual(parsed?.header, header);
  assert.equal(new TextDecoder().decode(parsed?.payload), "hi");
  assert.deepEqual(encodeMediaDatagram(header, new TextEncoder().encode("hi")), bytes);
  assert.equal(parseMediaDatagram(bytes.subarray(0, 5)), undefined, "truncated header");
});

test("the message stream example decodes and encodes byte for byte", () => {
  const bytes = examples(spec(), "wire-example").get("message-stream")!;
  const decoder = new MessageDecoder(65536);
  // Byte by byte: framing survives any split.
  const messages = [];
  for (const byte of bytes) {
    decoder.push(Uint8Array.of(byte));
    for (let m = decoder.next(); m; m = decoder.next()) messages.push(m);
  }
  assert.deepEqual(messages, [{ track: 300n, payload: new TextEncoder().encode("hello") }]);
  const encoded = new Uint8Array([...encodeMessageStreamHeader(), ...encodeMessage(300n, new TextEncoder().encode("hello"))]);
  assert.deepEqual(encoded, bytes);
});

test("varints: the spec's examples, shortest form, 62-bit values", () => {
  for (const [bytes, value] of [
    ["25", 37n],
    ["40 25", 37n],
    ["7b bd", 15293n],
    ["9d 7f 3e 7d", 494878333n],
  ] as const) {
    assert.deepEqual(readVarint(hex(bytes), 0), { value, length: bytes.split(" ").length });
  }
  const out: number[] = [];
  writeVarint(out, 37);
  writeVarint(out, 15293);
  writeVarint(out, (1n << 62n) - 1n);
  assert.deepEqual(out, [0x25, 0x7b, 0xbd, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
  assert.throws(() => writeVarint([], 1n << 62n), RangeError);
  assert.equal(readVarint(hex("7b"), 0), undefined);
});

test("the frame type table lists exactly the codec's types", () => {
  const rows = tableRows(spec(), (cell) => cell.startsWith("`0x"));
  assert.equal(rows.length, 19);
  for (const row of rows) {
    const type = parseInt(row[0]!.replaceAll("`", ""), 16);
    assert.equal(`\`${frameTypeName(type)}\``, row[1], `type ${type}`);
  }
});

test("the error code table lists exactly the SDK's code names", () => {
  const rows = tableRows(spec(), (cell) => /^\d+$/.test(cell) && cell !== "0");
  const listed = rows.map((row) => [Number(row[0]), row[1]!.replaceAll("`", "")]);
  assert.deepEqual(listed, Object.entries(ERROR_CODES).map(([name, code]) => [code, name]));
  assert.equal(codeName(99), "UNKNOWN_99");
});

test("every frame round-trips, split at every byte", () => {
  const track = { track: (1n << 62n) - 5n, publisher: "alice", kind: "video" as const, e2ee: true, name: "cam" };
  const frames: Frame[] = [
    ...SPEC_FRAMES.map(([, f]) => f),
    { type: "GOODBYE" },
    { type: "ANNOUNCE", trackId: 3n, kind: "audio", e2ee: false, name: "mic" },
    { type: "ANNOUNCE_OK", trackId: 3n, track: track.track },
    { type: "UNANNOUNCE", track: 9n },
    { type: "SUBSCRIBE" },
    { type: "UNSUBSCRIBE" },
    { type: "TRACK_ADDED", ...track },
    { type: "TRACK_REMOVED", track: 9n },
    { type: "SUBSCRIPTION_STATE", state: "unavailable", code: 4, message: "no path" },
    { type: "PEER_HELLO", version: 1, node: "eu-fra-1" },
    { type: "LINK_STATE", origin: "a", seq: 5n, links: [{ peer: "b", rttUs: 80000n }] },
    { type: "CHANNEL_ANNOUNCE", app: "x", channel: "c", origin: "a", seq: 2n, tracks: [track] },
    { type: "MESH_SUBSCRIBE", app: "x", channel: "c", origin: "a", path: ["b", "a"] },
    { type: "MESH_UNSUBSCRIBE", app: "x", channel: "c", origin: "a" },
    { type: "MESH_SUBSCRIBE_ERROR", app: "x", channel: "c", origin: "a", code: 4, message: "m" },
  ];
  const stream = new Uint8Array(frames.flatMap((f) => [...encodeFrame(f)]));
  const decoder = new FrameDecoder();
  const decoded: Frame[] = [];
  for (const byte of stream) {
    decoder.push(Uint8Array.of(byte));
    for (let f = decoder.next(); f; f = decoder.next()) decoded.push(f);
  }
  assert.deepEqual(decoded, frames);
  assert.equal(decoder.buffered, 0);
});

test("bad input is PROTOCOL_VIOLATION or LIMIT_EXCEEDED, limits checked before buffering", () => {
  const code = (bytes: Uint8Array) => {
    try {
      decodeFrame(bytes);
      return "ok";
    } catch (err) {
      assert.ok(err instanceof WireError);
      return err.code;
    }
  };
  assert.equal(code(hex("00 00")), "PROTOCOL_VIOLATION", "type 0 is unknown");
  assert.equal(code(hex("05 00")), "PROTOCOL_VIOLATION", "unknown type");
  // A body length of 65537 is refused with only 6 bytes received.
  assert.equal(code(hex("02 80 01 00 01")), "LIMIT_EXCEEDED");
  assert.equal(code(hex("13 01 00")), "PROTOCOL_VIOLATION", "trailing bytes");
  assert.equal(code(hex("16 00")), "PROTOCOL_VIOLATION", "truncated field");
  assert.equal(code(hex("15 06 01 00 02 02 00 00")), "PROTOCOL_VIOLATION", "bool 2");
  assert.equal(code(hex("15 06 01 00 07 00 00 00")), "PROTOCOL_VIOLATION", "kind 7");
  assert.equal(code(hex("17 03 02 00 00")), "PROTOCOL_VIOLATION", "state 2");
  assert.equal(code(hex("03 03 00 00 00")), "PROTOCOL_VIOLATION", "error code 0");
  assert.equal(code(hex("16 03 02 ff fe")), "PROTOCOL_VIOLATION", "trailing after track");
  assert.equal(code(hex("11 03 01 01 01")), "PROTOCOL_VIOLATION", "trailing");
  const badUtf8 = hex("20 04 01 02 c3 28");
  assert.equal(code(badUtf8), "PROTOCOL_VIOLATION", "invalid UTF-8");
  const longName = hex("20 04 01 41 01 61"); // node length 257
  assert.equal(code(longName), "LIMIT_EXCEEDED");
  assert.equal(decodeFrame(hex("02 13 2a")), undefined, "partial frame waits for more");
  assert.throws(
    () => encodeFrame({ type: "UNANNOUNCE", track: 1n << 62n }),
    RangeError,
  );
  assert.throws(
    () => encodeFrame({ type: "PEER_HELLO", version: 1, node: "x".repeat(257) }),
    (err: unknown) => err instanceof WireError && err.code === "LIMIT_EXCEEDED",
  );
  const messages = new MessageDecoder(10);
  messages.push(hex("01 05 0b"));
  assert.throws(() => messages.next(), (err: unknown) => err instanceof WireError && err.code === "LIMIT_EXCEEDED");
  const wrongType = new MessageDecoder(10);
  wrongType.push(hex("02"));
  assert.throws(() => wrongType.next(), (err: unknown) => err instanceof WireError && err.code === "PROTOCOL_VIOLATION");
});
