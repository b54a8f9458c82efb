import assert from "node:assert/strict";
import { test } from "node:test";

import { FRAME_HEADER_BYTES, FrameAssembler, packetizeFrame, parseFramePart } from "../src/frames.js";

const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

/** Feeds `parts` (payloads of frames) and collects the frame numbers handed out. */
function feed(assembler: FrameAssembler, parts: Uint8Array[]): number[] {
  return parts.flatMap((part) => assembler.push(part, 0n).map((frame) => frame.frame));
}

test("a frame header is flags, frame number, part index and count, big-endian", () => {
  const [part] = packetizeFrame(0x01020304, true, Uint8Array.of(0xaa, 0xbb), 100);
  assert.deepEqual([...part!], [0x01, 0x01, 0x02, 0x03, 0x04, 0x00, 0x00, 0x00, 0x01, 0xaa, 0xbb]);
  assert.equal(FRAME_HEADER_BYTES, 9);
  assert.deepEqual(parseFramePart(part!), { frame: 0x01020304, index: 0, count: 1, key: true, body: Uint8Array.of(0xaa, 0xbb) });
});

test("a frame is split into parts within the payload limit and joins back exactly", () => {
  const data = bytes(5000, 7);
  const parts = packetizeFrame(9, false, data, 1138);
  assert.equal(parts.length, Math.ceil(5000 / (1138 - 9)));
  assert.ok(parts.every((p) => p.length <= 1138));
  const assembler = new FrameAssembler();
  const keyframe = packetizeFrame(8, true, bytes(10, 1), 1138);
  const out = [...keyframe, ...parts].flatMap((p) => assembler.push(p, 77n));
  assert.deepEqual(out.map((f) => [f.frame, f.key, f.timestampUs]), [[8, true, 77n], [9, false, 77n]]);
  assert.deepEqual(out[1]!.data, data);
});

test("malformed parts are rejected: short, unknown flags, no parts, index beyond count", () => {
  assert.equal(parseFramePart(new Uint8Array(8)), undefined);
  const good = packetizeFrame(1, false, bytes(4, 0), 100)[0]!;
  const flags = good.slice(); flags[0] = 0x02;
  const noParts = good.slice(); noParts[8] = 0;
  const beyond = good.slice(); beyond[6] = 1;
  for (const bad of [flags, noParts, beyond]) assert.equal(parseFramePart(bad), undefined);
});

test("nothing is handed out before a keyframe; frames come in order despite reordering", () => {
  const assembler = new FrameAssembler();
  const delta = packetizeFrame(4, false, bytes(3000, 4), 1000);
  const key = packetizeFrame(5, true, bytes(3000, 5), 1000);
  const next = packetizeFrame(6, false, bytes(3000, 6), 1000);
  const after = packetizeFrame(7, false, bytes(10, 7), 1000);
  // A subscriber that joined mid-stream: delta 4 cannot be decoded.
  assert.deepEqual(feed(assembler, delta), []);
  // Frame 6 and 7 complete before keyframe 5's last part.
  assert.deepEqual(feed(assembler, [...key.slice(0, 2), ...next, ...after]), []);
  assert.deepEqual(feed(assembler, key.slice(2)), [5, 6, 7]);
  assert.deepEqual(assembler.stats, { frames: 3, dropped: 1, rejectedParts: 0 });
  // A late duplicate of a handed-out frame is rejected.
  assert.deepEqual(feed(assembler, [next[0]!]), []);
  assert.equal(assembler.stats.rejectedParts, 1);
});

test("a lost part skips to the next keyframe; delta frames before it are dropped", () => {
  const assembler = new FrameAssembler({ reorderFrames: 2 });
  const frames = [0, 1, 2, 3, 4, 5, 6].map((n) => packetizeFrame(n, n === 0 || n === 5, bytes(1500, n), 1000));
  assert.deepEqual(feed(assembler, [...frames[0]!, ...frames[1]!]), [0, 1]);
  // Frame 2 loses its second part; 3 and 4 arrive but need 2.
  assert.deepEqual(feed(assembler, [frames[2]![0]!, ...frames[3]!, ...frames[4]!]), []);
  assert.deepEqual(feed(assembler, [...frames[5]!, ...frames[6]!]), [5, 6]);
  assert.deepEqual(assembler.stats, { frames: 4, dropped: 3, rejectedParts: 0 });
  assert.equal(assembler.pendingFrames, 0);
});

test("memory is bounded: frames beyond the pending limits are given up oldest first", () => {
  const assembler = new FrameAssembler({ maxPendingFrames: 4, maxPendingBytes: 10_000 });
  // First parts only, of 20 frames: none completes.
  for (let n = 0; n < 20; n++) assembler.push(packetizeFrame(n, true, bytes(2000, n), 1000)[0]!, 0n);
  assert.equal(assembler.pendingFrames, 4);
  const big = new FrameAssembler({ maxPendingFrames: 64, maxPendingBytes: 5_000 });
  for (let n = 0; n < 20; n++) big.push(packetizeFrame(n, true, bytes(3000, n), 1000)[0]!, 0n);
  assert.ok(big.pendingFrames <= 5, `${big.pendingFrames} frames pending`);
  assert.ok(big.stats.dropped >= 15);
});
