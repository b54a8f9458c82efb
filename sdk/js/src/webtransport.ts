/**
 * georelay/1 over the browser's WebTransport API (docs/PROTOCOL.md,
 * "WebTransport"): the session URL is `https://<addr>/georelay`; the first
 * bidirectional stream is the control stream; WebTransport datagrams and
 * unidirectional streams carry media datagrams and message streams
 * unchanged; the session closes with the georelay code.
 */

import type { Target } from "./errors.js";
import { iterate } from "./streams.js";
import type { CloseInfo, ControlStream, Transport, TransportConnector, UniWriter } from "./transport.js";

/** Whether this runtime has WebTransport. */
export function hasWebTransport(): boolean {
  return typeof globalThis.WebTransport === "function";
}

/** The default session URL of a target: `https://<addr>/georelay`. */
export function webTransportUrl(target: Target): string {
  return `https://${target.addr}/georelay`;
}

export interface WebTransportOptions {
  /** The session URL of a target (default {@link webTransportUrl}). */
  url?: (target: Target) => string;
  /**
   * SHA-256 hashes (hex, as `GET /certificate.sha256` serves them) of
   * development certificates to accept (`serverCertificateHashes`).
   */
  certificateHashes?: string[];
}

function hexBytes(hex: string): Uint8Array<ArrayBuffer> {
  const clean = hex.trim().toLowerCase();
  if (!/^[0-9a-f]{64}$/.test(clean)) throw new TypeError(`not a SHA-256 hex digest: ${hex}`);
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = parseInt(clean.slice(2 * i, 2 * i + 2), 16);
  return out;
}

class WebTransportConnection implements Transport {
  readonly kind = "webtransport";
  readonly closed: Promise<CloseInfo>;
  private readonly datagramWriter: WritableStreamDefaultWriter<Uint8Array>;

  constructor(private readonly session: WebTransport) {
    this.datagramWriter = session.datagrams.writable.getWriter();
    this.closed = session.closed.then(
      (info) => ({ code: info.closeCode ?? 0, reason: info.reason ?? "" }),
      (err: unknown) => ({
        code: (err as { closeCode?: number } | undefined)?.closeCode ?? 0,
        reason: String((err as Error | undefined)?.message ?? err),
      }),
    );
  }

  get maxDatagramSize(): number {
    return (this.session.datagrams as { maxDatagramSize?: number }).maxDatagramSize ?? 1200;
  }

  async openControl(): Promise<ControlStream> {
    const stream = await this.session.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    return {
      write: (bytes) => writer.write(bytes),
      readable: iterate(stream.readable as ReadableStream<Uint8Array>),
    };
  }

  sendDatagram(datagram: Uint8Array): void {
    // WebTransport drops rather than queues without bound; a failed write
    // means the session is closing, which `closed` reports.
    this.datagramWriter.write(datagram).catch(() => undefined);
  }

  get datagrams(): AsyncIterable<Uint8Array> {
    return iterate(this.session.datagrams.readable as ReadableStream<Uint8Array>);
  }

  async openUni(): Promise<UniWriter> {
    const stream = await this.session.createUnidirectionalStream();
    const writer = stream.getWriter();
    return { write: (bytes) => writer.write(bytes), close: () => writer.close() };
  }

  get incomingUni(): AsyncIterable<AsyncIterable<Uint8Array>> {
    const streams = this.session.incomingUnidirectionalStreams as ReadableStream<
      ReadableStream<Uint8Array>
    >;
    return (async function* () {
      for await (const stream of iterate(streams)) yield iterate(stream);
    })();
  }

  close(code: number, reason: string): void {
    try {
      this.session.close({ closeCode: code, reason });
    } catch {
      // already closed
    }
  }
}

/** A connector that opens WebTransport sessions. */
export function webTransportConnector(options: WebTransportOptions = {}): TransportConnector {
  const hashes = (options.certificateHashes ?? []).map((hex) => ({
    algorithm: "sha-256",
    value: hexBytes(hex),
  }));
  return async (target, signal) => {
    const url = (options.url ?? webTransportUrl)(target);
    const session = new WebTransport(url, {
      requireUnreliable: true,
      ...(hashes.length > 0 ? { serverCertificateHashes: hashes } : {}),
    });
    const abort = () => session.close({ closeCode: 0, reason: "connect timeout" });
    signal.addEventListener("abort", abort, { once: true });
    try {
      await session.ready;
    } finally {
      signal.removeEventListener("abort", abort);
    }
    return new WebTransportConnection(session);
  };
}
