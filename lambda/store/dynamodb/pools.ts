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
import { createHash } from 'node:crypto';
import { GetItemCommand, UpdateItemCommand, type AttributeValue, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { Clock } from '../../core/clock';
import { BudgetExceededError, CircuitOpenError, RateLimitError, SpendVelocityError, StoreUnavailableError, TollgateError } from '../../core/errors';
import type { MicroUsd } from '../../core/money';
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
  /** Corrects counters directly (single-item writes) for a request that settled after its pool closed. */
  refundCounters(counters: readonly CounterRef[], delta: { readonly refund: MicroUsd; readonly requests: number }): Promise<void>;
  /** A key's grants were refilled: its pooled mark is extended. */
  refilled(keyId: string, now: number): void;
}

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

  constructor(
    private readonly host: PoolHost,
    options: PoolOptions = {},
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
      const outcome = await this.tryTake(ref, input.amount, charges);
      if (outcome.taken) return this.reservation(input, ref, outcome.taken);
      const old = outcome.old;
      const dry = old?.dryUntil !== undefined && Number(old.dryUntil) > now && old.dry;
      if (round === 0 || dry) {
        // The last epoch's pool keeps admitting with what it has left (what its requests gave back, mostly)
        // until it closes: used before asking the counters for more.
        const last: PoolRef = { pk, sk: `e${epoch - 1}` };
        const fromLast = await this.tryTake(last, input.amount, charges);
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

  /** Settle of a pooled request: its unspent part and unused tokens go back to the pool (once; never throws). */
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
    await this.giveBack(reservation, pool, { cost: input.cost, requests: input.usedRequests, units });
  }

  /**
   * The sweeper's release of one grant of a closed (or closing) pool: closes the pool to takes, and takes out
   * of its room what this grant may get back (at most its amount). Returns the refund and the requests to
   * count with it; the caller then corrects the counters and deletes the hold. A pool item that is gone gives
   * nothing back (everything was charged). Several releases of one pool's grants may run at once: each takes
   * the room it read, on condition that nothing changed it meanwhile.
   */
  async claimRefund(pool: PoolRef, amount: MicroUsd, now: number): Promise<{ refund: MicroUsd; requests: number; unrecorded: MicroUsd }> {
    for (let attempt = 0; attempt < 8; attempt++) {
      let item: Record<string, unknown> | undefined;
      try {
        const out = await this.host.client.send(new GetItemCommand({ TableName: this.host.table, Key: marshall(pool), ConsistentRead: true }));
        item = out.Item ? unmarshall(out.Item) : undefined;
      } catch (err) {
        throw translateError(err);
      }
      if (!item) return { refund: 0, requests: 0, unrecorded: amount };
      const room = num(item.room);
      const refund = Math.max(0, Math.min(room, amount));
      const requests = Math.max(0, num(item.requests) - num(item.requestsCounted));
      // Charged by the releases so far and this one, less what the pool's requests recorded themselves (their
      // usage records): the rest was taken and never given back (a taker that died), recorded as abandoned.
      const charged = num(item.charged) + amount - refund;
      const unrecorded = Math.max(0, charged - num(item.spent) - num(item.abandoned));
      try {
        await this.host.client.send(
          new UpdateItemCommand({
            TableName: this.host.table,
            Key: marshall(pool),
            UpdateExpression:
              'SET closed = if_not_exists(closed, :now), room = :left, requestsCounted = :counted, charged = :charged, abandoned = :abandoned',
            // As read: a pool whose grant never reached its room (the claimer died between the two) has none.
            ConditionExpression: `${item.room === undefined ? 'attribute_not_exists(room)' : 'room = :room'} AND ${
              item.requestsCounted === undefined ? 'attribute_not_exists(requestsCounted)' : 'requestsCounted = :was'
            }`,
            ExpressionAttributeValues: marshall({
              ':now': now,
              ':left': room - refund,
              ':counted': num(item.requests),
              ':charged': charged,
              ':abandoned': num(item.abandoned) + unrecorded,
              ...(item.room === undefined ? {} : { ':room': room }),
              ...(item.requestsCounted === undefined ? {} : { ':was': num(item.requestsCounted) }),
            }),
          }),
        );
        return { refund, requests, unrecorded };
      } catch (err) {
        if (errorName(err) === 'ConditionalCheckFailedException') continue; // a late return meanwhile: read again
        throw translateError(err);
      }
    }
    // Still busy with give-backs: the hold stays, and the sweeper's next run tries again.
    throw new StoreUnavailableError('A pool is still being written to; its release waits for the next sweep.', { code: 'store_contention' });
  }

  /** Gives a take back whole (the request was refused after it, by the loop guard). */
  async cancel(reservation: Reservation, pool: PoolRef): Promise<void> {
    const units: Record<RateCharge['dimension'], number> = { requests: 0, tokens: 0 };
    for (const c of reservation.rateCharges) if (c.amount > 0) units[c.dimension] = c.amount;
    await this.giveBack(reservation, pool, { cost: 0, requests: 0, units });
  }

  // -------------------------------------------------------------------------------------------------------

  private async tryTake(
    ref: PoolRef,
    amount: MicroUsd,
    charges: readonly RateCharge[],
  ): Promise<{ taken?: Record<string, unknown>; old?: Record<string, unknown> }> {
    const values: Record<string, number> = { ':a': amount, ':na': -amount };
    const adds = ['room :na', 'taken :a'];
    const conditions = ['room >= :a', 'attribute_not_exists(closed)'];
    for (const c of charges) {
      const attr = unitAttr(c.dimension);
      values[`:u${attr}`] = c.amount;
      values[`:n${attr}`] = -c.amount;
      adds.push(`${attr} :n${attr}`, `taken${attr} :u${attr}`);
      conditions.push(`${attr} >= :u${attr}`);
    }
    try {
      const out = await this.host.client.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(ref),
          UpdateExpression: `ADD ${adds.join(', ')}`,
          ConditionExpression: conditions.join(' AND '),
          ExpressionAttributeValues: marshall(values),
          ReturnValues: 'ALL_NEW',
          ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
        }),
      );
      return { taken: out.Attributes ? unmarshall(out.Attributes) : {} };
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') {
        const old = (err as { Item?: Item }).Item;
        return { old: old ? unmarshall(old) : undefined };
      }
      throw translateError(err);
    }
  }

  /** One instance at a time refills a pool: it claims the item first (a stale claim may be taken over). */
  private async claim(ref: PoolRef, now: number): Promise<boolean> {
    try {
      await this.host.client.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(ref),
          UpdateExpression: 'SET refillAt = :now, firstAt = if_not_exists(firstAt, :now), #ttl = if_not_exists(#ttl, :ttl)',
          ConditionExpression: 'attribute_not_exists(closed) AND (attribute_not_exists(refillAt) OR refillAt < :stale)',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: marshall({ ':now': now, ':stale': now - CLAIM_STALE_MS, ':ttl': this.ttlOf(ref) }),
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
    const room = Math.max(0, num(old?.room));
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

    for (let attempt = 0; ; attempt++) {
      try {
        await this.host.reserveGrant(
          {
            requestId: `pool.${ref.pk.slice('pool#'.length)}.${ref.sk}.${this.host.clock.now().toString(36)}${(this.seq++).toString(36)}`,
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
            await this.release(ref);
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
        await this.release(ref);
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
    try {
      await this.host.client.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(ref),
          UpdateExpression: `ADD ${adds.join(', ')} SET #ttl = if_not_exists(#ttl, :ttl) REMOVE refillAt, dryUntil, dry`,
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: marshall(values),
        }),
      );
    } catch (err) {
      // The grant's hold stays: the sweeper releases it, and charges it whole (nothing was added to the room).
      throw translateError(err);
    }
    this.host.refilled(input.context.keyId, now);
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

  private async release(ref: PoolRef): Promise<void> {
    try {
      await this.host.client.send(
        new UpdateItemCommand({ TableName: this.host.table, Key: marshall(ref), UpdateExpression: 'REMOVE refillAt' }),
      );
    } catch {
      // A claim that stays goes stale after CLAIM_STALE_MS.
    }
  }

  /**
   * Gives a settled request's (or a lease's) unspent part back to its pool, once: a failure leaves it charged
   * (the conservative side), and a pool closed meanwhile means the sweeper charged it, so the counters are
   * corrected directly instead.
   */
  private async giveBack(
    reservation: Reservation,
    pool: PoolRef,
    back: { readonly cost: MicroUsd; readonly requests: number; readonly units: Record<RateCharge['dimension'], number> },
  ): Promise<void> {
    const refund = reservation.amount - back.cost;
    const values: Record<string, number> = { ':back': refund, ':cost': back.cost, ':n': back.requests };
    const adds = ['room :back', 'given :back', 'spent :cost', 'requests :n'];
    for (const c of reservation.rateCharges) {
      const n = back.units[c.dimension];
      if (c.amount <= 0 || !n) continue;
      const attr = unitAttr(c.dimension);
      values[`:${attr}`] = n;
      adds.push(`${attr} :${attr}`);
    }
    try {
      await this.host.client.send(
        new UpdateItemCommand({
          TableName: this.host.table,
          Key: marshall(pool),
          UpdateExpression: `ADD ${adds.join(', ')}`,
          ConditionExpression: 'attribute_exists(pk) AND attribute_not_exists(closed)',
          ExpressionAttributeValues: marshall(values),
        }),
      );
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') {
        await this.host.refundCounters(reservation.counters, { refund, requests: back.requests }).catch(() => undefined);
        return;
      }
      // The store failing leaves the request charged its whole amount; anything else is a defect to surface.
      const translated = translateError(err);
      if (!(translated instanceof StoreUnavailableError)) throw translated;
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
