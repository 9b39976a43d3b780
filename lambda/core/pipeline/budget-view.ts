/**
 * What a request may tell its caller about the budget left (`x-tollgate-budget-remaining-usd`) and what a
 * gateway-chosen output cap may spend.
 *
 * The header is a conservative bound: for each limited counter of the request, `limit − committed`, where
 * `committed` (spend plus every hold, lease slice and pool grant) is read from the store after this request's
 * own hold was written, so it includes every request admitted before this one anywhere; then, for what this
 * instance knows exactly: plus the unused room of the lease the request was admitted against (only this key
 * spends it), plus what this request's settle gives back of its hold when the answer's cost is known (a JSON
 * answer; a stream counts its whole hold as spent). Pool grants and other instances' leases and holds count
 * as spent. The tightest counter is told. Before that read, the earlier settles of this instance on the same
 * counters are awaited, so a key's requests one after another see it fall by exactly what each cost. The
 * read runs alongside the provider's work; the answer waits for it only when the provider is faster. When
 * the read fails, no header is sent rather than a guess.
 */
import type { Clock } from '../clock';
import { formatUsd, type MicroUsd } from '../money';
import type { CounterRef, CounterValue, Ledger, RateState, Reservation } from '../stores';
import type { BudgetLimits, ScopeId } from '../types';

export interface Tightest {
  readonly scope: string;
  readonly remaining: MicroUsd;
}

/** The read after a hold, and the tightest remaining budget once it is in. */
export interface ReadBack {
  /** The limited counters after the hold (undefined when unreadable); settle's tier check waits for it. */
  readonly afterHold: Promise<CounterValue[] | undefined>;
  /**
   * The tightest budget left after this request (see the file header); `refund` is what its settle will give
   * back of its hold (0 when the cost is not known yet). Undefined when no counter is limited or unreadable.
   * Call it before the request is settled (a leased request's lease is looked up).
   */
  readonly remaining: (refund: MicroUsd) => Promise<Tightest | undefined>;
}

export class BudgetView {
  /** Last committed value read per counter, for gateway-chosen output caps (see remainingOf). */
  private readonly knownCommitted = new Map<string, { committed: MicroUsd; at: number }>();
  /** The read-back of each recent lease or scope pool (see sharedReadBack). */
  private readonly sharedReads = new Map<string, Promise<CounterValue[] | undefined>>();
  /** Settles of this instance under way, per counter they write (see readLimited). */
  private readonly settling = new Map<string, Set<Promise<unknown>>>();

  constructor(
    private readonly ledger: Pick<Ledger, 'readCounters' | 'leaseUseOf'>,
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
    void afterHold.then((read) => {
      if (read) this.remember(read);
    });
    return {
      afterHold,
      remaining: async (refund) => {
        // Taken now, before this request's settle changes the lease.
        const lease = reservation.leaseId !== undefined ? this.ledger.leaseUseOf?.(reservation.requestId) : undefined;
        const values = await afterHold;
        return values ? tightestOf(values, limits, (ref) => this.givenBack(reservation, ref, refund, lease?.slice, lease?.committed)) : undefined;
      },
    };
  }

  /**
   * Notes a settle of this instance under way: a later request's read of the same counters waits for it, so
   * it sees the settled cost rather than the hold. Leased requests settle in memory and are not noted.
   */
  noteSettle(reservation: Reservation, settle: Promise<unknown>): void {
    if (reservation.leaseId !== undefined) return;
    const done = settle.catch(() => undefined);
    const keys = reservation.counters.filter((c) => c.limit !== undefined).map(counterIdentity);
    for (const k of keys) {
      let set = this.settling.get(k);
      if (!set) this.settling.set(k, (set = new Set()));
      set.add(done);
    }
    void done.then(() => {
      for (const k of keys) {
        const set = this.settling.get(k);
        set?.delete(done);
        if (set?.size === 0) this.settling.delete(k);
      }
    });
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

  /**
   * What the read of `ref` counts as committed that this instance knows will not be spent: a lease's unused
   * room, and this request's refund where it goes back to the counter (not to a pool).
   */
  private givenBack(reservation: Reservation, ref: CounterRef, refund: MicroUsd, slice?: MicroUsd, leaseCommitted?: MicroUsd): MicroUsd {
    if (reservation.leaseId !== undefined) {
      // The read includes the lease's whole slice; its requests hold or spent `leaseCommitted` of it (this one's
      // hold included, which its settle turns into its cost).
      return slice !== undefined && leaseCommitted !== undefined ? Math.max(0, slice - leaseCommitted) + refund : 0;
    }
    if (reservation.pool) return 0;
    if (reservation.shared?.some((p) => p.scope === ref.scope || p.counters.some((c) => c.scope === ref.scope))) return 0;
    return refund;
  }

  /** Keeps the committed values just read, for later requests' output caps. */
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

  /**
   * The values of the reservation's limited counters (empty when none is limited, undefined when unreadable),
   * read once this instance's settles under way on them are done.
   */
  private async readLimited(reservation: Reservation): Promise<CounterValue[] | undefined> {
    const limited = reservation.counters.filter((c) => c.limit !== undefined);
    if (limited.length === 0) return [];
    const earlier = new Set<Promise<unknown>>();
    for (const c of limited) for (const p of this.settling.get(counterIdentity(c)) ?? []) earlier.add(p);
    if (earlier.size > 0) await Promise.all(earlier);
    return this.ledger.readCounters(limited).catch(() => undefined);
  }
}

/** A counter as read back: platform shards are summed into one value per window, so the shard is not part of it. */
function counterIdentity(ref: CounterRef): string {
  return `${ref.scope}|${ref.windowKey}`;
}

/** The tightest remaining budget among counter values, each credited what `back` says will not be spent. */
function tightestOf(values: readonly CounterValue[], limits: Map<ScopeId, BudgetLimits>, back: (ref: CounterRef) => MicroUsd): Tightest | undefined {
  let tightest: Tightest | undefined;
  for (const v of values) {
    const limit = limits.get(v.ref.scope)?.[v.ref.window];
    if (limit === undefined) continue;
    const left = limit - v.committed + back(v.ref);
    if (!tightest || left < tightest.remaining) tightest = { scope: `${v.ref.scope}/${v.ref.window}`, remaining: left };
  }
  return tightest;
}

/** The remaining-budget headers (none when the budget left is not known). */
export function budgetHeaders(tightest: Tightest | undefined): Record<string, string> {
  if (!tightest) return {};
  return {
    'x-tollgate-budget-remaining-usd': formatUsd(Math.max(0, tightest.remaining)),
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
