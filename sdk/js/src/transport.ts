/**
 * What the client needs from a connection, whatever carries it: the
 * control stream, datagrams, unidirectional streams, and a close with an
 * application code. WebTransport ({@link ./webtransport}) and the WebSocket
 * fallback ({@link ./websocket}) implement it; tests use a fake.
 */

import type { Target } from "./errors.js";

export type TransportKind = "webtransport" | "websocket";

/** How a connection ended: the application code (0 = normal) and reason. */
export interface CloseInfo {
  code: number;
  reason: string;
}

/** The client's end of its control stream. */
export interface ControlStream {
  write(bytes: Uint8Array): Promise<void>;
  /** Bytes from the relay, in order; ends when the stream ends. */
  readonly readable: AsyncIterable<Uint8Array>;
}

/** A unidirectional stream this side opened. */
export interface UniWriter {
  write(bytes: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export interface Transport {
  readonly kind: TransportKind;
  /** The largest datagram the connection carries now. */
  readonly maxDatagramSize: number;
  /** Opens the control stream (the client's first bidirectional stream). */
  openControl(): Promise<ControlStream>;
  /** Sends one datagram; the transport may drop it, never delays it long. */
  sendDatagram(datagram: Uint8Array): void;
  /** Datagrams from the relay. */
  readonly datagrams: AsyncIterable<Uint8Array>;
  /** Opens a unidirectional stream. */
  openUni(): Promise<UniWriter>;
  /** Unidirectional streams the relay opened, each as its bytes. */
  readonly incomingUni: AsyncIterable<AsyncIterable<Uint8Array>>;
  /** Closes with an application code (0 = normal) and a short reason. */
  close(code: number, reason: string): void;
  /** Resolves once the connection is gone. */
  readonly closed: Promise<CloseInfo>;
}

/** Opens a transport to a target, or throws why it could not. */
export type TransportConnector = (target: Target, signal: AbortSignal) => Promise<Transport>;
