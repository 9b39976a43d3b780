/**
 * Virtual time for simulations that run real code against a real store (bench:scale).
 *
 *   timers (virtual)      ──► fired in time order; time jumps straight to the next one
 *   real I/O (DynamoDB Local) ──► tracked with the virtual time its answer is due; time never passes a
 *                                 pending call's due time, so no caller can see an answer "from the future"
 *
 * The loop: drain everything runnable (microtasks and I/O callbacks, via setImmediate), then either wait for
 * the pending real call due first (when it is due no later than the next timer) or jump to the next timer.
 * Calls due later than the next timer do not hold time back, so real calls overlap (DynamoDB Local serves
 * them in parallel) while virtual time moves on: a 10 ms virtual transaction costs whatever the real call
 * costs, and many of them run at once.
 */
import type { Clock } from '../../lambda/core/clock';

interface Timer {
  readonly at: number;
  readonly seq: number;
  readonly fire: () => void;
}

interface PendingReal {
  readonly dueAt: number;
  readonly settled: Promise<void>;
}

/** A virtual clock with a scheduler: `now()` moves only when {@link run} jumps to the next timer. */
export class VirtualScheduler implements Clock {
  private current: number;
  private seq = 0;
  private readonly heap: Timer[] = [];
  private readonly pending = new Set<PendingReal>();
  /** Real calls made through {@link real}, for the report. */
  realCalls = 0;

  constructor(startMs: number) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  /** Resolves after `ms` of virtual time (at once when `ms` ≤ 0, still asynchronously). */
  sleep = (ms: number): Promise<void> => this.sleepUntil(this.current + Math.max(0, ms));

  /** Resolves once virtual time reaches `at`. */
  sleepUntil(at: number): Promise<void> {
    return new Promise<void>((resolve) => this.schedule(at, resolve));
  }

  /** Runs `fire` when virtual time reaches `at` (never earlier than now). */
  schedule(at: number, fire: () => void): void {
    this.push({ at: Math.max(at, this.current), seq: this.seq++, fire });
  }

  /**
   * Tracks a real call whose answer the simulation hands out at virtual time `dueAt`: time does not pass
   * `dueAt` until the call has settled.
   */
  real<T>(dueAt: number, call: Promise<T>): Promise<T> {
    this.realCalls++;
    const entry: PendingReal = {
      dueAt,
      settled: call.then(
        () => undefined,
        () => undefined,
      ),
    };
    this.pending.add(entry);
    void entry.settled.then(() => this.pending.delete(entry));
    return call;
  }

  /**
   * Runs until `done()` holds with nothing left to run, or until there is nothing left at all. Bounded: throws
   * when `maxVirtualMs` of virtual time pass (a simulation that never ends is a bug, not a result).
   */
  async run(options: { readonly maxVirtualMs: number; readonly done?: () => boolean }): Promise<void> {
    const deadline = this.current + options.maxVirtualMs;
    for (;;) {
      await drain();
      const next = this.heap[0];
      let firstDue: PendingReal | undefined;
      for (const p of this.pending) if (!firstDue || p.dueAt < firstDue.dueAt) firstDue = p;
      if (firstDue && (!next || firstDue.dueAt <= next.at)) {
        await firstDue.settled;
        // Let the continuation of the call (which schedules its virtual answer) run before deciding again.
        await drain();
        continue;
      }
      if (!next) {
        if (this.pending.size === 0) return;
        continue;
      }
      if (options.done?.() && this.pending.size === 0) return;
      if (next.at > deadline) throw new Error(`simulation still running after ${options.maxVirtualMs} ms of virtual time`);
      this.current = next.at;
      // Fire every timer due now, in the order they were set.
      while (this.heap.length > 0 && this.heap[0]!.at <= this.current) this.pop().fire();
    }
  }

  private push(timer: Timer): void {
    const h = this.heap;
    h.push(timer);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private pop(): Timer {
    const h = this.heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: Timer, b: Timer): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/** Lets every microtask and already-due I/O callback run (two passes: a callback may queue another). */
async function drain(): Promise<void> {
  for (let i = 0; i < 2; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** A seeded generator (same seed, same run), uniform in [0, 1). */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    // mulberry32
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** A log-normal sample with the given median and 99th percentile (both > 0, p99 ≥ median). */
export function logNormal(random: () => number, median: number, p99: number): number {
  const sigma = Math.log(p99 / median) / 2.326;
  // Box–Muller
  const u = Math.max(random(), 1e-12);
  const v = random();
  const z = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  return median * Math.exp(sigma * z);
}
