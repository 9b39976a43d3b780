/**
 * Post-response work, awaited deterministically. The local server settles a request (usage record, counters,
 * loop-guard counts, tier alerts and circuits, lastUsedAt, request observers) after the last byte went to the
 * client, so a client can see its answer before that work is done. Tests never sleep or poll for it: they hand
 * `onRequest` to createLocalServer and `await settled()` before reading what settlement writes.
 */
export interface InFlightRequests {
  /** For createLocalServer's `onRequest`: remembers each request's lifetime promise until it ends. */
  readonly onRequest: (done: Promise<void>) => void;
  /** Resolves when every request so far has finished, settlement included (and any that start meanwhile). */
  settled(): Promise<void>;
  /** Requests still running, settlement included. */
  readonly size: number;
}

export function trackInFlight(): InFlightRequests {
  const pending = new Set<Promise<void>>();
  return {
    onRequest(done) {
      pending.add(done);
      void done.finally(() => pending.delete(done));
    },
    async settled() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
    get size() {
      return pending.size;
    },
  };
}
