/**
 * The georelay client: connect (following redirects), publish tracks,
 * subscribe, send and receive media datagrams and messages, and observe
 * tracks and subscription state. Same semantics as the Rust SDK
 * (`georelay::client`), over any {@link Transport}.
 */

import {

  encodeFrame,
  encodeMediaDatagram,
  encodeMessage,
  encodeMessageStreamHeader,
  FrameDecoder,
  MEDIA_HEADER_MAX_LEN,
  MessageDecoder,
  parseMediaDatagram,
  PROTOCOL_VERSION,
  type Frame,
  type MediaHeader,
  type SdkInfo,
  type TrackInfo,
  type TrackKind,
} from "./codec.js";
import {
  ClosedError,
  codeName,
  ConnectError,
  ERROR_CODES,
  GeorelayError,
  RefusedError,
  TooLargeError,
  WireError,
  type ErrorCodeName,
  type Target,
} from "./errors.js";
import { AsyncQueue } from "./queue.js";
import type { ControlStream, Transport, TransportConnector, TransportKind, UniWriter } from "./transport.js";
import { hasWebTransport, webTransportConnector, type WebTransportOptions } from "./webtransport.js";
import { webSocketConnector, type WebSocketOptions } from "./websocket.js";

/** What the client asks to join. */
export interface Join {
  app: string;
  channel: string;
  token: string;
}

/** Something the relay told the client. */
export type ClientEvent =
  | { type: "track-added"; track: TrackInfo }
  | { type: "track-removed"; track: bigint }
  | { type: "media"; header: MediaHeader; payload: Uint8Array }
  | { type: "message"; track: bigint; payload: Uint8Array }
  | {
      type: "subscription-state";
      state: "active" | "unavailable";
      code: ErrorCodeName | undefined;
      message: string;
    }
  | { type: "reconnected"; node: string; transport: TransportKind }
  | { type: "closed"; code: ErrorCodeName | undefined; reason: string; redirect: Target[] };

export type ClientEventType = ClientEvent["type"];
type EventOf<T extends ClientEventType> = Extract<ClientEvent, { type: T }>;

export interface ClientOptions {
  /** Operation data sent in `HELLO`. */
  sdk?: Partial<SdkInfo>;
  /** Redirects followed before giving up (default 3). */
  maxRedirects?: number;
  /** Time one connection attempt may take, in ms (default 5000). */
  connectTimeoutMs?: number;
  /** WebTransport settings (URL, development certificate hashes). */
  webTransport?: WebTransportOptions;
  /** WebSocket fallback settings; `false` disables the fallback. */
  webSocket?: WebSocketOptions | false;
  /** `"websocket"` skips WebTransport (e.g. to test the fallback). */
  transport?: "auto" | "webtransport" | "websocket";
  /**
   * Opens transports; overrides everything above (tests pass a fake). The
   * second connector, if any, is the fallback.
   */
  connectors?: TransportConnector[];
  /** Events that may wait for the application before media is dropped. */
  eventQueue?: number;
}

const DEFAULT_SDK: SdkInfo = {
  name: "georelay-js",
  version: "0.1.0",
  device: "browser",
  os: typeof navigator !== "undefined" ? navigator.platform ?? "" : "",
  network: "",
};

/** How long `close()` waits for the relay to end the session. */
const CLOSE_GRACE_MS = 1000;
const REDIRECT_CODES: ReadonlySet<ErrorCodeName> = new Set([
  "GEOFENCE_REDIRECT",
  "SHUTTING_DOWN",
  "GEOFENCE_REVOKED",
]);
/** Refusals another node would repeat: a session does not retry them. */
const FINAL_CODES: ReadonlySet<ErrorCodeName> = new Set(["UNAUTHORIZED", "GEOFENCE_DENIED"]);

function connectorsFor(options: ClientOptions): TransportConnector[] {
  if (options.connectors) return options.connectors;
  const wt = webTransportConnector(options.webTransport);
  const ws = options.webSocket === false ? undefined : webSocketConnector(options.webSocket || {});
  switch (options.transport ?? "auto") {
    case "webtransport":
      return [wt];
    case "websocket":
      return ws ? [ws] : [];
    case "auto":
      if (!hasWebTransport()) return ws ? [ws] : [];
      return ws ? [wt, ws] : [wt];
  }
}

interface Attempt {
  transport: Transport;
  control: ControlStream;
  reader: AsyncIterator<Uint8Array>;
  decoder: FrameDecoder;
  welcome: Extract<Frame, { type: "WELCOME" }>;
}

/** Reads the next whole frame from the control stream, or `undefined` at its end. */
async function nextFrame(
  reader: AsyncIterator<Uint8Array>,
  decoder: FrameDecoder,
): Promise<Frame | undefined> {
  for (;;) {
    const frame = decoder.next();
    if (frame) return frame;
    const chunk = await reader.next();
    if (chunk.done) return undefined;
    decoder.push(chunk.value);
  }
}

function wireCode(err: WireError): number {
  return ERROR_CODES[err.code];
}

/** The refusal a closed transport carries, if it closed with a code. */
async function closedError(transport: Transport): Promise<GeorelayError> {
  const info = await transport.closed;
  if (info.code !== 0) return new RefusedError(codeName(info.code), info.reason);
  return new ClosedError(info.reason || "control stream ended");
}

async function attempt(
  connector: TransportConnector,
  target: Target,
  join: Join,
  sdk: SdkInfo,
  timeoutMs: number,
): Promise<Attempt> {
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(new ConnectError(`${target.node}: timed out`));
    }, timeoutMs);
  });
  let transport: Transport | undefined;
  let settled = false;
  const run = async (): Promise<Attempt> => {
    try {
      transport = await connector(target, abort.signal);
    } catch (err) {
      throw new ConnectError(`${target.node}: ${(err as Error)?.message ?? err}`);
    }
    const control = await transport.openControl();
    await control.write(
      encodeFrame({
        type: "HELLO",
        version: PROTOCOL_VERSION,
        app: join.app,
        channel: join.channel,
        token: join.token,
        sdk,
      }),
    );
    const reader = control.readable[Symbol.asyncIterator]();
    const decoder = new FrameDecoder();
    let frame: Frame | undefined;
    try {
      frame = await nextFrame(reader, decoder);
    } catch (err) {
      if (err instanceof WireError) {
        settled = true;
        transport.close(wireCode(err), err.message);
        throw new GeorelayError(`relay broke the protocol: ${err.message}`);
      }
      throw err;
    }
    if (frame?.type === "WELCOME") return { transport, control, reader, decoder, welcome: frame };
    settled = true;
    if (frame?.type === "ERROR") {
      transport.close(0, "refused");
      throw new RefusedError(codeName(frame.code), frame.message, frame.redirect);
    }
    if (frame) {
      transport.close(ERROR_CODES.PROTOCOL_VIOLATION, `expected WELCOME, got ${frame.type}`);
      throw new GeorelayError(`relay broke the protocol: expected WELCOME, got ${frame.type}`);
    }
    throw await closedError(transport);
  };
  try {
    return await Promise.race([run(), timeout]);
  } catch (err) {
    if (!settled) transport?.close(0, "connect failed");
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

type Listener = (event: ClientEvent) => void;

/** A connected session. */
export class Client {
  private readonly listeners = new Set<Listener>();
  private readonly queue: AsyncQueue<ClientEvent>;
  private readonly pending = new Map<bigint, { resolve: (key: bigint) => void; reject: (err: Error) => void }>();
  private nextTrackId = 1n;
  private messages: Promise<UniWriter> | undefined;
  private messageChain: Promise<void> = Promise.resolve();
  private closedEvent: EventOf<"closed"> | undefined;
  /** Datagrams from the relay too short for their header (dropped). */
  malformedDatagrams = 0;

  private constructor(
    private readonly transport: Transport,
    private readonly control: ControlStream,
    readonly welcome: Extract<Frame, { type: "WELCOME" }>,
    /** Redirects followed to get here. */
    readonly redirects: number,
    eventQueue: number,
    reader: AsyncIterator<Uint8Array>,
    decoder: FrameDecoder,
  ) {
    this.queue = new AsyncQueue<ClientEvent>(eventQueue);
    void this.readControl(reader, decoder);
    void this.readDatagrams();
    void this.readMessageStreams();
    void transport.closed.then((info) =>
      this.emitClosed(info.code === 0 ? undefined : codeName(info.code), info.reason, []),
    );
  }

  /**
   * Connects to the first target that admits this client, following
   * `GEOFENCE_REDIRECT` (and `SHUTTING_DOWN` / `GEOFENCE_REVOKED`)
   * alternatives up to `maxRedirects` times. Each target is tried over
   * WebTransport first and over the WebSocket fallback when WebTransport
   * is absent or fails to connect.
   */
  static async connect(targets: Target[], join: Join, options: ClientOptions = {}): Promise<Client> {
    const connectors = connectorsFor(options);
    if (connectors.length === 0) throw new ConnectError("no transport available");
    const sdk = { ...DEFAULT_SDK, ...options.sdk };
    const maxRedirects = options.maxRedirects ?? 3;
    const timeoutMs = options.connectTimeoutMs ?? 5000;
    const queue = [...targets];
    let redirects = 0;
    let lastError: Error = new ConnectError("no target given");
    for (let index = 0; index < queue.length; ) {
      const target = queue[index++]!;
      try {
        const made = await attemptWithFallback(connectors, target, join, sdk, timeoutMs);
        return new Client(
          made.transport,
          made.control,
          made.welcome,
          redirects,
          options.eventQueue ?? 65536,
          made.reader,
          made.decoder,
        );
      } catch (err) {
        if (
          err instanceof RefusedError &&
          REDIRECT_CODES.has(err.code) &&
          err.redirect.length > 0 &&
          redirects < maxRedirects
        ) {
          redirects++;
          queue.splice(index, 0, ...err.redirect);
          lastError = err;
          continue;
        }
        if (err instanceof RefusedError) throw err;
        lastError = err as Error;
      }
    }
    throw lastError;
  }

  /** The node that admitted this client. */
  get node(): string {
    return this.welcome.node;
  }

  /** That node's region. */
  get region(): string {
    return this.welcome.region;
  }

  /** The relay's session id. */
  get sessionId(): bigint {
    return this.welcome.sessionId;
  }

  /** `webtransport` or `websocket`. */
  get transportKind(): TransportKind {
    return this.transport.kind;
  }

  /**
   * The largest media payload that reaches the relay: what it accepts
   * (`WELCOME`), and what fits this side's datagrams after the largest
   * header (a browser's QUIC may carry smaller datagrams than the relay's
   * path allows; a larger one would be dropped by the browser unseen).
   */
  get maxMediaPayload(): number {
    return Math.min(this.welcome.maxDatagramPayload, this.transport.maxDatagramSize - MEDIA_HEADER_MAX_LEN);
  }

  /** Events dropped because the application did not read them in time. */
  get droppedEvents(): number {
    return this.queue.dropped;
  }

  /** Whether the session is over. */
  get isClosed(): boolean {
    return this.closedEvent !== undefined;
  }

  /** Calls `handler` for every event of `type`; returns an unsubscribe function. */
  on<T extends ClientEventType>(type: T, handler: (event: EventOf<T>) => void): () => void {
    const listener: Listener = (event) => {
      if (event.type === type) handler(event as EventOf<T>);
    };
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Every event, in order (media is dropped, oldest first, when unread). */
  events(): AsyncIterable<ClientEvent> {
    return this.queue;
  }

  private emit(event: ClientEvent): void {
    for (const listener of this.listeners) listener(event);
    this.queue.push(event);
  }

  private emitClosed(code: ErrorCodeName | undefined, reason: string, redirect: Target[]): void {
    if (this.closedEvent) return;
    this.closedEvent = { type: "closed", code, reason, redirect };
    const err = code ? new RefusedError(code, reason, redirect) : new ClosedError(reason || "closed");
    for (const { reject } of this.pending.values()) reject(err);
    this.pending.clear();
    this.emit(this.closedEvent);
    this.queue.end();
  }

  private async send(frame: Frame): Promise<void> {
    if (this.closedEvent) throw new ClosedError(this.closedEvent.reason || "closed");
    await this.control.write(encodeFrame(frame));
  }

  private protocolViolation(reason: string, code: number = ERROR_CODES.PROTOCOL_VIOLATION): void {
    this.transport.close(code, reason);
    this.emitClosed(codeName(code), `relay broke the protocol: ${reason}`, []);
  }

  private async readControl(reader: AsyncIterator<Uint8Array>, decoder: FrameDecoder): Promise<void> {
    for (;;) {
      let frame: Frame | undefined;
      try {
        frame = await nextFrame(reader, decoder);
      } catch (err) {
        if (err instanceof WireError) this.protocolViolation(err.message, wireCode(err));
        return;
      }
      if (!frame) return; // the transport's `closed` reports why
      switch (frame.type) {
        case "ANNOUNCE_OK": {
          const waiter = this.pending.get(frame.trackId);
          if (!waiter) {
            this.protocolViolation("ANNOUNCE_OK for no ANNOUNCE");
            return;
          }
          this.pending.delete(frame.trackId);
          waiter.resolve(frame.track);
          break;
        }
        case "TRACK_ADDED": {
          const { type: _type, ...track } = frame;
          this.emit({ type: "track-added", track });
          break;
        }
        case "TRACK_REMOVED":
          this.emit({ type: "track-removed", track: frame.track });
          break;
        case "SUBSCRIPTION_STATE":
          this.emit({
            type: "subscription-state",
            state: frame.state,
            code: frame.code === 0 ? undefined : codeName(frame.code),
            message: frame.message,
          });
          break;
        case "ERROR":
          // The relay closes right after; close our side with 0 once read.
          this.emitClosed(codeName(frame.code), frame.message, frame.redirect);
          this.transport.close(0, "closing after relay error");
          return;
        default:
          this.protocolViolation(`unexpected ${frame.type} from the relay`);
          return;
      }
    }
  }

  private async readDatagrams(): Promise<void> {
    for await (const datagram of this.transport.datagrams) {
      const media = parseMediaDatagram(datagram);
      if (!media) {
        this.malformedDatagrams++;
        continue;
      }
      this.emit({ type: "media", header: media.header, payload: media.payload });
    }
  }

  private async readMessageStreams(): Promise<void> {
    for await (const stream of this.transport.incomingUni) {
      void this.readMessages(stream);
    }
  }

  private async readMessages(stream: AsyncIterable<Uint8Array>): Promise<void> {
    const decoder = new MessageDecoder(this.welcome.maxMessageBytes);
    try {
      for await (const chunk of stream) {
        decoder.push(chunk);
        for (let message = decoder.next(); message; message = decoder.next()) {
          this.emit({ type: "message", track: message.track, payload: message.payload });
        }
      }
    } catch (err) {
      if (err instanceof WireError) this.protocolViolation(err.message, wireCode(err));
    }
  }

  /** Announces a track; resolves to the relay-assigned key to send media with. */
  async announce(kind: TrackKind, name: string, e2ee = false): Promise<bigint> {
    const trackId = this.nextTrackId++;
    const key = new Promise<bigint>((resolve, reject) => this.pending.set(trackId, { resolve, reject }));
    await this.send({ type: "ANNOUNCE", trackId, kind, e2ee, name });
    return key;
  }

  /** Withdraws a track. */
  async unannounce(track: bigint): Promise<void> {
    await this.send({ type: "UNANNOUNCE", track });
  }

  /** Subscribes to the channel's tracks, current and future. */
  async subscribe(): Promise<void> {
    await this.send({ type: "SUBSCRIBE" });
  }

  /** Stops receiving the channel's media. */
  async unsubscribe(): Promise<void> {
    await this.send({ type: "UNSUBSCRIBE" });
  }

  /**
   * Sends one media datagram (dropped rather than delayed under
   * congestion). Throws {@link TooLargeError} above {@link maxMediaPayload}.
   */
  sendMedia(track: bigint, seq: bigint | number, timestampUs: bigint | number, payload: Uint8Array): void {
    if (payload.length > this.maxMediaPayload) throw new TooLargeError(payload.length, this.maxMediaPayload);
    if (this.closedEvent) throw new ClosedError(this.closedEvent.reason || "closed");
    this.transport.sendDatagram(
      encodeMediaDatagram({ track, seq: BigInt(seq), timestampUs: BigInt(timestampUs) }, payload),
    );
  }

  /** Sends one reliable, ordered message on the track. */
  sendMessage(track: bigint, payload: Uint8Array): Promise<void> {
    const max = this.welcome.maxMessageBytes;
    if (payload.length > max) return Promise.reject(new TooLargeError(payload.length, max));
    if (this.closedEvent) return Promise.reject(new ClosedError(this.closedEvent.reason || "closed"));
    const first = this.messages === undefined;
    if (first) this.messages = this.transport.openUni();
    const writer = this.messages!;
    const bytes = encodeMessage(track, payload);
    const run = this.messageChain.then(async () => {
      const stream = await writer;
      if (first) await stream.write(encodeMessageStreamHeader());
      await stream.write(bytes);
    });
    this.messageChain = run.catch(() => undefined);
    return run;
  }

  /** Leaves cleanly: `GOODBYE`, a short wait for the relay's close, then close(0). */
  async close(): Promise<void> {
    if (!this.closedEvent) {
      try {
        await this.send({ type: "GOODBYE" });
        await Promise.race([
          this.transport.closed,
          new Promise((resolve) => setTimeout(resolve, CLOSE_GRACE_MS)),
        ]);
      } catch {
        // the session is going anyway
      }
    }
    this.transport.close(0, "bye");
    this.emitClosed(undefined, "closed by the client", []);
  }
}

/** Tries WebTransport, then the fallback when the first cannot connect. */
async function attemptWithFallback(
  connectors: TransportConnector[],
  target: Target,
  join: Join,
  sdk: SdkInfo,
  timeoutMs: number,
): Promise<Attempt> {
  let last: unknown;
  for (const connector of connectors) {
    try {
      return await attempt(connector, target, join, sdk, timeoutMs);
    } catch (err) {
      // A refusal is the relay's answer, whatever carried it.
      if (err instanceof RefusedError) throw err;
      last = err;
    }
  }
  throw last;
}

/** A track as a {@link Session} knows it across reconnections. */
export interface TrackHandle {
  readonly kind: TrackKind;
  readonly name: string;
  readonly e2ee: boolean;
  /** The key on the current connection. */
  key: bigint;
}

/** Options of a {@link Session}. */
export interface SessionOptions extends ClientOptions {
  /** Rounds over the targets before giving up (default 10). */
  reconnectRounds?: number;
  /** Pause between rounds, in ms (default 200). */
  reconnectPauseMs?: number;
}

/**
 * A {@link Client} that survives the loss of its node: when the session
 * closes (node gone, `SHUTTING_DOWN`, `GEOFENCE_REVOKED`), it connects to the
 * suggested nodes or else to its other targets, re-announces its tracks
 * (their keys change; handles stay) and restores its subscription.
 * `UNAUTHORIZED` and `GEOFENCE_DENIED` end it.
 */
export class Session {
  private readonly listeners = new Set<Listener>();
  private readonly tracks: TrackHandle[] = [];
  private subscribed = false;
  private ended = false;
  /** Reconnections so far. */
  reconnects = 0;

  private constructor(
    private current: Client,
    private readonly targets: Target[],
    private readonly join: Join,
    private readonly options: SessionOptions,
  ) {
    this.attach(current);
  }

  static async connect(targets: Target[], join: Join, options: SessionOptions = {}): Promise<Session> {
    return new Session(await Client.connect(targets, join, options), targets, join, options);
  }

  /** The current connection. */
  get client(): Client {
    return this.current;
  }

  on<T extends ClientEventType>(type: T, handler: (event: EventOf<T>) => void): () => void {
    const listener: Listener = (event) => {
      if (event.type === type) handler(event as EventOf<T>);
    };
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private emit(event: ClientEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  private attach(client: Client): void {
    client.on("closed", (event) => void this.lost(client, event));
    for (const type of ["track-added", "track-removed", "media", "message", "subscription-state"] as const) {
      client.on(type, (event) => this.emit(event));
    }
  }

  private async lost(client: Client, event: EventOf<"closed">): Promise<void> {
    if (client !== this.current || this.ended) return;
    if (event.code && FINAL_CODES.has(event.code)) {
      this.ended = true;
      this.emit(event);
      return;
    }
    try {
      await this.reconnect(event.redirect);
      this.emit({ type: "reconnected", node: this.current.node, transport: this.current.transportKind });
    } catch (err) {
      this.ended = true;
      const code = err instanceof RefusedError ? err.code : event.code;
      this.emit({ type: "closed", code, reason: (err as Error).message, redirect: [] });
    }
  }

  /** Connects again: first to `preferred`, then to the other targets, the lost node last. */
  async reconnect(preferred: Target[] = []): Promise<void> {
    const lost = this.current.node;
    const targets = [
      ...preferred,
      ...this.targets.filter((t) => t.node !== lost),
      ...this.targets.filter((t) => t.node === lost),
    ];
    const rounds = this.options.reconnectRounds ?? 10;
    let last: unknown = new ConnectError("no target");
    for (let round = 0; round < rounds; round++) {
      try {
        const client = await Client.connect(targets, this.join, this.options);
        this.current = client;
        this.attach(client);
        for (const track of this.tracks) {
          track.key = await client.announce(track.kind, track.name, track.e2ee);
        }
        if (this.subscribed) await client.subscribe();
        this.reconnects++;
        return;
      } catch (err) {
        if (err instanceof RefusedError && FINAL_CODES.has(err.code)) throw err;
        last = err;
      }
      await new Promise((resolve) => setTimeout(resolve, this.options.reconnectPauseMs ?? 200));
    }
    throw last;
  }

  /** Announces a track that is re-announced after every reconnection. */
  async announce(kind: TrackKind, name: string, e2ee = false): Promise<TrackHandle> {
    const key = await this.current.announce(kind, name, e2ee);
    const handle: TrackHandle = { kind, name, e2ee, key };
    this.tracks.push(handle);
    return handle;
  }

  /** Subscribes now and after every reconnection. */
  async subscribe(): Promise<void> {
    this.subscribed = true;
    await this.current.subscribe();
  }

  sendMedia(track: TrackHandle, seq: bigint | number, timestampUs: bigint | number, payload: Uint8Array): void {
    this.current.sendMedia(track.key, seq, timestampUs, payload);
  }

  sendMessage(track: TrackHandle, payload: Uint8Array): Promise<void> {
    return this.current.sendMessage(track.key, payload);
  }

  async close(): Promise<void> {
    this.ended = true;
    await this.current.close();
  }
}

