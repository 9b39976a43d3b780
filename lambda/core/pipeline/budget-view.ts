/**
 * What a request may tell its caller about the budget left (`x-tollgate-budget-remaining-usd`) and what a
 * gateway-chosen output cap may spend, without putting a store read on the critical path: the limited
 * counters are read after the hold, alongside the provider's work, and the last values this instance read
 * answer when that read is not back yet.
 */
import type { Clock } from '../clock';
import { formatUsd, type MicroUsd } from '../money';
import type { CounterRef, CounterValue, Ledger, RateState, Reservation } from '../stores';
import type { BudgetLimits, ScopeId } from '../types';

export interface Tightest {
  readonly scope: string;
  readonly remaining: MicroUsd;
}

/** The read after a hold, and the tightest remaining budget as soon as it can be told. */
export interface ReadBack {
  /** The limited counters after the hold (undefined when unreadable); settle's tier check waits for it. */
  readonly afterHold: Promise<CounterValue[] | undefined>;
  /** The tightest budget left: from the read-back once it is in, else from what this instance read before. */
  readonly remaining: () => Tightest | undefined;
}

export class BudgetView {
  /** Last committed value read per counter, to answer the remaining-budget headers without a read. */
  private readonly knownCommitted = new Map<string, { committed: MicroUsd; at: number }>();
  /** The read-back of each recent lease or scope pool (see sharedReadBack). */
  private readonly sharedReads = new Map<string, Promise<CounterValue[] | undefined>>();

  constructor(
    private readonly ledger: Pick<Ledger, 'readCounters'>,
    private readonly clock: Clock,
    private readonly platformShards: number,
  ) {}

  /**
   * Starts the read of a reservation's limited counters (off the critical path). Shared per lease, and per
   * scope pool (whose grants hold more than its requests take).
   */
  readBack(reservation: Reservation, limits: Map<ScopeId, BudgetLimits>): ReadBack {
    const shared = reservation.leaseId ?? (reservation.pool ? `${reservation.pool.pk}|${reservation.pool.sk}` : undefined);
    const afterHold = shared ? this.sharedReadBack(reservation, shared) : this.readLimited(reservation);
    let values: CounterValue[] | undefined;
    void afterHold.then((read) => {
      values = read;
      if (read) this.remember(read);
    });
    return { afterHold, remaining: () => (values ? tightestOf(values, limits) : this.knownRemaining(reservation, limits)) };
  }

  /**
   * The tightest budget left among a request's counters, from the values last read here (or the whole limit
   * when none was read): what a gateway-chosen output cap may spend. Platform shards count their share.
   */
  remainingOf(counters: readonly CounterRef[]): { remainingMicros?: MicroUsd } {
    let tightest: number | undefined;
    for (const c of counters) {
      if (c.limit === undefined) continue;
      const committed = this.knownCommitted.get(counterIdentity(c))?.committed ?? 0;
      const share = c.scope === 'platform' ? committed / this.platformShards : committed;
      const left = Math.max(0, c.limit - Math.ceil(share));
      if (tightest === undefined || left < tightest) tightest = left;
    }
    return tightest === undefined ? {} : { remainingMicros: tightest };
  }

  /** Keeps the committed values just read, for later requests' headers. */
  private remember(values: readonly CounterValue[]): void {
    const now = this.clock.now();
    if (this.knownCommitted.size > 10_000) this.knownCommitted.clear();
    for (const v of values) {
      const key = counterIdentity(v.ref);
      const known = this.knownCommitted.get(key);
      if (!known || known.at <= now) this.knownCommitted.set(key, { committed: v.committed, at: now });
    }
  }

  /**
   * The tightest remaining budget without a store read: each limited counter's last value this instance read
   * (in an earlier request's read-back, which included that request's hold) plus this request's hold, or just
   * this hold when the counter was never read here. Advisory: other instances' spend since then is not in it.
   */
  private knownRemaining(reservation: Reservation, limits: Map<ScopeId, BudgetLimits>): Tightest | undefined {
    const values: CounterValue[] = [];
    for (const ref of reservation.counters) {
      if (ref.limit === undefined) continue;
      const known = this.knownCommitted.get(counterIdentity(ref))?.committed ?? 0;
      values.push({ ref, spent: 0, reserved: 0, requests: 0, committed: known + reservation.amount });
    }
    return tightestOf(values, limits);
  }

  /**
   * The read-back of a request admitted against a lease or taken from a scope pool: one read per lease or pool
   * (taken after its hold or grant, so it includes what that holds: an upper bound of what its requests can
   * add), shared by its requests.
   */
  private sharedReadBack(reservation: Reservation, holder: string): Promise<CounterValue[] | undefined> {
    const known = this.sharedReads.get(holder);
    if (known) return known;
    if (this.sharedReads.size >= 1_000) this.sharedReads.clear();
    const read = this.readLimited(reservation);
    this.sharedReads.set(holder, read);
    return read;
  }

  /** The values of the reservation's limited counters (empty when none is limited, undefined when unreadable). */
  private async readLimited(reservation: Reservation): Promise<CounterValue[] | undefined> {
    const limited = reservation.counters.filter((c) => c.limit !== undefined);
    if (limited.length === 0) return [];
    return this.ledger.readCounters(limited).catch(() => undefined);
  }
}

/** A counter as read back: platform shards are summed into one value per window, so the shard is not part of it. */
function counterIdentity(ref: CounterRef): string {
  return `${ref.scope}|${ref.windowKey}`;
}

/** The tightest remaining budget among counter values (for the response headers). */
function tightestOf(values: readonly CounterValue[], limits: Map<ScopeId, BudgetLimits>): Tightest | undefined {
  let tightest: Tightest | undefined;
  for (const v of values) {
    const limit = limits.get(v.ref.scope)?.[v.ref.window];
    if (limit === undefined) continue;
    const left = limit - v.committed;
    if (!tightest || left < tightest.remaining) tightest = { scope: `${v.ref.scope}/${v.ref.window}`, remaining: left };
  }
  return tightest;
}

/** The remaining-budget headers; `refund` is what this request's settle will give back of its hold. */
export function budgetHeaders(tightest: Tightest | undefined, refund: MicroUsd): Record<string, string> {
  if (!tightest) return {};
  return {
    'x-tollgate-budget-remaining-usd': formatUsd(Math.max(0, tightest.remaining + refund)),
    'x-tollgate-budget-scope': tightest.scope,
  };
}

/** OpenAI-style rate-limit headers from the buckets a request was charged against. */
export function rateHeaders(states: readonly RateState[]): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const s of states) {
    headers[`x-ratelimit-limit-${s.dimension}`] = String(s.limit);
    headers[`x-ratelimit-remaining-${s.dimension}`] = String(Math.max(0, s.remaining));
    headers[`x-ratelimit-reset-${s.dimension}`] = `${Math.max(0, Math.ceil(s.resetMs / 1000))}s`;
  }
  return headers;
}
