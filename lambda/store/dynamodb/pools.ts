/**
 * Scope pools: one key's requests admitted with single-item writes while the key is busy across many
 * instances (1,000 Lambda instances of one user), instead of one multi-item transaction each.
 *
 * A transaction on an item conflicts with every other transaction on that item, so one scope's counter,
 * bucket, circuit and velocity items take a few dozen transactions a second at most; single-item writes to
 * one partition take a thousand. A pool turns the many into the few:
 *
 *   request of a pooled key ──► pool item `pool#<group>#<k>` / `e<epoch>` (k = hash(request id) mod shards)
 *        ONE UpdateItem: room −= amount, units −= charge   IF room ≥ amount AND units ≥ charge AND not closed
 *          └─ not enough room ──► the last epoch's pool item, once (what its requests gave back)
 *          └─ a shared scope near its limit reads this item and the last epoch's first (one consistent batch read):
 *             this one dry (a grant refused a moment ago) → the last one's room, else the refusal, nothing written
 *          └─ not there either ──► one instance (a claim on the item) refills it: ONE ordinary reserve of a
 *             grant (every limited counter within its limit, the key's rate buckets, circuits, velocity, and a hold
 *             that names the pool), then ADD room += grant; the others wait for it, polling the item with
 *             consistent reads (a refused take would cost a write unit), and take again. A grant
 *             refused although it was only this request's part leaves the pool dry for a second: its takers
 *             get the same refusal without asking
 *   settle ──► usage record, loop outcome, then ONE UpdateItem: room += amount − cost, spent += cost
 *   sweeper, once the pool's epoch and grace are over ──► closes the pool and releases its grants' holds, in one
 *        transaction: limited counters get the grants minus the room left (what was taken and never given back
 *        is charged), the windows a grant did not write what was spent
 *
 * The guarantee is the reserve's: money enters a pool only through a grant that passed every counter's
 * condition, so spend never passes a limit. What a pool costs: its unused room is held (early refusal),
 * until the pool closes; circuits, velocity and limit changes reach a pooled key when its pool is refilled
 * (a new limit makes a new pool group at once); a key's velocity windows see its grants when they are taken
 * (more than was spent, corrected when released). A request whose instance dies is charged its whole amount
 * (it never gave it back), like a swept hold.
 *
 * Which keys: a key is pooled for `markMs` after a reserve of its requests met a transaction conflict (the
 * mark is written on the key's limits item, where every instance's limits read finds it), and while its
 * pools are being refilled.
 *
 * Quiet keys (`quietEpochMs`, 5 minutes): a key that is not busy while its org or the platform is pooled takes its
 * own part from ONE item, `pool#<group>#q`, whose epochs are longer and whose grants last about a minute.
 * A request it has no room for is not made to wait: it reserves on its own, and the ledger then has the item
 * refilled beside the request's call ({@link ScopePools.refillQuiet}), once the key has shown it keeps sending
 * (`quietWarmupMs`).
 *
 * Layout: pools.ts (options, take, settle routing, epochs), pool-refill.ts (grants), pool-giveback.ts
 * (settle, lease return, cancel), pool-release.ts (the sweeper's release), pool-reclaim.ts (idle room back to
 * the counters before the release, near a limit), pool-markers.ts (markers, records).
 */
import { type CancellationReason, type DynamoDBClient, GetItemCommand, type TransactWriteItem, UpdateItemCommand, type UpdateItemCommandOutput } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { randomBytes } from 'node:crypto';
import type { Clock } from '../../core/clock';
import { StoreUnavailableError } from '../../core/errors';
import type { VelocityCharge } from '../../core/guardrails/velocity';
import type { MicroUsd } from '../../core/money';
import { type CounterRef, type CounterValue, type LeaseReturn, type RateCharge, type RateState, type Reservation, reservationOf, type ReserveInput, type SettleInput } from '../../core/stores';
import type { ScopeId, UsageRecord } from '../../core/types';
import { errorName, translateError } from './client';
import { shardOf } from './hash';
import { PoolGiveBack } from './pool-giveback';
import { abandonedKeyOf, dryError, isQuiet, QUIET_SHARD, type DryState, groupId, type Item, markerName, markerValue, modelName, num, sharedMarkerName, unitAttr } from './pool-markers';
import { MIN_GRANT_REQUESTS, PoolRefill } from './pool-refill';
import { PoolReclaim } from './pool-reclaim';
import { PoolRelease } from './pool-release';
import type { StoredHoldCounter } from './items';
import { NEAR_LIMIT_SHARDS } from './busy-scopes';

/** How pools are laid out and how long they live. Every field has a default ({@link DEFAULT_POOLS}). */
export interface PoolOptions {
  /** Pool items per key and epoch (a request's pool is chosen by its id). */
  readonly shards?: number;
  /** How long one set of pool items admits requests (ms); the next epoch's pools are refilled anew. */
  readonly epochMs?: number;
  /**
   * After its epoch, how long a pool still takes back what its requests did not spend before the sweeper may
   * close it (ms). A request that settles later gives its unspent part straight back to the counters.
   */
  readonly graceMs?: number;
  /** How long a conflict marks a key as pooled (ms); refills extend it while the key stays busy. */
  readonly markMs?: number;
  /**
   * A quiet key's pool (one item per key, `pool#<group>#q`): how long one admits (ms); 0 turns quiet pools off.
   * Used for a key that is not busy itself while its org or the platform is pooled (ledger.ts): its own part is
   * then taken from one item with grants lasting about a minute, instead of two transactions a request.
   */
  readonly quietEpochMs?: number;
  /**
   * A quiet key's pool is refilled only once the key has come back at least this long (ms) after its first
   * request of the epoch that the pool had no room for, or at once when its pool had a grant the epoch before.
   * A key that sends a request or two and stops is not worth a grant and its release (two transactions on its
   * counters, more than its own reserves): it keeps reserving on its own, at one small write more per request
   * (the first one's mark). 0 refills at the first request.
   */
  readonly quietWarmupMs?: number;
}

export const DEFAULT_POOLS: Required<PoolOptions> = {
  shards: 4,
  epochMs: 10_000,
  graceMs: 60_000,
  markMs: 60_000,
  quietEpochMs: 300_000,
  quietWarmupMs: 10_000,
};

/**
 * The allowance pools of a shared scope (an org, the platform): many pool items, each taking a few hundred
 * writes a second, so one org of 10,000 users at 5,000 req/s is admitted without a hot item.
 */
export const DEFAULT_SHARED_POOLS: Required<PoolOptions> = {
  shards: 64,
  epochMs: 10_000,
  graceMs: 60_000,
  markMs: 60_000,
  quietEpochMs: 0,
  quietWarmupMs: 0,
};



/** The pool a reservation was taken from (settle gives its unspent part back there). */
export interface PoolRef {
  readonly pk: string;
  readonly sk: string;
}

/** What the pools need from the ledger that owns them. */
export interface PoolHost {
  readonly client: DynamoDBClient;
  readonly table: string;
  readonly clock: Clock;
  readonly sleep: (ms: number) => Promise<void>;
  readonly platformShards: number;
  /**
   * The ledger's own reserve of a grant, whose hold names the pool (the sweeper releases it through it); a quiet
   * key's grant marks nothing busy when it meets a transaction conflict.
   */
  reserveGrant(input: ReserveInput, pool: PoolRef, options?: { readonly quiet?: boolean; readonly shared?: boolean }): Promise<Reservation>;
  readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]>;
  /** Consistent batch read of budgets-table items (missing ones left out). */
  batchGet(keys: ReadonlyArray<{ pk: string; sk: string }>): Promise<Item[]>;
  /** A pool of `scope` was refilled: the scope's busy mark is extended. */
  refilled(scope: ScopeId, now: number): void;
  /** A grant of a shared scope's pool was refused by its budget: the scope is near its limit (few pools). */
  nearLimit(scope: ScopeId, now: number): void;
  isNear(scope: ScopeId, now: number): boolean;
  /** Transaction items that add `delta` to each counter (committed, spent, requests; reserved when given). */
  counterItems(counters: readonly CounterRef[], delta: CounterDelta): TransactWriteItem[];
  /** The same for a grant's counters as its hold stores them (key, TTL; those it did not reserve on get what was spent). */
  heldCounterItems(parts: ReadonlyArray<{ readonly counters: readonly StoredHoldCounter[]; readonly delta: CounterDelta }>): TransactWriteItem[];
  /** Transaction items that correct velocity windows charged `admitted` at reserve to `cost`. */
  velocityItems(parts: ReadonlyArray<{ readonly velocity: readonly VelocityCharge[]; readonly cost: MicroUsd }>): TransactWriteItem[];
  /** The ledger's transaction runner: undefined on success, else the cancellation reasons (conflicts retried). */
  transact(items: TransactWriteItem[]): Promise<CancellationReason[] | undefined>;
  /** The usage table, and an item of it for a record (the sweeper's `abandoned` record of an unsettled take). */
  readonly usageTable: string;
  usageItem(record: UsageRecord): Item;
  /** Runs work beside the request that started it (a quiet pool's refill), best effort. */
  beside(work: Promise<unknown>): void;
}

/** What a money write adds to a counter item. */
export interface CounterDelta {
  readonly committed: number;
  readonly spent: number;
  readonly requests: number;
  readonly reserved?: number;
}

/** A grant's hold, as the sweeper finds it (see ledger.ts): the pool it fed, its amount and what it charged. */
export interface GrantHold {
  readonly pk: string;
  readonly sk: string;
  readonly requestId: string;
  readonly amount: MicroUsd;
  readonly reservedAt: number;
  readonly context: ReserveInput['context'];
  readonly pool: PoolRef;
  /** Every counter the grant reserved on, by key and TTL (the hold's list). */
  readonly counters: readonly StoredHoldCounter[];
  readonly grant: { readonly velocity: readonly VelocityCharge[] };
}

/**
 * Who takes from a pool. `key`: one key's requests (and its budget leases); `shared`: the requests of every key of
 * a shared scope (an org, the platform), each also holding on its own for its key and user (ledger.ts).
 */
export type PoolRole = 'key' | 'shared';


/** A refill claim older than this is presumed dead and may be taken over. */
const CLAIM_STALE_MS = 2_000;
/** A quiet pool left with less than this many requests' worth by a take is refilled beside that request. */
const LOW_WATER_REQUESTS = 2;
/** Rounds of take, wait for (or make) a refill, before a request is refused as busy (about 4 s in all). */
const MAX_ROUNDS = 30;
const MAX_WAIT_MS = 200;
/**
 * Requests a second one allowance item is meant to take: a tenth of what a partition writes (each request is a
 * take and a give-back, one write unit each), so a scope that grows tenfold between two takes of an instance is
 * still under DynamoDB's 1,000 WCU/s per partition while its instances spread it again.
 */
const SPREAD_RPS_PER_ITEM = 50;
/** Shortest time an allowance item must have been granted before its rate sizes the spread (ms). */
const MIN_SPREAD_SPAN_MS = 1_000;
/** Tries of a single-item pool write refused because a transaction was writing the item. */
const MAX_CONFLICT_TRIES = 5;

/**
 * One role's pools (a key's, or a shared scope's allowances): take and the epochs here; refill, give-back and
 * release in their own files, which use this object's host, options and helpers.
 */
export class ScopePools {
  readonly opts: Required<PoolOptions>;
  private readonly refills = new PoolRefill(this);
  private readonly gives = new PoolGiveBack(this);
  private readonly releases = new PoolRelease(this);
  private readonly reclaims = new PoolReclaim(this);

  /** Allowance items in use per shared scope's pool group, as learnt from takes (learnSpread). */
  private readonly spreads = new Map<string, number>();

  /** Sequence of this instance's claims and grant ids. */
  seq = 0;

  /** This instance's id in claims. */
  readonly instance = randomBytes(6).toString('base64url');

  constructor(
    readonly host: PoolHost,
    options: PoolOptions = {},
    /** @default 'key' */
    readonly role: PoolRole = 'key',
  ) {
    this.opts = {
      shards: options.shards ?? DEFAULT_POOLS.shards,
      epochMs: options.epochMs ?? DEFAULT_POOLS.epochMs,
      graceMs: options.graceMs ?? DEFAULT_POOLS.graceMs,
      markMs: options.markMs ?? DEFAULT_POOLS.markMs,
      quietEpochMs: role === 'key' ? (options.quietEpochMs ?? DEFAULT_POOLS.quietEpochMs) : 0,
      quietWarmupMs: role === 'key' ? (options.quietWarmupMs ?? DEFAULT_POOLS.quietWarmupMs) : 0,
    };
    const { shards, epochMs, graceMs, markMs, quietEpochMs, quietWarmupMs } = this.opts;
    if (
      !Number.isInteger(shards) ||
      shards < 1 ||
      !(epochMs >= 1_000) ||
      !(graceMs >= 0) ||
      !(markMs > 0) ||
      !(quietEpochMs === 0 || quietEpochMs >= 1_000) ||
      !(quietWarmupMs >= 0)
    ) {
      throw new RangeError('pool options out of range: shards a positive whole number, epochMs >= 1000, graceMs >= 0, markMs > 0, quietEpochMs 0 or >= 1000, quietWarmupMs >= 0');
    }
  }

  get markMs(): number {
    return this.opts.markMs;
  }

  /**
   * Whether a request can be pooled at all: each rate dimension's share of one pool over one epoch must hold
   * a few requests (a slow key's bucket is left to per-request reserves).
   */
  fits(input: ReserveInput, quiet = false): boolean {
    if (quiet && this.opts.quietEpochMs === 0) return false;
    return input.rateCharges.every((c) => c.amount <= 0 || this.unitCap(c, quiet) >= MIN_GRANT_REQUESTS * c.amount);
  }

  /**
   * Admits the request from its pool, refilling the pool first when it is short. Undefined when the pool
   * cannot decide it (a grant was refused while the counters still had room for this request): the caller
   * reserves on its own, exactly. Throws the refusal of a dry pool, and 429-mapped contention after ~4 s of
   * refills that kept losing.
   */
  async take(request: ReserveInput, quiet = false): Promise<Reservation | undefined> {
    // A shared scope near its limit admits through a few of its pools only (busy-scopes.ts markNear).
    const near = this.role === 'shared' && this.host.isNear(request.context.keyId as ScopeId, request.now);
    const group = groupId(request);
    const spread = this.spreadOf(group);
    const fewest = this.role === 'shared' ? this.fewestItems(request) : spread;
    const k = quiet ? QUIET_SHARD : shardOf(request.requestId, near ? Math.min(fewest, spread) : spread);
    const pk = `pool#${group}#${k}`;
    // Every grant and request of one pool use the same platform shard (the request's own is by its id).
    const platformShard = (quiet ? shardOf(pk, this.host.platformShards) : (k as number)) % this.host.platformShards;
    const input: ReserveInput = {
      ...request,
      counters: request.counters.map((c) => (c.scope === 'platform' ? { ...c, shard: platformShard } : c)),
      ...(request.circuits ? { circuits: request.circuits.map((c) => (c.scope === 'platform' ? { ...c, shard: platformShard } : c)) } : {}),
    };
    const charges = input.rateCharges.filter((c) => c.amount > 0);
    let waiting = false;
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const now = round === 0 ? input.now : this.host.clock.now();
      const epoch = this.epochOf(pk, now);
      const ref: PoolRef = { pk, sk: `e${epoch}` };
      if (waiting && (await this.stillRefilling(ref, input, charges, now))) {
        // Polled with a read, not a take: a refused take is a write unit on the pool's partition, a read a
        // quarter of its price and none of its write capacity.
        await this.host.sleep(this.backoff(round));
        continue;
      }
      waiting = false;
      if (round === 0 && near) {
        // Near its limit a shared scope's items are often dry: read first (a refused take is a write unit on the
        // item's partition; thousands of users of a spent org refused by writes pass its 1,000 a second).
        const seen = await this.dryNow(ref, input, charges, now);
        if (seen) return this.reservation(input, seen.ref, seen.taken);
      }
      const outcome = await this.tryTake(ref, input, charges);
      if (outcome.taken) {
        if (quiet) this.refillQuietEarly(request, outcome.taken);
        if (this.role === 'shared' && !near) this.learnSpread(group, spread, fewest, outcome.taken, input.amount, now);
        return this.reservation(input, ref, outcome.taken);
      }
      const old = outcome.old;
      const dry = old?.dryUntil !== undefined && Number(old.dryUntil) > now && old.dry;
      if (round === 0 || dry) {
        // The last epoch's pool keeps admitting with what it has left (what its requests gave back, mostly)
        // until it closes: used before asking the counters for more.
        const last: PoolRef = { pk, sk: `e${epoch - 1}` };
        const fromLast = await this.tryTake(last, input, charges);
        if (fromLast.taken) {
          if (quiet) this.refillQuietEarly(request, fromLast.taken);
          return this.reservation(input, last, fromLast.taken);
        }
      }
      if (dry) throw dryError(old.dry as DryState, input.amount);
      // A quiet key never waits for its pool: this request reserves on its own, and the ledger has the pool
      // refilled after that, for the key's next requests (refillQuiet).
      if (quiet) return undefined;
      const refilling = old?.refillAt !== undefined && Number(old.refillAt) > now - CLAIM_STALE_MS;
      if (refilling || !(await this.claim(ref, now))) {
        // Another instance refills this pool: take again when it is done.
        waiting = true;
        await this.host.sleep(this.backoff(round));
        continue;
      }
      const refilled = await this.refills.refill(ref, input, charges, old, epoch, now);
      if (refilled === 'alone') return undefined;
      if (refilled === 'busy') await this.host.sleep(this.backoff(round));
    }
    throw new StoreUnavailableError('The gateway is too busy to admit this request; try again shortly.', {
      code: 'store_contention',
      headers: { 'Retry-After': '1' },
    });
  }

  /**
   * The fewest allowance items a shared scope's requests use (near its limit, or at a low rate): 4, and for
   * pools that hold the platform's part (its own, or a busy org's) every shard of its counter (item k holds shard
   * k mod platformShards, each with its share of the limit): a shard no item in use holds would leave its share
   * unreachable and refuse early.
   */
  private fewestItems(request: ReserveInput): number {
    const platform = request.counters.some((c) => c.scope === 'platform');
    return Math.min(this.opts.shards, Math.max(NEAR_LIMIT_SHARDS, platform ? this.host.platformShards : 0));
  }

  /**
   * How many of a shared scope's allowance items its requests are spread over, as this instance last learnt it
   * ({@link learnSpread}); all of them (`shards`) until then, and always for a key's pools.
   */
  private spreadOf(group: string): number {
    return this.role === 'shared' ? (this.spreads.get(group) ?? this.opts.shards) : this.opts.shards;
  }

  /**
   * Learns from a take's item how many allowance items the scope needs: its requests per second (this item's
   * takes since its first grant, times the items in use) over {@link SPREAD_RPS_PER_ITEM}, within
   * [{@link fewestItems}, `shards`]. A scope of 100 req/s then uses 4 items, each granted ~90 requests at a
   * time, instead of 64 granted 4 at a time: every grant is a transaction and a release (≈ 11 write units) on
   * the scope's counter, so 64 thin items cost an org of 100 req/s ≈ 5 write units a request. A scope that grows
   * spreads again at its instances' next takes (the headroom: SPREAD_RPS_PER_ITEM). Each instance learns on its
   * own; instances that disagree only use different subsets of the same items, each of which is exact.
   */
  private learnSpread(group: string, spread: number, fewest: number, item: Record<string, unknown>, amount: number, now: number): void {
    if (item.firstAt === undefined || amount <= 0) return;
    const since = now - num(item.firstAt);
    if (since < MIN_SPREAD_SPAN_MS) return;
    const perSecond = (num(item.taken) / amount / since) * 1000;
    const want = Math.min(this.opts.shards, Math.max(fewest, Math.ceil((perSecond * spread) / SPREAD_RPS_PER_ITEM)));
    // Wider at once; narrower by half at most a take (an item's rate since its first grant lags a ramp).
    this.spreads.set(group, want >= spread ? want : Math.max(want, Math.ceil(spread / 2)));
    if (this.spreads.size > 10_000) this.spreads.delete(this.spreads.keys().next().value as string);
  }

  /**
   * Refills a quiet key's pool (this epoch's item) with a grant, unless another instance is refilling it: run
   * beside a request's call, by the ledger once a request the pool could not admit has reserved on its own, or
   * by a take that left the pool low (`warm`: the key is pooled already); and only for a key that has shown it
   * keeps sending ({@link ScopePools.quietWarm}).
   * Best effort: a failure leaves the pool as it was (the key's next request reserves on its own again); a grant
   * whose room never arrived is released by the sweeper in full.
   */
  async refillQuiet(request: ReserveInput, options: { readonly warm?: boolean } = {}): Promise<void> {
    const pk = `pool#${groupId(request)}#${QUIET_SHARD}`;
    const platformShard = shardOf(pk, this.host.platformShards) % this.host.platformShards;
    const input: ReserveInput = { ...request, counters: request.counters.map((c) => (c.scope === 'platform' ? { ...c, shard: platformShard } : c)) };
    const now = this.host.clock.now();
    const epoch = this.epochOf(pk, now);
    const ref: PoolRef = { pk, sk: `e${epoch}` };
    if ((!options.warm && !(await this.quietWarm(ref, epoch, now))) || !(await this.claim(ref, now))) return;
    const charges = input.rateCharges.filter((c) => c.amount > 0);
    await this.refills.refill(ref, input, charges, await this.readConsistent(ref), epoch, now);
  }

  /**
   * Whether a quiet key is worth its pool: its pool had a grant this epoch or the last, or the key's first
   * request without room, this epoch or the last, came `quietWarmupMs` ago or more. The first such request of
   * an epoch marks its item (`seen`, once: a retried mark keeps the first time), so a key that stops after a
   * burst never pays for a grant and its release.
   */
  private async quietWarm(ref: PoolRef, epoch: number, now: number): Promise<boolean> {
    const warmup = this.opts.quietWarmupMs;
    if (warmup <= 0) return true;
    // Last epoch's item: granted, or marked long enough ago (a key that started near an epoch's end).
    const last = await this.readConsistent({ pk: ref.pk, sk: `e${epoch - 1}` });
    if (last?.granted !== undefined || (last?.seen !== undefined && now - num(last.seen) >= warmup)) return true;
    try {
      const out = await this.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(ref),
          UpdateExpression: 'SET seen = if_not_exists(seen, :now), #ttl = if_not_exists(#ttl, :ttl)',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: marshall({ ':now': now, ':ttl': this.ttlOf(ref) }),
          ReturnValues: 'ALL_NEW',
        }),
      );
      const item = out.Attributes ? unmarshall(out.Attributes) : {};
      // Granted already this epoch (the key is pooled), or first seen long enough ago.
      return item.granted !== undefined || now - num(item.seen ?? now) >= warmup;
    } catch (err) {
      throw translateError(err);
    }
  }

  /**
   * Settle of a pooled request: its unspent part and unused tokens go back to the pool, exactly once (the take's
   * marker goes with it). A cost above the take, or a pool closed meanwhile, corrects the counters directly.
   */
  async settle(input: SettleInput, pool: PoolRef): Promise<void> {
    const { reservation, cost } = input;
    const tokens = reservation.rateCharges.find((c) => c.dimension === 'tokens');
    const tokenRefund = tokens && input.actualTokens !== undefined ? tokens.amount - input.actualTokens : 0;
    await this.gives.giveBack(reservation, pool, { cost, requests: 1, units: { requests: 0, tokens: tokenRefund } });
  }

  /** A budget lease taken from a pool goes back to it: the unspent part, and the units its requests did not use. */
  async returnLease(input: LeaseReturn, pool: PoolRef): Promise<void> {
    const { reservation } = input;
    const units: Record<RateCharge['dimension'], number> = { requests: 0, tokens: 0 };
    for (const c of reservation.rateCharges) {
      if (c.dimension === 'requests') units.requests = Math.max(0, c.amount - input.usedRequests);
      if (c.dimension === 'tokens' && input.usedTokens !== undefined) units.tokens = c.amount - input.usedTokens;
    }
    const record = abandonedKeyOf(this.host, reservation.requestId, input.reservedAt, input.context);
    await this.gives.giveBack(reservation, pool, { cost: input.cost, requests: input.usedRequests, units, forget: record });
  }

  /** Gives a take back whole (the request was refused after it), exactly once. */
  async cancel(reservation: Reservation, pool: PoolRef, context?: { readonly reservedAt: number; readonly context: ReserveInput['context'] }): Promise<void> {
    const units: Record<RateCharge['dimension'], number> = { requests: 0, tokens: 0 };
    for (const c of reservation.rateCharges) if (c.amount > 0) units[c.dimension] = c.amount;
    const forget = context ? abandonedKeyOf(this.host, reservation.requestId, context.reservedAt, context.context) : undefined;
    await this.gives.giveBack(reservation, pool, { cost: 0, requests: 0, units, ...(forget ? { forget } : {}) });
  }

  // -------------------------------------------------------------------------------------------------------

  /**
   * One take: room −= amount, units −= charge, and the take's marker set, if there is room, the pool is open and
   * the marker is not there yet. A retried take whose first answer was lost finds its own marker: taken once, not
   * twice. A key pool's take also names its model on the item once (its marker carries the model's digest).
   */
  private async tryTake(
    ref: PoolRef,
    input: ReserveInput,
    charges: readonly RateCharge[],
  ): Promise<{ taken?: Record<string, unknown>; old?: Record<string, unknown> }> {
    const amount = input.amount;
    const values: Record<string, number | string | Uint8Array> = { ':a': amount, ':na': -amount, ':m': this.markerOf(input, ref) };
    const adds = ['room :na', 'taken :a'];
    const conditions = ['room >= :a', 'attribute_not_exists(closed)', 'attribute_not_exists(#t)'];
    for (const c of charges) {
      const attr = unitAttr(c.dimension);
      values[`:u${attr}`] = c.amount;
      values[`:n${attr}`] = -c.amount;
      adds.push(`${attr} :n${attr}`, `taken${attr} :u${attr}`);
      conditions.push(`${attr} >= :u${attr}`);
    }
    const marker = this.markerName(input.requestId);
    const names: Record<string, string> = { '#t': marker };
    let sets = '#t = :m';
    if (this.role === 'key') {
      names['#md'] = modelName(input.context.model);
      values[':md'] = input.context.model;
      sets += ', #md = if_not_exists(#md, :md)';
    }
    try {
      const out = await this.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(ref),
          UpdateExpression: `ADD ${adds.join(', ')} SET ${sets}`,
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeNames: names,
          ExpressionAttributeValues: marshall(values),
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return { taken: out.Attributes ? unmarshall(out.Attributes) : {} };
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') {
        const old = (err as { Item?: Item }).Item;
        const value = old ? unmarshall(old) : undefined;
        if (value?.[marker] !== undefined) return { taken: value }; // our own take, whose answer was lost
        return { old: value };
      }
      throw translateError(err);
    }
  }

  /**
   * The marker a take leaves on its pool item until it settles: kind, amount, arrival and model (the sweeper's
   * `abandoned` record of a key pool's take is made from it; layout and sizes in pool-markers.ts). A shared take's
   * record comes from the request's own hold, so its marker is the kind alone.
   */
  markerOf(input: ReserveInput, ref: PoolRef): string | Uint8Array {
    if (this.role === 'shared') return 's';
    const kind = input.context.endpoint === 'lease' ? 'l' : 'r';
    return markerValue(kind, input.amount, input.now, this.startOf(ref.pk, Number(ref.sk.slice(1))), input.context.model);
  }

  /**
   * A take's marker attribute. A key pool's names the request (the sweeper writes its record); a shared pool's
   * is a 72-bit digest of the request id: a shared item carries the markers of every request in flight through
   * it (a hundred at 5,000 req/s), and every write of the item pays for its whole size.
   */
  markerName(requestId: string): string {
    return this.role === 'shared' ? sharedMarkerName(requestId) : markerName(requestId);
  }

  /**
   * Whether a taker waiting for another instance's refill should wait on: the pool (read consistently) is
   * still being refilled and has no room for the request yet (not dry, not closed). A failed read says no.
   */
  private async stillRefilling(ref: PoolRef, input: ReserveInput, charges: readonly RateCharge[], now: number): Promise<boolean> {
    const seen = await this.readConsistent(ref).catch(() => undefined);
    if (!seen || seen.closed !== undefined || seen.dry !== undefined) return false;
    if (!(seen.refillAt !== undefined && Number(seen.refillAt) > now - CLAIM_STALE_MS)) return false;
    const fits = num(seen.room) >= input.amount && charges.every((c) => num(seen[unitAttr(c.dimension)]) >= c.amount);
    return !fits;
  }

  /**
   * A near-limit take's read first: this epoch's item and the last one's, consistently, in one call. This item
   * dry (a grant refused a moment ago): the last epoch's item takes the request if it has room for it, else the
   * dry refusal is thrown, no write made. Undefined when this item is not dry (the take goes on as usual).
   */
  private async dryNow(ref: PoolRef, input: ReserveInput, charges: readonly RateCharge[], now: number): Promise<{ ref: PoolRef; taken: Record<string, unknown> } | undefined> {
    const last: PoolRef = { pk: ref.pk, sk: `e${Number(ref.sk.slice(1)) - 1}` };
    const items = (await this.host.batchGet([ref, last])).map((item) => unmarshall(item));
    const current = items.find((item) => item.sk === ref.sk);
    if (!(current?.dry !== undefined && num(current.dryUntil) > now)) return undefined;
    const before = items.find((item) => item.sk === last.sk);
    const fits = before && before.closed === undefined && num(before.room) >= input.amount && charges.every((c) => num(before[unitAttr(c.dimension)]) >= c.amount);
    if (fits) {
      const fromLast = await this.tryTake(last, input, charges);
      if (fromLast.taken) return { ref: last, taken: fromLast.taken };
    }
    throw dryError(current.dry as DryState, input.amount);
  }

  /** One instance at a time refills a pool: it claims the item first (a stale claim may be taken over). */
  private async claim(ref: PoolRef, now: number): Promise<boolean> {
    try {
      await this.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(ref),
          // The claimer's id makes a retried claim (its first answer lost) find its own claim, not another's.
          UpdateExpression: 'SET refillAt = :now, claimBy = :me, firstAt = if_not_exists(firstAt, :now), #ttl = if_not_exists(#ttl, :ttl)',
          ConditionExpression: 'attribute_not_exists(closed) AND (attribute_not_exists(refillAt) OR refillAt < :stale OR claimBy = :me)',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: marshall({ ':now': now, ':me': `${this.instance}.${this.seq++}`, ':stale': now - CLAIM_STALE_MS, ':ttl': this.ttlOf(ref) }),
        }),
      );
      return true;
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') return false;
      throw translateError(err);
    }
  }

  /**
   * A single-item write to a pool item. DynamoDB refuses one on an item a transaction is writing (a grant's
   * reclaim or release) with TransactionConflictException, applying nothing: tried again a few times, shortly.
   */
  async send(command: UpdateItemCommand): Promise<UpdateItemCommandOutput> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.host.client.send(command);
      } catch (err) {
        if (errorName(err) !== 'TransactionConflictException' || attempt >= MAX_CONFLICT_TRIES) throw err;
        await this.host.sleep(10 * 2 ** attempt * (0.5 + Math.random() / 2));
      }
    }
  }

  async readConsistent(ref: PoolRef): Promise<Record<string, unknown> | undefined> {
    try {
      const out = await this.host.client.send(new GetItemCommand({ TableName: this.host.table, Key: marshall(ref), ConsistentRead: true }));
      return out.Item ? unmarshall(out.Item) : undefined;
    } catch (err) {
      throw translateError(err);
    }
  }

  /**
   * A take from a quiet pool that left it too little for the key's next two requests (money or rate units) has
   * the pool refilled beside the request (unless a refill is under way), so the key's next requests find room
   * instead of each reserving on its own at the pool's every turn (about 40 write units each).
   */
  private refillQuietEarly(request: ReserveInput, after: Record<string, unknown>): void {
    if (after.refillAt !== undefined && Number(after.refillAt) > request.now - CLAIM_STALE_MS) return;
    const lowOn = (left: unknown, each: number): boolean => num(left) < LOW_WATER_REQUESTS * each;
    const low = lowOn(after.room, request.amount) || request.rateCharges.some((c) => c.amount > 0 && lowOn(after[unitAttr(c.dimension)], c.amount));
    if (low) this.host.beside(this.refillQuiet(request, { warm: true }));
  }

  private reservation(input: ReserveInput, ref: PoolRef, after: Record<string, unknown>): Reservation {
    const resetMs = this.startOf(ref.pk, Number(ref.sk.slice(1))) + this.epochMsOf(ref.pk) - input.now;
    const rateStates: RateState[] = input.rateCharges.map((c) => ({
      dimension: c.dimension,
      limit: c.limitPerMinute,
      // What this pool has left: a lower bound of the key's own remaining units.
      remaining: Math.max(0, Math.floor(num(after[unitAttr(c.dimension)]))),
      resetMs: Math.max(0, resetMs),
    }));
    return reservationOf(input, { rateStates, expiresAt: this.closesAt(ref), holdShard: 0, pool: ref });
  }

  async read(ref: PoolRef): Promise<Record<string, unknown> | undefined> {
    try {
      const out = await this.host.client.send(new GetItemCommand({ TableName: this.host.table, Key: marshall(ref) }));
      return out.Item ? unmarshall(out.Item) : undefined;
    } catch {
      return undefined; // only sizes the grant
    }
  }

  /** How long a taker waits for another instance's refill: 20 ms, growing to 200 ms, jittered. */
  backoff(round: number): number {
    return Math.min(MAX_WAIT_MS, 20 * 1.5 ** round) * (0.5 + Math.random() / 2);
  }

  /** A pool's units of one rate dimension per epoch: its share of the bucket's refill over the epoch. */
  unitCap(c: RateCharge, quiet: boolean): number {
    const epochMs = quiet ? this.opts.quietEpochMs : this.opts.epochMs;
    return Math.floor((c.limitPerMinute * epochMs) / 60_000 / (quiet ? 1 : this.opts.shards));
  }

  /** How long one of this pool's epochs lasts: a quiet key's pool lives longer than a busy key's shards. */
  epochMsOf(pk: string): number {
    return isQuiet(pk) && this.opts.quietEpochMs > 0 ? this.opts.quietEpochMs : this.opts.epochMs;
  }

  /**
   * A pool's epoch. Each pool's epochs are offset by a hash of its key, so the pools of a busy scope do not all
   * start empty (and refill) at the same moment.
   */
  epochOf(pk: string, now: number): number {
    const epochMs = this.epochMsOf(pk);
    return Math.floor((now + shardOf(pk, epochMs)) / epochMs);
  }

  startOf(pk: string, epoch: number): number {
    const epochMs = this.epochMsOf(pk);
    return epoch * epochMs - shardOf(pk, epochMs);
  }

  /** When a pool's grants may be released: its epoch, one more epoch for leases taken from it, and the grace. */
  closesAt(ref: PoolRef): number {
    return this.startOf(ref.pk, Number(ref.sk.slice(1))) + 2 * this.epochMsOf(ref.pk) + this.opts.graceMs;
  }

  ttlOf(ref: PoolRef): number {
    return Math.ceil(this.closesAt(ref) / 1000) + 86_400;
  }

  /**
   * The sweeper's release of grants of one pool item once its epoch and grace are over, in ONE transaction
   * (pool-release.ts). Returns how many of the holds it released.
   */
  release(holds: readonly GrantHold[], now: number): Promise<number> {
    return this.releases.release(holds, now);
  }

  /**
   * Gives the idle room of the request's pool group (all shards, this epoch and the last) back to the counters,
   * with what those pools spent so far (pool-reclaim.ts): when a request was refused only for what is held.
   * At most every 250 ms per group and instance; returns the room given back.
   */
  reclaim(input: ReserveInput, now: number): Promise<MicroUsd> {
    return this.reclaims.reclaim(input, now);
  }
}

export { isQuiet, poolGroupKey, QUIET_SHARD, SHARED_GRANT_PREFIX } from './pool-markers';
