// A fake transport and relay side for state-machine tests of the client.
import { encodeFrame, FrameDecoder, type Frame } from "../src/codec.js";
import type { Target } from "../src/errors.js";
import { AsyncQueue } from "../src/queue.js";
import type { CloseInfo, ControlStream, Transport, TransportConnector, UniWriter } from "../src/transport.js";

/** Resolves when `check` holds (polled on a short timer), or fails after `ms`. */
export async function waitFor<T>(check: () => T | undefined | false, what: string, ms = 2000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 2));
  }
}

export class FakeTransport implements Transport {
  /** A browser's datagram size (the tests may lower it). */
  maxDatagramSize = 1200;
  readonly fromClient = new AsyncQueue<Uint8Array>();
  readonly toClient = new AsyncQueue<Uint8Array>();
  readonly datagrams = new AsyncQueue<Uint8Array>();
  readonly incomingUni = new AsyncQueue<AsyncIterable<Uint8Array>>();
  readonly sentDatagrams: Uint8Array[] = [];
  readonly uniStreams: Uint8Array[][] = [];
  readonly closes: CloseInfo[] = [];
  readonly closed: Promise<CloseInfo>;
  private resolveClosed!: (info: CloseInfo) => void;
  private readonly decoder = new FrameDecoder();
  private readonly clientFrames: Frame[] = [];

  constructor(
    readonly target: Target,
    readonly kind: "webtransport" | "websocket" = "webtransport",
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    void (async () => {
      for await (const chunk of this.fromClient) {
        this.decoder.push(chunk);
        for (let f = this.decoder.next(); f; f = this.decoder.next()) this.clientFrames.push(f);
      }
    })();
  }

  async openControl(): Promise<ControlStream> {
    return { write: async (bytes) => this.fromClient.push(bytes), readable: this.toClient };
  }

  sendDatagram(datagram: Uint8Array): void {
    this.sentDatagrams.push(datagram);
  }

  async openUni(): Promise<UniWriter> {
    const writes: Uint8Array[] = [];
    this.uniStreams.push(writes);
    return { write: async (bytes) => void writes.push(bytes), close: async () => undefined };
  }

  close(code: number, reason: string): void {
    this.closes.push({ code, reason });
    this.end({ code, reason });
  }

  // ---- the relay's side ----

  /** Frames the client sent so far. */
  get frames(): Frame[] {
    return this.clientFrames;
  }

  /** Waits for the client's `n`th frame (0-based). */
  frame(n: number): Promise<Frame> {
    return waitFor(() => this.clientFrames[n], `client frame ${n} on ${this.target.node}`);
  }

  send(frame: Frame): void {
    this.toClient.push(encodeFrame(frame));
  }

  sendRaw(bytes: Uint8Array): void {
    this.toClient.push(bytes);
  }

  /** The relay closes the connection with `code`. */
  end(info: CloseInfo): void {
    this.toClient.end();
    this.fromClient.end();
    this.datagrams.end();
    this.incomingUni.end();
    this.resolveClosed(info);
  }
}

export type Script = (transport: FakeTransport) => void | Promise<void>;

/**
 * A fake fleet: each node runs `script` against every transport opened to
 * it; a node without a script refuses to connect.
 */
export class FakeFleet {
  readonly opened: FakeTransport[] = [];
  constructor(
    private readonly scripts: Record<string, Script>,
    private readonly kind: "webtransport" | "websocket" = "webtransport",
  ) {}

  connector: TransportConnector = async (target) => {
    const script = this.scripts[target.node];
    if (!script) throw new Error(`${target.node} unreachable`);
    const transport = new FakeTransport(target, this.kind);
    this.opened.push(transport);
    void script(transport);
    return transport;
  };
}

export const welcome = (node: string, region = "eu"): Frame => ({
  type: "WELCOME",
  sessionId: 7n,
  node,
  region,
  maxDatagramPayload: 1138,
  maxMessageBytes: 65536,
});

/** A script that admits every client. */
export const admits =
  (node: string): Script =>
  async (t) => {
    await t.frame(0);
    t.send(welcome(node));
  };
