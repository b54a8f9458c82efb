/**
 * `@georelay/client`: the browser SDK of georelay. See the README of the
 * repository and docs/PROTOCOL.md.
 */

export * as codec from "./codec.js";
export type { Frame, MediaHeader, Message, SdkInfo, TrackInfo, TrackKind } from "./codec.js";
export {
  Client,
  Session,
  type ClientEvent,
  type ClientEventType,
  type ClientOptions,
  type Join,
  type SessionOptions,
  type TrackHandle,
} from "./client.js";
export {
  ClosedError,
  codeName,
  codeNumber,
  ConnectError,
  ERROR_CODES,
  GeorelayError,
  RefusedError,
  TooLargeError,
  WireError,
  type ErrorCodeName,
  type KnownErrorCode,
  type Target,
} from "./errors.js";
export {
  FRAME_HEADER_BYTES,
  FrameAssembler,
  packetizeFrame,
  parseFramePart,
  type AssembledFrame,
  type AssemblerOptions,
  type AssemblerStats,
  type FramePart,
} from "./frames.js";
export type { CloseInfo, ControlStream, Transport, TransportConnector, TransportKind, UniWriter } from "./transport.js";
export { hasWebTransport, webTransportConnector, webTransportUrl, type WebTransportOptions } from "./webtransport.js";
export {
  decodeWsMessage,
  encodeWsMessage,
  WebSocketConnection,
  webSocketConnector,
  webSocketUrl,
  WS_MAX_DATAGRAM,
  WS_MAX_MESSAGE,
  WS_SUBPROTOCOL,
  type WebSocketLike,
  type WebSocketOptions,
  type WsMessage,
} from "./websocket.js";
