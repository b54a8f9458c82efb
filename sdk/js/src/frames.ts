/**
 * Encoded media frames (a WebCodecs `EncodedVideoChunk`, for instance) over
 * georelay media datagrams: a frame larger than one datagram's payload is
 * split into parts, each prefixed with a small frame header, and the
 * receiver reassembles complete frames in order, skipping to the next
 * keyframe after a loss so that a decoder is never fed a frame whose
 * reference is missing.
 *
 * This framing lives inside the media payload: the relay forwards it
 * unchanged and never reads it (docs/PROTOCOL.md §5). Each part is one
 * datagram; the georelay header's `seq` numbers datagrams (loss is seen as
 * gaps in it) and its `timestamp_us` is the frame's capture time, the same
 * on every part.
 *
 * Frame header, {@link FRAME_HEADER_BYTES} bytes, big-endian:
 *
 * | bytes | field | meaning |
 * |---|---|---|
 * | 0 | flags | bit 0: keyframe (decodable alone); other bits 0 |
 * | 1–4 | frame | frame number (u32), +1 per frame of the track |
 * | 5–6 | index | this part's index (u16), 0-based |
 * | 7–8 | count | parts of the frame (u16), at least 1, `index < count` |
 *
 * The part bodies, concatenated in index order, are the encoded frame.
 */

/** Bytes of the frame header in front of every part. */
export const FRAME_HEADER_BYTES = 9;

const FLAG_KEY = 0x01;

/** One datagram's share of a frame. */
export interface FramePart {
  frame: number;
  index: number;
  count: number;
  key: boolean;
  body: Uint8Array;
}

/** A reassembled frame. */
export interface AssembledFrame {
  frame: number;
  key: boolean;
  /** The capture time from the georelay header, in microseconds. */
  timestampUs: bigint;
  data: Uint8Array;
}

/**
 * Splits an encoded frame into datagram payloads of at most `maxPayload`
 * bytes (the client's `maxMediaPayload`), header included.
 */
export function packetizeFrame(frame: number, key: boolean, data: Uint8Array, maxPayload: number): Uint8Array[] {
  const room = maxPayload - FRAME_HEADER_BYTES;
  if (room <= 0) throw new RangeError(`a payload limit of ${maxPayload} bytes leaves no room for frame data`);
  const count = Math.max(1, Math.ceil(data.length / room));
  if (count > 0xffff) throw new RangeError(`a frame of ${data.length} bytes needs more than 65535 parts`);
  const parts: Uint8Array[] = [];
  for (let index = 0; index < count; index++) {
    const body = data.subarray(index * room, Math.min(data.length, (index + 1) * room));
    const part = new Uint8Array(FRAME_HEADER_BYTES + body.length);
    const view = new DataView(part.buffer);
    view.setUint8(0, key ? FLAG_KEY : 0);
    view.setUint32(1, frame >>> 0);
    view.setUint16(5, index);
    view.setUint16(7, count);
    part.set(body, FRAME_HEADER_BYTES);
    parts.push(part);
  }
  return parts;
}

/** Parses a part, or `undefined` when the payload is not one. */
export function parseFramePart(payload: Uint8Array): FramePart | undefined {
  if (payload.length < FRAME_HEADER_BYTES) return undefined;
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const flags = view.getUint8(0);
  const index = view.getUint16(5);
  const count = view.getUint16(7);
  if ((flags & ~FLAG_KEY) !== 0 || count === 0 || index >= count) return undefined;
  return {
    frame: view.getUint32(1),
    index,
    count,
    key: (flags & FLAG_KEY) !== 0,
    body: payload.subarray(FRAME_HEADER_BYTES),
  };
}

/** Bounds of a {@link FrameAssembler}. */
export interface AssemblerOptions {
  /**
   * How many frames past the awaited one may arrive before the awaited one
   * counts as lost (tolerated reordering). Default 3.
   */
  reorderFrames?: number;
  /** Incomplete frames held at most; the oldest goes beyond. Default 64. */
  maxPendingFrames?: number;
  /** Bytes of parts held at most; the oldest frames go beyond. Default 8 MiB. */
  maxPendingBytes?: number;
}

/** What a {@link FrameAssembler} counted. */
export interface AssemblerStats {
  /** Frames handed out, complete and decodable in order. */
  frames: number;
  /** Frames never handed out: lost parts, or skipped until a keyframe. */
  dropped: number;
  /** Parts that were not frame parts, duplicates, or late. */
  rejectedParts: number;
}

interface Pending {
  key: boolean;
  count: number;
  timestampUs: bigint;
  parts: (Uint8Array | undefined)[];
  received: number;
  bytes: number;
}

/**
 * Reassembles the frames of one track. It hands out frames in frame-number
 * order; after a gap it resumes at the next complete keyframe (the delta
 * frames before it are dropped), so a decoder never gets a frame whose
 * reference it has not seen. Memory is bounded by {@link AssemblerOptions}.
 */
export class FrameAssembler {
  readonly stats: AssemblerStats = { frames: 0, dropped: 0, rejectedParts: 0 };
  private readonly pending = new Map<number, Pending>();
  private pendingBytes = 0;
  /** The frame to hand out next; `undefined` while waiting for a keyframe. */
  private next: number | undefined;
  /** The highest frame number handed out or dropped; -1 before the first. */
  private done = -1;
  private newest = -1;
  private readonly reorder: number;
  private readonly maxPendingFrames: number;
  private readonly maxPendingBytes: number;

  constructor(options: AssemblerOptions = {}) {
    this.reorder = options.reorderFrames ?? 3;
    this.maxPendingFrames = options.maxPendingFrames ?? 64;
    this.maxPendingBytes = options.maxPendingBytes ?? 8 * 1024 * 1024;
  }

  /** Frames waiting for parts or for a keyframe. */
  get pendingFrames(): number {
    return this.pending.size;
  }

  /** Takes one datagram payload; returns the frames it makes ready. */
  push(payload: Uint8Array, timestampUs: bigint): AssembledFrame[] {
    const part = parseFramePart(payload);
    if (!part || part.frame <= this.done) {
      this.stats.rejectedParts++;
      return [];
    }
    let frame = this.pending.get(part.frame);
    if (!frame) {
      frame = { key: part.key, count: part.count, timestampUs, parts: [], received: 0, bytes: 0 };
      this.pending.set(part.frame, frame);
      this.newest = Math.max(this.newest, part.frame);
    }
    if (frame.count !== part.count || frame.parts[part.index] !== undefined) {
      this.stats.rejectedParts++;
      return [];
    }
    frame.parts[part.index] = part.body;
    frame.received++;
    frame.bytes += part.body.length;
    this.pendingBytes += part.body.length;
    this.bound();
    return this.drain();
  }

  private complete(number: number): Pending | undefined {
    const frame = this.pending.get(number);
    return frame && frame.received === frame.count ? frame : undefined;
  }

  private forget(number: number): void {
    const frame = this.pending.get(number);
    if (!frame) return;
    this.pendingBytes -= frame.bytes;
    this.pending.delete(number);
  }

  private bound(): void {
    while (this.pending.size > this.maxPendingFrames || this.pendingBytes > this.maxPendingBytes) {
      const oldest = Math.min(...this.pending.keys());
      this.skipTo(oldest + 1);
      if (this.next !== undefined && this.next <= oldest) this.next = undefined;
    }
  }

  /** Gives up every frame below `number`, counting those never handed out. */
  private skipTo(number: number): void {
    if (this.done >= 0) {
      this.stats.dropped += Math.max(0, number - this.done - 1);
    } else {
      // Before the first frame: only what arrived counts as dropped.
      for (const key of this.pending.keys()) if (key < number) this.stats.dropped++;
    }
    for (const key of [...this.pending.keys()]) if (key < number) this.forget(key);
    this.done = Math.max(this.done, number - 1);
  }

  private take(number: number, frame: Pending, out: AssembledFrame[]): void {
    this.skipTo(number);
    this.forget(number);
    this.done = number;
    this.next = number + 1;
    this.stats.frames++;
    out.push({ frame: number, key: frame.key, timestampUs: frame.timestampUs, data: concat(frame.parts as Uint8Array[]) });
  }

  private drain(): AssembledFrame[] {
    const out: AssembledFrame[] = [];
    for (;;) {
      if (this.next !== undefined) {
        const frame = this.complete(this.next);
        if (frame) {
          this.take(this.next, frame, out);
          continue;
        }
        // Still within the reordering window: the awaited frame may come.
        if (this.newest - this.next <= this.reorder) return out;
      }
      // Waiting for a keyframe, or the awaited frame is lost: resume at
      // the oldest complete keyframe.
      const keys = [...this.pending.keys()].filter((n) => this.complete(n)?.key).sort((a, b) => a - b);
      const key = keys[0];
      if (key === undefined) {
        this.next = undefined;
        return out;
      }
      this.take(key, this.complete(key)!, out);
    }
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}
