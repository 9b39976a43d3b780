/**
 * Budgets, holds and rate buckets in the budgets table (layout in schema.ts), with the usage record written
 * by settle into the usage table. Every admission decision is ONE TransactWriteItems, so a denial changes
 * nothing and two racing requests can never both take the last dollar:
 *
 *   reserve:  [bucket updates…] [counter updates…] [circuit checks…] [loop count] [velocity adds…] [hold put]
 *   settle:   [hold delete] [counter updates…] [token bucket adjust] [loop streak] [velocity fix…] [usage put]
 *             └─ hold already reclaimed by the sweeper? → settleLate (below)
 *   sweep:    [hold delete] [counters: reserved → spent (full amount)…] [usage put 'abandoned', estimated]
 *   late settle after a sweep: [counters += cost − amount] [usage put replacing 'abandoned']   (exactly once)
 *
 * DynamoDB conditions cannot do arithmetic, so each counter keeps `committed` (= spent + reserved) and the
 * reserve condition compares it with a precomputed `limit − amount`.
 */
import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  PutItemCommand,
  QueryCommand,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  type AttributeValue,
  type CancellationReason,
  type DynamoDBClient,
  type TransactWriteItem,
  type Update,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { systemClock, type Clock } from '../../core/clock';
import {
  InvalidRequestError,
  RateLimitError,
  StoreUnavailableError,
} from '../../core/errors';
import type { VelocityCharge } from '../../core/guardrails/velocity';
import { failureBlockMs, type LoopCheck, MAX_BACKOFF_DOUBLINGS } from '../../core/guardrails/loop-guard';
import type { LoopOverrides } from '../../core/guardrails/settings';
import type { MicroUsd } from '../../core/money';
import {
  gcraAdmits,
  gcraBranch,
  gcraBranchFor,
  gcraBusyCeilingUs,
  gcraFloorUs,
  gcraCanEverAdmit,
  gcraIncrementUs,
  gcraRemaining,
  gcraResetMs,
  gcraTatAfter,
  type GcraBranch,
} from '../../core/ratelimit';
import type {
  CircuitRef,
  CounterRef,
  CounterValue,
  Ledger,
  LeaseReturn,
  LeaseStore,
  RateCharge,
  RateState,
  Reservation,
  ReserveInput,
  SettleInput,
} from '../../core/stores';
import { reservationOf } from '../../core/stores';
import { type BudgetLimits, type ScopeId, type StoredLimits, UNLIMITED, type UsageRecord } from '../../core/types';
import { WINDOWS, type Window } from '../../core/windows';
import { errorName, translateError } from './client';
import { budgetExceeded, circuitOpen, loopDetected, rateLimited, requestTooLarge, unexpectedCancellation, velocityTripped } from './denials';
import {
  abandonedRecord,
  bucketHintKey,
  bucketTtl,
  circuitKey,
  counterPk,
  counterTtl,
  holdKey,
  loopKey,
  num,
  padMs,
  storedHoldOf,
  type StoredHold,
  velocityKey,
} from './items';

export { circuitKey, counterPk, holdKey, LOOP_SHARDS, loopKey, UNTIL_ACKNOWLEDGED, velocityKey } from './items';
import { HOLD_SHARDS, type TableNames } from './schema';
import { usageItem } from './usage-store';
import { DEFAULT_SHARED_POOLS, type PoolHost, type PoolOptions, type PoolRef, ScopePools, SHARED_GRANT_PREFIX } from './pools';

type Item = Record<string, AttributeValue>;

export interface DynamoDbLedgerOptions {
  /** Uses `budgets` (counters, limits, buckets, holds) and `usage` (records written by settle and sweep). */
  readonly tables: Pick<TableNames, 'budgets' | 'usage'>;
  /** How many counter items the platform budget is spread over; readCounters sums them all. */
  readonly platformShards: number;
  /** Retention (TTL) of the usage records this ledger writes. */
  readonly usageRetentionDays: number;
  /** @default the system clock */
  readonly clock?: Clock;
  /**
   * Usage records of leased requests go out in BatchWriteItem calls (up to 25 records). Off on Lambda, whose
   * role may not batch-write (one request per instance: there is nothing to batch); on for the local server.
   * @default false
   */
  readonly batchUsageWrites?: boolean;
  /** How the ledger waits between retries (a simulation passes virtual time). @default real timers */
  readonly sleep?: (ms: number) => Promise<void>;
  /**
   * Scope pools (pools.ts) for keys busy across many instances (the gateway passes its configuration: on by
   * default); absent or false: every request reserves on its own. Grants of pools are released by the sweeper
   * whatever this says. @default false
   */
  readonly pools?: PoolOptions | false;
  /**
   * Allowance pools of the shared scopes (org and platform): every request of a shared scope takes its part
   * from one of the scope's pool items with one conditional write instead of writing the scope's counters, which
   * only the pools' grants write (see "Shared scopes" at the top). Absent or false: shared scopes are reserved
   * with each request's own transaction, as a key's and a user's are. @default false
   */
  readonly sharedPools?: PoolOptions | false;
}

/** DynamoDB's limit on items per TransactWriteItems. */
export const MAX_TRANSACTION_ITEMS = 100;
/** Re-tries of reserve when a GCRA "reset" met a bucket another instance had just used (the old item shows it). */
const MAX_BRANCH_RETRIES = 2;
/** Re-tries of a transaction cancelled only by TransactionConflict (another transaction on the same item). */
const MAX_CONFLICT_RETRIES = 10;
const BATCH_GET_LIMIT = 100;
const BATCH_WRITE_LIMIT = 25;
/** Bound on the branch-hint map (one entry per bucket seen by this instance). */
const MAX_HINTS = 10_000;
const DAY_S = 86_400;
/** How old a shared scope's counter values read by this instance may be (see readCounters). */
const SHARED_READ_MS = 2_000;

/** The DynamoDB implementation of {@link Ledger} (and of {@link LeaseStore}, the writes of budget leases). */
export class DynamoDbLedger implements Ledger, LeaseStore {
  private readonly budgets: string;
  private readonly usage: string;
  private readonly platformShards: number;
  private readonly usageRetentionDays: number;
  private readonly clock: Clock;
  private readonly batchUsageWrites: boolean;
  private readonly sleep: (ms: number) => Promise<void>;
  /** Last tat (µs) this instance wrote or saw per bucket: picks the GCRA branch to try first. */
  private readonly tatHints = new Map<string, number>();
  private readonly pools: ScopePools;
  private readonly pooling: boolean;
  private readonly sharedPools: ScopePools;
  private readonly sharing: boolean;
  /** Shared scopes' counter values read lately here (see readCounters). */
  private readonly sharedReads = new Map<string, { at: number; value: CounterValue }>();
  /** Scopes busy until when (from conflicts seen here and marks read): a key's pools, a shared scope's allowances. */
  private readonly busyScopes = new Map<ScopeId, number>();
  /** When this instance last wrote a scope's busy mark. */
  private readonly markedAt = new Map<ScopeId, number>();

  constructor(
    private readonly client: DynamoDBClient,
    options: DynamoDbLedgerOptions,
  ) {
    if (!Number.isInteger(options.platformShards) || options.platformShards < 1) {
      throw new RangeError(`platformShards must be a positive whole number, got ${options.platformShards}`);
    }
    this.budgets = options.tables.budgets;
    this.usage = options.tables.usage;
    this.platformShards = options.platformShards;
    this.usageRetentionDays = options.usageRetentionDays;
    this.clock = options.clock ?? systemClock;
    this.batchUsageWrites = options.batchUsageWrites ?? false;
    this.sleep = options.sleep ?? sleep;
    this.pooling = options.pools !== undefined && options.pools !== false;
    const host: PoolHost = {
        client,
        table: this.budgets,
        clock: this.clock,
        sleep: this.sleep,
        platformShards: this.platformShards,
        reserveGrant: (input, pool) => this.reserveHeld(input, pool),
        readCounters: (refs) => this.readCounters(refs),
        counterItems: (counters, delta) => counters.map((ref) => this.counterUpdate(ref, delta)),
        velocityItems: (velocity, cost) => this.velocitySettle({ reservation: { velocity } as Reservation, cost, usage: undefined as never }),
        transact: (items) => this.transact(items),
        usageTable: this.usage,
        usageItem: (record) => usageItem(record, { retentionDays: this.usageRetentionDays }),
        refilled: (scope, now) => this.markBusy(scope, now),
      };
    this.pools = new ScopePools(host, options.pools || {});
    this.sharing = options.sharedPools !== undefined && options.sharedPools !== false;
    this.sharedPools = new ScopePools(host, { ...DEFAULT_SHARED_POOLS, ...(options.sharedPools || {}) }, 'shared');
  }

  async reserve(input: ReserveInput): Promise<Reservation> {
    assertMicros(input.amount, 'amount');
    for (const ref of input.counters) {
      if (ref.limit !== undefined && input.amount > ref.limit) throw budgetExceeded(ref, { amount: input.amount });
    }
    if (this.sharing && input.counters.some((c) => isShared(c.scope) && this.isBusy(c.scope, input.now))) return this.reserveShared(input);
    return this.reserveOwn(input);
  }

  /** A request's own part: its key's pool when the key is pooled, else its own reserve transaction. */
  private async reserveOwn(input: ReserveInput): Promise<Reservation> {
    if (this.pooling && this.isBusy(`key:${input.context.keyId}`, input.now) && this.pools.fits(input)) {
      const pooled = await this.reservePooled(input);
      if (pooled) return pooled;
    }
    return this.reserveHeld(input);
  }

  /**
   * A request of shared scopes: each shared scope's part is taken from one of its allowance pools (one
   * conditional write each, in parallel), then the rest (key, user, and any shared part a pool could not
   * decide near its limit, exactly) is reserved as usual. A refusal anywhere gives every take back.
   */
  private async reserveShared(input: ReserveInput): Promise<Reservation> {
    const scopes = [...new Set(input.counters.filter((c) => isShared(c.scope) && this.isBusy(c.scope, input.now)).map((c) => c.scope))];
    const parts = scopes.map((scope) => sharedPart(input, scope));
    const outcomes = await Promise.allSettled(parts.map((part) => this.sharedPools.take(part)));
    const taken: SharedTake[] = [];
    for (const [i, outcome] of outcomes.entries()) {
      if (outcome.status === 'fulfilled' && outcome.value?.pool) {
        taken.push({ scope: scopes[i]!, pool: outcome.value.pool, counters: outcome.value.counters });
      }
    }
    const refused = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (refused) {
      await this.cancelShared(input, taken);
      throw refused.reason;
    }
    const pooledScopes = new Set(taken.map((t) => t.scope));
    const own: ReserveInput = {
      ...input,
      counters: input.counters.filter((c) => !pooledScopes.has(c.scope)),
      ...(input.circuits ? { circuits: input.circuits.filter((c) => !pooledScopes.has(c.scope)) } : {}),
    };
    let reservation: Reservation;
    try {
      reservation = await this.reserveOwn(own);
    } catch (err) {
      await this.cancelShared(input, taken);
      throw err;
    }
    return taken.length ? { ...reservation, counters: [...reservation.counters, ...taken.flatMap((t) => t.counters)], shared: taken } : reservation;
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
   */
  private async reservePooled(input: ReserveInput): Promise<Reservation | undefined> {
    const [taken, counted] = await Promise.allSettled([
      this.pools.take(input),
      input.loop ? this.countLoop(input.loop) : Promise.resolve(),
    ]);
    if (counted.status === 'rejected') {
      if (taken.status === 'fulfilled' && taken.value?.pool) await this.pools.cancel(taken.value, taken.value.pool);
      throw counted.reason;
    }
    if (taken.status === 'rejected') {
      // Refused (or the store failed): the copy the loop guard counted is taken back, as a refused reserve
      // transaction never counted it.
      if (input.loop) await this.uncountLoop(input.loop).catch(() => undefined);
      throw taken.reason;
    }
    if (taken.value) return taken.value;
    const { loop, ...alone } = input;
    try {
      const reservation = await this.reserveHeld(alone);
      return loop ? { ...reservation, loop } : reservation;
    } catch (err) {
      if (loop) await this.uncountLoop(loop).catch(() => undefined);
      throw err;
    }
  }

  /** Takes back a copy the loop guard counted for a request that was then refused (its count and presumed failure). */
  private async uncountLoop(check: LoopCheck): Promise<void> {
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.budgets,
          Key: marshall(loopKey(check)),
          UpdateExpression: 'ADD #n :minus, fails :minus',
          ConditionExpression: 'attribute_exists(#n)',
          ExpressionAttributeNames: { '#n': `n${check.window}` },
          ExpressionAttributeValues: { ':minus': { N: '-1' } },
        }),
      );
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') return; // its window moved on meanwhile
      throw translateError(err);
    }
  }

  /** Marks a key pooled (here at once; for every instance through its limits item, at most twice a mark's life). */
  private markPooled(keyId: string, now: number): void {
    if (this.pooling) this.markBusy(`key:${keyId}`, now);
  }

  /**
   * Marks a scope busy: a key's requests then go through its pools, a shared scope's (org, platform) through
   * its allowance pools. Here at once; for every instance through the scope's limits item (`poolUntil`), which
   * every limits read fetches, written at most twice a mark's life.
   */
  private markBusy(scope: ScopeId, now: number): void {
    const until = now + this.pools.markMs;
    this.busyScopes.set(scope, until);
    if (this.busyScopes.size > MAX_HINTS) this.busyScopes.delete(this.busyScopes.keys().next().value as ScopeId);
    const last = this.markedAt.get(scope);
    if (last !== undefined && now - last < this.pools.markMs / 2 && now >= last) return;
    this.markedAt.set(scope, now);
    if (this.markedAt.size > MAX_HINTS) this.markedAt.delete(this.markedAt.keys().next().value as ScopeId);
    void this.client
      .send(
        new UpdateItemCommand({
          TableName: this.budgets,
          Key: marshall({ pk: `limit#${scope}`, sk: 'limits' }),
          UpdateExpression: 'SET poolUntil = :until',
          ConditionExpression: 'attribute_not_exists(poolUntil) OR poolUntil < :until',
          ExpressionAttributeValues: { ':until': { N: String(until) } },
        }),
      )
      .catch(() => undefined); // a hint: other instances find the scope busy on their own
  }

  private isBusy(scope: ScopeId, now: number): boolean {
    return (this.busyScopes.get(scope) ?? 0) > now;
  }

  /** Learns the busy marks on the limits items a read returned. */
  private learnMarks(values: ReadonlyArray<Record<string, unknown>>): void {
    for (const value of values) {
      const pk = String(value.pk);
      if (typeof value.poolUntil !== 'number' || !pk.startsWith('limit#')) continue;
      const scope = pk.slice('limit#'.length) as ScopeId;
      if (value.poolUntil > (this.busyScopes.get(scope) ?? 0)) this.busyScopes.set(scope, value.poolUntil);
    }
  }

  /** What a reserve's transaction conflicts say is busy: a shared scope's items, else the key's. */
  private conflicted(input: ReserveInput, itemsBefore: number, reasons: readonly CancellationReason[]): void {
    let shared = false;
    for (const [j, ref] of input.counters.entries()) {
      if (reasons[itemsBefore + j]?.Code === 'TransactionConflict' && isShared(ref.scope) && this.sharing) {
        this.markBusy(ref.scope, input.now);
        shared = true;
      }
    }
    if (!shared) this.markPooled(input.context.keyId, input.now);
  }

  /** The reserve transaction (see the file header); with `pool`, a grant for that pool, released by the sweeper. */
  private async reserveHeld(input: ReserveInput, pool?: PoolRef): Promise<Reservation> {
    assertMicros(input.amount, 'amount');
    const nowUs = input.now * 1000;
    for (const ref of input.counters) {
      if (ref.limit !== undefined && input.amount > ref.limit) throw budgetExceeded(ref, { amount: input.amount });
    }
    const charged = input.rateCharges.filter((c) => c.amount > 0);
    for (const charge of charged) {
      if (!gcraCanEverAdmit(charge.amount, charge.limitPerMinute)) throw requestTooLarge(charge);
    }
    const buckets = charged.map((charge) => {
      const key = bucketHintKey(charge);
      return { charge, key, inc: gcraIncrementUs(charge.amount, charge.limitPerMinute), branch: gcraBranch(this.tatHints.get(key), nowUs) };
    });
    const hold = holdKey(input.requestId, input.expiresAt);
    const circuits = input.circuits ?? [];
    const velocity = input.velocity ?? [];
    const guardItems = [
      ...circuits.map((ref) => this.circuitCheck(ref, input.now)),
      ...(input.loop ? [this.loopCheck(input.loop)] : []),
      ...velocity.map((charge) => this.velocityAdd(charge)),
    ];
    assertTransactionSize(buckets.length + input.counters.length + guardItems.length + 1, 'reserve');

    const holdPut: TransactWriteItem = {
      Put: {
        TableName: this.budgets,
        Item: marshall(
          {
            pk: hold.pk,
            sk: hold.sk,
            requestId: input.requestId,
            amount: input.amount,
            reservedAt: input.now,
            expiresAt: input.expiresAt,
            counters: input.counters.map((ref) => ({ pk: counterPk(ref), sk: ref.windowKey, ttl: counterTtl(ref) })),
            rateCharges: input.rateCharges,
            context: input.context,
            ttl: Math.ceil(input.expiresAt / 1000) + DAY_S,
            ...(pool ? { pool, grant: { counters: input.counters, velocity: input.velocity ?? [] } } : {}),
          },
          { removeUndefinedValues: true },
        ),
        ConditionExpression: 'attribute_not_exists(pk)',
      },
    };
    const counterUpdates = input.counters.map((ref) => this.reserveCounter(ref, input.amount));

    for (let branchRetries = 0; ; branchRetries++) {
      const items = [...buckets.map((b) => this.chargeBucket(b, nowUs)), ...counterUpdates, ...guardItems, holdPut];
      const reasons = await this.transact(items, (r) => this.conflicted(input, buckets.length, r));
      if (!reasons) break;

      // Guardrails first: an open circuit or a loop explains the denial better than a budget does.
      const guardAt = buckets.length + input.counters.length;
      for (const [k, ref] of circuits.entries()) {
        const reason = reasons[guardAt + k];
        if (reason?.Code === 'ConditionalCheckFailed') throw circuitOpen(ref, reason.Item && unmarshall(reason.Item), input.now);
      }
      if (input.loop && reasons[guardAt + circuits.length]?.Code === 'ConditionalCheckFailed') {
        const old = reasons[guardAt + circuits.length]?.Item;
        throw loopDetected(input.loop, old ? unmarshall(old) : undefined);
      }
      const velocityAt = guardAt + circuits.length + (input.loop ? 1 : 0);
      for (const [k, charge] of velocity.entries()) {
        const reason = reasons[velocityAt + k];
        if (reason?.Code === 'ConditionalCheckFailed') throw velocityTripped(charge, reason.Item && unmarshall(reason.Item), input.now);
      }

      // A counter condition never depends on a guess: it failing means the budget is spent.
      for (const [j, ref] of input.counters.entries()) {
        const reason = reasons[buckets.length + j];
        if (reason?.Code === 'ConditionalCheckFailed') {
          throw budgetExceeded(ref, { amount: input.amount, old: reason.Item && unmarshall(reason.Item) });
        }
      }
      const denied: Array<{ charge: RateCharge; inc: number; oldTat: number | undefined }> = [];
      let wrongBranch = false;
      for (const [i, b] of buckets.entries()) {
        const reason = reasons[i];
        if (reason?.Code !== 'ConditionalCheckFailed') continue;
        const oldTat = reason.Item?.tat?.N !== undefined ? Number(reason.Item.tat.N) : undefined;
        this.rememberTat(b.key, oldTat);
        if (!gcraAdmits(oldTat, nowUs, b.inc)) {
          denied.push({ charge: b.charge, inc: b.inc, oldTat });
        } else if (gcraBranchFor(oldTat, nowUs) !== b.branch) {
          // Only after a "reset" on a quiet key that another instance just used (see core/ratelimit.ts).
          b.branch = gcraBranchFor(oldTat, nowUs);
          wrongBranch = true;
        }
      }
      if (denied.length) throw rateLimited(denied, nowUs);
      if (reasons[items.length - 1]?.Code === 'ConditionalCheckFailed') {
        throw new InvalidRequestError(`Request id "${input.requestId}" already holds a reservation.`);
      }
      if (!wrongBranch) throw unexpectedCancellation(reasons);
      if (branchRetries >= MAX_BRANCH_RETRIES) {
        throw new RateLimitError('Too many concurrent requests for this key; slow down and retry.', {
          code: 'rate_limit_exceeded',
          headers: { 'Retry-After': '1' },
        });
      }
    }

    const rateStates: RateState[] = input.rateCharges.map((charge) => {
      const bucket = buckets.find((b) => b.charge === charge);
      const key = bucketHintKey(charge);
      let tat = this.tatHints.get(key);
      if (bucket) {
        // reset: exactly now + inc; advance: old tat (as far as we know it) + inc.
        tat = bucket.branch === 'reset' ? nowUs + bucket.inc : gcraTatAfter(tat, nowUs, bucket.inc);
        this.rememberTat(key, tat);
      }
      return {
        dimension: charge.dimension,
        limit: charge.limitPerMinute,
        remaining: gcraRemaining(tat, nowUs, charge.limitPerMinute),
        resetMs: gcraResetMs(tat, nowUs),
      };
    });
    return reservationOf(input, { rateStates, expiresAt: input.expiresAt, holdShard: hold.shard, ...(velocity.length ? { velocity } : {}) });
  }

  /**
   * Charges rate buckets alone, with no hold and no budget counter (a response-cache hit: it costs nothing but
   * still counts against the key's request rate). One transaction; throws RateLimitError changing nothing.
   */
  async chargeRate(input: { readonly now: number; readonly rateCharges: readonly RateCharge[] }): Promise<RateState[]> {
    const nowUs = input.now * 1000;
    const charged = input.rateCharges.filter((c) => c.amount > 0);
    if (charged.length === 0) return [];
    for (const charge of charged) if (!gcraCanEverAdmit(charge.amount, charge.limitPerMinute)) throw requestTooLarge(charge);
    const buckets = charged.map((charge) => {
      const key = bucketHintKey(charge);
      return { charge, key, inc: gcraIncrementUs(charge.amount, charge.limitPerMinute), branch: gcraBranch(this.tatHints.get(key), nowUs) };
    });
    for (let branchRetries = 0; ; branchRetries++) {
      const reasons = await this.transact(buckets.map((b) => this.chargeBucket(b, nowUs)));
      if (!reasons) break;
      const denied: Array<{ charge: RateCharge; inc: number; oldTat: number | undefined }> = [];
      for (const [i, b] of buckets.entries()) {
        const reason = reasons[i];
        if (reason?.Code !== 'ConditionalCheckFailed') continue;
        const oldTat = reason.Item?.tat?.N !== undefined ? Number(reason.Item.tat.N) : undefined;
        this.rememberTat(b.key, oldTat);
        if (gcraAdmits(oldTat, nowUs, b.inc)) b.branch = gcraBranchFor(oldTat, nowUs);
        else denied.push({ charge: b.charge, inc: b.inc, oldTat });
      }
      if (denied.length) throw rateLimited(denied, nowUs);
      if (branchRetries >= MAX_BRANCH_RETRIES) {
        throw new RateLimitError('Too many concurrent requests for this key; slow down and retry.', {
          code: 'rate_limit_exceeded',
          headers: { 'Retry-After': '1' },
        });
      }
    }
    return buckets.map((b) => {
      const tat = b.branch === 'reset' ? nowUs + b.inc : gcraTatAfter(this.tatHints.get(b.key), nowUs, b.inc);
      this.rememberTat(b.key, tat);
      return { dimension: b.charge.dimension, limit: b.charge.limitPerMinute, remaining: gcraRemaining(tat, nowUs, b.charge.limitPerMinute), resetMs: gcraResetMs(tat, nowUs) };
    });
  }

  async settle(input: SettleInput): Promise<void> {
    assertMicros(input.cost, 'cost');
    const shared = input.reservation.shared;
    if (!shared?.length) return this.settleOwn(input);
    // The request's own part first (its usage record with it), then each shared take, once each: a failure
    // is retried by the caller, and every part that was done already does nothing the second time.
    await this.settleOwn({ ...input, reservation: ownPart(input.reservation) });
    await Promise.all(shared.map((t) => this.sharedPools.settle({ ...input, reservation: sharedReservation(input.reservation, t) }, t.pool)));
  }

  private async settleOwn(input: SettleInput): Promise<void> {
    const { reservation, cost } = input;
    if (reservation.pool) {
      // The record and the loop outcome first (a failure here is retried by the caller, harmlessly); the pool
      // gets its part back last and once: if that fails, the request stays charged its whole amount.
      const loop = reservation.loop;
      await Promise.all([this.writeUsage([input.usage]), ...(loop ? [this.settleLoop(loop, input.loopOutcome)] : [])]);
      await this.pools.settle(input, reservation.pool);
      return;
    }
    const hold = holdKey(reservation.requestId, reservation.expiresAt);
    const bucketAdjustments = [...this.tokenAdjustments(input), ...this.loopStreak(input), ...this.velocitySettle(input)];
    const usagePut = (): TransactWriteItem => ({
      Put: { TableName: this.usage, Item: usageItem(input.usage, { retentionDays: this.usageRetentionDays }) },
    });

    const settleItems: TransactWriteItem[] = [
      {
        Delete: {
          TableName: this.budgets,
          Key: marshall({ pk: hold.pk, sk: hold.sk }),
          ConditionExpression: 'attribute_exists(pk)',
        },
      },
      ...reservation.counters.map((ref) =>
        this.counterUpdate(ref, { committed: cost - reservation.amount, reserved: -reservation.amount, spent: cost, requests: 1 }),
      ),
      ...bucketAdjustments,
      usagePut(),
    ];
    assertTransactionSize(settleItems.length, 'settle');
    const reasons = await this.transact(settleItems);
    if (!reasons) return;
    if (reasons[0]?.Code !== 'ConditionalCheckFailed') throw unexpectedCancellation(reasons);

    return this.settleLate(input, bucketAdjustments);
  }

  /**
   * Settle after the hold is gone: the sweeper reclaimed it (charging its full amount and writing an estimated
   * 'abandoned' record), or this request was settled already (a retried settle). Exactly one of:
   *
   *   'abandoned' record for the held amount  → [counters += cost − held] [usage put replacing it]
   *   no record at all                        → [counters += cost, requests +1] [usage put IF new]
   *   any other record                        → settled before: nothing changes
   */
  private async settleLate(input: SettleInput, bucketAdjustments: readonly TransactWriteItem[]): Promise<void> {
    const { reservation, cost } = input;
    const held = reservation.amount;
    const replace: TransactWriteItem[] = [
      ...reservation.counters.map((ref) => this.counterUpdate(ref, { committed: cost - held, spent: cost - held, requests: 0 })),
      ...bucketAdjustments,
      {
        Put: {
          TableName: this.usage,
          Item: usageItem(input.usage, { retentionDays: this.usageRetentionDays }),
          ConditionExpression: 'outcome = :abandoned AND costMicros = :held',
          ExpressionAttributeValues: { ':abandoned': { S: 'abandoned' }, ':held': { N: String(held) } },
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        },
      },
    ];
    const reasons = await this.transact(replace);
    if (!reasons) return;
    const usageReason = reasons[replace.length - 1];
    if (usageReason?.Code !== 'ConditionalCheckFailed') throw unexpectedCancellation(reasons);
    if (usageReason.Item !== undefined && Object.keys(usageReason.Item).length > 0) return; // settled before

    const fresh: TransactWriteItem[] = [
      ...reservation.counters.map((ref) => this.counterUpdate(ref, { committed: cost, spent: cost, requests: 1 })),
      ...bucketAdjustments,
      {
        Put: {
          TableName: this.usage,
          Item: usageItem(input.usage, { retentionDays: this.usageRetentionDays }),
          ConditionExpression: 'attribute_not_exists(pk)',
        },
      },
    ];
    const freshReasons = await this.transact(fresh);
    if (!freshReasons) return;
    if (freshReasons[fresh.length - 1]?.Code === 'ConditionalCheckFailed') return; // settled meanwhile
    throw unexpectedCancellation(freshReasons);
  }

  // -------------------------------------------------------------------------------------------------------
  // Budget leases (core/lease): a lease is a hold taken by reserve; these are its per-request writes and its return.

  async countLoop(check: LoopCheck): Promise<void> {
    const update = this.loopCheck(check).Update!;
    try {
      await this.client.send(new UpdateItemCommand({ ...update, ReturnValuesOnConditionCheckFailure: 'ALL_OLD' }));
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') {
        const old = (err as { Item?: Item }).Item;
        throw loopDetected(check, old ? unmarshall(old) : undefined);
      }
      throw translateError(err);
    }
  }

  async settleLoop(check: LoopCheck, outcome: 'failed' | 'succeeded' | undefined): Promise<void> {
    try {
      await this.client.send(new UpdateItemCommand(this.loopStreakUpdate(check, outcome)));
    } catch (err) {
      throw translateError(err);
    }
  }

  async recordLoopCopy(check: LoopCheck, outcome: 'failed' | 'succeeded' | undefined): Promise<void> {
    const values: Item = {
      ':one': { N: '1' },
      ':ttl': { N: String(Math.ceil((check.windowEnd + check.windowMs) / 1000) + DAY_S) },
    };
    let update: string;
    if (outcome === 'failed') {
      update = 'ADD #n :one, fails :one SET lastFailAt = :now, #ttl = :ttl REMOVE #prev';
      values[':now'] = { N: String(this.clock.now()) };
    } else if (outcome === 'succeeded') {
      update = 'ADD #n :one SET #ttl = :ttl REMOVE fails, lastFailAt, #prev';
    } else {
      update = 'ADD #n :one SET #ttl = :ttl REMOVE #prev';
    }
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.budgets,
          Key: marshall(loopKey(check)),
          UpdateExpression: update,
          ExpressionAttributeNames: { '#n': `n${check.window}`, '#prev': `n${check.window - 1}`, '#ttl': 'ttl' },
          ExpressionAttributeValues: values,
        }),
      );
    } catch (err) {
      throw translateError(err);
    }
  }

  async writeUsage(records: readonly UsageRecord[]): Promise<void> {
    const items = records.map((record) => usageItem(record, { retentionDays: this.usageRetentionDays }));
    try {
      if (!this.batchUsageWrites) {
        await Promise.all(items.map((Item) => this.client.send(new PutItemCommand({ TableName: this.usage, Item }))));
        return;
      }
      for (let i = 0; i < items.length; i += BATCH_WRITE_LIMIT) {
        let pending = items.slice(i, i + BATCH_WRITE_LIMIT).map((Item) => ({ PutRequest: { Item } }));
        for (let attempt = 0; pending.length; attempt++) {
          if (attempt > 0) await this.sleep(Math.min(500, 20 * 2 ** attempt));
          if (attempt > 8) throw new StoreUnavailableError('The gateway cannot record usage right now.');
          const out = await this.client.send(new BatchWriteItemCommand({ RequestItems: { [this.usage]: pending } }));
          pending = (out.UnprocessedItems?.[this.usage] ?? []).flatMap((r) => (r.PutRequest?.Item ? [{ PutRequest: { Item: r.PutRequest.Item } }] : []));
        }
      }
    } catch (err) {
      throw translateError(err);
    }
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
    if (!shared?.length) return this.returnOwnLease(input);
    await this.returnOwnLease({ ...input, reservation: ownPart(input.reservation) });
    await Promise.all(shared.map((t) => this.sharedPools.returnLease({ ...input, reservation: sharedReservation(input.reservation, t) }, t.pool)));
  }

  private async returnOwnLease(input: LeaseReturn): Promise<void> {
    const { reservation, cost } = input;
    if (reservation.pool) return this.pools.returnLease(input, reservation.pool);
    const hold = holdKey(reservation.requestId, reservation.expiresAt);
    const settleLike: SettleInput = {
      reservation,
      cost,
      ...(input.usedTokens === undefined ? {} : { actualTokens: input.usedTokens }),
      usage: undefined as never,
    };
    const adjustments = [...this.tokenAdjustments(settleLike), ...this.requestRefunds(reservation, input.usedRequests), ...this.velocitySettle(settleLike)];
    const items: TransactWriteItem[] = [
      { Delete: { TableName: this.budgets, Key: marshall({ pk: hold.pk, sk: hold.sk }), ConditionExpression: 'attribute_exists(pk)' } },
      ...reservation.counters.map((ref) =>
        this.counterUpdate(ref, { committed: cost - reservation.amount, reserved: -reservation.amount, spent: cost, requests: input.usedRequests }),
      ),
      ...adjustments,
    ];
    assertTransactionSize(items.length, 'lease return');
    const reasons = await this.transact(items);
    if (!reasons) return;
    if (reasons[0]?.Code !== 'ConditionalCheckFailed') throw unexpectedCancellation(reasons);

    const marker = usageItem(abandonedRecord(storedHoldOf(reservation, input.reservedAt, input.context), reservation.expiresAt), {
      retentionDays: this.usageRetentionDays,
    });
    const late: TransactWriteItem[] = [
      ...reservation.counters.map((ref) =>
        this.counterUpdate(ref, { committed: cost - reservation.amount, spent: cost - reservation.amount, requests: input.usedRequests - 1 }),
      ),
      ...adjustments,
      {
        Delete: {
          TableName: this.usage,
          Key: { pk: marker.pk!, sk: marker.sk! },
          ConditionExpression: 'outcome = :abandoned AND costMicros = :held',
          ExpressionAttributeValues: { ':abandoned': { S: 'abandoned' }, ':held': { N: String(reservation.amount) } },
        },
      },
    ];
    const lateReasons = await this.transact(late);
    if (!lateReasons) return;
    if (lateReasons[late.length - 1]?.Code === 'ConditionalCheckFailed') return; // returned before
    throw unexpectedCancellation(lateReasons);
  }

  /** A lease's request units it did not use, given back to the bucket (tokens are corrected by tokenAdjustments). */
  private requestRefunds(reservation: Reservation, usedRequests: number): TransactWriteItem[] {
    const nowUs = this.clock.now() * 1000;
    return reservation.rateCharges
      .filter((c) => c.dimension === 'requests' && c.amount > usedRequests)
      .flatMap((charge) => this.bucketShift(charge, usedRequests - charge.amount, nowUs));
  }

  /**
   * Current values of counters. With shared pools on, a shared scope's values are at most
   * {@link SHARED_READ_MS} old in this instance (thousands of instances reading an org's counters on every
   * request would pass its partition's read throughput); only the pools' grants write them, and every grant's
   * condition reads the item itself, so no decision about money rests on these values.
   */
  async readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]> {
    const now = this.clock.now();
    if (!this.sharing || !refs.some((r) => isShared(r.scope) && this.isBusy(r.scope, now))) return this.readCountersNow(refs);
    const idOf = (r: CounterRef) => `${r.scope}|${r.windowKey}`;
    const cached = (r: CounterRef) => isShared(r.scope) && this.isBusy(r.scope, now);
    const stale = refs.filter((r) => !cached(r) || !((this.sharedReads.get(idOf(r))?.at ?? -Infinity) > now - SHARED_READ_MS));
    const fresh = stale.length ? await this.readCountersNow(stale) : [];
    for (const v of fresh) {
      if (!cached(v.ref)) continue;
      if (this.sharedReads.size >= MAX_HINTS) this.sharedReads.clear();
      this.sharedReads.set(idOf(v.ref), { at: now, value: v });
    }
    const seen = new Set<string>();
    const out: CounterValue[] = [];
    for (const r of refs) {
      const id = idOf(r);
      if (seen.has(id)) continue;
      seen.add(id);
      const value = fresh.find((v) => idOf(v.ref) === id) ?? this.sharedReads.get(id)?.value;
      if (value) out.push(value);
    }
    return out;
  }

  private async readCountersNow(refs: readonly CounterRef[]): Promise<CounterValue[]> {
    const groups = new Map<string, { ref: CounterRef; keys: string[] }>();
    for (const ref of refs) {
      const id = `${ref.scope}|${ref.windowKey}`;
      if (groups.has(id)) continue;
      const pks =
        ref.scope === 'platform'
          ? Array.from({ length: this.platformShards }, (_, shard) => counterPk({ scope: 'platform', shard }))
          : [counterPk(ref)];
      const { shard: _shard, ...unsharded } = ref;
      groups.set(id, { ref: ref.scope === 'platform' ? unsharded : ref, keys: pks.map((pk) => `${pk}|${ref.windowKey}`) });
    }
    const keys = [...new Set([...groups.values()].flatMap((g) => g.keys))].map((k) => {
      const cut = k.lastIndexOf('|');
      return { pk: k.slice(0, cut), sk: k.slice(cut + 1) };
    });
    const found = new Map<string, Record<string, unknown>>();
    for (const item of await this.batchGet(keys)) {
      const value = unmarshall(item);
      found.set(`${value.pk}|${value.sk}`, value);
    }
    return [...groups.values()].map(({ ref, keys: ids }) => {
      let committed = 0;
      let spent = 0;
      let reserved = 0;
      let requests = 0;
      for (const id of ids) {
        const value = found.get(id);
        committed += num(value?.committed);
        spent += num(value?.spent);
        reserved += num(value?.reserved);
        requests += num(value?.requests);
      }
      return { ref, committed, spent, reserved, requests };
    });
  }

  async getLoopOverrides(keyIds: readonly string[]): Promise<Map<string, LoopOverrides>> {
    const out = new Map<string, LoopOverrides>();
    const unique = [...new Set(keyIds)];
    if (unique.length === 0) return out;
    const items = (await this.batchGet(unique.map((id) => ({ pk: `limit#key:${id}`, sk: 'limits' })))).map((item) => unmarshall(item));
    this.learnMarks(items);
    for (const value of items) {
      const overrides: { maxRepeats?: number; maxFailures?: number } = {};
      if (typeof value.loopMaxRepeats === 'number') overrides.maxRepeats = value.loopMaxRepeats;
      if (typeof value.loopMaxFailures === 'number') overrides.maxFailures = value.loopMaxFailures;
      if (Object.keys(overrides).length > 0) out.set(String(value.pk).slice('limit#key:'.length), overrides);
    }
    return out;
  }

  async setLoopOverrides(
    keyId: string,
    overrides: { readonly maxRepeats?: number | null; readonly maxFailures?: number | null },
  ): Promise<void> {
    const sets = ['updatedAt = :now'];
    const removes: string[] = [];
    const values: Item = { ':now': { S: new Date(this.clock.now()).toISOString() } };
    for (const [field, attr] of [['maxRepeats', 'loopMaxRepeats'], ['maxFailures', 'loopMaxFailures']] as const) {
      const v = overrides[field];
      if (v === undefined) continue;
      if (v === null) {
        removes.push(attr);
        continue;
      }
      if (!Number.isInteger(v) || v < 1) throw new RangeError(`${field} must be a positive whole number, got ${v}`);
      sets.push(`${attr} = :${attr}`);
      values[`:${attr}`] = { N: String(v) };
    }
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.budgets,
          Key: marshall({ pk: `limit#key:${keyId}`, sk: 'limits' }),
          UpdateExpression: `SET ${sets.join(', ')}${removes.length ? ` REMOVE ${removes.join(', ')}` : ''}`,
          ExpressionAttributeValues: values,
        }),
      );
    } catch (err) {
      throw translateError(err);
    }
  }

  async getLimits(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>> {
    const unique = [...new Set(scopes)];
    const out = new Map<ScopeId, BudgetLimits>(unique.map((scope) => [scope, {}]));
    const items = await this.batchGet(unique.map((scope) => ({ pk: `limit#${scope}`, sk: 'limits' })));
    for (const item of items) {
      const value = unmarshall(item);
      const scope = String(value.pk).slice('limit#'.length) as ScopeId;
      const limits: Partial<Record<Window, MicroUsd>> = {};
      for (const window of WINDOWS) if (typeof value[window] === 'number') limits[window] = value[window] as number;
      out.set(scope, limits);
    }
    return out;
  }

  async getLimitSettings(scopes: readonly ScopeId[]): Promise<Map<ScopeId, StoredLimits>> {
    const unique = [...new Set(scopes)];
    const out = new Map<ScopeId, StoredLimits>(unique.map((scope) => [scope, {}]));
    const items = (await this.batchGet(unique.map((scope) => ({ pk: `limit#${scope}`, sk: 'limits' })))).map((item) => unmarshall(item));
    this.learnMarks(items);
    for (const value of items) {
      const scope = String(value.pk).slice('limit#'.length) as ScopeId;
      const limits: Partial<Record<Window, MicroUsd | typeof UNLIMITED>> = {};
      for (const window of WINDOWS) {
        const v = value[window];
        if (typeof v === 'number') limits[window] = v;
        else if (v === UNLIMITED) limits[window] = UNLIMITED;
      }
      out.set(scope, limits);
    }
    return out;
  }

  async setLimit(scope: ScopeId, window: Window, limit: MicroUsd | typeof UNLIMITED | null): Promise<void> {
    if (limit !== null && limit !== UNLIMITED) assertMicros(limit, 'limit');
    const values: Item = { ':now': { S: new Date(this.clock.now()).toISOString() } };
    let update = 'SET updatedAt = :now';
    if (limit === null) {
      update += ' REMOVE #w';
    } else {
      update += ', #w = :limit';
      // The explicit "no limit" is a string, so no number comparison can ever mistake it for a limit.
      values[':limit'] = limit === UNLIMITED ? { S: UNLIMITED } : { N: String(limit) };
    }
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.budgets,
          Key: marshall({ pk: `limit#${scope}`, sk: 'limits' }),
          UpdateExpression: update,
          ExpressionAttributeNames: { '#w': window },
          ExpressionAttributeValues: values,
        }),
      );
    } catch (err) {
      throw translateError(err);
    }
  }

  async sweepExpired(now: number): Promise<number> {
    const perShard = await Promise.all(
      Array.from({ length: HOLD_SHARDS }, (_, shard) => this.sweepShard(`hold#${shard}`, now)),
    );
    return perShard.reduce((a, b) => a + b, 0);
  }

  private async sweepShard(pk: string, now: number): Promise<number> {
    let released = 0;
    let startKey: Item | undefined;
    do {
      let page;
      try {
        page = await this.client.send(
          new QueryCommand({
            TableName: this.budgets,
            KeyConditionExpression: 'pk = :pk AND sk < :bound',
            ExpressionAttributeValues: { ':pk': { S: pk }, ':bound': { S: padMs(now) } },
            ExclusiveStartKey: startKey,
          }),
        );
      } catch (err) {
        throw translateError(err);
      }
      startKey = page.LastEvaluatedKey;
      for (const item of page.Items ?? []) {
        if (await this.releaseHold(unmarshall(item) as StoredHold, now)) released++;
      }
    } while (startKey);
    return released;
  }

  /**
   * Reclaims one expired hold, charging its full amount: the gateway cannot prove the provider did not do the
   * work, so the money stays spent (moved from `reserved` to `spent`, `committed` unchanged) and the usage
   * record says `abandoned`, estimated. A late settle with real usage replaces both exactly once
   * ({@link settleLate}). False when the hold vanished meanwhile (settled after all).
   */
  private async releaseHold(hold: StoredHold, now: number): Promise<boolean> {
    if (hold.pool && hold.grant) return this.releaseGrant(hold as StoredHold & Required<Pick<StoredHold, 'pool' | 'grant'>>, now);
    const record = abandonedRecord(hold, now);
    const items: TransactWriteItem[] = [
      {
        Delete: {
          TableName: this.budgets,
          Key: marshall({ pk: hold.pk, sk: hold.sk }),
          ConditionExpression: 'attribute_exists(pk)',
        },
      },
      ...hold.counters.map((c) => ({
        Update: {
          TableName: this.budgets,
          Key: marshall({ pk: c.pk, sk: c.sk }),
          UpdateExpression: 'ADD reserved :neg, spent :amount, requests :one SET #ttl = if_not_exists(#ttl, :ttl)',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: {
            ':neg': { N: String(-hold.amount) },
            ':amount': { N: String(hold.amount) },
            ':one': { N: '1' },
            ':ttl': { N: String(c.ttl) },
          },
        },
      })),
      { Put: { TableName: this.usage, Item: usageItem(record, { retentionDays: this.usageRetentionDays }) } },
    ];
    assertTransactionSize(items.length, 'sweep');
    const reasons = await this.transact(items);
    if (!reasons) return true;
    if (reasons[0]?.Code === 'ConditionalCheckFailed') return false;
    throw unexpectedCancellation(reasons);
  }

  /** Releases a pool's grant once the pool's epoch and grace are over (pools.ts `release`). */
  private async releaseGrant(hold: StoredHold & Required<Pick<StoredHold, 'pool' | 'grant'>>, now: number): Promise<boolean> {
    const pools = hold.requestId.startsWith(SHARED_GRANT_PREFIX) ? this.sharedPools : this.pools;
    try {
      return await pools.release(hold, now);
    } catch (err) {
      if (err instanceof StoreUnavailableError) return false; // left for the next sweep; the others go on
      throw err;
    }
  }

  /** Passes only while the scope's circuit is closed (no item, or its `openUntil` has passed). */
  private circuitCheck(ref: CircuitRef, now: number): TransactWriteItem {
    return {
      ConditionCheck: {
        TableName: this.budgets,
        Key: marshall(circuitKey(ref)),
        ConditionExpression: 'attribute_not_exists(openUntil) OR openUntil <= :now',
        ExpressionAttributeValues: { ':now': { N: String(now) } },
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      },
    };
  }

  /**
   * Counts the copy at admission: passes while the fingerprint's copies admitted in this window (`n<window>`)
   * are fewer than the maximum and its failure streak is short or old, then adds one to both. The copy is
   * presumed failed until it settles (settle clears the streak on success, or takes the presumption back when
   * the caller left), so a client that retries the instant it gets an answer meets exactly the stated limits.
   */
  private loopCheck(check: LoopCheck): TransactWriteItem {
    // Conditions cannot compute 2^fails, so the backoff is one term per streak length:
    //   fails = max+j AND lastFailAt < now − window·2^j   (j < D),   fails >= max+D AND lastFailAt < now − window·2^D
    const values: Item = {
      ':maxRepeats': { N: String(check.maxRepeats) },
      ':maxFails': { N: String(check.maxFailures) },
    };
    const terms: string[] = [];
    for (let j = 0; j <= MAX_BACKOFF_DOUBLINGS; j++) {
      const fails = check.maxFailures + j;
      values[`:f${j}`] = { N: String(fails) };
      values[`:s${j}`] = { N: String(check.now - failureBlockMs(fails, check.maxFailures, check.windowMs)) };
      terms.push(`(fails ${j < MAX_BACKOFF_DOUBLINGS ? '=' : '>='} :f${j} AND lastFailAt < :s${j})`);
    }
    values[':one'] = { N: '1' };
    values[':ttl'] = { N: String(Math.ceil((check.windowEnd + check.windowMs) / 1000) + DAY_S) };
    return {
      Update: {
        TableName: this.budgets,
        Key: marshall(loopKey(check)),
        UpdateExpression: 'ADD #n :one, fails :one SET #ttl = :ttl REMOVE #prev',
        ConditionExpression:
          '(attribute_not_exists(#n) OR #n < :maxRepeats) AND ' +
          `(attribute_not_exists(fails) OR fails < :maxFails OR ${terms.join(' OR ')})`,
        ExpressionAttributeNames: { '#n': `n${check.window}`, '#prev': `n${check.window - 1}`, '#ttl': 'ttl' },
        ExpressionAttributeValues: values,
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      },
    };
  }

  /** Adds the request's admitted spend to a velocity window while that window is below its ceiling. */
  private velocityAdd(charge: VelocityCharge): TransactWriteItem {
    return {
      Update: {
        TableName: this.budgets,
        Key: marshall(velocityKey(charge)),
        UpdateExpression: 'ADD v :a SET #ttl = :ttl',
        ConditionExpression: 'attribute_not_exists(v) OR v < :ceiling',
        ExpressionAttributeNames: { '#ttl': 'ttl' },
        ExpressionAttributeValues: {
          ':a': { N: String(charge.admittedMicros) },
          ':ceiling': { N: String(charge.ceilingMicros) },
          ':ttl': { N: String(Math.ceil(charge.windowEnd / 1000) + DAY_S) },
        },
        ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
      },
    };
  }

  /** Settle's velocity correction: the window keeps the actual cost instead of what was admitted. */
  private velocitySettle(input: SettleInput): TransactWriteItem[] {
    return (input.reservation.velocity ?? [])
      .filter((charge) => input.cost !== charge.admittedMicros)
      .map((charge) => ({
        Update: {
          TableName: this.budgets,
          Key: marshall(velocityKey(charge)),
          UpdateExpression: 'ADD v :d SET #ttl = if_not_exists(#ttl, :ttl)',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: {
            ':d': { N: String(input.cost - charge.admittedMicros) },
            ':ttl': { N: String(Math.ceil(charge.windowEnd / 1000) + DAY_S) },
          },
        },
      }));
  }

  /**
   * Settle's loop guard update (the copy was counted, and presumed failed, at admission): a failure stamps
   * lastFailAt (the block runs from it), a success clears the streak, no outcome (the caller left) takes the
   * presumed failure back.
   */
  private loopStreak(input: SettleInput): TransactWriteItem[] {
    const check = input.reservation.loop;
    return check ? [{ Update: this.loopStreakUpdate(check, input.loopOutcome) }] : [];
  }

  private loopStreakUpdate(check: LoopCheck, outcome: 'failed' | 'succeeded' | undefined): Update {
    const values: Item = { ':ttl': { N: String(Math.ceil((check.windowEnd + check.windowMs) / 1000) + DAY_S) } };
    let update: string;
    if (outcome === 'failed') {
      update = 'SET lastFailAt = :now, #ttl = :ttl';
      values[':now'] = { N: String(this.clock.now()) };
    } else if (outcome === 'succeeded') {
      update = 'SET #ttl = :ttl REMOVE fails, lastFailAt';
    } else {
      update = 'ADD fails :minus SET #ttl = :ttl';
      values[':minus'] = { N: '-1' };
    }
    return {
      TableName: this.budgets,
      Key: marshall(loopKey(check)),
      UpdateExpression: update,
      ExpressionAttributeNames: { '#ttl': 'ttl' },
      ExpressionAttributeValues: values,
    };
  }

  private reserveCounter(ref: CounterRef, amount: MicroUsd): TransactWriteItem {
    const values: Item = { ':a': { N: String(amount) }, ':ttl': { N: String(counterTtl(ref)) } };
    let condition: string | undefined;
    if (ref.limit !== undefined) {
      // committed + a <= limit, written without arithmetic: committed <= limit - a (precomputed).
      condition = 'attribute_not_exists(committed) OR committed <= :max';
      values[':max'] = { N: String(ref.limit - amount) };
    }
    return {
      Update: {
        TableName: this.budgets,
        Key: marshall({ pk: counterPk(ref), sk: ref.windowKey }),
        UpdateExpression: 'ADD committed :a, reserved :a SET #ttl = :ttl',
        ConditionExpression: condition,
        ExpressionAttributeNames: { '#ttl': 'ttl' },
        ExpressionAttributeValues: values,
        ReturnValuesOnConditionCheckFailure: condition ? 'ALL_OLD' : undefined,
      },
    };
  }

  private counterUpdate(
    ref: CounterRef,
    delta: { readonly committed: number; readonly spent: number; readonly requests: number; readonly reserved?: number },
  ): TransactWriteItem {
    const adds = ['committed :c', 'spent :s', 'requests :r'];
    const values: Item = {
      ':c': { N: String(delta.committed) },
      ':s': { N: String(delta.spent) },
      ':r': { N: String(delta.requests) },
      ':ttl': { N: String(counterTtl(ref)) },
    };
    if (delta.reserved !== undefined) {
      adds.push('reserved :h');
      values[':h'] = { N: String(delta.reserved) };
    }
    return {
      Update: {
        TableName: this.budgets,
        Key: marshall({ pk: counterPk(ref), sk: ref.windowKey }),
        UpdateExpression: `ADD ${adds.join(', ')} SET #ttl = if_not_exists(#ttl, :ttl)`,
        ExpressionAttributeNames: { '#ttl': 'ttl' },
        ExpressionAttributeValues: values,
      },
    };
  }

  private chargeBucket(b: { charge: RateCharge; inc: number; branch: GcraBranch }, nowUs: number): TransactWriteItem {
    const common = {
      TableName: this.budgets,
      Key: marshall({ pk: `rl#${b.charge.keyId}`, sk: b.charge.dimension }),
      ExpressionAttributeNames: { '#ttl': 'ttl' },
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const,
    };
    const ttl = { N: String(bucketTtl(nowUs)) };
    const floor = { N: String(gcraFloorUs(nowUs)) };
    if (b.branch === 'reset') {
      return {
        Update: {
          ...common,
          UpdateExpression: 'SET tat = :tat, #ttl = :ttl',
          ConditionExpression: 'attribute_not_exists(tat) OR tat < :floor',
          ExpressionAttributeValues: { ':tat': { N: String(nowUs + b.inc) }, ':ttl': ttl, ':floor': floor },
        },
      };
    }
    // One condition for a busy bucket and one idle for up to the lag: no wrong guess under concurrency.
    return {
      Update: {
        ...common,
        UpdateExpression: 'SET tat = if_not_exists(tat, :now) + :inc, #ttl = :ttl',
        ConditionExpression: 'attribute_not_exists(tat) OR (tat >= :floor AND tat <= :ceiling)',
        ExpressionAttributeValues: {
          ':inc': { N: String(b.inc) },
          ':ttl': ttl,
          ':now': { N: String(nowUs) },
          ':floor': floor,
          ':ceiling': { N: String(gcraBusyCeilingUs(nowUs, b.inc)) },
        },
      },
    };
  }

  /**
   * Token bucket corrections for settle: the estimate charged at reserve minus the actual tokens, as a tat
   * shift. A plain ADD without condition: on a bucket item that expired meanwhile it creates a tat near 0,
   * i.e. an idle bucket, which is right; a condition could only make settle fail for no gain.
   */
  private tokenAdjustments(input: SettleInput): TransactWriteItem[] {
    if (input.actualTokens === undefined) return [];
    const nowUs = this.clock.now() * 1000;
    return input.reservation.rateCharges
      .filter((c) => c.dimension === 'tokens')
      .flatMap((charge) => this.bucketShift(charge, (input.actualTokens as number) - charge.amount, nowUs));
  }

  /** Moves a bucket's tat by `units` (negative: gives units back), keeping this instance's hint in step. */
  private bucketShift(charge: RateCharge, units: number, nowUs: number): TransactWriteItem[] {
    const inc = gcraIncrementUs(units, charge.limitPerMinute);
    if (inc === 0) return [];
    const key = bucketHintKey(charge);
    const hint = this.tatHints.get(key);
    if (hint !== undefined) this.rememberTat(key, hint + inc);
    return [
      {
        Update: {
          TableName: this.budgets,
          Key: marshall({ pk: `rl#${charge.keyId}`, sk: charge.dimension }),
          UpdateExpression: 'ADD tat :inc SET #ttl = if_not_exists(#ttl, :ttl)',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: { ':inc': { N: String(inc) }, ':ttl': { N: String(bucketTtl(nowUs)) } },
        },
      },
    ];
  }

  /**
   * Runs one transaction, re-trying (with jittered backoff) while it is cancelled only by conflicts with
   * other transactions. Resolves undefined on success, or the cancellation reasons (one per item) when a
   * condition failed. Anything else is translated and thrown.
   */
  private async transact(items: TransactWriteItem[], onConflict?: (reasons: readonly CancellationReason[]) => void): Promise<CancellationReason[] | undefined> {
    for (let attempt = 0; ; attempt++) {
      try {
        await this.client.send(new TransactWriteItemsCommand({ TransactItems: items }));
        return undefined;
      } catch (err) {
        if (errorName(err) !== 'TransactionCanceledException') throw translateError(err);
        const reasons = (err as { CancellationReasons?: CancellationReason[] }).CancellationReasons ?? [];
        // A hot partition over its throughput cancels the transaction (the SDK does not retry that): nothing
        // was written and spend cannot be verified now, so it is the store being unavailable (503), not a bug.
        if (reasons.some((r) => r.Code === 'ThrottlingError' || r.Code === 'ProvisionedThroughputExceeded')) {
          throw new StoreUnavailableError('The gateway cannot record this request right now; try again shortly.', {
            code: 'store_unavailable',
            headers: { 'Retry-After': '1' },
            cause: err,
          });
        }
        const onlyConflicts =
          reasons.some((r) => r.Code === 'TransactionConflict') &&
          reasons.every((r) => r.Code === undefined || r.Code === 'None' || r.Code === 'TransactionConflict');
        if (!onlyConflicts) return reasons;
        if (attempt === 0) onConflict?.(reasons);
        if (attempt >= MAX_CONFLICT_RETRIES) {
          throw new StoreUnavailableError('The gateway is too busy to record this request; try again shortly.', {
            code: 'store_contention',
            headers: { 'Retry-After': '1' },
            cause: err,
          });
        }
        await this.sleep(Math.random() * Math.min(200, 10 * 2 ** attempt));
      }
    }
  }

  /** BatchGetItem over `keys` of the budgets table, 100 at a time, re-asking for unprocessed keys. */
  private async batchGet(keys: ReadonlyArray<{ pk: string; sk: string }>): Promise<Item[]> {
    const out: Item[] = [];
    try {
      for (let i = 0; i < keys.length; i += BATCH_GET_LIMIT) {
        let pending: Item[] = keys.slice(i, i + BATCH_GET_LIMIT).map((k) => marshall(k));
        for (let attempt = 0; pending.length; attempt++) {
          if (attempt > 0) await this.sleep(Math.min(500, 20 * 2 ** attempt));
          if (attempt > 8) throw new StoreUnavailableError('The gateway cannot read its budgets right now.');
          const page = await this.client.send(
            new BatchGetItemCommand({ RequestItems: { [this.budgets]: { Keys: pending, ConsistentRead: true } } }),
          );
          out.push(...(page.Responses?.[this.budgets] ?? []));
          pending = page.UnprocessedKeys?.[this.budgets]?.Keys ?? [];
        }
      }
    } catch (err) {
      throw translateError(err);
    }
    return out;
  }

  private rememberTat(key: string, tat: number | undefined): void {
    if (tat === undefined) {
      this.tatHints.delete(key);
      return;
    }
    if (this.tatHints.size >= MAX_HINTS && !this.tatHints.has(key)) this.tatHints.clear();
    this.tatHints.set(key, tat);
  }
}



function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function assertMicros(value: number, name: string): void {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(`${name} must be a non-negative whole number of micro-USD, got ${value}`);
  }
}

function assertTransactionSize(count: number, what: string): void {
  if (count > MAX_TRANSACTION_ITEMS) {
    throw new RangeError(`${what} needs ${count} items in one transaction; DynamoDB allows ${MAX_TRANSACTION_ITEMS}`);
  }
}


/** A shared scope's part of a reservation: the pool it was taken from and its counters (as the pool keeps them). */
type SharedTake = NonNullable<Reservation['shared']>[number];

/** Scopes whose requests are many users' (an org, the platform): admitted through allowance pools when on. */
function isShared(scope: ScopeId): boolean {
  return scope === 'platform' || scope.startsWith('org:');
}

/** One shared scope's part of a request, as its allowance pool takes it (no rate, loop or velocity charges). */
function sharedPart(input: ReserveInput, scope: ScopeId): ReserveInput {
  return {
    requestId: input.requestId,
    now: input.now,
    expiresAt: input.expiresAt,
    amount: input.amount,
    counters: input.counters.filter((c) => c.scope === scope),
    rateCharges: [],
    ...(input.circuits ? { circuits: input.circuits.filter((c) => c.scope === scope) } : {}),
    // The pools of a shared scope are grouped by the scope (poolGroupKey reads keyId).
    context: { ...input.context, keyId: scope },
  };
}

/** The reservation of one shared take, as its pool settles it. */
function sharedReservation(source: Pick<Reservation, 'requestId' | 'amount' | 'expiresAt'>, take: SharedTake): Reservation {
  return { requestId: source.requestId, amount: source.amount, counters: take.counters, rateCharges: [], rateStates: [], expiresAt: source.expiresAt, holdShard: 0, pool: take.pool };
}

/** A reservation without its shared takes: what the request holds on its own. */
function ownPart(reservation: Reservation): Reservation {
  const shared = new Set((reservation.shared ?? []).map((t) => t.scope));
  const { shared: _shared, ...own } = reservation;
  return { ...own, counters: reservation.counters.filter((c) => !shared.has(c.scope)) };
}
