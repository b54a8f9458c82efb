/**
 * The georelay/1 and georelay-mesh/1 codec (docs/PROTOCOL.md §2, §3, §5,
 * §6): every control frame, the media datagram header and message-stream
 * framing, with the spec's limits checked from declared lengths before any
 * bytes are buffered. Mirrors the Rust `georelay::wire` module.
 */

import { WireError } from "./errors.js";
import { readVarint, writeVarint } from "./varint.js";

export const PROTOCOL_VERSION = 1;
export const MAX_FRAME_BODY = 65536;
export const MAX_NAME_LEN = 256;
export const MAX_TOKEN_LEN = 4096;
export const MAX_TEXT_LEN = 1024;
export const MAX_REDIRECT_TARGETS = 64;
export const MAX_TRACKS = 256;
export const MAX_PATH_NODES = 16;
export const MAX_LINKS = 256;
export const DEFAULT_MAX_MESSAGE_BYTES = 65536;
/** The stream type byte of a message stream. */
export const STREAM_TYPE_MESSAGES = 0x01;
/** The largest media datagram header: three 8-byte varints. */
export const MEDIA_HEADER_MAX_LEN = 24;

/** Frame type numbers. */
export const FrameType = {
  HELLO: 0x01,
  WELCOME: 0x02,
  ERROR: 0x03,
  GOODBYE: 0x04,
  ANNOUNCE: 0x10,
  ANNOUNCE_OK: 0x11,
  UNANNOUNCE: 0x12,
  SUBSCRIBE: 0x13,
  UNSUBSCRIBE: 0x14,
  TRACK_ADDED: 0x15,
  TRACK_REMOVED: 0x16,
  SUBSCRIPTION_STATE: 0x17,
  PEER_HELLO: 0x20,
  LINK_STATE: 0x21,
  CHANNEL_ANNOUNCE: 0x22,
  MESH_SUBSCRIBE: 0x23,
  MESH_UNSUBSCRIBE: 0x24,
  MESH_SUBSCRIBE_ERROR: 0x25,
  MESH_SUBSCRIBE_OK: 0x26,
} as const;

export type FrameTypeName = keyof typeof FrameType;

const TYPE_NAMES = new Map<number, FrameTypeName>(
  Object.entries(FrameType).map(([name, type]) => [type, name as FrameTypeName]),
);

/** The name of a frame type number, if it is one. */
export function frameTypeName(type: number): FrameTypeName | undefined {
  return TYPE_NAMES.get(type);
}

export type TrackKind = "audio" | "video" | "data";
const KINDS: TrackKind[] = ["audio", "video", "data"];

export interface SdkInfo {
  name: string;
  version: string;
  device: string;
  os: string;
  network: string;
}

export interface TargetInfo {
  node: string;
  addr: string;
}

export interface TrackInfo {
  track: bigint;
  publisher: string;
  kind: TrackKind;
  e2ee: boolean;
  name: string;
}

export interface LinkInfo {
  peer: string;
  rttUs: bigint;
}

/** Every control frame of version 1. */
export type Frame =
  | {
      type: "HELLO";
      version: number;
      app: string;
      channel: string;
      token: string;
      sdk: SdkInfo;
    }
  | {
      type: "WELCOME";
      sessionId: bigint;
      node: string;
      region: string;
      maxDatagramPayload: number;
      maxMessageBytes: number;
    }
  | { type: "ERROR"; code: number; message: string; redirect: TargetInfo[] }
  | { type: "GOODBYE" }
  | { type: "ANNOUNCE"; trackId: bigint; kind: TrackKind; e2ee: boolean; name: string }
  | { type: "ANNOUNCE_OK"; trackId: bigint; track: bigint }
  | { type: "UNANNOUNCE"; track: bigint }
  | { type: "SUBSCRIBE" }
  | { type: "UNSUBSCRIBE" }
  | ({ type: "TRACK_ADDED" } & TrackInfo)
  | { type: "TRACK_REMOVED"; track: bigint }
  | { type: "SUBSCRIPTION_STATE"; state: "active" | "unavailable"; code: number; message: string }
  | { type: "PEER_HELLO"; version: number; node: string; policyVersion?: string }
  | { type: "LINK_STATE"; origin: string; seq: bigint; links: LinkInfo[] }
  | {
      type: "CHANNEL_ANNOUNCE";
      app: string;
      channel: string;
      origin: string;
      seq: bigint;
      tracks: TrackInfo[];
    }
  | { type: "MESH_SUBSCRIBE"; app: string; channel: string; origin: string; path: string[] }
  | { type: "MESH_UNSUBSCRIBE"; app: string; channel: string; origin: string }
  | { type: "MESH_SUBSCRIBE_OK"; app: string; channel: string; origin: string }
  | {
      type: "MESH_SUBSCRIBE_ERROR";
      app: string;
      channel: string;
      origin: string;
      code: number;
      message: string;
    };

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/** Builds a frame body. */
class Writer {
  readonly bytes: number[] = [];

  varint(value: bigint | number): void {
    writeVarint(this.bytes, value);
  }

  u8(value: number): void {
    this.bytes.push(value & 0xff);
  }

  bool(value: boolean): void {
    this.bytes.push(value ? 1 : 0);
  }

  string(field: string, value: string, max: number): void {
    const utf8 = encoder.encode(value);
    if (utf8.length > max) {
      throw new WireError("LIMIT_EXCEEDED", `${field}: ${utf8.length} bytes, at most ${max}`);
    }
    this.varint(utf8.length);
    for (const byte of utf8) this.bytes.push(byte);
  }

  list<T>(field: string, items: T[], max: number, each: (item: T) => void): void {
    if (items.length > max) {
      throw new WireError("LIMIT_EXCEEDED", `${field}: ${items.length} items, at most ${max}`);
    }
    this.varint(items.length);
    items.forEach(each);
  }

  kind(kind: TrackKind): void {
    this.varint(KINDS.indexOf(kind));
  }
}

/** Reads a frame body; every read checks bounds and limits first. */
class Reader {
  private offset = 0;
  constructor(private readonly body: Uint8Array) {}

  varint(): bigint {
    const read = readVarint(this.body, this.offset);
    if (!read) throw new WireError("PROTOCOL_VIOLATION", "truncated field");
    this.offset += read.length;
    return read.value;
  }

  number(): number {
    const value = this.varint();
    if (value > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new WireError("PROTOCOL_VIOLATION", `value ${value} too large`);
    }
    return Number(value);
  }

  u8(): number {
    if (this.offset >= this.body.length) {
      throw new WireError("PROTOCOL_VIOLATION", "truncated field");
    }
    return this.body[this.offset++]!;
  }

  bool(field: string): boolean {
    const byte = this.u8();
    if (byte > 1) throw new WireError("PROTOCOL_VIOLATION", `${field}: invalid bool ${byte}`);
    return byte === 1;
  }

  string(field: string, max: number): string {
    const len = this.varint();
    if (len > BigInt(max)) {
      throw new WireError("LIMIT_EXCEEDED", `${field}: ${len} bytes, at most ${max}`);
    }
    const end = this.offset + Number(len);
    if (end > this.body.length) throw new WireError("PROTOCOL_VIOLATION", `${field}: truncated`);
    let text: string;
    try {
      text = decoder.decode(this.body.subarray(this.offset, end));
    } catch {
      throw new WireError("PROTOCOL_VIOLATION", `${field}: invalid UTF-8`);
    }
    this.offset = end;
    return text;
  }

  list<T>(field: string, max: number, each: () => T): T[] {
    const count = this.varint();
    if (count > BigInt(max)) {
      throw new WireError("LIMIT_EXCEEDED", `${field}: ${count} items, at most ${max}`);
    }
    const items: T[] = [];
    for (let i = 0n; i < count; i++) items.push(each());
    return items;
  }

  kind(): TrackKind {
    const value = this.varint();
    const kind = value < 3n ? KINDS[Number(value)] : undefined;
    if (!kind) throw new WireError("PROTOCOL_VIOLATION", `invalid track kind ${value}`);
    return kind;
  }

  atEnd(): boolean {
    return this.offset === this.body.length;
  }

  finish(frame: string): void {
    if (this.offset !== this.body.length) {
      throw new WireError("PROTOCOL_VIOLATION", `${frame}: trailing bytes in body`);
    }
  }
}

function writeTrack(w: Writer, t: TrackInfo): void {
  w.varint(t.track);
  w.string("publisher", t.publisher, MAX_NAME_LEN);
  w.kind(t.kind);
  w.bool(t.e2ee);
  w.string("name", t.name, MAX_NAME_LEN);
}

function readTrack(r: Reader): TrackInfo {
  return {
    track: r.varint(),
    publisher: r.string("publisher", MAX_NAME_LEN),
    kind: r.kind(),
    e2ee: r.bool("e2ee"),
    name: r.string("name", MAX_NAME_LEN),
  };
}

function writeChannel(w: Writer, f: { app: string; channel: string; origin: string }): void {
  w.string("app", f.app, MAX_NAME_LEN);
  w.string("channel", f.channel, MAX_NAME_LEN);
  w.string("origin", f.origin, MAX_NAME_LEN);
}

function readChannel(r: Reader): { app: string; channel: string; origin: string } {
  return {
    app: r.string("app", MAX_NAME_LEN),
    channel: r.string("channel", MAX_NAME_LEN),
    origin: r.string("origin", MAX_NAME_LEN),
  };
}

function writeBody(w: Writer, f: Frame): void {
  switch (f.type) {
    case "HELLO":
      w.varint(f.version);
      w.string("app", f.app, MAX_NAME_LEN);
      w.string("channel", f.channel, MAX_NAME_LEN);
      w.string("token", f.token, MAX_TOKEN_LEN);
      w.string("sdk.name", f.sdk.name, MAX_NAME_LEN);
      w.string("sdk.version", f.sdk.version, MAX_NAME_LEN);
      w.string("sdk.device", f.sdk.device, MAX_NAME_LEN);
      w.string("sdk.os", f.sdk.os, MAX_NAME_LEN);
      w.string("sdk.network", f.sdk.network, MAX_NAME_LEN);
      return;
    case "WELCOME":
      w.varint(f.sessionId);
      w.string("node", f.node, MAX_NAME_LEN);
      w.string("region", f.region, MAX_NAME_LEN);
      w.varint(f.maxDatagramPayload);
      w.varint(f.maxMessageBytes);
      return;
    case "ERROR":
      w.varint(f.code);
      w.string("message", f.message, MAX_TEXT_LEN);
      w.list("redirect", f.redirect, MAX_REDIRECT_TARGETS, (t) => {
        w.string("redirect.node", t.node, MAX_NAME_LEN);
        w.string("redirect.addr", t.addr, MAX_NAME_LEN);
      });
      return;
    case "GOODBYE":
    case "SUBSCRIBE":
    case "UNSUBSCRIBE":
      return;
    case "ANNOUNCE":
      w.varint(f.trackId);
      w.kind(f.kind);
      w.bool(f.e2ee);
      w.string("name", f.name, MAX_NAME_LEN);
      return;
    case "ANNOUNCE_OK":
      w.varint(f.trackId);
      w.varint(f.track);
      return;
    case "UNANNOUNCE":
    case "TRACK_REMOVED":
      w.varint(f.track);
      return;
    case "TRACK_ADDED":
      writeTrack(w, f);
      return;
    case "SUBSCRIPTION_STATE":
      w.u8(f.state === "active" ? 0 : 1);
      w.varint(f.code);
      w.string("message", f.message, MAX_TEXT_LEN);
      return;
    case "PEER_HELLO":
      w.varint(f.version);
      w.string("node", f.node, MAX_NAME_LEN);
      if (f.policyVersion !== undefined) w.string("policy_version", f.policyVersion, MAX_NAME_LEN);
      return;
    case "LINK_STATE":
      w.string("origin", f.origin, MAX_NAME_LEN);
      w.varint(f.seq);
      w.list("links", f.links, MAX_LINKS, (l) => {
        w.string("link.peer", l.peer, MAX_NAME_LEN);
        w.varint(l.rttUs);
      });
      return;
    case "CHANNEL_ANNOUNCE":
      writeChannel(w, f);
      w.varint(f.seq);
      w.list("tracks", f.tracks, MAX_TRACKS, (t) => writeTrack(w, t));
      return;
    case "MESH_SUBSCRIBE":
      writeChannel(w, f);
      w.list("path", f.path, MAX_PATH_NODES, (n) => w.string("path.node", n, MAX_NAME_LEN));
      return;
    case "MESH_UNSUBSCRIBE":
    case "MESH_SUBSCRIBE_OK":
      writeChannel(w, f);
      return;
    case "MESH_SUBSCRIBE_ERROR":
      writeChannel(w, f);
      w.varint(f.code);
      w.string("message", f.message, MAX_TEXT_LEN);
      return;
  }
}

/** Encodes one frame: type, body length, body. */
export function encodeFrame(frame: Frame): Uint8Array {
  const body = new Writer();
  writeBody(body, frame);
  if (body.bytes.length > MAX_FRAME_BODY) {
    throw new WireError("LIMIT_EXCEEDED", `frame body of ${body.bytes.length} bytes`);
  }
  const out: number[] = [];
  writeVarint(out, FrameType[frame.type]);
  writeVarint(out, body.bytes.length);
  for (const byte of body.bytes) out.push(byte);
  return Uint8Array.from(out);
}

function nonZeroCode(r: Reader): number {
  const code = r.number();
  if (code === 0) throw new WireError("PROTOCOL_VIOLATION", "error code 0");
  return code;
}

function readBody(type: FrameTypeName, r: Reader): Frame {
  switch (type) {
    case "HELLO":
      return {
        type,
        version: r.number(),
        app: r.string("app", MAX_NAME_LEN),
        channel: r.string("channel", MAX_NAME_LEN),
        token: r.string("token", MAX_TOKEN_LEN),
        sdk: {
          name: r.string("sdk.name", MAX_NAME_LEN),
          version: r.string("sdk.version", MAX_NAME_LEN),
          device: r.string("sdk.device", MAX_NAME_LEN),
          os: r.string("sdk.os", MAX_NAME_LEN),
          network: r.string("sdk.network", MAX_NAME_LEN),
        },
      };
    case "WELCOME":
      return {
        type,
        sessionId: r.varint(),
        node: r.string("node", MAX_NAME_LEN),
        region: r.string("region", MAX_NAME_LEN),
        maxDatagramPayload: r.number(),
        maxMessageBytes: r.number(),
      };
    case "ERROR":
      return {
        type,
        code: nonZeroCode(r),
        message: r.string("message", MAX_TEXT_LEN),
        redirect: r.list("redirect", MAX_REDIRECT_TARGETS, () => ({
          node: r.string("redirect.node", MAX_NAME_LEN),
          addr: r.string("redirect.addr", MAX_NAME_LEN),
        })),
      };
    case "GOODBYE":
    case "SUBSCRIBE":
    case "UNSUBSCRIBE":
      return { type };
    case "ANNOUNCE":
      return {
        type,
        trackId: r.varint(),
        kind: r.kind(),
        e2ee: r.bool("e2ee"),
        name: r.string("name", MAX_NAME_LEN),
      };
    case "ANNOUNCE_OK":
      return { type, trackId: r.varint(), track: r.varint() };
    case "UNANNOUNCE":
    case "TRACK_REMOVED":
      return { type, track: r.varint() };
    case "TRACK_ADDED":
      return { type, ...readTrack(r) };
    case "SUBSCRIPTION_STATE": {
      const state = r.u8();
      if (state > 1) throw new WireError("PROTOCOL_VIOLATION", `invalid state ${state}`);
      return {
        type,
        state: state === 0 ? "active" : "unavailable",
        code: r.number(),
        message: r.string("message", MAX_TEXT_LEN),
      };
    }
    case "PEER_HELLO": {
      const version = r.number();
      const node = r.string("node", MAX_NAME_LEN);
      // The one optional field (PROTOCOL.md §9): present when the body goes on.
      if (r.atEnd()) return { type, version, node };
      return { type, version, node, policyVersion: r.string("policy_version", MAX_NAME_LEN) };
    }
    case "LINK_STATE":
      return {
        type,
        origin: r.string("origin", MAX_NAME_LEN),
        seq: r.varint(),
        links: r.list("links", MAX_LINKS, () => ({
          peer: r.string("link.peer", MAX_NAME_LEN),
          rttUs: r.varint(),
        })),
      };
    case "CHANNEL_ANNOUNCE":
      return {
        type,
        ...readChannel(r),
        seq: r.varint(),
        tracks: r.list("tracks", MAX_TRACKS, () => readTrack(r)),
      };
    case "MESH_SUBSCRIBE":
      return {
        type,
        ...readChannel(r),
        path: r.list("path", MAX_PATH_NODES, () => r.string("path.node", MAX_NAME_LEN)),
      };
    case "MESH_UNSUBSCRIBE":
    case "MESH_SUBSCRIBE_OK":
      return { type, ...readChannel(r) };
    case "MESH_SUBSCRIBE_ERROR":
      return {
        type,
        ...readChannel(r),
        code: nonZeroCode(r),
        message: r.string("message", MAX_TEXT_LEN),
      };
  }
}

/**
 * Decodes one frame from the front of `bytes`. `undefined` when `bytes`
 * holds only part of a frame; otherwise the frame and the bytes it used. An
 * unknown type and an over-limit body length fail as soon as they are read.
 */
export function decodeFrame(
  bytes: Uint8Array,
  maxBody = MAX_FRAME_BODY,
): { frame: Frame; length: number } | undefined {
  const type = readVarint(bytes, 0);
  if (!type) return undefined;
  const name = type.value < 256n ? frameTypeName(Number(type.value)) : undefined;
  if (!name) throw new WireError("PROTOCOL_VIOLATION", `unknown frame type ${type.value}`);
  const len = readVarint(bytes, type.length);
  if (!len) return undefined;
  if (len.value > BigInt(maxBody)) {
    throw new WireError("LIMIT_EXCEEDED", `frame body of ${len.value} bytes, at most ${maxBody}`);
  }
  const start = type.length + len.length;
  const end = start + Number(len.value);
  if (end > bytes.length) return undefined;
  const reader = new Reader(bytes.subarray(start, end));
  const frame = readBody(name, reader);
  reader.finish(name);
  return { frame, length: end };
}

/** Concatenates byte arrays. */
export function concat(parts: Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.length;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** Accumulates control-stream bytes and yields whole frames. */
export class FrameDecoder {
  private buffer: Uint8Array = new Uint8Array(0);

  push(chunk: Uint8Array): void {
    this.buffer = this.buffer.length === 0 ? chunk.slice() : concat([this.buffer, chunk]);
  }

  /** The next complete frame, or `undefined` until more bytes arrive. */
  next(): Frame | undefined {
    const decoded = decodeFrame(this.buffer);
    if (!decoded) return undefined;
    this.buffer = this.buffer.subarray(decoded.length);
    return decoded.frame;
  }

  /** Bytes received but not yet decoded. */
  get buffered(): number {
    return this.buffer.length;
  }
}

/** The header of a media datagram (§5). */
export interface MediaHeader {
  track: bigint;
  seq: bigint;
  timestampUs: bigint;
}

/** Encodes a media datagram: header, then the payload unchanged. */
export function encodeMediaDatagram(header: MediaHeader, payload: Uint8Array): Uint8Array {
  const head: number[] = [];
  writeVarint(head, header.track);
  writeVarint(head, header.seq);
  writeVarint(head, header.timestampUs);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

/** Parses a media datagram; `undefined` when it is too short for its header. */
export function parseMediaDatagram(
  datagram: Uint8Array,
): { header: MediaHeader; payload: Uint8Array } | undefined {
  const track = readVarint(datagram, 0);
  if (!track) return undefined;
  const seq = readVarint(datagram, track.length);
  if (!seq) return undefined;
  const ts = readVarint(datagram, track.length + seq.length);
  if (!ts) return undefined;
  const headerLength = track.length + seq.length + ts.length;
  return {
    header: { track: track.value, seq: seq.value, timestampUs: ts.value },
    payload: datagram.subarray(headerLength),
  };
}

/** The start of a message stream: its stream type. */
export function encodeMessageStreamHeader(): Uint8Array {
  return Uint8Array.of(STREAM_TYPE_MESSAGES);
}

/** One message on a message stream: track, length, payload. */
export function encodeMessage(track: bigint, payload: Uint8Array): Uint8Array {
  const head: number[] = [];
  writeVarint(head, track);
  writeVarint(head, payload.length);
  const out = new Uint8Array(head.length + payload.length);
  out.set(head, 0);
  out.set(payload, head.length);
  return out;
}

/** A reliable data message. */
export interface Message {
  track: bigint;
  payload: Uint8Array;
}

/**
 * Reads a message stream (§6): the stream type once, then messages. A
 * length over `maxLength` fails before the payload is buffered.
 */
export class MessageDecoder {
  private buffer: Uint8Array = new Uint8Array(0);
  private typeRead = false;

  constructor(private readonly maxLength: number) {}

  push(chunk: Uint8Array): void {
    this.buffer = this.buffer.length === 0 ? chunk.slice() : concat([this.buffer, chunk]);
  }

  next(): Message | undefined {
    if (!this.typeRead) {
      const type = readVarint(this.buffer, 0);
      if (!type) return undefined;
      if (type.value !== BigInt(STREAM_TYPE_MESSAGES)) {
        throw new WireError("PROTOCOL_VIOLATION", `unknown stream type ${type.value}`);
      }
      this.buffer = this.buffer.subarray(type.length);
      this.typeRead = true;
    }
    const track = readVarint(this.buffer, 0);
    if (!track) return undefined;
    const len = readVarint(this.buffer, track.length);
    if (!len) return undefined;
    if (len.value > BigInt(this.maxLength)) {
      throw new WireError(
        "LIMIT_EXCEEDED",
        `message of ${len.value} bytes, at most ${this.maxLength}`,
      );
    }
    const start = track.length + len.length;
    const end = start + Number(len.value);
    if (end > this.buffer.length) return undefined;
    const payload = this.buffer.slice(start, end);
    this.buffer = this.buffer.subarray(end);
    return { track: track.value, payload };
  }
}
