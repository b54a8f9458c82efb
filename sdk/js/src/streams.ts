/** Adapters from WHATWG streams to the async iterables the client reads. */

/** Iterates a ReadableStream, releasing its lock when done. */
export async function* iterate<T>(stream: ReadableStream<T>): AsyncGenerator<T> {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield value;
    }
  } catch {
    return;
  } finally {
    reader.releaseLock();
  }
}
