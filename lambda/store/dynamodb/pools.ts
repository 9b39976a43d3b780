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
 *          └─ not there either ──► one instance (a claim on the item) refills it: ONE ordinary reserve of a
 *             grant (every counter within its limit, the key's rate buckets, circuits, velocity, and a hold
 *             that names the pool), then ADD room += grant; the others wait for it and take again. A grant
 *             refused although it was only this request's part leaves the pool dry for a second: its takers
 *             get the same refusal without asking
 *   settle ──► usage record, loop outcome, then ONE UpdateItem: room += amount − cost, spent += cost
 *   sweeper, once the pool's epoch and grace are over ──► closes the pool and releases each grant's hold:
 *        counters get the grant minus the room left (what was taken and never given back is charged)
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
 */
import { createHash, randomBytes } from 'node:crypto';
import {
  GetItemCommand,
  PutItemCommand,
  UpdateItemCommand,
  type AttributeValue,
  type CancellationReason,
  type DynamoDBClient,
  type TransactWriteItem,
} from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { Clock } from '../../core/clock';
import { BudgetExceededError, CircuitOpenError, RateLimitError, SpendVelocityError, StoreUnavailableError, TollgateError } from '../../core/errors';
import type { VelocityCharge } from '../../core/guardrails/velocity';
import type { MicroUsd } from '../../core/money';
import type { ScopeId, UsageRecord } from '../../core/types';
import { type CounterRef, type CounterValue, type LeaseReturn, type RateCharge, type RateState, type Reservation, type ReserveInput, reservationOf, type SettleInput } from '../../core/stores';
import { errorName, translateError } from './client';
import { shardOf } from './hash';

type Item = Record<string, AttributeValue>;

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
}

export const DEFAULT_POOLS: Required<PoolOptions> = {
  shards: 4,
  epochMs: 10_000,
  graceMs: 60_000,
  markMs: 60_000,
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
};

/** Grant ids of shared scopes' pools start with this (the sweeper releases them through the shared pools). */
export const SHARED_GRANT_PREFIX = 'spool.';

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
  /** The ledger's own reserve of a grant, whose hold names the pool (the sweeper releases it through it). */
  reserveGrant(input: ReserveInput, pool: PoolRef): Promise<Reservation>;
  readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]>;
  /** A pool of `scope` was refilled: the scope's busy mark is extended. */
  refilled(scope: ScopeId, now: number): void;
  /** Transaction items that add `delta` to each counter (committed, spent, requests; reserved when given). */
  counterItems(counters: readonly CounterRef[], delta: CounterDelta): TransactWriteItem[];
  /** Transaction items that correct velocity windows charged `admitted` at reserve to `cost`. */
  velocityItems(velocity: readonly VelocityCharge[], cost: MicroUsd): TransactWriteItem[];
  /** The ledger's transaction runner: undefined on success, else the cancellation reasons (conflicts retried). */
  transact(items: TransactWriteItem[]): Promise<CancellationReason[] | undefined>;
  /** The usage table, and an item of it for a record (the sweeper's `abandoned` record of an unsettled take). */
  readonly usageTable: string;
  usageItem(record: UsageRecord): Item;
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
  readonly grant: { readonly counters: readonly CounterRef[]; readonly velocity: readonly VelocityCharge[] };
}

/**
 * Who takes from a pool. `key`: one key's requests (and its budget leases); `shared`: the requests of every key of
 * a shared scope (an org, the platform), each also holding on its own for its key and user (ledger.ts).
 */
export type PoolRole = 'key' | 'shared';

/** Refusals a pool remembers for a moment after even one request's grant was refused, so its takers need not ask. */
interface DryState {
  readonly kind: 'budget' | 'rate' | 'circuit';
  readonly message: string;
  readonly code?: string;
  readonly headers: Record<string, string>;
}

/** Fewest requests' worth a grant holds (so a quiet pool is not refilled per request). */
const MIN_GRANT_REQUESTS = 4;
/** Requests' worth in a pool's first grant when nothing is known of its rate. */
const FIRST_GRANT_REQUESTS = 16;
/** Largest share of a limited counter one grant may take: the rest stays free for other pools and keys. */
const MAX_GRANT_SHARE = 0.05;
/** How long a grant is sized to last (ms): short, so little is left in a pool when its epoch ends. */
const GRANT_HORIZON_MS = 3_000;
/** Grants a refill tries when the budget is short (each smaller), before the request reserves on its own. */
const MAX_GRANT_ATTEMPTS = 3;
/** How long a refused grant leaves its pool dry (its takers refused from what the refusal said). */
const DRY_MS = 1_000;
/** A refill claim older than this is presumed dead and may be taken over. */
const CLAIM_STALE_MS = 2_000;
/** Shortest time a pool must have been taken from before its own rate sizes its grants (ms). */
const MIN_RATE_SPAN_MS = 200;
/** Rounds of take, wait for (or make) a refill, before a request is refused as busy (about 4 s in all). */
const MAX_ROUNDS = 30;
const MAX_WAIT_MS = 200;

export class ScopePools {
  private readonly opts: Required<PoolOptions>;
  private seq = 0;
  /** This instance's id in claims. */
  private readonly instance = randomBytes(6).toString('base64url');

  constructor(
    private readonly host: PoolHost,
    options: PoolOptions = {},
    /** @default 'key' */
    private readonly role: PoolRole = 'key',
  ) {
    this.opts = {
      shards: options.shards ?? DEFAULT_POOLS.shards,
      epochMs: options.epochMs ?? DEFAULT_POOLS.epochMs,
      graceMs: options.graceMs ?? DEFAULT_POOLS.graceMs,
      markMs: options.markMs ?? DEFAULT_POOLS.markMs,
    };
    if (!Number.isInteger(this.opts.shards) || this.opts.shards < 1 || !(this.opts.epochMs >= 1_000) || !(this.opts.graceMs >= 0) || !(this.opts.markMs > 0)) {
      throw new RangeError('pool options out of range: shards a positive whole number, epochMs >= 1000, graceMs >= 0, markMs > 0');
    }
  }

  get markMs(): number {
    return this.opts.markMs;
  }

  /**
   * Whether a request can be pooled at all: each rate dimension's share of one pool over one epoch must hold
   * a few requests (a slow key's bucket is left to per-request reserves).
   */
  fits(input: ReserveInput): boolean {
    return input.rateCharges.every((c) => c.amount <= 0 || this.unitCap(c) >= MIN_GRANT_REQUESTS * c.amount);
  }

  /**
   * Admits the request from its pool, refilling the pool first when it is short. Undefined when the pool
   * cannot decide it (a grant was refused while the counters still had room for this request): the caller
   * reserves on its own, exactly. Throws the refusal of a dry pool, and 429-mapped contention after ~4 s of
   * refills that kept losing.
   */
  async take(request: ReserveInput): Promise<Reservation | undefined> {
    const k = shardOf(request.requestId, this.opts.shards);
    const pk = `pool#${groupId(request)}#${k}`;
    // Every grant and request of one pool use the same platform shard (the request's own is by its id).
    const platformShard = k % this.host.platformShards;
    const input: ReserveInput = {
      ...request,
      counters: request.counters.map((c) => (c.scope === 'platform' ? { ...c, shard: platformShard } : c)),
      ...(request.circuits ? { circuits: request.circuits.map((c) => (c.scope === 'platform' ? { ...c, shard: platformShard } : c)) } : {}),
    };
    const charges = input.rateCharges.filter((c) => c.amount > 0);
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const now = round === 0 ? input.now : this.host.clock.now();
      const epoch = this.epochOf(pk, now);
      const ref: PoolRef = { pk, sk: `e${epoch}` };
      const outcome = await this.tryTake(ref, input, charges);
      if (outcome.taken) return this.reservation(input, ref, outcome.taken);
      const old = outcome.old;
      const dry = old?.dryUntil !== undefined && Number(old.dryUntil) > now && old.dry;
      if (round === 0 || dry) {
        // The last epoch's pool keeps admitting with what it has left (what its requests gave back, mostly)
        // until it closes: used before asking the counters for more.
        const last: PoolRef = { pk, sk: `e${epoch - 1}` };
        const fromLast = await this.tryTake(last, input, charges);
        if (fromLast.taken) return this.reservation(input, last, fromLast.taken);
      }
      if (dry) throw dryError(old.dry as DryState);
      const refilling = old?.refillAt !== undefined && Number(old.refillAt) > now - CLAIM_STALE_MS;
      if (refilling || !(await this.claim(ref, now))) {
        // Another instance refills this pool: take again when it is done.
        await this.host.sleep(this.backoff(round));
        continue;
      }
      const refilled = await this.refill(ref, input, charges, old, epoch, now);
      if (refilled === 'alone') return undefined;
      if (refilled === 'busy') await this.host.sleep(this.backoff(round));
    }
    throw new StoreUnavailableError('The gateway is too busy to admit this request; try again shortly.', {
      code: 'store_contention',
      headers: { 'Retry-After': '1' },
    });
  }

  /**
   * Settle of a pooled request: its unspent part and unused tokens go back to the pool, exactly once (the take's
   * marker goes with it). A cost above the take, or a pool closed meanwhile, corrects the counters directly.
   */
  async settle(input: SettleInput, pool: PoolRef): Promise<void> {
    const { reservation, cost } = input;
    const tokens = reservation.rateCharges.find((c) => c.dimension === 'tokens');
    const tokenRefund = tokens && input.actualTokens !== undefined ? tokens.amount - input.actualTokens : 0;
    await this.giveBack(reservation, pool, { cost, requests: 1, units: { requests: 0, tokens: tokenRefund } });
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
    await this.giveBack(reservation, pool, { cost: input.cost, requests: input.usedRequests, units, forget: record });
  }

  /** Gives a take back whole (the request was refused after it), exactly once. */
  async cancel(reservation: Reservation, pool: PoolRef, context?: { readonly reservedAt: number; readonly context: ReserveInput['context'] }): Promise<void> {
    const units: Record<RateCharge['dimension'], number> = { requests: 0, tokens: 0 };
    for (const c of reservation.rateCharges) if (c.amount > 0) units[c.dimension] = c.amount;
    const forget = context ? abandonedKeyOf(this.host, reservation.requestId, context.reservedAt, context.context) : undefined;
    await this.giveBack(reservation, pool, { cost: 0, requests: 0, units, ...(forget ? { forget } : {}) });
  }

  /**
   * The sweeper's release of one grant once its pool's epoch and grace are over, in ONE transaction with a
   * condition on the pool item as read (so a give-back meanwhile makes it read again, and a crash anywhere
   * leaves either nothing done or everything):
   *
   *   grant never reached the room (its claimer died) → the pool records it void; counters get it all back
   *   otherwise → the pool closes; room left R: refund min(R, grant) (R < 0, a debt of overshoots: all of it
   *               charged here); counters: reserved −grant, spent grant − refund, requests counted so far
   *   takes still marked (never settled) → charged; each gets an `abandoned` record (written first, only where
   *               no record exists) that its late settle replaces; one whose real record exists is settled here
   *
   * False when the hold vanished (released before). Throws StoreUnavailableError to leave it for the next sweep.
   */
  async release(hold: GrantHold, now: number): Promise<boolean> {
    for (let attempt = 0; attempt < 8; attempt++) {
      const item = await this.readConsistent(hold.pool);
      const holdDelete: TransactWriteItem = {
        Delete: { TableName: this.host.table, Key: marshall({ pk: hold.pk, sk: hold.sk }), ConditionExpression: 'attribute_exists(pk)' },
      };
      const items: TransactWriteItem[] = [holdDelete];
      let cost: MicroUsd;
      const grantAttr = grantName(hold.requestId);
      if (!item || item[grantAttr] === undefined) {
        // Never added to the room: nothing of it was taken. The pool records it void, so a late add cannot happen.
        cost = 0;
        items.push({
          Update: {
            TableName: this.host.table,
            Key: marshall(hold.pool),
            UpdateExpression: 'SET #g = :void, closed = if_not_exists(closed, :now), #ttl = if_not_exists(#ttl, :ttl)',
            ConditionExpression: 'attribute_not_exists(#g)',
            ExpressionAttributeNames: { '#g': grantAttr, '#ttl': 'ttl' },
            ExpressionAttributeValues: marshall({ ':void': VOID_GRANT, ':now': now, ':ttl': this.ttlOf(hold.pool) }),
          },
        });
        items.push(...this.host.counterItems(hold.grant.counters, { committed: -hold.amount, reserved: -hold.amount, spent: 0, requests: 0 }));
      } else {
        const room = num(item.room);
        const refund = room >= 0 ? Math.min(room, hold.amount) : room;
        // Takes never settled: charged with the grants; their records are written first (see above).
        const settledHere = await this.recordUnsettled(hold, item, now);
        const extra = settledHere.reduce((sum, t) => sum + t.refund, 0);
        const counted = num(item.requests);
        const requests = counted - num(item.requestsCounted) + settledHere.length;
        cost = hold.amount - refund - extra;
        const names: Record<string, string> = {};
        const removes = settledHere.map((t, i) => {
          names[`#m${i}`] = t.marker;
          return `#m${i}`;
        });
        const conditions = [
          item.room === undefined ? 'attribute_not_exists(room)' : 'room = :room',
          item.requestsCounted === undefined ? 'attribute_not_exists(requestsCounted)' : 'requestsCounted = :was',
          ...removes.map((n) => `attribute_exists(${n})`),
        ];
        items.push({
          Update: {
            TableName: this.host.table,
            Key: marshall(hold.pool),
            UpdateExpression: `SET closed = if_not_exists(closed, :now), room = :left, requestsCounted = :counted${removes.length ? ` REMOVE ${removes.join(', ')}` : ''}`,
            ConditionExpression: conditions.join(' AND '),
            ...(removes.length ? { ExpressionAttributeNames: names } : {}),
            ExpressionAttributeValues: marshall({
              ':now': now,
              ':left': room - refund,
              ':counted': counted,
              ...(item.room === undefined ? {} : { ':room': room }),
              ...(item.requestsCounted === undefined ? {} : { ':was': num(item.requestsCounted) }),
            }),
          },
        });
        items.push(...this.host.counterItems(hold.grant.counters, { committed: -(refund + extra), reserved: -hold.amount, spent: cost, requests }));
      }
      items.push(...this.host.velocityItems(hold.grant.velocity.map((v) => ({ ...v, admittedMicros: hold.amount })), cost));
      const reasons = await this.host.transact(items);
      if (!reasons) return true;
      if (reasons[0]?.Code === 'ConditionalCheckFailed') return false;
      if (reasons[1]?.Code === 'ConditionalCheckFailed') continue; // the pool changed meanwhile: read it again
      throw new Error(`DynamoDB cancelled a pool release unexpectedly (reasons: ${reasons.map((r) => r.Code ?? 'None').join(',')})`);
    }
    throw new StoreUnavailableError('A pool is still being written to; its release waits for the next sweep.', { code: 'store_contention' });
  }

  /**
   * The sweeper's records of a pool's takes never settled (a request still running, or whose instance died):
   * an `abandoned` record for the amount taken, written only where the request has none. Returns the takes
   * whose own record exists already (their settle stopped between the record and the give-back): the release
   * settles them, giving back what their record did not spend. A shared pool's takes have their record from
   * the request's own hold; a lease's, from the lease.
   */
  private async recordUnsettled(hold: GrantHold, item: Record<string, unknown>, now: number): Promise<Array<{ marker: string; refund: MicroUsd }>> {
    if (this.role === 'shared') return [];
    const settled: Array<{ marker: string; refund: MicroUsd }> = [];
    for (const [name, value] of Object.entries(item)) {
      if (!name.startsWith(MARKER_PREFIX) || typeof value !== 'string') continue;
      const take = parseMarker(name, value);
      if (!take) continue;
      const record: UsageRecord = abandonedTake(hold.context, take, now);
      try {
        await this.host.client.send(
          new PutItemCommand({
            TableName: this.host.usageTable,
            Item: this.host.usageItem(record),
            ConditionExpression: 'attribute_not_exists(pk)',
            ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
          }),
        );
      } catch (err) {
        if (errorName(err) !== 'ConditionalCheckFailedException') throw translateError(err);
        const old = (err as { Item?: Item }).Item;
        const existing = old ? unmarshall(old) : undefined;
        if (take.lease || !existing || existing.outcome === 'abandoned') continue;
        settled.push({ marker: name, refund: take.amount - num(existing.costMicros) });
      }
    }
    return settled;
  }

  // -------------------------------------------------------------------------------------------------------

  /**
   * One take: room −= amount, units −= charge, and the take's marker `t:<request id>` set, if there is room, the
   * pool is open and the marker is not there yet. A retried take whose first answer was lost finds its own
   * marker: taken once, not twice.
   */
  private async tryTake(
    ref: PoolRef,
    input: ReserveInput,
    charges: readonly RateCharge[],
  ): Promise<{ taken?: Record<string, unknown>; old?: Record<string, unknown> }> {
    const amount = input.amount;
    const values: Record<string, number | string> = { ':a': amount, ':na': -amount, ':m': this.markerOf(input) };
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
    try {
      const out = await this.host.client.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(ref),
          UpdateExpression: `ADD ${adds.join(', ')} SET #t = :m`,
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeNames: { '#t': marker },
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
   * `abandoned` record of a key pool's take is made from it). A shared take's record comes from the request's
   * own hold, so its marker is the kind alone.
   */
  private markerOf(input: ReserveInput): string {
    if (this.role === 'shared') return 's';
    const kind = input.context.endpoint === 'lease' ? 'l' : 'r';
    return `${kind};${input.amount};${input.now};${input.context.model}`;
  }

  /**
   * A take's marker attribute. A key pool's names the request (the sweeper writes its record); a shared pool's
   * is a 72-bit digest of the request id: a shared item carries the markers of every request in flight through
   * it (a hundred at 5,000 req/s), and every write of the item pays for its whole size.
   */
  private markerName(requestId: string): string {
    if (this.role !== 'shared') return markerName(requestId);
    return `${MARKER_PREFIX}${createHash('sha256').update(requestId).digest('base64url').slice(0, 12)}`;
  }

  /** One instance at a time refills a pool: it claims the item first (a stale claim may be taken over). */
  private async claim(ref: PoolRef, now: number): Promise<boolean> {
    try {
      await this.host.client.send(
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
   * Reserves a grant for the pool (sized to what the pool took so far this epoch, or last epoch, until the
   * epoch ends) and adds it to the room. A refused grant is tried once more at a size the counters can still
   * give; if not even this request fits, the pool is left dry for a moment with the refusal. 'alone' when this
   * request must reserve on its own (the grant was refused for another reason), 'busy' when the grant met
   * contention (the claim is released either way; the caller tries again).
   */
  private async refill(
    ref: PoolRef,
    input: ReserveInput,
    charges: readonly RateCharge[],
    old: Record<string, unknown> | undefined,
    epoch: number,
    now: number,
  ): Promise<'granted' | 'alone' | 'busy'> {
    // A grant lasts a few seconds (at most to the epoch's end) at the rate the pool is used: this epoch's
    // once it has run a while, else the last epoch's; with neither, four times what was granted so far. Money
    // is sized by what requests keep (taken less given back), units by what they take.
    const horizon = Math.min(GRANT_HORIZON_MS, this.startOf(ref.pk, epoch) + this.opts.epochMs - now);
    let previous: Record<string, unknown> | undefined;
    if (old?.granted === undefined) previous = await this.read({ pk: ref.pk, sk: `e${epoch - 1}` });
    const since = old?.firstAt === undefined ? 0 : now - num(old.firstAt);
    const used = (item: Record<string, unknown> | undefined, attr: string): number => num(item?.[`taken${attr}`]) - (attr === '' ? num(item?.given) : 0);
    const scale = (attr: string, each: number): number => {
      const perMs = since >= MIN_RATE_SPAN_MS ? used(old, attr) / since : previous ? used(previous, attr) / this.opts.epochMs : undefined;
      const want = perMs === undefined ? 4 * num(old?.[`granted${attr}`]) : Math.ceil(perMs * horizon * 1.25);
      // A pooled key is busy (that is why it is pooled): its first grant holds a few requests more than most.
      return Math.max((old?.granted === undefined && !previous ? FIRST_GRANT_REQUESTS : MIN_GRANT_REQUESTS) * each, want);
    };
    // What the pool holds already counts: a pool short of rate units only is granted units (and no money).
    // A debt (negative room: overshoots charged to the counters... or takes past it) is covered by the grant too.
    const room = num(old?.room);
    const need = Math.max(0, input.amount - room);
    let amount = scale('', input.amount);
    for (const c of input.counters) {
      if (c.limit !== undefined) amount = Math.max(input.amount, Math.min(amount, Math.floor(c.limit * MAX_GRANT_SHARE)));
    }
    amount = Math.max(need, amount - room);
    const units = new Map<RateCharge['dimension'], number>();
    const held = (dimension: RateCharge['dimension']): number => Math.max(0, num(old?.[unitAttr(dimension)]));
    for (const c of charges) {
      const want = Math.min(this.unitCap(c), scale(unitAttr(c.dimension), c.amount));
      units.set(c.dimension, Math.max(c.amount - held(c.dimension), want - held(c.dimension), 0));
    }

    const grantId = `${this.role === 'shared' ? SHARED_GRANT_PREFIX : 'pool.'}${ref.pk.slice('pool#'.length)}.${ref.sk}.${this.host.clock.now().toString(36)}${(this.seq++).toString(36)}`;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.host.reserveGrant(
          {
            requestId: grantId,
            now,
            expiresAt: this.closesAt(ref),
            amount,
            counters: input.counters,
            rateCharges: charges.map((c) => ({ ...c, amount: units.get(c.dimension) ?? c.amount })),
            ...(input.circuits ? { circuits: input.circuits } : {}),
            // The velocity windows see the whole grant now, and its real cost when the pool is released.
            ...(input.velocity ? { velocity: input.velocity.map((v) => ({ ...v, admittedMicros: amount })) } : {}),
            context: { ...input.context, model: 'pool', endpoint: 'pool', requestType: undefined, stream: undefined, provider: undefined },
          },
          ref,
        );
        break;
      } catch (err) {
        if (err instanceof BudgetExceededError && attempt < MAX_GRANT_ATTEMPTS) {
          // The last of a budget: half of what the tightest counter has left while that is several requests'
          // worth (so other pools get some), then all of it; below one request's worth, the pool is dry.
          const limited = input.counters.filter((c) => c.limit !== undefined);
          const values = await this.host.readCounters(limited).catch(() => undefined);
          if (values) {
            const remaining = Math.min(
              ...limited.map((c) => (c.limit as number) - (values.find((v) => v.ref.scope === c.scope && v.ref.windowKey === c.windowKey)?.committed ?? 0)),
            );
            if (remaining >= need && amount > need) {
              amount = Math.max(need, Math.min(amount, remaining >= 4 * input.amount ? Math.floor(remaining / 2) : remaining));
              continue;
            }
            await this.unclaim(ref);
            if (remaining >= need) return 'alone';
            // Not even this request fits: so say the pool's takers for a moment, without asking the counters.
            await this.markDry(ref, err, now);
            throw err;
          }
        }
        const moreUnitsThanNeeded = [...units].some(([dimension, n]) => n > Math.max(0, charges.find((c) => c.dimension === dimension)!.amount - held(dimension)));
        if (attempt < MAX_GRANT_ATTEMPTS && (err instanceof SpendVelocityError || (err instanceof RateLimitError && err.code === 'rate_limit_exceeded'))) {
          // The velocity window or a rate bucket cannot take the whole grant: ask for this request's part only.
          if (err instanceof SpendVelocityError && amount > need) {
            amount = need;
            continue;
          }
          if (err instanceof RateLimitError && moreUnitsThanNeeded) {
            for (const c of charges) units.set(c.dimension, Math.max(0, c.amount - held(c.dimension)));
            continue;
          }
        }
        await this.unclaim(ref);
        if (err instanceof StoreUnavailableError && err.code === 'store_contention') return 'busy';
        if (err instanceof CircuitOpenError || (err instanceof RateLimitError && err.code === 'rate_limit_exceeded')) {
          // Not even this request's part passes: the pool's takers hear the same for a moment, without asking.
          // (A tripped velocity breaker is the caller's to act on first: it opens the circuit and alerts.)
          if (!(err instanceof SpendVelocityError)) await this.markDry(ref, err, now);
          throw err;
        }
        // Any other refusal (a budget that moved under three grants in a row) is decided for this request
        // alone, exactly.
        if (err instanceof TollgateError && err.status < 500) return 'alone';
        throw err;
      }
    }
    const values: Record<string, number> = { ':g': amount, ':ttl': this.ttlOf(ref) };
    const adds = ['room :g', 'granted :g'];
    for (const [dimension, n] of units) {
      const attr = unitAttr(dimension);
      values[`:${attr}`] = n;
      adds.push(`${attr} :${attr}`, `granted${attr} :${attr}`);
    }
    // Once: the grant's marker `g:<grant id>` is set with it (a retry after a lost answer finds it; a grant the
    // sweeper voided because it never arrived cannot arrive late).
    try {
      await this.host.client.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(ref),
          UpdateExpression: `ADD ${adds.join(', ')} SET #g = :g, #ttl = if_not_exists(#ttl, :ttl) REMOVE refillAt, dryUntil, dry`,
          ConditionExpression: 'attribute_not_exists(#g) AND attribute_not_exists(closed)',
          ExpressionAttributeNames: { '#ttl': 'ttl', '#g': grantName(grantId) },
          ExpressionAttributeValues: marshall(values),
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
    } catch (err) {
      if (errorName(err) !== 'ConditionalCheckFailedException') {
        // The grant's hold stays: the sweeper releases it (in full: it never reached the room).
        throw translateError(err);
      }
      const old = (err as { Item?: Item }).Item;
      const applied = old ? unmarshall(old)[grantName(grantId)] : undefined;
      if (applied !== amount) return 'busy'; // voided by the sweeper, or the pool closed: take again
    }
    this.host.refilled(this.role === 'key' ? `key:${input.context.keyId}` : (input.context.keyId as ScopeId), now);
    return 'granted';
  }

  private async markDry(ref: PoolRef, err: BudgetExceededError | RateLimitError | CircuitOpenError, now: number): Promise<void> {
    const dry: DryState = {
      kind: err instanceof BudgetExceededError ? 'budget' : err instanceof CircuitOpenError ? 'circuit' : 'rate',
      message: err.message,
      ...(err.code ? { code: err.code } : {}),
      headers: { ...err.headers },
    };
    try {
      await this.host.client.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(ref),
          UpdateExpression: 'SET dryUntil = :until, dry = :dry',
          ExpressionAttributeValues: marshall({ ':until': now + DRY_MS, ':dry': dry }),
        }),
      );
    } catch {
      // Only a shortcut for the pool's other takers: each of them finds the same refusal on its own.
    }
  }

  /** Gives up a refill claim. */
  private async unclaim(ref: PoolRef): Promise<void> {
    try {
      await this.host.client.send(
        new UpdateItemCommand({ TableName: this.host.table, Key: marshall(ref), UpdateExpression: 'REMOVE refillAt' }),
      );
    } catch {
      // A claim that stays goes stale after CLAIM_STALE_MS.
    }
  }

  /**
   * Gives a settled take's unspent part (and units) back to its pool, exactly once: the take's marker is removed
   * in the same write, so a retried give-back whose first answer was lost finds nothing to do.
   *
   *   pool open                 → ONE UpdateItem: room += amount − cost, REMOVE marker   IF marker AND open
   *                               (an overshoot, cost > amount, only while the room covers it)
   *   overshoot past the room   → ONE transaction: pool REMOVE marker; every counter += cost − amount
   *   pool closed (released)    → ONE transaction: pool REMOVE marker; every counter += cost − amount, requests
   *                               (and, for a lease or a refused take, the sweeper's `abandoned` record deleted)
   *
   * Either way the counters hold at least what was spent at once (grants cover the room an overshoot used), so
   * the overshoot circuit, which reads them, sees it; the take's own amount stays in the grants.
   */
  private async giveBack(
    reservation: Reservation,
    pool: PoolRef,
    back: {
      readonly cost: MicroUsd;
      readonly requests: number;
      readonly units: Record<RateCharge['dimension'], number>;
      /** The sweeper's record of this take, deleted if the pool closed first (a lease or a refused take has no own record). */
      readonly forget?: Item;
    },
  ): Promise<void> {
    const marker = this.markerName(reservation.requestId);
    const refund = reservation.amount - back.cost;
    let closed: boolean | undefined;
    let roomSeen: number | undefined;
    // An overshoot is paid from the pool's room while it has enough (that money is charged already); past
    // that, straight to the counters (below).
    const values: Record<string, number> = { ':back': refund, ':cost': back.cost, ':n': back.requests };
    const adds = ['room :back', 'given :back', 'spent :cost', 'requests :n'];
    for (const c of reservation.rateCharges) {
      const n = back.units[c.dimension];
      if (c.amount <= 0 || !n) continue;
      const attr = unitAttr(c.dimension);
      values[`:${attr}`] = n;
      adds.push(`${attr} :${attr}`);
    }
    const conditions = ['attribute_exists(#t)', 'attribute_not_exists(closed)'];
    if (refund < 0) {
      values[':over'] = -refund;
      conditions.push('room >= :over');
    }
    try {
      await this.host.client.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(pool),
          UpdateExpression: `ADD ${adds.join(', ')} REMOVE #t`,
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeNames: { '#t': marker },
          ExpressionAttributeValues: marshall(values),
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return;
    } catch (err) {
      if (errorName(err) !== 'ConditionalCheckFailedException') throw translateError(err);
      const old = (err as { Item?: Item }).Item;
      const value = old ? unmarshall(old) : undefined;
      if (value?.[marker] === undefined) return; // given back before (a retry), or released with it settled
      closed = value.closed !== undefined;
      if (!closed && refund < 0) roomSeen = num(value.room);
    }
    await this.settleDirect(reservation, pool, back, closed, roomSeen);
  }

  /**
   * The transaction of {@link giveBack} for an overshoot or a closed pool; the marker makes it happen once. An
   * overshoot past an open pool's room first empties that room (charged already, conditioned on the room as read)
   * and charges only the rest to the counters: the shard is then dry, and its refill checks the limit against
   * counters that hold the overshoot, so each shard passes a limit by at most one request's overshoot.
   */
  private async settleDirect(
    reservation: Reservation,
    pool: PoolRef,
    back: { readonly cost: MicroUsd; readonly requests: number; readonly forget?: Item },
    closedSeen: boolean | undefined,
    roomSeen?: number,
  ): Promise<void> {
    const marker = this.markerName(reservation.requestId);
    const delta = back.cost - reservation.amount;
    let closed = closedSeen ?? false;
    let room = roomSeen;
    for (let attempt = 0; attempt < 4; attempt++) {
      // What of the overshoot the open pool's room pays (never below zero: a debt is the release's to charge).
      const fromRoom = !closed && delta > 0 && room !== undefined ? Math.max(0, Math.min(room, delta)) : 0;
      const values: Record<string, number> = closed ? {} : { ':cost': back.cost, ':n': back.requests };
      let update = closed ? 'REMOVE #t' : 'ADD spent :cost, requests :n REMOVE #t';
      let condition = `attribute_exists(#t) AND ${closed ? 'attribute_exists(closed)' : 'attribute_not_exists(closed)'}`;
      if (!closed && room !== undefined && delta > 0) {
        values[':seen'] = room;
        condition += ' AND room = :seen';
        if (fromRoom > 0) {
          values[':used'] = -fromRoom;
          update = 'ADD spent :cost, requests :n, room :used, given :used REMOVE #t';
        }
      }
      const items: TransactWriteItem[] = [
        {
          Update: {
            TableName: this.host.table,
            Key: marshall(pool),
            // Open: the pool counts the request (the release adds it to the counters); closed: the counters do.
            UpdateExpression: update,
            ConditionExpression: condition,
            ExpressionAttributeNames: { '#t': marker },
            ...(Object.keys(values).length ? { ExpressionAttributeValues: marshall(values) } : {}),
          },
        },
        ...this.host.counterItems(reservation.counters, { committed: delta - fromRoom, spent: delta - fromRoom, requests: closed ? back.requests : 0 }),
      ];
      if (closed && back.forget) {
        items.push({
          Delete: {
            TableName: this.host.usageTable,
            Key: back.forget,
            ConditionExpression: 'attribute_not_exists(pk) OR outcome = :abandoned',
            ExpressionAttributeValues: { ':abandoned': { S: 'abandoned' } },
          },
        });
      }
      const reasons = await this.host.transact(items);
      if (!reasons) return;
      if (reasons[0]?.Code !== 'ConditionalCheckFailed') {
        throw new Error(`DynamoDB cancelled a pool settle unexpectedly (reasons: ${reasons.map((r) => r.Code ?? 'None').join(',')})`);
      }
      const item = await this.readConsistent(pool);
      if (item?.[marker] === undefined) return; // done before, or settled by the release
      closed = item.closed !== undefined;
      if (room !== undefined) room = num(item.room);
    }
    throw new StoreUnavailableError('The gateway cannot settle this request right now; try again shortly.', { code: 'store_contention' });
  }

  private async readConsistent(ref: PoolRef): Promise<Record<string, unknown> | undefined> {
    try {
      const out = await this.host.client.send(new GetItemCommand({ TableName: this.host.table, Key: marshall(ref), ConsistentRead: true }));
      return out.Item ? unmarshall(out.Item) : undefined;
    } catch (err) {
      throw translateError(err);
    }
  }

  private reservation(input: ReserveInput, ref: PoolRef, after: Record<string, unknown>): Reservation {
    const resetMs = this.startOf(ref.pk, Number(ref.sk.slice(1))) + this.opts.epochMs - input.now;
    const rateStates: RateState[] = input.rateCharges.map((c) => ({
      dimension: c.dimension,
      limit: c.limitPerMinute,
      // What this pool has left: a lower bound of the key's own remaining units.
      remaining: Math.max(0, Math.floor(num(after[unitAttr(c.dimension)]))),
      resetMs: Math.max(0, resetMs),
    }));
    return reservationOf(input, { rateStates, expiresAt: this.closesAt(ref), holdShard: 0, pool: ref });
  }

  private async read(ref: PoolRef): Promise<Record<string, unknown> | undefined> {
    try {
      const out = await this.host.client.send(new GetItemCommand({ TableName: this.host.table, Key: marshall(ref) }));
      return out.Item ? unmarshall(out.Item) : undefined;
    } catch {
      return undefined; // only sizes the grant
    }
  }

  /** How long a taker waits for another instance's refill: 20 ms, growing to 200 ms, jittered. */
  private backoff(round: number): number {
    return Math.min(MAX_WAIT_MS, 20 * 1.5 ** round) * (0.5 + Math.random() / 2);
  }

  /** A pool's units of one rate dimension per epoch: its share of the bucket's refill over the epoch. */
  private unitCap(c: RateCharge): number {
    return Math.floor((c.limitPerMinute * this.opts.epochMs) / 60_000 / this.opts.shards);
  }

  /**
   * A pool's epoch. Each pool's epochs are offset by a hash of its key, so the pools of a busy scope do not all
   * start empty (and refill) at the same moment.
   */
  private epochOf(pk: string, now: number): number {
    return Math.floor((now + shardOf(pk, this.opts.epochMs)) / this.opts.epochMs);
  }

  private startOf(pk: string, epoch: number): number {
    return epoch * this.opts.epochMs - shardOf(pk, this.opts.epochMs);
  }

  /** When a pool's grants may be released: its epoch, one more epoch for leases taken from it, and the grace. */
  private closesAt(ref: PoolRef): number {
    return this.startOf(ref.pk, Number(ref.sk.slice(1))) + 2 * this.opts.epochMs + this.opts.graceMs;
  }

  private ttlOf(ref: PoolRef): number {
    return Math.ceil(this.closesAt(ref) / 1000) + 86_400;
  }
}

/** Requests that share pools: one key, the same counters and limits, rate limits, circuits and velocity scopes. */
export function poolGroupKey(input: ReserveInput): string {
  // The platform's shard is the pool's (see take), not the request's.
  const counters = input.counters.map((c) => `${c.scope}|${c.windowKey}|${c.limit ?? '-'}`).join(',');
  const rates = input.rateCharges
    .filter((c) => c.amount > 0)
    .map((c) => `${c.dimension}:${c.limitPerMinute}`)
    .join(',');
  const circuits = (input.circuits ?? []).map((c) => c.scope).join(',');
  const velocity = (input.velocity ?? []).map((v) => `${v.scope}:${v.window}`).join(',');
  return [input.context.keyId, input.context.byok ? 'byok' : '', counters, rates, circuits, velocity].join('#');
}

function groupId(input: ReserveInput): string {
  return createHash('sha256').update(poolGroupKey(input)).digest('base64url').slice(0, 22);
}

function unitAttr(dimension: RateCharge['dimension']): string {
  return dimension === 'requests' ? 'ur' : 'ut';
}

function dryError(dry: DryState): TollgateError {
  const options = { ...(dry.code ? { code: dry.code } : {}), headers: { ...dry.headers } };
  if (dry.kind === 'circuit') return new CircuitOpenError(dry.message, options);
  return dry.kind === 'budget' ? new BudgetExceededError(dry.message, options) : new RateLimitError(dry.message, options);
}

function num(value: unknown): number {
  return typeof value === 'number' ? value : Number(value ?? 0) || 0;
}

/** A take's marker attribute on its pool item, present from the take until its settle (or the release). */
const MARKER_PREFIX = 't:';
/** The value a grant's marker takes when the sweeper released a grant that never reached the room. */
const VOID_GRANT = -1;

function markerName(requestId: string): string {
  return `${MARKER_PREFIX}${requestId}`;
}

function grantName(grantId: string): string {
  return `g:${grantId}`;
}

interface MarkedTake {
  readonly requestId: string;
  readonly amount: MicroUsd;
  readonly reservedAt: number;
  readonly model: string;
  readonly lease: boolean;
}

function parseMarker(name: string, value: string): MarkedTake | undefined {
  const [kind, amount, at, ...model] = value.split(';');
  if (kind === 's' || amount === undefined || at === undefined) return undefined;
  return { requestId: name.slice(MARKER_PREFIX.length), amount: Number(amount), reservedAt: Number(at), model: model.join(';'), lease: kind === 'l' };
}

/** The sweeper's record of a take never settled: its amount, estimated, `abandoned` (its late settle replaces it). */
function abandonedTake(context: ReserveInput['context'], take: MarkedTake, now: number): UsageRecord {
  return {
    requestId: take.requestId,
    timestamp: new Date(take.reservedAt).toISOString(),
    userId: context.userId,
    keyId: context.keyId,
    ...(context.orgId !== undefined ? { orgId: context.orgId } : {}),
    provider: 'unknown',
    model: take.model,
    requestType: 'chat',
    endpoint: take.lease ? 'lease' : 'unknown',
    stream: false,
    usage: { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 },
    costMicros: take.amount,
    costEstimated: true,
    outcome: 'abandoned',
    httpStatus: 0,
    durationMs: Math.max(0, now - take.reservedAt),
    byok: context.byok ?? false,
  };
}

/** The key of the sweeper's record of a take (to delete it when a lease or a refused take settles late). */
function abandonedKeyOf(host: PoolHost, requestId: string, reservedAt: number, context: ReserveInput['context']): Item {
  const item = host.usageItem(abandonedTake(context, { requestId, amount: 0, reservedAt, model: '', lease: true }, reservedAt));
  return { pk: item.pk!, sk: item.sk! };
}
