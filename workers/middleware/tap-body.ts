/**
 * A response body passed through unchanged while a middleware watches it: `onChunk` sees each
 * chunk, `onEnd` runs once, with `true` when the body was read to its end and `false` when it was
 * cancelled or failed (the client went away, the source broke).
 */
export function tapBody(
  body: ReadableStream<Uint8Array>,
  onEnd: (complete: boolean) => void,
  onChunk?: (chunk: Uint8Array) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let ended = false;
  const end = (complete: boolean) => {
    if (ended) return;
    ended = true;
    onEnd(complete);
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            controller.close();
            end(true);
            return;
          }
          onChunk?.(value);
          controller.enqueue(value);
        } catch (e) {
          end(false);
          controller.error(e);
        }
      },
      async cancel(reason) {
        end(false);
        await reader.cancel(reason).catch(() => {});
      },
    },
    { highWaterMark: 0 },
  );
}
