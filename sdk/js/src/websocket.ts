/**
 * The WebSocket fallback (docs/PROTOCOL.md, "WebSocket fallback"): one
 * WebSocket (TLS) at `wss://<addr>/georelay`, subprotocol `georelay-ws.1`,
 * carrying the control stream, media datagrams and unidirectional streams as
 * binary messages whose first byte says which:
 *
 * | kind | rest of the message |
 * |---|---|
 * | `0x00` CONTROL | the next bytes of the control stream |
 * | `0x01` DATAGRAM | exactly one media datagram |
 * | `0x02` STREAM | `stream_id` varint, then the next bytes of that unidirectional stream |
 * | `0x03` STREAM_FIN | `stream_id` varint: that stream is finished |
 * | `0x04` CLOSE | `code` varint, then a UTF-8 reason: the application close |
 */

import type { Target } from "./errors.js";
import { WireError } from "./errors.js";
import { concat } from "./codec.js";
import { AsyncQueue } from "./queue.js";
import type { CloseInfo, ControlStream, Transport, TransportConnector, UniWriter } from "./transport.js";
import { readVarint, writeVarint } from "./varint.js";

/** The WebSocket subprotocol of the fallback. */
export const WS_SUBPROTOCOL = "georelay-ws.1";
/** The datagram size a fallback session reports (QUIC's smallest path). */
export const WS_MAX_DATAGRAM = 1162;
/** The largest binary message either side sends or accepts. */
export const WS_MAX_MESSAGE = 65536 + 16;
/** Control and stream bytes are sent in chunks of at most this size. */
const WS_CHUNK = 16384;
/** Incoming unidirectional streams open at once, at most. */
export const WS_MAX_INCOMING_STREAMS = 64;

export const WsKind = {
  CONTROL: 0x00,
  DATAGRAM: 0x01,
  STREAM: 0x02,
  STREAM_FIN: 0x03,
  CLOSE: 0x04,
} as const;

/** One fallback message, decoded. */
export type WsMessage =
  | { kind: "control"; bytes: Uint8Array }
  | { kind: "datagram"; bytes: Uint8Array }
  | { kind: "stream"; streamId: bigint; bytes: Uint8Array }
  | { kind: "stream-fin"; streamId: bigint }
  | { kind: "close"; code: number; reason: string };

const utf8 = new TextEncoder();

/** Encodes one fallback message. */
export function encodeWsMessage(message: WsMessage): Uint8Array {
  const head: number[] = [];
  switch (message.kind) {
    case "control":
      return concat([Uint8Array.of(WsKind.CONTROL), message.bytes]);
    case "datagram":
      return concat([Uint8Array.of(WsKind.DATAGRAM), message.bytes]);
    case "stream":
      head.push(WsKind.STREAM);
      writeVarint(head, message.streamId);
      return concat([Uint8Array.from(head), message.bytes]);
    case "stream-fin":
      head.push(WsKind.STREAM_FIN);
      writeVarint(head, message.streamId);
      return Uint8Array.from(head);
    case "close":
      head.push(WsKind.CLOSE);
      writeVarint(head, message.code);
      return concat([Uint8Array.from(head), utf8.encode(message.reason.slice(0, 512))]);
  }
}

/** Decodes one fallback message; malformed input is a {@link WireError}. */
export function decodeWsMessage(bytes: Uint8Array): WsMessage {
  if (bytes.length > WS_MAX_MESSAGE) {
    throw new WireError("LIMIT_EXCEEDED", `WebSocket message of ${bytes.length} bytes`);
  }
  const kind = bytes[0];
  const rest = bytes.subarray(1);
  const id = () => {
    const read = readVarint(rest, 0);
    if (!read) throw new WireError("PROTOCOL_VIOLATION", "truncated stream id");
    return read;
  };
  switch (kind) {
    case WsKind.CONTROL:
      return { kind: "control", bytes: rest };
    case WsKind.DATAGRAM:
      return { kind: "datagram", bytes: rest };
    case WsKind.STREAM: {
      const read = id();
      return { kind: "stream", streamId: read.value, bytes: rest.subarray(read.length) };
    }
    case WsKind.STREAM_FIN: {
      const read = id();
      if (read.length !== rest.length) {
        throw new WireError("PROTOCOL_VIOLATION", "trailing bytes after STREAM_FIN");
      }
      return { kind: "stream-fin", streamId: read.value };
    }
    case WsKind.CLOSE: {
      const read = readVarint(rest, 0);
      if (!read || read.value > 0xffffffffn) {
        throw new WireError("PROTOCOL_VIOLATION", "bad close code");
      }
      return {
        kind: "close",
        code: Number(read.value),
        reason: new TextDecoder().decode(rest.subarray(read.length)),
      };
    }
    default:
      throw new WireError("PROTOCOL_VIOLATION", `unknown WebSocket message kind ${kind}`);
  }
}

/** The default fallback URL of a target: the same address, over TCP. */
export function webSocketUrl(target: Target): string {
  return `wss://${target.addr}/georelay`;
}

/** The part of the WebSocket API the fallback uses (browser or `ws`). */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly readyState: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}

/** georelay/1 over one WebSocket. Exported for tests over a fake socket. */
export class WebSocketConnection implements Transport {
  readonly kind = "websocket";
  readonly maxDatagramSize = WS_MAX_DATAGRAM;
  readonly closed: Promise<CloseInfo>;
  readonly datagrams = new AsyncQueue<Uint8Array>(1024);
  readonly incomingUni = new AsyncQueue<AsyncIterable<Uint8Array>>();
  private readonly control = new AsyncQueue<Uint8Array>();
  private readonly streams = new Map<bigint, AsyncQueue<Uint8Array>>();
  private nextStreamId = 0n;
  /** One more than the highest incoming stream id so far (ids are never reused). */
  private nextIncomingId = 0n;
  private closeInfo: CloseInfo | undefined;
  private resolveClosed!: (info: CloseInfo) => void;

  constructor(private readonly socket: WebSocketLike) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) =>
      this.finish(this.closeInfo ?? { code: 0, reason: event.reason || `WebSocket closed (${event.code})` });
    socket.onerror = () => undefined;
  }

  private receive(data: unknown): void {
    if (!(data instanceof ArrayBuffer)) {
      this.fail(new WireError("PROTOCOL_VIOLATION", "text message on the fallback"));
      return;
    }
    let message: WsMessage;
    try {
      message = decodeWsMessage(new Uint8Array(data));
    } catch (err) {
      this.fail(err as WireError);
      return;
    }
    switch (message.kind) {
      case "control":
        this.control.push(message.bytes);
        return;
      case "datagram":
        this.datagrams.push(message.bytes);
        return;
      case "stream": {
        let stream = this.streams.get(message.streamId);
        if (!stream) {
          if (message.streamId < this.nextIncomingId) {
            this.fail(new WireError("PROTOCOL_VIOLATION", "stream id reused"));
            return;
          }
          this.nextIncomingId = message.streamId + 1n;
          if (this.streams.size >= WS_MAX_INCOMING_STREAMS) {
            this.fail(new WireError("LIMIT_EXCEEDED", "too many streams"));
            return;
          }
          stream = new AsyncQueue<Uint8Array>();
          this.streams.set(message.streamId, stream);
          this.incomingUni.push(stream);
        }
        stream.push(message.bytes);
        return;
      }
      case "stream-fin":
        this.streams.get(message.streamId)?.end();
        this.streams.delete(message.streamId);
        return;
      case "close":
        this.closeInfo = { code: message.code, reason: message.reason };
        this.socket.close(1000);
        this.finish(this.closeInfo);
        return;
    }
  }

  private fail(err: WireError): void {
    this.close(err.code === "LIMIT_EXCEEDED" ? 7 : 6, err.message);
  }

  private finish(info: CloseInfo): void {
    this.control.end();
    this.datagrams.end();
    this.incomingUni.end();
    for (const stream of this.streams.values()) stream.end();
    this.resolveClosed(info);
  }

  private send(message: WsMessage): void {
    if (this.socket.readyState !== 1) throw new Error("WebSocket is not open");
    this.socket.send(encodeWsMessage(message));
  }

  private sendChunked(bytes: Uint8Array, wrap: (chunk: Uint8Array) => WsMessage): void {
    for (let offset = 0; offset < bytes.length; offset += WS_CHUNK) {
      this.send(wrap(bytes.subarray(offset, offset + WS_CHUNK)));
    }
  }

  async openControl(): Promise<ControlStream> {
    return {
      write: async (bytes) => this.sendChunked(bytes, (chunk) => ({ kind: "control", bytes: chunk })),
      readable: this.control,
    };
  }

  sendDatagram(datagram: Uint8Array): void {
    if (this.socket.readyState === 1) this.send({ kind: "datagram", bytes: datagram });
  }

  async openUni(): Promise<UniWriter> {
    const streamId = this.nextStreamId++;
    return {
      write: async (bytes) =>
        this.sendChunked(bytes, (chunk) => ({ kind: "stream", streamId, bytes: chunk })),
      close: async () => this.send({ kind: "stream-fin", streamId }),
    };
  }

  close(code: number, reason: string): void {
    if (this.closeInfo) return;
    this.closeInfo = { code, reason };
    try {
      if (this.socket.readyState === 1) this.send({ kind: "close", code, reason });
      this.socket.close(1000);
    } catch {
      // already closing
    }
    this.finish(this.closeInfo);
  }
}

export interface WebSocketOptions {
  /** The fallback URL of a target (default {@link webSocketUrl}). */
  url?: (target: Target) => string;
  /** The WebSocket constructor (default: the runtime's). */
  WebSocket?: new (url: string, protocols: string[]) => WebSocketLike;
}

/** A connector that opens fallback sessions. */
export function webSocketConnector(options: WebSocketOptions = {}): TransportConnector {
  return (target, signal) =>
    new Promise((resolve, reject) => {
      const Ctor =
        options.WebSocket ??
        (globalThis as { WebSocket?: new (url: string, protocols: string[]) => WebSocketLike })
          .WebSocket;
      if (!Ctor) {
        reject(new Error("no WebSocket in this runtime"));
        return;
      }
      const socket = new Ctor((options.url ?? webSocketUrl)(target), [WS_SUBPROTOCOL]);
      socket.binaryType = "arraybuffer";
      const abort = () => {
        socket.close();
        reject(new Error("connect timeout"));
      };
      signal.addEventListener("abort", abort, { once: true });
      socket.onopen = () => {
        signal.removeEventListener("abort", abort);
        if (socket.protocol !== WS_SUBPROTOCOL) {
          socket.close(1002);
          reject(new Error(`server chose subprotocol "${socket.protocol}"`));
          return;
        }
        resolve(new WebSocketConnection(socket));
      };
      socket.onerror = () => undefined;
      socket.onclose = (event) => {
        signal.removeEventListener("abort", abort);
        reject(new Error(`WebSocket closed before open (${event.code})`));
      };
    });
}
