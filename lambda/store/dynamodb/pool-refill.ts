/**
 * A pool's refill: one instance (holding the pool's claim) reserves a grant, ONE ordinary reserve transaction
 * whose hold names the pool (every counter within its limit, the key's rate buckets, circuits, velocity), then
 * adds it to the room exactly once (the grant's marker `g:<grant id>` goes with it). Near a limit the grant
 * shrinks; when not even the request fits, the pool is left dry for a moment with the refusal.
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { BudgetExceededError, CircuitOpenError, RateLimitError, SpendVelocityError, StoreUnavailableError, TollgateError } from '../../core/errors';
import type { CounterRef, RateCharge, ReserveInput } from '../../core/stores';
import type { ScopeId } from '../../core/types';
import { errorName, translateError } from './client';
import { NEAR_LIMIT_SHARDS } from './busy-scopes';
import { budgetExceeded, budgetRefusalOf } from './denials';
import { type DryState, grantName, isQuiet, type Item, num, SHARED_GRANT_PREFIX, unitAttr } from './pool-markers';
import type { PoolRef, ScopePools } from './pools';

/** Fewest requests' worth a grant holds (so a quiet pool is not refilled per request). */
export const MIN_GRANT_REQUESTS = 4;
/** Requests' worth in a pool's first grant when nothing is known of its rate. */
const FIRST_GRANT_REQUESTS = 16;
/** Largest share of a limited counter one grant may take: the rest stays free for other pools and keys. */
const MAX_GRANT_SHARE = 0.05;
/** How long a grant is sized to last (ms): short, so little is left in a pool when its epoch ends. */
const GRANT_HORIZON_MS = 3_000;
/**
 * How long a quiet key's grant is sized to last (ms), at most to its epoch's end: about a minute of the key's
 * requests, which is what its rate units allow (QUIET_BURST_SHARE), so an epoch of several minutes has several
 * grants, each made before the last runs dry, and its epoch's turn (an empty item, a small last grant) comes
 * once in those minutes instead of every minute.
 */
const QUIET_GRANT_MS = 60_000;
/**
 * Most of a rate bucket's burst (one minute of its limit) one quiet grant takes: the last epoch's grant may still
 * hold units until its release, and a grant the bucket refuses is a transaction paid for (a whole epoch's units,
 * tried before, were refused that way every epoch). Half: two grants' units always fit.
 */
const QUIET_BURST_SHARE = 0.5;
/** Grants a refill tries when the budget is short (each smaller), before the request reserves on its own. */
const MAX_GRANT_ATTEMPTS = 3;
/** How long a refused grant leaves its pool dry (its takers refused from what the refusal said). */
const DRY_MS = 1_000;
/** How long a grant refused only for held room leaves its pool dry (its takers wait on the counter meanwhile). */
const HELD_DRY_MS = 250;
/** Shortest time a pool must have been taken from before its own rate sizes its grants (ms). */
const MIN_RATE_SPAN_MS = 200;

/** Refills a pool with grants, sized to its rate and shrunk near a limit. */
export class PoolRefill {
  constructor(private readonly pools: ScopePools) {}

  /**
   * Reserves a grant for the pool (sized to what the pool took so far this epoch, or last epoch, until the
   * epoch ends) and adds it to the room. A refused grant is tried once more at a size the counters can still
   * give; if not even this request fits, the pool is left dry for a moment with the refusal. 'alone' when this
   * request must reserve on its own (the grant was refused for another reason), 'busy' when the grant met
   * contention (the claim is released either way; the caller tries again).
   */
  async refill(
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
    const epochMs = this.pools.epochMsOf(ref.pk);
    const quiet = isQuiet(ref.pk);
    // A quiet key's grant lasts a minute (at most to its epoch's end): a key at 30 requests a minute then pays for
    // a grant (a reserve transaction and its release, ≈ 30 write units) about once a minute, not two transactions
    // a request.
    const horizon = Math.min(quiet ? QUIET_GRANT_MS : GRANT_HORIZON_MS, this.pools.startOf(ref.pk, epoch) + epochMs - now);
    let previous: Record<string, unknown> | undefined;
    if (old?.granted === undefined) previous = await this.pools.read({ pk: ref.pk, sk: `e${epoch - 1}` });
    const since = old?.firstAt === undefined ? 0 : now - num(old.firstAt);
    // The last epoch's rate is over the time its pool was in use (from its first grant): a key pooled only in
    // that epoch's last seconds (a quiet key's warm-up) would otherwise look a dozen times slower than it is.
    const lastSpan = previous?.firstAt === undefined ? epochMs : Math.min(epochMs, Math.max(MIN_RATE_SPAN_MS, now - num(previous.firstAt)));
    const used = (item: Record<string, unknown> | undefined, attr: string): number => num(item?.[`taken${attr}`]) - (attr === '' ? num(item?.given) : 0);
    const scale = (attr: string, each: number): number => {
      const perMs = since >= MIN_RATE_SPAN_MS ? used(old, attr) / since : previous ? used(previous, attr) / lastSpan : undefined;
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
    if (this.pools.role === 'shared' && this.pools.host.isNear(input.context.keyId as ScopeId, now)) {
      // Near the limit a grant is a share of what is left (as last read), so the few pools in use split it
      // instead of one of them holding it idle while the others' requests wait.
      const limited = input.counters.filter((c) => c.limit !== undefined);
      const values = await this.pools.host.readCounters(limited).catch(() => undefined);
      if (values) {
        const left = Math.min(...limited.map((c) => (c.limit as number) - (values.find((v) => v.ref.scope === c.scope && v.ref.windowKey === c.windowKey)?.committed ?? 0)));
        amount = Math.max(need, Math.min(amount, Math.floor(left / (2 * NEAR_LIMIT_SHARDS))));
      }
    }
    const units = new Map<RateCharge['dimension'], number>();
    const held = (dimension: RateCharge['dimension']): number => Math.max(0, num(old?.[unitAttr(dimension)]));
    for (const c of charges) {
      const burstCap = quiet ? Math.floor(c.limitPerMinute * QUIET_BURST_SHARE) : Infinity;
      const want = Math.min(this.pools.unitCap(c, quiet), burstCap, scale(unitAttr(c.dimension), c.amount));
      units.set(c.dimension, Math.max(c.amount - held(c.dimension), want - held(c.dimension), 0));
    }

    // Its marker on the pool item is its last part (pool-markers.ts grantName; the reclaim rebuilds the id from it).
    const grantId = `${this.pools.role === 'shared' ? SHARED_GRANT_PREFIX : 'pool.'}${ref.pk.slice('pool#'.length)}.${ref.sk}.${this.pools.host.clock.now().toString(36)}${(this.pools.seq++).toString(36)}`;
    for (let attempt = 0; ; attempt++) {
      try {
        await this.pools.host.reserveGrant(
          {
            requestId: grantId,
            now,
            expiresAt: this.pools.closesAt(ref),
            amount,
            counters: input.counters,
            rateCharges: charges.map((c) => ({ ...c, amount: units.get(c.dimension) ?? c.amount })),
            ...(input.circuits ? { circuits: input.circuits } : {}),
            // The velocity windows see the whole grant now, and its real cost when the pool is released.
            ...(input.velocity ? { velocity: input.velocity.map((v) => ({ ...v, admittedMicros: amount })) } : {}),
            context: { ...input.context, model: 'pool', endpoint: 'pool', requestType: undefined, stream: undefined, provider: undefined },
          },
          ref,
          { quiet, shared: this.pools.role === 'shared' },
        );
        break;
      } catch (err) {
        // The scope whose counter refused is near its limit (an org's pools hold the platform's part too).
        if (err instanceof BudgetExceededError && this.pools.role === 'shared') this.pools.host.nearLimit(budgetRefusalOf(err)?.ref.scope ?? (input.context.keyId as ScopeId), now);
        if (err instanceof BudgetExceededError && attempt < MAX_GRANT_ATTEMPTS) {
          // The last of a budget: half of what the tightest counter has left while that is several requests'
          // worth (so other pools get some), then all of it; below one request's worth, the pool is dry.
          const limited = input.counters.filter((c) => c.limit !== undefined);
          const values = await this.pools.host.readCounters(limited).catch(() => undefined);
          if (values) {
            // The refused counter's value as the refusal saw it is the freshest (a shared scope's reads may be 2 s old).
            const seen = budgetRefusalOf(err);
            const committedOf = (c: CounterRef): number =>
              seen?.old && seen.ref.scope === c.scope && seen.ref.windowKey === c.windowKey
                ? num(seen.old.committed)
                : (values.find((v) => v.ref.scope === c.scope && v.ref.windowKey === c.windowKey)?.committed ?? 0);
            const remaining = Math.min(...limited.map((c) => (c.limit as number) - committedOf(c)));
            if (remaining >= need && amount > need) {
              amount = Math.max(need, Math.min(amount, remaining >= 4 * input.amount ? Math.floor(remaining / 2) : remaining));
              continue;
            }
            await this.unclaim(ref);
            if (remaining >= need) return 'alone';
            // Not even this request fits, but spend alone would leave it room (the rest is held by requests in
            // flight and grants): refused for now, and the ledger waits for room (room-wait.ts) rather than have
            // every waiter reserve on the scope's counters.
            const refusal = budgetRefusalOf(err);
            if (refusal?.old && num(refusal.old.reserved) > 0 && num(refusal.old.spent) + input.amount <= (refusal.ref.limit ?? Infinity)) {
              // Its takers hear so for a moment without asking (each waits on the counter, not on this pool).
              const held = { ref: refusal.ref, old: { spent: num(refusal.old.spent), reserved: num(refusal.old.reserved), committed: num(refusal.old.committed) } };
              const refused = budgetExceeded(refusal.ref, { amount: input.amount, old: refusal.old });
              await this.markDry(ref, refused, now, held);
              throw refused;
            }
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
    const values: Record<string, number> = { ':g': amount, ':ttl': this.pools.ttlOf(ref) };
    const adds = ['room :g', 'granted :g'];
    for (const [dimension, n] of units) {
      const attr = unitAttr(dimension);
      values[`:${attr}`] = n;
      adds.push(`${attr} :${attr}`, `granted${attr} :${attr}`);
    }
    // Once: the grant's marker `+<last part of the grant id>` is set with it (a retry after a lost answer finds it;
    // a grant the sweeper voided because it never arrived cannot arrive late). The claim goes with it.
    try {
      await this.pools.send(
        new UpdateItemCommand({
          TableName: this.pools.host.table,
          Key: marshall(ref),
          UpdateExpression: `ADD ${adds.join(', ')} SET #g = :g, #ttl = if_not_exists(#ttl, :ttl) REMOVE refillAt, claimBy, dryUntil, dry`,
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
    // A busy pool's refill keeps its scope marked busy; a quiet key's does not make it busy (it stays on one item).
    if (!quiet) this.pools.host.refilled(this.pools.role === 'key' ? `key:${input.context.keyId}` : (input.context.keyId as ScopeId), now);
    return 'granted';
  }

  async markDry(ref: PoolRef, err: BudgetExceededError | RateLimitError | CircuitOpenError, now: number, held?: DryState['held']): Promise<void> {
    // A budget's refusal keeps the counter's values it was decided on, so each taker's refusal says what it saw
    // (and the ledger remembers a spent-out budget: denials.ts SpentOutRefusals).
    const refusal = held ? undefined : budgetRefusalOf(err);
    const refused = refusal?.old ? { ref: refusal.ref, old: { spent: num(refusal.old.spent), reserved: num(refusal.old.reserved), committed: num(refusal.old.committed) } } : undefined;
    const dry: DryState = {
      kind: err instanceof BudgetExceededError ? 'budget' : err instanceof CircuitOpenError ? 'circuit' : 'rate',
      message: err.message,
      ...(err.code ? { code: err.code } : {}),
      headers: { ...err.headers },
      ...(held ? { held } : {}),
      ...(refused ? { refused } : {}),
    };
    try {
      await this.pools.host.client.send(
        new UpdateItemCommand({
          TableName: this.pools.host.table,
          Key: marshall(ref),
          UpdateExpression: 'SET dryUntil = :until, dry = :dry',
          ExpressionAttributeValues: marshall({ ':until': now + (held ? HELD_DRY_MS : DRY_MS), ':dry': dry }, { removeUndefinedValues: true }),
        }),
      );
    } catch {
      // Only a shortcut for the pool's other takers: each of them finds the same refusal on its own.
    }
  }

  /** Gives up a refill claim. */
  async unclaim(ref: PoolRef): Promise<void> {
    try {
      await this.pools.host.client.send(
        new UpdateItemCommand({ TableName: this.pools.host.table, Key: marshall(ref), UpdateExpression: 'REMOVE refillAt, claimBy' }),
      );
    } catch {
      // A claim that stays goes stale after CLAIM_STALE_MS.
    }
  }
}
