/**
 * Budget leases: exact budgets without a store write per request while a key is busy on this instance.
 *
 *   request ──► a live lease of this instance for the request's key and counters has room?
 *                 yes ──► admitted in memory (+ the loop guard's one-item count) ──► settle: in memory, usage record
 *                 no, key busy here and budget far from its limit ──► take a lease: ONE reserve of a slice
 *                 otherwise ──► the request's own reserve, exactly as without leases
 *   lease past its admission window and idle ──► returned: ONE write puts the actual cost where the slice was held
 *
 * A lease IS a hold (the inner ledger's reserve, with the same conditions on every counter, rate bucket,
 * circuit and velocity window), so spend never passes a limit: no instance admits what it has not leased. Its
 * hold expires only after the admission window plus the longest a request may run, so the sweeper reclaims
 * a lease only from an instance that died, and then charges the whole slice (the gateway cannot prove it
 * unspent); a holder that returns late replaces that charge by the real cost once.
 *
 * What a lease changes, and its bounds (docs/how-it-works.md, "Budget leases"):
 * - early refusal: another instance's request can be refused while this one holds unused slice; a slice is at
 *   most `maxShare` of the tightest remaining budget as last read, and no lease is taken when a limited counter
 *   has less than `minHeadroom` requests' worth left, so the last of a budget is shared request by request;
 * - lag: circuits and the velocity breaker are checked when a lease is taken, so they stop a leased key at
 *   most one admission window (`ttlMs`) late; velocity sees the leased spend when the lease is returned;
 * - counters show a live lease's whole slice as held (`committed`), its requests' cost when it is returned.
 */
import { BudgetExceededError, CircuitOpenError, LoopDetectedError, RateLimitError, SpendVelocityError } from '../errors';
import type { Clock } from '../clock';
import {
  type CounterRef,
  type CounterValue,
  type LeaseStore,
  type LeaseUse,
  type Ledger,
  type RateCharge,
  type RateState,
  type Reservation,
  type ReserveInput,
  reservationOf,
  type SettleInput,
} from '../stores';
import type { BudgetLimits, ScopeId, StoredLimits, UNLIMITED, UsageRecord } from '../types';
import type { Window } from '../windows';
import type { LoopOverrides } from '../guardrails/settings';
import type { LoopCheck } from '../guardrails/loop-guard';
import type { MicroUsd } from '../money';

/** How leases are sized and when they are taken. Every field has a default (see {@link DEFAULT_LEASES}). */
export interface LeaseOptions {
  /** How long an instance admits requests against one lease before it takes a new one (ms). */
  readonly ttlMs?: number;
  /** Admissions of one key this instance must have seen within `ttlMs` before it leases for that key. */
  readonly minBusy?: number;
  /** Largest share of a limited counter's remaining budget (as last read) that one lease takes. */
  readonly maxShare?: number;
  /** Below this many requests' worth of remaining budget, requests reserve one by one (no lease). */
  readonly minHeadroom?: number;
}

export const DEFAULT_LEASES: Required<LeaseOptions> = {
  ttlMs: 10_000,
  minBusy: 4,
  maxShare: 0.05,
  minHeadroom: 50,
};

export interface LeasingLedgerOptions extends LeaseOptions {
  readonly clock: Clock;
  /** Distinguishes this instance's leases (hold ids) from every other instance's. */
  readonly instanceId: string;
  /** The longest a request may run (the per-request hold TTL): a lease's hold outlives its window by this. */
  readonly holdTtlMs: number;
  /** How many shards the platform counter has (a lease holds on one; its share is limit / shards). */
  readonly platformShards: number;
  /**
   * Every loop-guard count of a leased request waits for the store before the upstream call (no copy of a loop
   * passes its limit on any instance), at one store round trip per request. @default false
   */
  readonly exactLoopCounts?: boolean;
  /** Told about a lease return or usage write that failed (it is retried; nothing is lost from the budget). */
  readonly onError?: (what: string, err: unknown) => void;
}

interface Lease {
  readonly id: string;
  readonly groupKey: string;
  readonly reservation: Reservation;
  readonly reservedAt: number;
  readonly context: ReserveInput['context'];
  readonly admitUntil: number;
  /** Held by requests in flight plus the cost of those settled. */
  committed: MicroUsd;
  used: MicroUsd;
  usedTokens: number;
  requests: number;
  inFlight: number;
  /** Usage records of its settled requests not yet written (it is returned only once they are). */
  unwritten: number;
  /** Units of each rate dimension the lease took, and how many its requests took. */
  readonly units: Map<RateCharge['dimension'], { readonly total: number; taken: number }>;
  closing: boolean;
  returning: Promise<void> | undefined;
}

interface Group {
  readonly key: string;
  /** Admission times seen here within the last ttl (bounded). */
  seen: number[];
  avgAmount: number;
  maxAmount: number;
  /** What this key's settled requests cost on average (a reservation holds the most a request can cost). */
  avgCost: number | undefined;
  /** Most of this key's requests in flight at once on a lease here (1 on Lambda). */
  peakInFlight: number;
  readonly avgUnits: Map<RateCharge['dimension'], number>;
  known: { readonly at: number; readonly values: readonly CounterValue[] } | undefined;
  reading: Promise<void> | undefined;
  active: Lease | undefined;
  acquiring: Promise<Lease | undefined> | undefined;
  noLeaseUntil: number;
  lastSeen: number;
}

interface LeasedRequest {
  readonly requestId: string;
  readonly lease: Lease;
  readonly amount: MicroUsd;
  readonly tokens: number;
  /**
   * The loop guard's count of this copy when it was made after admission (settle waits for it): the check
   * marked with the copy, or undefined when it was not counted.
   */
  counted?: Promise<LoopCheck | undefined>;
  /** Set while this copy's loop-guard count is deferred to its settle (its fingerprint key). */
  deferredLoop?: string;
}

const MAX_GROUPS = 10_000;
const MAX_SEEN_LOOPS = 50_000;
const MAX_SEEN = 256;
const USAGE_BATCH = 100;

/** A {@link Ledger} that admits a busy key's requests against leased slices of its budgets (see file header). */
export class LeasingLedger implements Ledger {
  private readonly opts: Required<LeaseOptions>;
  private readonly groups = new Map<string, Group>();
  private readonly leased = new Map<string, LeasedRequest>();
  /** Leases no longer admitting, until returned. */
  private readonly closing = new Set<Lease>();
  private seq = 0;
  /** Loop-guard fingerprints (per owner) this instance has counted (see countLoop). */
  private readonly seenLoops = new Set<string>();
  /** Leased copies whose loop-guard count waits for their settle, by fingerprint key (see countLoop). */
  private readonly deferredLoops = new Map<string, Set<LeasedRequest>>();
  /** False after a store call of the lease path failed, until one succeeds: every loop count then waits. */
  private storeHealthy = true;
  private scannedAt = Number.NEGATIVE_INFINITY;
  private readonly usage: UsageWriter;

  constructor(
    private readonly inner: Ledger & LeaseStore,
    private readonly options: LeasingLedgerOptions,
  ) {
    this.opts = {
      ttlMs: options.ttlMs ?? DEFAULT_LEASES.ttlMs,
      minBusy: options.minBusy ?? DEFAULT_LEASES.minBusy,
      maxShare: options.maxShare ?? DEFAULT_LEASES.maxShare,
      minHeadroom: options.minHeadroom ?? DEFAULT_LEASES.minHeadroom,
    };
    if (!(this.opts.ttlMs > 0) || !(this.opts.maxShare > 0 && this.opts.maxShare <= 1) || this.opts.minBusy < 1 || this.opts.minHeadroom < 1) {
      throw new RangeError('lease options out of range: ttlMs > 0, 0 < maxShare <= 1, minBusy >= 1, minHeadroom >= 1');
    }
    this.usage = new UsageWriter(
      (records) => this.inner.writeUsage(records),
      (err) => {
        this.storeHealthy = false;
        this.options.onError?.('usage records not written; kept and retried', err);
      },
    );
  }

  /** Leases this instance holds (admitting or waiting to be returned): for tests and the bench. */
  get openLeases(): number {
    let n = this.closing.size;
    for (const g of this.groups.values()) if (g.active) n++;
    return n;
  }

  async reserve(input: ReserveInput): Promise<Reservation> {
    const group = this.groupFor(input);
    this.observe(group, input);

    const fromLease = await this.tryLease(group, input);
    if (fromLease) return fromLease;
    // Counted in the reserve transaction: the fingerprint is known here from now on (see countLoop).
    if (input.loop) this.sawLoop(loopSeenKey(input.loop));
    return this.inner.reserve(input);
  }

  async settle(input: SettleInput): Promise<void> {
    const entry = this.leased.get(input.reservation.requestId);
    if (input.reservation.leaseId === undefined || !entry) {
      // A leased request's settle never fails (its writes are kept and retried), so it is never repeated.
      if (input.reservation.leaseId !== undefined) return;
      await this.inner.settle(input);
      // A settle is the post-response work of a request (on Lambda the last thing before the freeze): leases
      // that stopped admitting are returned here.
      await this.maintain();
      return;
    }
    this.leased.delete(input.reservation.requestId);
    const { lease } = entry;
    const group = this.groups.get(lease.groupKey);
    if (group) group.avgCost = group.avgCost === undefined ? input.cost : Math.round(0.8 * group.avgCost + 0.2 * input.cost);
    lease.committed += input.cost - entry.amount;
    lease.used += input.cost;
    lease.inFlight--;
    const tokens = input.actualTokens ?? entry.tokens;
    lease.usedTokens += tokens;
    const tokenUnits = lease.units.get('tokens');
    if (tokenUnits) tokenUnits.taken += tokens - entry.tokens;
    // A lease whose window ends before this key's next request is likely (its mean gap here) is given back now,
    // in this post-response work, rather than left held while the instance idles (on Lambda: frozen, and
    // perhaps retired, which would leave the sweeper to charge its whole slice).
    const now = this.options.clock.now();
    if (group && group.active === lease && lease.inFlight === 0 && now + this.meanGap(group, now) >= lease.admitUntil) this.retire(group);
    // The usage record is written with others (or kept and retried until the store takes it: the lease is
    // not returned before, so if this instance dies first the sweeper charges the whole slice). A loop-guard
    // outcome that cannot be written leaves the copy counted as failed, which errs toward stopping a loop.
    lease.unwritten++;
    const loop = input.reservation.loop;
    await Promise.all([
      this.usage.add(input.usage, () => lease.unwritten--),
      ...(loop ? [this.settleLoopOf(entry, loop, input.loopOutcome, input.loopStatus)] : []),
    ]);
    await this.maintain();
  }

  /**
   * Returns every lease that no longer admits and has no request in flight; stops leases whose window has
   * passed. Called after each leased settle, and by the local server on a timer.
   */
  async maintain(): Promise<void> {
    const now = this.options.clock.now();
    // The scan of every group runs at most once a second (a settle calls this on every request).
    if (now - this.scannedAt >= 1_000 || now < this.scannedAt) {
      this.scannedAt = now;
      for (const [key, g] of this.groups) {
        if (g.active && (now >= g.active.admitUntil || g.active.closing)) this.retire(g);
        if (!g.active && !g.acquiring && !g.reading && now - g.lastSeen > 6 * this.opts.ttlMs) this.groups.delete(key);
      }
    }
    this.usage.retryKept(now);
    await Promise.all(this.returnable().map((lease) => this.returnLease(lease)));
  }

  /** The mean time between this key's requests here over the last window. */
  private meanGap(g: Group, now: number): number {
    const recent = g.seen.filter((t) => t > now - this.opts.ttlMs).length;
    return recent > 0 ? this.opts.ttlMs / recent : this.opts.ttlMs;
  }

  /** Leases that stopped admitting, with no request in flight and every usage record of theirs written. */
  private returnable(groupKey?: string): Lease[] {
    return [...this.closing].filter((l) => l.inFlight === 0 && l.unwritten === 0 && (groupKey === undefined || l.groupKey === groupKey));
  }

  /** Stops every lease and returns those with nothing in flight (the rest return when their last request settles). */
  async close(): Promise<void> {
    for (const g of this.groups.values()) if (g.active) this.retire(g);
    this.usage.retryKept(Number.POSITIVE_INFINITY);
    await this.usage.flushed();
    await Promise.all(this.returnable().map((l) => this.returnLease(l)));
  }

  leaseUseOf(requestId: string): LeaseUse | undefined {
    const entry = this.leased.get(requestId);
    return entry ? { slice: entry.lease.reservation.amount, committed: entry.lease.committed } : undefined;
  }

  readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]> {
    return this.inner.readCounters(refs);
  }
  getLimits(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>> {
    return this.inner.getLimits(scopes);
  }
  getLimitSettings(scopes: readonly ScopeId[]): Promise<Map<ScopeId, StoredLimits>> {
    return this.inner.getLimitSettings(scopes);
  }
  getLoopOverrides(keyIds: readonly string[]): Promise<Map<string, LoopOverrides>> {
    return this.inner.getLoopOverrides(keyIds);
  }
  setLoopOverrides(keyId: string, overrides: { readonly maxRepeats?: number | null; readonly maxFailures?: number | null }): Promise<void> {
    return this.inner.setLoopOverrides(keyId, overrides);
  }
  setLimit(scope: ScopeId, window: Window, limit: MicroUsd | typeof UNLIMITED | null): Promise<void> {
    // A lease taken under the old limit stops admitting now; the next one is sized (and checked) anew.
    for (const g of this.groups.values()) if (g.active) this.retire(g);
    return this.inner.setLimit(scope, window, limit);
  }
  sweepExpired(now: number): Promise<number> {
    return this.inner.sweepExpired(now);
  }

  // -------------------------------------------------------------------------------------------------------

  private groupFor(input: ReserveInput): Group {
    const key = groupKeyOf(input);
    let g = this.groups.get(key);
    if (!g) {
      if (this.groups.size >= MAX_GROUPS) {
        for (const [k, other] of this.groups) if (!other.active && !other.acquiring) this.groups.delete(k);
      }
      g = {
        key,
        seen: [],
        avgAmount: input.amount,
        maxAmount: input.amount,
        avgCost: undefined,
        peakInFlight: 1,
        avgUnits: new Map(),
        known: undefined,
        reading: undefined,
        active: undefined,
        acquiring: undefined,
        noLeaseUntil: 0,
        lastSeen: input.now,
      };
      this.groups.set(key, g);
    }
    return g;
  }

  private observe(g: Group, input: ReserveInput): void {
    const horizon = input.now - this.opts.ttlMs;
    g.seen = g.seen.filter((t) => t > horizon);
    if (g.seen.length < MAX_SEEN) g.seen.push(input.now);
    g.lastSeen = Math.max(g.lastSeen, input.now);
    g.avgAmount = Math.round(0.8 * g.avgAmount + 0.2 * input.amount);
    // The largest recent request decays slowly, so one big request does not stop leasing for good.
    g.maxAmount = Math.max(input.amount, Math.floor(g.maxAmount * 0.95));
    for (const c of input.rateCharges) {
      const prev = g.avgUnits.get(c.dimension);
      g.avgUnits.set(c.dimension, prev === undefined ? c.amount : 0.8 * prev + 0.2 * c.amount);
    }
  }

  /** The request admitted against a lease (taking one first if that is worth it), or undefined: reserve alone. */
  private async tryLease(g: Group, input: ReserveInput): Promise<Reservation | undefined> {
    const now = input.now;
    if (g.active && (now >= g.active.admitUntil || g.active.closing)) this.retire(g);
    if (g.active) {
      const admitted = this.admit(g.active, input);
      if (admitted) return this.countLoop(admitted, input);
      // No room left: this lease stops admitting; a new one may be taken below.
      this.retire(g);
    }
    // What a finished lease of this key did not use goes back before this request asks the store for more, so
    // neither a new lease nor this request's own reserve is refused for money or rate units this instance holds
    // idle. (A lease with requests still in flight keeps its slice until the last one settles.)
    await this.returnIdle(g.key);
    if (g.acquiring) {
      const lease = await g.acquiring;
      const admitted = lease && g.active === lease ? this.admit(lease, input) : undefined;
      return admitted ? this.countLoop(admitted, input) : undefined;
    }
    const plan = this.plan(g, input);
    if (!plan) return undefined;
    const acquiring = this.acquire(g, input, plan).finally(() => {
      if (g.acquiring === acquiring) g.acquiring = undefined;
    });
    g.acquiring = acquiring;
    const lease = await acquiring;
    const admitted = lease ? this.admit(lease, input) : undefined;
    return admitted ? this.countLoop(admitted, input) : undefined;
  }

  /** The size of a new lease for this group, or undefined when requests should reserve one by one. */
  private plan(g: Group, input: ReserveInput): { amount: MicroUsd; units: Map<RateCharge['dimension'], number> } | undefined {
    const now = input.now;
    if (now < g.noLeaseUntil || g.seen.length < this.opts.minBusy) return undefined;
    // Expected requests in one window at the rate seen here, with room for growth.
    let expected = Math.max(this.opts.minBusy, 2 * g.seen.length);
    const units = new Map<RateCharge['dimension'], number>();
    for (const c of input.rateCharges) {
      if (c.amount <= 0) continue;
      const perRequest = Math.max(c.amount, Math.ceil(g.avgUnits.get(c.dimension) ?? c.amount));
      // At most the bucket's refill over one window, so a lease never takes a burst the key could not sustain.
      const cap = Math.floor((c.limitPerMinute * this.opts.ttlMs) / 60_000);
      const fit = Math.floor(cap / perRequest);
      if (fit < 2) return undefined;
      expected = Math.min(expected, fit);
    }
    // Room for the requests in flight at their reserved (largest) cost, and for the rest at what requests of
    // this key have really cost: a slice held for nothing is budget others cannot use until it is returned.
    const perSettled = Math.max(1, Math.min(g.avgCost ?? g.avgAmount, g.avgAmount));
    let amount = Math.max(g.peakInFlight * Math.max(g.maxAmount, input.amount) + expected * perSettled, 2 * input.amount);
    const limited = input.counters.filter((c) => c.limit !== undefined);
    if (limited.length > 0) {
      const known = g.known;
      if (!known || now - known.at > this.opts.ttlMs) {
        this.refresh(g, input.counters);
        if (!known) return undefined;
      }
      for (const ref of limited) {
        const value = known.values.find((v) => v.ref.scope === ref.scope && v.ref.windowKey === ref.windowKey);
        const committed = value?.committed ?? 0;
        // readCounters sums the platform's shards; a lease holds on one shard, whose share is limit / shards.
        const shardCommitted = ref.scope === 'platform' ? Math.ceil(committed / this.options.platformShards) : committed;
        const remaining = (ref.limit as number) - shardCommitted;
        if (remaining < this.opts.minHeadroom * Math.max(g.maxAmount, input.amount)) return undefined;
        amount = Math.min(amount, Math.floor(this.opts.maxShare * remaining));
      }
    }
    if (amount < 2 * input.amount) return undefined;
    for (const c of input.rateCharges) {
      if (c.amount <= 0) continue;
      const perRequest = Math.max(c.amount, Math.ceil(g.avgUnits.get(c.dimension) ?? c.amount));
      units.set(c.dimension, Math.min(Math.floor((c.limitPerMinute * this.opts.ttlMs) / 60_000), expected * perRequest));
    }
    return { amount, units };
  }

  private async acquire(g: Group, input: ReserveInput, plan: { amount: MicroUsd; units: Map<RateCharge['dimension'], number> }): Promise<Lease | undefined> {
    const now = input.now;
    const id = `lease-${this.options.instanceId}-${(this.seq++).toString(36)}`;
    const rateCharges: RateCharge[] = input.rateCharges
      .filter((c) => c.amount > 0)
      .map((c) => ({ ...c, amount: plan.units.get(c.dimension) ?? c.amount }));
    const context: ReserveInput['context'] = { ...input.context, model: 'lease', endpoint: 'lease' };
    let reservation: Reservation;
    try {
      reservation = await this.inner.reserve({
        requestId: id,
        now,
        expiresAt: now + this.opts.ttlMs + this.options.holdTtlMs,
        amount: plan.amount,
        counters: input.counters,
        rateCharges,
        ...(input.circuits ? { circuits: input.circuits } : {}),
        // The first request's velocity charge: the windows see the lease's real cost when it is returned.
        ...(input.velocity ? { velocity: input.velocity } : {}),
        context,
      });
    } catch (err) {
      if (err instanceof BudgetExceededError || err instanceof RateLimitError || err instanceof SpendVelocityError || err instanceof CircuitOpenError) {
        // The slice did not fit: requests reserve one by one (which decides this one exactly) for a window.
        g.noLeaseUntil = now + this.opts.ttlMs;
        this.refresh(g, input.counters);
        return undefined;
      }
      throw err;
    }
    const lease: Lease = {
      id,
      groupKey: g.key,
      reservation,
      reservedAt: now,
      context,
      admitUntil: now + this.opts.ttlMs,
      committed: 0,
      used: 0,
      usedTokens: 0,
      requests: 0,
      inFlight: 0,
      unwritten: 0,
      units: new Map(rateCharges.map((c) => [c.dimension, { total: c.amount, taken: 0 }])),
      closing: false,
      returning: undefined,
    };
    if (g.active) this.retire(g);
    g.active = lease;
    this.refresh(g, input.counters);
    return lease;
  }

  /** Takes the request's amount and rate units from the lease in memory, or undefined when they do not fit. */
  private admit(lease: Lease, input: ReserveInput): Reservation | undefined {
    // A request id admitted already is left to the store's own reserve, which refuses a second hold for it.
    if (lease.closing || input.now >= lease.admitUntil || this.leased.has(input.requestId)) return undefined;
    if (lease.committed + input.amount > lease.reservation.amount) return undefined;
    for (const c of input.rateCharges) {
      if (c.amount <= 0) continue;
      const u = lease.units.get(c.dimension);
      if (!u || u.taken + c.amount > u.total) return undefined;
    }
    lease.committed += input.amount;
    lease.inFlight++;
    const group = this.groups.get(lease.groupKey);
    if (group && lease.inFlight > group.peakInFlight) group.peakInFlight = lease.inFlight;
    lease.requests++;
    let tokens = 0;
    for (const c of input.rateCharges) {
      if (c.amount <= 0) continue;
      lease.units.get(c.dimension)!.taken += c.amount;
      if (c.dimension === 'tokens') tokens = c.amount;
    }
    this.leased.set(input.requestId, { requestId: input.requestId, lease, amount: input.amount, tokens });
    const rateStates: RateState[] = lease.reservation.rateStates.map((s) => {
      const u = lease.units.get(s.dimension);
      return { ...s, remaining: s.remaining + (u ? Math.max(0, u.total - u.taken) : 0) };
    });
    return reservationOf(input, { rateStates, expiresAt: lease.reservation.expiresAt, holdShard: lease.reservation.holdShard, leaseId: lease.id });
  }

  /** The loop guard still counts every copy in the store (one item); a refusal gives the lease its room back. */
  /**
   * The loop guard counts every copy in the store. A fingerprint this instance has never seen is not counted
   * before the upstream call: its count is written with its outcome when it settles (one write instead of
   * two), or at once if another copy of it arrives here meanwhile. A fingerprint seen here before is counted
   * first, so a client retrying through this instance meets the stated limit exactly. The bound: a loop whose
   * copies reach several instances gets at most one copy per instance through beyond its limit (the first one
   * each sees). Not while the store is failing (every count waits then), nor with `exactLoopCounts`.
   */
  private async countLoop(reservation: Reservation, input: ReserveInput): Promise<Reservation> {
    const loop = input.loop;
    if (!loop) return reservation;
    const seenKey = loopSeenKey(loop);
    const seen = this.seenLoops.has(seenKey);
    this.sawLoop(seenKey);
    const entry = this.leased.get(input.requestId);
    if (!seen && this.storeHealthy && !this.options.exactLoopCounts && entry) {
      entry.deferredLoop = seenKey;
      let pending = this.deferredLoops.get(seenKey);
      if (!pending) this.deferredLoops.set(seenKey, (pending = new Set()));
      pending.add(entry);
      return reservation;
    }
    try {
      // Copies of it admitted here without a count are counted now, before this one is decided.
      await this.countDeferred(seenKey, loop);
      // Marked with the copy (its request id), so a retried write counts once and its settle applies once.
      const counted = await this.inner.countLoop(loop, input.requestId);
      this.storeHealthy = true;
      return { ...reservation, loop: counted };
    } catch (err) {
      if (entry) {
        this.leased.delete(input.requestId);
        const { lease } = entry;
        lease.committed -= entry.amount;
        lease.inFlight--;
        lease.requests--;
        for (const c of input.rateCharges) if (c.amount > 0) lease.units.get(c.dimension)!.taken -= c.amount;
      }
      throw err;
    }
  }

  /** Counts (as at admission: presumed failed until settled) the copies of `seenKey` whose count was deferred. */
  private async countDeferred(seenKey: string, loop: LoopCheck): Promise<void> {
    const pending = this.deferredLoops.get(seenKey);
    if (!pending) return;
    this.deferredLoops.delete(seenKey);
    await Promise.all(
      [...pending].map((entry) => {
        entry.deferredLoop = undefined;
        entry.counted = this.inner.countLoop(loop, entry.requestId).catch((err: unknown) => {
          if (err instanceof LoopDetectedError) return undefined; // that copy is on its way already; this one is decided next
          throw err;
        });
        return entry.counted;
      }),
    );
  }

  /** The loop guard's writes of a settled leased request: its deferred count with its outcome, or the outcome. */
  private async settleLoopOf(entry: LeasedRequest, loop: LoopCheck, outcome: 'failed' | 'succeeded' | undefined, status?: number): Promise<void> {
    try {
      if (entry.deferredLoop !== undefined) {
        this.deferredLoops.get(entry.deferredLoop)?.delete(entry);
        if (this.deferredLoops.get(entry.deferredLoop)?.size === 0) this.deferredLoops.delete(entry.deferredLoop);
        entry.deferredLoop = undefined;
        await this.inner.recordLoopCopy(loop, entry.requestId, outcome, status);
        return;
      }
      // A copy counted after its admission settles as the check its count answered (marked with the copy).
      const counted = entry.counted ? await entry.counted.catch(() => undefined) : undefined;
      await this.inner.settleLoop(counted ?? loop, outcome, status);
    } catch (err) {
      this.storeHealthy = false;
      this.options.onError?.('loop guard outcome not recorded', err);
    }
  }

  private sawLoop(seenKey: string): void {
    if (this.seenLoops.has(seenKey)) return;
    if (this.seenLoops.size >= MAX_SEEN_LOOPS) this.seenLoops.clear();
    this.seenLoops.add(seenKey);
  }

  private retire(g: Group): void {
    const lease = g.active;
    if (!lease) return;
    lease.closing = true;
    g.active = undefined;
    this.closing.add(lease);
  }

  private async returnIdle(groupKey: string): Promise<void> {
    const idle = this.returnable(groupKey);
    if (idle.length > 0) await Promise.all(idle.map((l) => this.returnLease(l)));
  }

  private returnLease(lease: Lease): Promise<void> {
    if (lease.returning) return lease.returning;
    lease.returning = this.inner
      .returnLease({
        reservation: lease.reservation,
        reservedAt: lease.reservedAt,
        context: lease.context,
        cost: lease.used,
        ...(lease.units.has('tokens') ? { usedTokens: lease.usedTokens } : {}),
        usedRequests: lease.requests,
      })
      .then(
        () => {
          this.closing.delete(lease);
        },
        (err: unknown) => {
          // Kept for the next maintain(); until returned the slice stays held, never less than its cost.
          lease.returning = undefined;
          this.options.onError?.('lease return failed; retried later', err);
        },
      );
    return lease.returning;
  }

  /** Reads the group's counters in the background (one read per lease), for sizing the next lease. */
  private refresh(g: Group, counters: readonly CounterRef[]): void {
    if (g.reading) return;
    const limited = counters.filter((c) => c.limit !== undefined);
    if (limited.length === 0) return;
    const at = this.options.clock.now();
    g.reading = this.inner
      .readCounters(limited)
      .then(
        (values) => {
          g.known = { at, values };
        },
        () => undefined,
      )
      .finally(() => {
        g.reading = undefined;
      });
  }
}

/** Across windows: a failure streak outlives its window, so a fingerprint seen once is always counted first here. */
function loopSeenKey(loop: LoopCheck): string {
  return `${loop.owner}|${loop.fingerprint}`;
}

/** Requests that share a lease: same key, same counters and limits, same rate limits, circuits and velocity scopes. */
function groupKeyOf(input: ReserveInput): string {
  const counters = input.counters.map((c) => `${c.scope}|${c.windowKey}|${c.limit ?? '-'}`).join(',');
  const rates = input.rateCharges
    .filter((c) => c.amount > 0)
    .map((c) => `${c.dimension}:${c.limitPerMinute}`)
    .join(',');
  const circuits = (input.circuits ?? []).map((c) => c.scope).join(',');
  const velocity = (input.velocity ?? []).map((v) => `${v.scope}:${v.window}:${v.ceilingMicros}`).join(',');
  return [input.context.keyId, input.context.byok ? 'byok' : '', counters, rates, circuits, velocity].join('#');
}

/**
 * Usage records written as a group commit: while one write is out, records queue, and the next write takes all
 * of them (the store batches them where it is set to). A record the store refuses is kept and written again
 * later (`retryKept`); its caller is not held up by that. `add` resolves once the record is written or kept.
 */
class UsageWriter {
  private queue: PendingRecord[] = [];
  private kept: PendingRecord[] = [];
  private running: Promise<void> | undefined;
  private retriedAt = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly write: (records: readonly UsageRecord[]) => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}

  add(record: UsageRecord, written: () => void): Promise<void> {
    return new Promise<void>((done) => {
      this.queue.push({ record, written, done });
      this.start();
    });
  }

  /** Writes the kept records again (at most once a second unless `now` is +Infinity). */
  retryKept(now: number): void {
    if (this.kept.length === 0 || (now - this.retriedAt < 1_000 && now >= this.retriedAt)) return;
    this.retriedAt = now;
    this.queue.unshift(...this.kept.splice(0));
    this.start();
  }

  async flushed(): Promise<void> {
    while (this.running) await this.running;
  }

  private start(): void {
    if (this.running) return;
    this.running = this.drain().finally(() => {
      this.running = undefined;
      // Records added after the last batch left but before this ran would otherwise wait for the next add.
      if (this.queue.length > 0) this.start();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, USAGE_BATCH);
      try {
        await this.write(batch.map((b) => b.record));
        for (const b of batch) b.written();
      } catch (err) {
        this.kept.push(...batch);
        this.onError(err);
      }
      for (const b of batch) b.done();
    }
  }
}

interface PendingRecord {
  readonly record: UsageRecord;
  readonly written: () => void;
  readonly done: () => void;
}
