/**
 * A provider's stream on its way to the caller. The preamble (events that carry no output yet) is held back,
 * at most PREAMBLE_MAX_BYTES, until the first real event: an error the provider sends before any token then
 * becomes its error in the caller's dialect (and a fallback may answer) instead of an empty 200. After that,
 * bytes pass through as they arrive, and how the stream ended is noted for settle: an error event later is a
 * failure too, and a caller that stops reading stops the upstream.
 */
import type { Clock } from '../clock';
import { isPreamble, type StreamError, streamErrorOf } from '../stream-errors';
import { SseParser } from '../../providers/sse';
import type { UsageOutcome } from '../types';

/** The most of a stream's preamble held back while waiting for its first real event (then it flows as is). */
export const PREAMBLE_MAX_BYTES = 16_384;

export type StreamStart =
  /** The stream broke before any output reached the caller. */
  | { readonly kind: 'broken'; readonly cause: unknown }
  /** The provider sent an error event before any output. */
  | { readonly kind: 'provider_error'; readonly error: StreamError }
  /** Output started: `body` relays it; `ended()` tells how it ended once the body is done. */
  | { readonly kind: 'flowing'; readonly body: AsyncIterable<Uint8Array>; readonly ended: () => { outcome: UsageOutcome; endedAt: number } };

export interface RelayOptions {
  readonly clock: Clock;
  /** The outcome of a failure now: the caller left, the upstream timed out, or the provider failed. */
  readonly failureOutcome: () => UsageOutcome;
  readonly clientSignal: AbortSignal;
  /** Stops the upstream call (the caller stopped reading, or the stream failed before output). */
  readonly abortUpstream: () => void;
}

export async function startStream(upstream: AsyncIterable<Uint8Array>, o: RelayOptions): Promise<StreamStart> {
  const source = upstream[Symbol.asyncIterator]();
  const sse = new SseParser();
  const held: Uint8Array[] = [];
  let heldBytes = 0;
  let early: StreamError | undefined;
  let sourceDone = false;
  // An error after the first real event counts as one that reached the caller, even in the same chunk.
  let failedInStream = false;
  try {
    let started = false;
    while (!started && !early && heldBytes < PREAMBLE_MAX_BYTES) {
      const next = await source.next();
      if (next.done) {
        sourceDone = true;
        break;
      }
      held.push(next.value);
      heldBytes += next.value.byteLength;
      for (const event of sse.push(next.value)) {
        const error = streamErrorOf(event);
        if (error && !started) early ??= error;
        else if (error) failedInStream = true;
        else if (!isPreamble(event)) started = true;
      }
    }
  } catch (cause) {
    o.abortUpstream();
    return { kind: 'broken', cause };
  }
  if (early) {
    o.abortUpstream();
    await source.return?.(undefined);
    return { kind: 'provider_error', error: early };
  }

  const state: { outcome: UsageOutcome; endedAt: number } = { outcome: 'stream_incomplete', endedAt: o.clock.now() };
  async function* relay(): AsyncGenerator<Uint8Array> {
    let completed = false;
    try {
      for (const chunk of held) yield chunk;
      if (!sourceDone) {
        for (;;) {
          const next = await source.next();
          if (next.done) break;
          if (!failedInStream) for (const event of sse.push(next.value)) if (streamErrorOf(event)) failedInStream = true;
          yield next.value;
        }
      }
      if (!failedInStream) for (const event of sse.end()) if (streamErrorOf(event)) failedInStream = true;
      completed = true;
    } catch (err) {
      const failure = o.failureOutcome();
      state.outcome = failure === 'upstream_error' ? 'stream_incomplete' : failure;
      throw err;
    } finally {
      if (completed) state.outcome = failedInStream ? 'upstream_error' : 'ok';
      else if (o.clientSignal.aborted && state.outcome === 'stream_incomplete') state.outcome = 'client_disconnected';
      state.endedAt = o.clock.now();
      // The caller stopped reading: stop the upstream generating tokens nobody will read.
      if (!completed) {
        o.abortUpstream();
        await source.return?.(undefined);
      }
    }
  }
  return { kind: 'flowing', body: relay(), ended: () => state };
}
