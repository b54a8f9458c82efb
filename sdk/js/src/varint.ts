/**
 * QUIC variable-length integers (RFC 9000 §16), as docs/PROTOCOL.md §2
 * uses them: shortest form on encode, every valid form on decode. Values are
 * `bigint` because track keys use all 62 bits.
 */

/** The largest encodable value, 2^62 − 1. */
export const VARINT_MAX = (1n << 62n) - 1n;

/** The encoded length of `value`. */
export function varintLength(value: bigint): 1 | 2 | 4 | 8 {
  if (value < 0n || value > VARINT_MAX) {
    throw new RangeError(`varint out of range: ${value}`);
  }
  if (value < 64n) return 1;
  if (value < 16384n) return 2;
  if (value < 1073741824n) return 4;
  return 8;
}

/** Appends the shortest encoding of `value` to `out`. */
export function writeVarint(out: number[], value: bigint | number): void {
  const v = BigInt(value);
  const len = varintLength(v);
  const prefix = { 1: 0n, 2: 1n, 4: 2n, 8: 3n }[len];
  const tagged = v | (prefix << BigInt(len * 8 - 2));
  for (let i = len - 1; i >= 0; i--) {
    out.push(Number((tagged >> BigInt(i * 8)) & 0xffn));
  }
}

/**
 * Reads a varint at `offset`. Returns the value and the bytes it used, or
 * `undefined` when `bytes` ends inside it.
 */
export function readVarint(
  bytes: Uint8Array,
  offset: number,
): { value: bigint; length: number } | undefined {
  if (offset >= bytes.length) return undefined;
  const first = bytes[offset]!;
  const length = 1 << (first >> 6);
  if (offset + length > bytes.length) return undefined;
  let value = BigInt(first & 0x3f);
  for (let i = 1; i < length; i++) {
    value = (value << 8n) | BigInt(bytes[offset + i]!);
  }
  return { value, length };
}
