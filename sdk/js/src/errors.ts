/**
 * Error codes of georelay/1 (docs/PROTOCOL.md §7) and the SDK's typed errors.
 * Names are stable and never reused; a number the SDK does not know is kept
 * as `UNKNOWN_<n>` so callers can still tell codes apart.
 */

/** The stable code names, by wire number. */
export const ERROR_CODES = {
  UNAUTHORIZED: 1,
  GEOFENCE_REDIRECT: 2,
  GEOFENCE_DENIED: 3,
  ROUTE_UNAVAILABLE: 4,
  GEOFENCE_REVOKED: 5,
  PROTOCOL_VIOLATION: 6,
  LIMIT_EXCEEDED: 7,
  NOT_FOUND: 8,
  SHUTTING_DOWN: 9,
  UNSUPPORTED_VERSION: 10,
  INTERNAL_ERROR: 11,
} as const;

/** A known stable code name. */
export type KnownErrorCode = keyof typeof ERROR_CODES;
/** A code name, or `UNKNOWN_<n>` for a number this SDK does not know. */
export type ErrorCodeName = KnownErrorCode | `UNKNOWN_${number}`;

const NAMES = new Map<number, KnownErrorCode>(
  Object.entries(ERROR_CODES).map(([name, code]) => [code, name as KnownErrorCode]),
);

/** The name of a wire code (never called with 0, the normal close). */
export function codeName(code: number): ErrorCodeName {
  return NAMES.get(code) ?? `UNKNOWN_${code}`;
}

/** The wire number of a code name. */
export function codeNumber(name: KnownErrorCode): number {
  return ERROR_CODES[name];
}

/** A node to connect to: the node id and its address (`ip:port`, `[ipv6]:port`). */
export interface Target {
  node: string;
  addr: string;
}

/** Base class of every error the SDK throws. */
export class GeorelayError extends Error {
  override name = "GeorelayError";
}

/** The relay refused (an `ERROR` frame or an application close) with a stable code. */
export class RefusedError extends GeorelayError {
  override name = "RefusedError";
  constructor(
    readonly code: ErrorCodeName,
    readonly reason: string,
    readonly redirect: Target[] = [],
  ) {
    super(`${code}: ${reason}`);
  }
}

/** No connection could be made to any target. */
export class ConnectError extends GeorelayError {
  override name = "ConnectError";
}

/** A payload is larger than the relay accepts (nothing was sent). */
export class TooLargeError extends GeorelayError {
  override name = "TooLargeError";
  constructor(
    readonly length: number,
    readonly max: number,
  ) {
    super(`payload of ${length} bytes exceeds the limit of ${max}`);
  }
}

/** The connection is gone. */
export class ClosedError extends GeorelayError {
  override name = "ClosedError";
}

/**
 * Malformed input: a peer broke the protocol (`PROTOCOL_VIOLATION`) or
 * announced a size over a limit (`LIMIT_EXCEEDED`).
 */
export class WireError extends GeorelayError {
  override name = "WireError";
  constructor(
    readonly code: "PROTOCOL_VIOLATION" | "LIMIT_EXCEEDED",
    message: string,
  ) {
    super(`${code}: ${message}`);
  }
}
