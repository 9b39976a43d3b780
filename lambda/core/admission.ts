/**
 * Load shedding at admission: a burst gets answers or 429s, never 503s from a store that timed out under it.
 *
 *   request ──► key lane (≤ perKeyInFlight at once, ≤ perKeyQueued waiting) ──► instance lane (≤ maxInFlight,
 *               ≤ maxQueued waiting) ──► the store's admission calls (limits, reserve)
 *        full lane, or waited longer than maxWaitMs ──► 429 `gateway_busy`, Retry-After: 1, x-should-retry: true
 *
 * Requests of one key contend for the same counter items anyway (DynamoDB cancels concurrent transactions on
 * one item), so queueing them per key in the instance costs nothing and spares the store conflict retries.
 * A reserve that still loses to conflicts in other instances is shed the same way: the store was reachable and
 * nothing was written, so spend is verified (429), not unverifiable (503).
 */
import { RateLimitError, StoreUnavailableError } from './errors';
import type { LoopOverrides } from './guardrails/settings';
import type { CounterRef, CounterValue, LeaseUse, Ledger, Reservation, ReserveInput, SettleInput } from './stores';
import type { BudgetLimits, ScopeId, StoredLimits, UNLIMITED } from './types';
import type { Window } from './windows';

/** Bounds of the admission lanes of one gateway instance. */
export interface AdmissionOptions {
  /**
   * Store admission calls in flight at once in this instance.
   * @default 64
   */
  readonly maxInFlight?: number;
  /**
   * Calls waiting for the instance lane before new ones are shed.
   * @default 512
   */
  readonly maxQueued?: number;
  /**
   * Reserves of one key in flight at once in this instance.
   * @default 4
   */
  readonly perKeyInFlight?: number;
  /**
   * Reserves of one key waiting before new ones of that key are shed.
   * @default 64
   */
  readonly perKeyQueued?: number;
  /**
   * Longest wait in a lane before the request is shed (below the store client's timeouts).
   * @default 5_000
   */
  readonly maxWaitMs?: number;
}

export const DEFAULT_ADMISSION: Required<AdmissionOptions> = {
  maxInFlight: 64,
  maxQueued: 512,
  perKeyInFlight: 4,
  perKeyQueued: 64,
  maxWaitMs: 5_000,
};

/** The 429 a shed request gets. */
export function gatewayBusy(what: string): RateLimitError {
  return new RateLimitError(`The gateway is busy with ${what}; retry shortly.`, {
    code: 'gateway_busy',
    headers: { 'Retry-After': '1', 'x-should-retry': 'true' },
  });
}

interface Waiter {
  readonly grant: () => void;
  readonly timer: ReturnType<typeof setTimeout> | undefined;
}

/** A counting semaphore with a bounded FIFO queue and a bounded wait. */
export class AdmissionLane {
  private inFlight = 0;
  private readonly queue: Waiter[] = [];

  constructor(
    private readonly limits: { readonly inFlight: number; readonly queued: number; readonly maxWaitMs: number },
    private readonly what: string,
  ) {}

  /** Calls in flight plus waiting (0 = idle, safe to forget). */
  get load(): number {
    return this.inFlight + this.queue.length;
  }

  /** Runs `fn` once a slot is free; throws the 429 when the queue is full or the wait too long. */
  async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.acquire();
    try {
      return await fn();
    } finally {
      this.release();
    }
  }

  private acquire(): Promise<void> {
    if (this.inFlight < this.limits.inFlight) {
      this.inFlight++;
      return Promise.resolve();
    }
    if (this.queue.length >= this.limits.queued) return Promise.reject(gatewayBusy(this.what));
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => {
          if (waiter.timer) clearTimeout(waiter.timer);
          resolve();
        },
        timer:
          this.limits.maxWaitMs > 0
            ? setTimeout(() => {
                const at = this.queue.indexOf(waiter);
                if (at >= 0) this.queue.splice(at, 1);
                reject(gatewayBusy(this.what));
              }, this.limits.maxWaitMs)
            : undefined,
      };
      this.queue.push(waiter);
    });
  }

  private release(): void {
    const next = this.queue.shift();
    // The slot passes straight to the next waiter; inFlight stays the same.
    if (next) next.grant();
    else this.inFlight--;
  }
}

/**
 * Admission lanes of one instance: one for the instance, one per key (created on demand, forgotten when idle).
 */
export class AdmissionGate {
  private readonly options: Required<AdmissionOptions>;
  private readonly instance: AdmissionLane;
  private readonly keys = new Map<string, AdmissionLane>();

  constructor(options: AdmissionOptions = {}) {
    this.options = { ...DEFAULT_ADMISSION, ...stripUndefined(options) };
    for (const [name, value] of Object.entries(this.options)) {
      if (!Number.isInteger(value) || value < (name === 'maxWaitMs' || name.endsWith('Queued') ? 0 : 1)) {
        throw new RangeError(`admission ${name} must be a whole number${name === 'maxWaitMs' ? '' : ' ≥ 1'}, got ${value}`);
      }
    }
    this.instance = new AdmissionLane(
      { inFlight: this.options.maxInFlight, queued: this.options.maxQueued, maxWaitMs: this.options.maxWaitMs },
      'other requests',
    );
  }

  /** Runs an admission call in the instance lane. */
  instanceLane<T>(fn: () => Promise<T>): Promise<T> {
    return this.instance.run(fn);
  }

  /** Runs an admission call in the key's lane, then the instance lane. */
  async keyLane<T>(keyId: string, fn: () => Promise<T>): Promise<T> {
    let lane = this.keys.get(keyId);
    if (!lane) {
      lane = new AdmissionLane(
        { inFlight: this.options.perKeyInFlight, queued: this.options.perKeyQueued, maxWaitMs: this.options.maxWaitMs },
        'requests of this key',
      );
      this.keys.set(keyId, lane);
    }
    try {
      return await lane.run(() => this.instance.run(fn));
    } finally {
      if (lane.load === 0) this.keys.delete(keyId);
    }
  }
}

/**
 * The {@link Ledger} behind admission lanes: reserve runs in its key's lane; limit and override reads in the
 * instance lane, and identical reads in flight are shared (a burst at a cold cache reads each item once). A
 * reserve that lost only to conflicts becomes the 429 of a shed request. Settle, sweep and reports pass straight
 * through: they are never shed.
 */
export class AdmittingLedger implements Ledger {
  private readonly limitsInFlight = new Map<string, Promise<Map<ScopeId, BudgetLimits>>>();
  private readonly settingsInFlight = new Map<string, Promise<Map<ScopeId, StoredLimits>>>();
  private readonly overridesInFlight = new Map<string, Promise<Map<string, LoopOverrides>>>();

  constructor(
    private readonly inner: Ledger,
    private readonly gate: AdmissionGate,
  ) {}

  async reserve(input: ReserveInput): Promise<Reservation> {
    try {
      return await this.gate.keyLane(input.context.keyId, () => this.inner.reserve(input));
    } catch (err) {
      if (err instanceof StoreUnavailableError && err.code === 'store_contention') throw gatewayBusy('requests on the same budget');
      throw err;
    }
  }

  getLimits(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>> {
    return shared(this.limitsInFlight, [...scopes].sort().join('\n'), () => this.gate.instanceLane(() => this.inner.getLimits(scopes)));
  }

  getLimitSettings(scopes: readonly ScopeId[]): Promise<Map<ScopeId, StoredLimits>> {
    return shared(this.settingsInFlight, [...scopes].sort().join('\n'), () =>
      this.gate.instanceLane(() => this.inner.getLimitSettings(scopes)),
    );
  }

  getLoopOverrides(keyIds: readonly string[]): Promise<Map<string, LoopOverrides>> {
    return shared(this.overridesInFlight, [...keyIds].sort().join('\n'), () =>
      this.gate.instanceLane(() => this.inner.getLoopOverrides(keyIds)),
    );
  }

  settle(input: SettleInput): Promise<void> {
    return this.inner.settle(input);
  }

  leaseUseOf(requestId: string): LeaseUse | undefined {
    return this.inner.leaseUseOf?.(requestId);
  }

  readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]> {
    return this.inner.readCounters(refs);
  }

  setLoopOverrides(keyId: string, overrides: { readonly maxRepeats?: number | null; readonly maxFailures?: number | null }): Promise<void> {
    return this.inner.setLoopOverrides(keyId, overrides);
  }

  setLimit(scope: ScopeId, window: Window, limit: number | typeof UNLIMITED | null): Promise<void> {
    return this.inner.setLimit(scope, window, limit);
  }

  sweepExpired(now: number): Promise<number> {
    return this.inner.sweepExpired(now);
  }
}

/** One promise per key while it is pending: concurrent identical reads share it. */
function shared<T>(inFlight: Map<string, Promise<T>>, key: string, read: () => Promise<T>): Promise<T> {
  const pending = inFlight.get(key);
  if (pending) return pending;
  const started = read().finally(() => inFlight.delete(key));
  inFlight.set(key, started);
  return started;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
