/**
 * The DynamoDB ledger: budgets, holds, pools and rate buckets in the budgets table (layout in schema.ts), usage
 * records in the usage table. This file routes each request to the part that admits it; the parts, one
 * responsibility each:
 *
 *   reserve.ts       the reserve transaction (a request, a grant or a lease on its own) and cache-hit rate charges
 *   pools.ts         scope pools and shared scopes' allowance pools: take, refill by grants, give back, release
 *   settle.ts        settle of a hold (and of a pooled request's own part), late settle after a sweep
 *   leases.ts        budget lease returns
 *   loop-counts.ts   loop guard counts outside a transaction;   usage-writes.ts   usage records on their own
 *   sweep.ts         expired holds reclaimed, pools' grants released
 *   limits.ts        counter reads, limits and loop overrides;  busy-scopes.ts    which scopes are pooled
 *   room-wait.ts     a refusal only for held room: reclaim pools' idle room, wait for holds to settle (≤ 2 s)
 *   ledger-items.ts  transaction items (counters, buckets, loop, velocity);  items.ts  item keys
 *   ledger-core.ts   client, tables, clock, the transaction runner;  denials.ts  the caller-facing refusals
 *
 * Money invariants (every part keeps them; each file says how):
 *   1. Money is admitted only by a conditional write that proves every limited counter stays within its limit:
 *      a reserve transaction, or a grant (itself a reserve) that fills a pool whose takes are conditioned on
 *      its room. Spend never passes a limit (a pooled overshoot: at most one request's overshoot per shard).
 *      A refusal only for what is held (spent + need ≤ limit) is decided again after the pools' idle room is
 *      reclaimed and holds settle, for at most `roomWaitMs`: early refusal is bounded (room-wait.ts).
 *   2. Every write that moves money or counts is applied exactly once under SDK retries, lost answers and
 *      duplicate deliveries: a hold's conditional delete, a take's marker `*<request id>` on its pool item, a
 *      grant's marker `+<grant id part>` (pool-markers.ts), the `abandoned` record a late settle replaces conditionally.
 *   3. Money the gateway cannot prove unspent stays charged: an unsettled hold or take is charged its whole
 *      amount by the sweeper (with an `abandoned` record), a cost above the reservation is charged in full.
 *   4. One usage record per request, on every path (a late settle replaces the sweeper's estimate).
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { CircuitOpenError } from '../../core/errors';
import type { LoopCheck } from '../../core/guardrails/loop-guard';
import type { LoopOverrides } from '../../core/guardrails/settings';
import type { MicroUsd } from '../../core/money';
import type { CounterRef, CounterValue, LeaseReturn, LeaseStore, Ledger, RateCharge, RateState, Reservation, ReserveInput, SettleInput } from '../../core/stores';
import { type BudgetLimits, type ScopeId, type StoredLimits, UNLIMITED, type UsageRecord } from '../../core/types';
import type { Window } from '../../core/windows';
import { BusyScopes, isShared, orgWithPlatform, ownPart, sharedPart, sharedReservation, type SharedTake, takenScopes } from './busy-scopes';
import { budgetExceeded, budgetHeld, SpentOutRefusals } from './denials';
import { LeaseReturns } from './leases';
import { assertMicros, type DynamoDbLedgerOptions, LedgerCore } from './ledger-core';
import { LedgerItems } from './ledger-items';
import { CountersAndLimits } from './limits';
import { LoopCounts } from './loop-counts';
import { DEFAULT_SHARED_POOLS, type PoolHost, ScopePools } from './pools';
import { ReserveTransaction } from './reserve';
import { heldRefusal, ROOM_WAIT_MS, RoomWait } from './room-wait';
import { HoldSettle } from './settle';
import { Sweeper } from './sweep';
import { usageItem } from './usage-store';
import { UsageWrites } from './usage-writes';

export type { DynamoDbLedgerOptions } from './ledger-core';
export { MAX_TRANSACTION_ITEMS } from './ledger-core';
export { circuitKey, counterPk, holdKey, LOOP_SHARDS, loopKey, UNTIL_ACKNOWLEDGED, velocityKey } from './items';

/** The DynamoDB implementation of {@link Ledger} (and of {@link LeaseStore}, the writes of budget leases). */
export class DynamoDbLedger implements Ledger, LeaseStore {
  private readonly items: LedgerItems;
  private readonly loops: LoopCounts;
  private readonly records: UsageWrites;
  private readonly busy: BusyScopes;
  private readonly holds: ReserveTransaction;
  private readonly settles: HoldSettle;
  private readonly leases: LeaseReturns;
  private readonly sweeper: Sweeper;
  private readonly limits: CountersAndLimits;
  private readonly pools: ScopePools;
  private readonly pooling: boolean;
  private readonly sharedPools: ScopePools;
  private readonly sharing: boolean;
  private readonly core: LedgerCore;
  private readonly roomWait: RoomWait;
  private readonly roomWaitMs: number;
  private readonly background = new Set<Promise<void>>();
  private readonly spentOut = new SpentOutRefusals();

  constructor(client: DynamoDBClient, options: DynamoDbLedgerOptions) {
    const core = new LedgerCore(client, options);
    this.core = core;
    this.roomWait = new RoomWait(core);
    this.roomWaitMs = options.roomWaitMs ?? ROOM_WAIT_MS;
    this.items = new LedgerItems(core);
    this.loops = new LoopCounts(core, this.items);
    this.records = new UsageWrites(core);
    this.pooling = options.pools !== undefined && options.pools !== false;
    this.sharing = options.sharedPools !== undefined && options.sharedPools !== false;
    const host: PoolHost = {
      client,
      table: core.budgets,
      clock: core.clock,
      sleep: core.sleep,
      platformShards: core.platformShards,
      reserveGrant: (input, pool, options) => this.holds.reserveHeld(input, pool, options),
      readCounters: (refs) => this.limits.readCounters(refs),
      batchGet: (keys) => core.batchGet(keys),
      counterItems: (counters, delta) => counters.map((ref) => this.items.counterUpdate(ref, delta)),
      heldCounterItems: (parts) => this.items.heldCounterUpdates(parts),
      velocityItems: (parts) => this.items.velocityCorrections(parts),
      transact: (items) => core.transact(items),
      usageTable: core.usage,
      usageItem: (record) => usageItem(record, { retentionDays: core.usageRetentionDays }),
      refilled: (scope, now) => this.busy.markBusy(scope, now),
      nearLimit: (scope, now) => this.busy.markNear(scope, now),
      isNear: (scope, now) => this.busy.isNear(scope, now),
      beside: (work) => this.inBackground(work),
    };
    this.pools = new ScopePools(host, options.pools || {});
    this.sharedPools = new ScopePools(host, { ...DEFAULT_SHARED_POOLS, ...(options.sharedPools || {}) }, 'shared');
    this.busy = new BusyScopes(core, { markMs: this.pools.markMs, pooling: this.pooling, sharing: this.sharing });
    this.holds = new ReserveTransaction(core, this.items, this.busy);
    this.settles = new HoldSettle(core, this.items, this.loops, this.records, this.pools);
    this.leases = new LeaseReturns(core, this.items, this.pools);
    this.sweeper = new Sweeper(core, this.pools, this.sharedPools);
    this.limits = new CountersAndLimits(core, this.busy, this.sharing);
  }

  async reserve(input: ReserveInput): Promise<Reservation> {
    assertMicros(input.amount, 'amount');
    for (const ref of input.counters) {
      if (ref.limit !== undefined && input.amount > ref.limit) throw budgetExceeded(ref, { amount: input.amount });
    }
    // A budget this instance saw spent out moments ago refuses again without a store call (denials.ts).
    this.spentOut.refuse(input.counters, input.amount, input.now);
    try {
      return await this.reserveWaiting(input);
    } catch (err) {
      this.spentOut.remember(err, this.core.clock.now());
      throw err;
    }
  }

  /** Reserves, waiting up to `roomWaitMs` when refused only for what requests in flight hold. */
  private async reserveWaiting(input: ReserveInput): Promise<Reservation> {
    // A budget lease is not waited for: refused, its requests reserve one by one (and those wait).
    if (this.roomWaitMs <= 0 || input.context.endpoint === 'lease') return this.reserveOnce(input);
    // The wait is counted from the first refusal for held room (what came before was admission, not waiting).
    let deadline = Infinity;
    const wait = { leftMs: this.roomWaitMs };
    for (let round = 0; ; round++) {
      const now = round === 0 ? input.now : this.core.clock.now();
      try {
        return await this.reserveOnce(round === 0 ? input : { ...input, now });
      } catch (err) {
        // Refused only for what is held (spend alone leaves room): the pools' idle room goes back to the
        // counters, then the request waits for holds to settle and is decided again (room-wait.ts).
        const refusal = heldRefusal(err);
        if (!refusal) throw err;
        if (deadline === Infinity) deadline = this.core.clock.now() + this.roomWaitMs;
        if (this.core.clock.now() >= deadline || wait.leftMs <= 0) throw budgetHeld(refusal, this.roomWaitMs);
        // The pools' idle room (what their requests gave back) goes back to the counters, by one instance at a
        // time for a scope, every 250 ms at most while requests wait.
        if ((await this.reclaim(input, refusal.ref.scope, this.core.clock.now())) > 0) continue;
        // A pooled scope's room is in its pools, which the counter does not show: tried again after each pause.
        const pooled = this.sharing && isShared(refusal.ref.scope) && this.busy.isBusy(refusal.ref.scope, this.core.clock.now());
        const seen = await this.roomWait.until(refusal, deadline, round, wait, () => this.reclaim(input, refusal.ref.scope, this.core.clock.now()), pooled);
        if (seen.room) continue;
        if (seen.spentOut) throw budgetExceeded(refusal.ref, { amount: refusal.amount, old: seen.old });
        throw budgetHeld({ ...refusal, old: seen.old }, this.roomWaitMs);
      }
    }
  }

  private reserveOnce(input: ReserveInput): Promise<Reservation> {
    // A key this instance saw refused by its rate limit moments ago is refused again without a write.
    this.holds.refuseRateLimited(input.rateCharges, input.now);
    if (this.sharing && input.counters.some((c) => isShared(c.scope) && this.busy.isBusy(c.scope, input.now))) return this.reserveShared(input);
    return this.reserveOwn(input);
  }

  /**
   * Gives back the idle room of the pools that hold some of a refused scope's budget: the scope's allowance
   * pools (a shared scope) and the request's key's pools. Returns the room given back.
   */
  private async reclaim(input: ReserveInput, scope: ScopeId, now: number): Promise<number> {
    let returned = 0;
    if (this.sharing && isShared(scope)) {
      // The scope's own allowance pools, and the org's that hold the platform's part with the org's.
      const nested = orgWithPlatform(input);
      const groups = nested?.includes(scope) ? [[scope], nested] : [[scope]];
      for (const group of groups) returned += await this.sharedPools.reclaim(sharedPart(input, ...group), now);
    }
    // The key's pools are grouped by the counters they hold: its own part's while shared scopes are pooled. A key
    // that is not busy has them too while a shared scope of its is pooled, when quiet pools are on.
    const shared = this.sharing ? new Set(input.counters.filter((c) => isShared(c.scope) && this.busy.isBusy(c.scope, now)).map((c) => c.scope)) : new Set<ScopeId>();
    const quiet = shared.size > 0 && this.pools.opts.quietEpochMs > 0;
    if (this.pooling && (this.busy.isBusy(`key:${input.context.keyId}`, now) || quiet)) {
      const own: ReserveInput = shared.size
        ? { ...input, counters: input.counters.filter((c) => !shared.has(c.scope)), ...(input.circuits ? { circuits: input.circuits.filter((c) => !shared.has(c.scope)) } : {}) }
        : input;
      returned += await this.pools.reclaim(own, now);
    }
    return returned;
  }

  /**
   * A request's own part: its key's pool when the key is pooled; its key's quiet pool when a shared scope of the
   * request was taken from its allowance pools (`quiet`: a key of a busy org, itself not busy, whose own part
   * holds no shared counter); else its own reserve transaction.
   */
  private async reserveOwn(input: ReserveInput, quiet = false): Promise<Reservation> {
    if (this.pooling) {
      const busy = this.busy.isBusy(`key:${input.context.keyId}`, input.now);
      if (busy ? this.pools.fits(input) : quiet && this.pools.fits(input, true)) {
        const pooled = await this.reservePooled(input, !busy);
        if (pooled) return pooled;
      }
    }
    const circuits = input.circuits ?? [];
    if (!input.loop && circuits.length === 0) return this.holds.reserveHeld(input);
    // A circuit this instance saw open moments ago is read first: refused again, nothing is written.
    if (circuits.length && this.holds.seenOpenRecently(circuits, input.now)) await this.holds.refuseOpenCircuits(circuits, input.now);
    // Three calls at once, so admission waits for one round trip, not three: the reserve transaction; the
    // circuits' read (a read unit each, instead of a condition in the transaction at 2 write units); and the loop
    // guard's count of the copy in its own single write, presumed failed as a transaction's copy is
    // (loop-counts.ts; its settle is one more single write: 2 write units in all instead of 4 in the reserve and
    // settle transactions). Any refused: the others are taken back (the count, or the committed reservation whole).
    const { loop: _counted, ...alone } = input;
    const [open, counted, reserved] = await Promise.allSettled([
      circuits.length ? this.holds.refuseOpenCircuits(circuits, input.now) : Promise.resolve(),
      input.loop ? this.loops.countCopy(input.loop, input.requestId, { presume: true }) : Promise.resolve(undefined),
      this.holds.reserveHeld(alone, undefined, { circuitsRead: true }),
    ]);
    if (open.status === 'fulfilled' && counted.status === 'fulfilled' && reserved.status === 'fulfilled') {
      return counted.value ? { ...reserved.value, loop: counted.value } : reserved.value;
    }
    if (counted.status === 'fulfilled' && counted.value) await this.loops.uncountLoop(counted.value).catch(() => undefined);
    // A failure to take back leaves the request charged its reservation (the sweeper releases the hold in full).
    if (reserved.status === 'fulfilled') await this.settles.cancelHeld(reserved.value).catch(() => undefined);
    // Guardrails first, as one transaction explained them: an open circuit, then the loop, then the reserve's own
    // refusal; a failed read (the store) only when nothing else refused.
    const reserveError = reserved.status === 'rejected' ? reserved.reason : undefined;
    if (open.status === 'rejected' && (open.reason instanceof CircuitOpenError || reserveError === undefined)) throw open.reason;
    if (counted.status === 'rejected') throw counted.reason;
    throw reserveError;
  }

  /**
   * A request of shared scopes: each shared scope's part is taken from one of its allowance pools (one
   * conditional write each, in parallel), then the rest (key, user, and any shared part a pool could not
   * decide near its limit, exactly) is reserved as usual. A refusal anywhere gives every take back.
   */
  private async reserveShared(input: ReserveInput): Promise<Reservation> {
    // Near a scope's limit its part is taken first, on its own: refused (a spent budget's dry item answers from a
    // read), no other scope's part was taken to be given back (two writes a refusal).
    const groups = this.sharedGroups(input);
    const near = groups.filter((group) => group.some((scope) => this.busy.isNear(scope, input.now)));
    const rounds = near.length && near.length < groups.length ? [near, groups.filter((group) => !near.includes(group))] : [groups];
    const taken: SharedTake[] = [];
    for (const round of rounds) {
      const outcomes = await Promise.allSettled(round.map((group) => this.sharedPools.take(sharedPart(input, ...group))));
      for (const [i, outcome] of outcomes.entries()) {
        if (outcome.status === 'fulfilled' && outcome.value?.pool) {
          taken.push({ scope: round[i]![0]!, pool: outcome.value.pool, counters: outcome.value.counters });
        }
      }
      const refused = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
      if (refused) {
        await this.cancelShared(input, taken);
        throw refused.reason;
      }
    }
    const pooledScopes = takenScopes(taken);
    const own: ReserveInput = {
      ...input,
      counters: input.counters.filter((c) => !pooledScopes.has(c.scope)),
      ...(input.circuits ? { circuits: input.circuits.filter((c) => !pooledScopes.has(c.scope)) } : {}),
    };
    // The own part of a request whose org or platform is pooled is its key's quiet pool's, when it holds no
    // shared counter (a shared part decided exactly near its limit is never held idle in a key's pool).
    const quiet = taken.length > 0 && !own.counters.some((c) => isShared(c.scope));
    let reservation: Reservation;
    try {
      reservation = await this.reserveOwn(own, quiet);
    } catch (err) {
      await this.cancelShared(input, taken);
      throw err;
    }
    return taken.length ? { ...reservation, counters: [...reservation.counters, ...taken.flatMap((t) => t.counters)], shared: taken } : reservation;
  }

  /**
   * The allowance pools a request of busy shared scopes takes from, one take each. A busy org's pools hold the
   * platform's part with the org's (their grants reserve on both counters): an org's request is then one take
   * and one give-back, not two of each, and its own part holds no shared counter (its key's quiet pool takes
   * it), busy platform or not. Near the org's or the platform's limit each part is taken on its own again, from
   * the few allowance items of its scope that share what is left (busy-scopes.ts markNear).
   */
  private sharedGroups(input: ReserveInput): ScopeId[][] {
    const busy = [...new Set(input.counters.filter((c) => isShared(c.scope) && this.busy.isBusy(c.scope, input.now)).map((c) => c.scope))];
    const nested = orgWithPlatform(input);
    if (!nested || !busy.includes(nested[0]) || nested.some((scope) => this.busy.isNear(scope, input.now))) return busy.map((scope) => [scope]);
    return [nested, ...busy.filter((scope) => !nested.includes(scope)).map((scope) => [scope])];
  }

  /** Gives shared takes back whole (the request was refused after them); a failure leaves them charged. */
  private async cancelShared(input: ReserveInput, taken: readonly SharedTake[]): Promise<void> {
    await Promise.all(
      taken.map((t) => this.sharedPools.cancel(sharedReservation(input, t), t.pool).catch(() => undefined)),
    );
  }

  /**
   * A pooled key's request: taken from its pool (one single-item write) while the loop guard counts the copy
   * (another). Undefined when the pool cannot decide it: then it reserves on its own (loop already counted).
   * A quiet pool is refilled every half minute or so, so its requests read the circuits too (a read unit each,
   * as a request held on its own does): a circuit opened meanwhile refuses at once, not at the next grant.
   */
  private async reservePooled(input: ReserveInput, quiet = false): Promise<Reservation | undefined> {
    const circuits = quiet ? (input.circuits ?? []) : [];
    if (circuits.length && this.holds.seenOpenRecently(circuits, input.now)) await this.holds.refuseOpenCircuits(circuits, input.now);
    const [taken, counted, open] = await Promise.allSettled([
      this.pools.take(input, quiet),
      input.loop ? this.loops.countCopy(input.loop, input.requestId) : Promise.resolve(undefined),
      circuits.length ? this.holds.refuseOpenCircuits(circuits, input.now) : Promise.resolve(),
    ]);
    // An open circuit refuses first (as one transaction would have); a failed read only when nothing else did.
    const circuitRefused = open.status === 'rejected' && (open.reason instanceof CircuitOpenError || (taken.status === 'fulfilled' && counted.status === 'fulfilled'));
    if (counted.status === 'rejected' || circuitRefused) {
      if (taken.status === 'fulfilled' && taken.value?.pool) await this.pools.cancel(taken.value, taken.value.pool);
      if (circuitRefused && counted.status === 'fulfilled' && counted.value) await this.loops.uncountLoop(counted.value).catch(() => undefined);
      throw circuitRefused ? (open as PromiseRejectedResult).reason : (counted as PromiseRejectedResult).reason;
    }
    if (taken.status === 'rejected') {
      // Refused (or the store failed): the copy the loop guard counted is taken back, as a refused reserve
      // transaction never counted it.
      if (counted.value) await this.loops.uncountLoop(counted.value).catch(() => undefined);
      throw taken.reason;
    }
    // The loop check as counted (its copy marker and presumption), for settle.
    if (taken.value) return counted.value ? { ...taken.value, loop: counted.value } : taken.value;
    const { loop: _uncounted, ...alone } = input;
    const loop = counted.value;
    let reservation: Reservation;
    try {
      reservation = await this.holds.reserveHeld(alone, undefined, { circuitsRead: quiet });
    } catch (err) {
      if (loop) await this.loops.uncountLoop(loop).catch(() => undefined);
      throw err;
    }
    // A quiet pool without room is refilled now, beside this request's call, for the key's next requests (after
    // its own reserve, so the two transactions on the key's counters never meet).
    if (quiet) this.inBackground(this.pools.refillQuiet(input));
    return loop ? { ...reservation, loop } : reservation;
  }

  /** Work that runs beside a request (a quiet pool's refill): best effort, awaited only by {@link backgroundDone}. */
  private inBackground(work: Promise<unknown>): void {
    const running = work.then(
      () => undefined,
      () => undefined,
    );
    this.background.add(running);
    void running.finally(() => this.background.delete(running));
  }

  /**
   * Resolves once the work started beside requests so far has ended (tests). Nothing waits for it otherwise: a
   * refill a stopped process never finishes leaves a stale claim and, at worst, a grant the sweeper releases whole.
   */
  async backgroundDone(): Promise<void> {
    while (this.background.size) await Promise.all([...this.background]);
  }

  async settle(input: SettleInput): Promise<void> {
    assertMicros(input.cost, 'cost');
    const shared = input.reservation.shared;
    if (!shared?.length) return this.settles.settleOwn(input);
    // The request's own part first (its usage record with it), then each shared take, once each: a failure
    // is retried by the caller, and every part that was done already does nothing the second time.
    await this.settles.settleOwn({ ...input, reservation: ownPart(input.reservation) });
    await Promise.all(shared.map((t) => this.sharedPools.settle({ ...input, reservation: sharedReservation(input.reservation, t) }, t.pool)));
  }

  /**
   * Returns a lease: its hold goes, every counter gets what the lease's requests cost instead of the held
   * amount, the rate buckets get back the units not used and the velocity windows are corrected to the cost.
   * No usage record is written (each request wrote its own). If the sweeper reclaimed the lease meanwhile
   * (charging it in full, with an 'abandoned' record), the same corrections are applied once and that record
   * is deleted; a repeated return changes nothing.
   */
  async returnLease(input: LeaseReturn): Promise<void> {
    assertMicros(input.cost, 'cost');
    const shared = input.reservation.shared;
    if (!shared?.length) return this.leases.returnOwnLease(input);
    await this.leases.returnOwnLease({ ...input, reservation: ownPart(input.reservation) });
    await Promise.all(shared.map((t) => this.sharedPools.returnLease({ ...input, reservation: sharedReservation(input.reservation, t) }, t.pool)));
  }

  async chargeRate(input: { readonly now: number; readonly rateCharges: readonly RateCharge[] }): Promise<RateState[]> {
    this.holds.refuseRateLimited(input.rateCharges, input.now);
    return this.holds.chargeRate(input);
  }

  countLoop(check: LoopCheck, requestId: string): Promise<LoopCheck> {
    return this.loops.countCopy(check, requestId);
  }

  settleLoop(check: LoopCheck, outcome: 'failed' | 'succeeded' | undefined, status?: number): Promise<void> {
    return this.loops.settleLoop(check, outcome, status);
  }

  recordLoopCopy(check: LoopCheck, requestId: string, outcome: 'failed' | 'succeeded' | undefined, status?: number): Promise<void> {
    return this.loops.recordLoopCopy(check, requestId, outcome, status);
  }

  writeUsage(records: readonly UsageRecord[]): Promise<void> {
    return this.records.writeUsage(records);
  }

  readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]> {
    return this.limits.readCounters(refs);
  }

  getLoopOverrides(keyIds: readonly string[]): Promise<Map<string, LoopOverrides>> {
    return this.limits.getLoopOverrides(keyIds);
  }

  setLoopOverrides(keyId: string, overrides: { readonly maxRepeats?: number | null; readonly maxFailures?: number | null }): Promise<void> {
    return this.limits.setLoopOverrides(keyId, overrides);
  }

  getLimits(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>> {
    return this.limits.getLimits(scopes);
  }

  getLimitSettings(scopes: readonly ScopeId[]): Promise<Map<ScopeId, StoredLimits>> {
    return this.limits.getLimitSettings(scopes);
  }

  setLimit(scope: ScopeId, window: Window, limit: MicroUsd | typeof UNLIMITED | null): Promise<void> {
    return this.limits.setLimit(scope, window, limit);
  }

  sweepExpired(now: number): Promise<number> {
    return this.sweeper.sweepExpired(now);
  }
}
