/**
 * The reserve transaction: a request (or a pool's grant, or a lease) admitted on its own, in ONE
 * TransactWriteItems, so a denial changes nothing and two racing requests can never both take the last dollar:
 *
 *   circuits: one strongly consistent BatchGetItem of their items, before it (a grant, a lease) or beside it (a
 *             request's own: ledger.ts reserveOwn, which takes a committed reserve back when a circuit is open)
 *   [bucket updates…] [counter updates…] [loop count (grants and leases only)] [velocity adds…] [hold put]
 *
 * Only the counters it must check are written (items.ts `reservesOn`): a key's or a user's window without a
 * limit is left to settle, which adds the cost to it once (the hold lists it, marked, for the sweeper).
 *
 * DynamoDB conditions cannot do arithmetic, so each counter keeps `committed` (= spent + reserved) and the
 * condition compares it with a precomputed `limit − amount`. A cancelled transaction is explained from the
 * failed conditions' old items (denials.ts): guardrails first, then budgets, then rates. Also the rate-only
 * charge of a cache hit.
 */
import type { TransactWriteItem } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { InvalidRequestError, RateLimitError } from '../../core/errors';
import { gcraAdmits, gcraBranch, gcraBranchFor, gcraCanEverAdmit, gcraIncrementUs, gcraRemaining, gcraResetMs, gcraTatAfter } from '../../core/ratelimit';
import { type CircuitRef, type CounterRef, type RateCharge, type RateState, type Reservation, reservationOf, type ReserveInput } from '../../core/stores';
import { BusyScopes } from './busy-scopes';
import { budgetExceeded, circuitOpen, loopDetected, rateLimited, requestTooLarge, unexpectedCancellation, velocityTripped } from './denials';
import { bucketHintKey, circuitKey, counterPk, counterTtl, grantReservesOn, holdKey, reservesOn } from './items';
import { assertMicros, assertTransactionSize, DAY_S, LedgerCore, MAX_HINTS } from './ledger-core';
import { LedgerItems } from './ledger-items';
import type { PoolRef } from './pools';

/** Re-tries of reserve when a GCRA "reset" met a bucket another instance had just used (the old item shows it). */
const MAX_BRANCH_RETRIES = 2;
/** How long an instance that read a circuit open reads it before reserving (not beside): a few seconds. */
const SEEN_OPEN_MS = 5_000;

/** Reserves on the counters, buckets and guardrail items directly, one transaction per call. */
export class ReserveTransaction {
  /** Circuits this instance read open, and until when it reads them first (see seenOpenRecently). */
  private readonly seenOpen = new Map<string, number>();

  constructor(
    private readonly core: LedgerCore,
    private readonly items: LedgerItems,
    private readonly busy: BusyScopes,
  ) {}

  /** The reserve transaction (see the file header); with `pool`, a grant for that pool, released by the sweeper. */
  async reserveHeld(
    input: ReserveInput,
    pool?: PoolRef,
    options: { readonly circuitsRead?: boolean; readonly quiet?: boolean; readonly shared?: boolean } = {},
  ): Promise<Reservation> {
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
      return { charge, key, inc: gcraIncrementUs(charge.amount, charge.limitPerMinute), branch: gcraBranch(this.core.tatHints.get(key), nowUs) };
    });
    const hold = holdKey(input.requestId, input.expiresAt);
    // A request held on its own writes only the counters it must check, a lease all of them (items.ts reservesOn),
    // a grant those it must check (grantReservesOn): the others, marked on the hold, get the cost at its release.
    const limitedOnly = !pool && input.context.endpoint !== 'lease';
    const writes = (ref: CounterRef): boolean => (pool ? grantReservesOn(ref, input.amount, options.shared === true) : reservesOn(ref, limitedOnly));
    const reserved = input.counters.filter(writes);
    const circuits = input.circuits ?? [];
    const velocity = input.velocity ?? [];
    const guardItems = [
      ...(input.loop ? [this.items.loopCheck(input.loop)] : []),
      ...velocity.map((charge) => this.items.velocityAdd(charge)),
    ];
    // The settle writes every counter: a request it could not settle in one transaction is refused here.
    assertTransactionSize(buckets.length + input.counters.length + guardItems.length + 1, 'reserve');

    const holdPut: TransactWriteItem = {
      Put: {
        TableName: this.core.budgets,
        Item: marshall(
          {
            pk: hold.pk,
            sk: hold.sk,
            requestId: input.requestId,
            amount: input.amount,
            reservedAt: input.now,
            expiresAt: input.expiresAt,
            // What the sweeper needs (items.ts StoredHold) and no more: every reserve puts this item and its settle
            // deletes it, each at 2 write units per KB (in a transaction). Every counter, those not reserved on
            // marked `u` (the sweeper then adds the whole amount to them).
            counters: input.counters.map((ref) => ({
              pk: counterPk(ref),
              sk: ref.windowKey,
              ttl: counterTtl(ref),
              ...(writes(ref) ? {} : { u: 1 }),
            })),
            context: input.context,
            ttl: Math.ceil(input.expiresAt / 1000) + DAY_S,
            // A grant's release corrects its counters (those marked `u` get what the pool spent) and its velocity.
            ...(pool ? { pool, grant: { velocity: input.velocity ?? [] } } : {}),
          },
          { removeUndefinedValues: true },
        ),
        ConditionExpression: 'attribute_not_exists(pk)',
      },
    };
    const counterUpdates = reserved.map((ref) => this.items.reserveCounter(ref, input.amount));
    // Circuits first: an open circuit explains a refusal better than anything the transaction could say. (A
    // request's own reserve reads them beside this transaction instead: ledger.ts reserveOwn, `circuitsRead`.)
    if (circuits.length && !options.circuitsRead) await this.refuseOpenCircuits(circuits, input.now);

    for (let branchRetries = 0; ; branchRetries++) {
      const items = [...buckets.map((b) => this.items.chargeBucket(b, nowUs)), ...counterUpdates, ...guardItems, holdPut];
      // A quiet key's grant that meets its own request's settle is no sign of a busy key: it marks nothing.
      const reasons = await this.core.transact(items, options.quiet ? undefined : (r) => this.busy.conflicted({ ...input, counters: reserved }, buckets.length, r));
      if (!reasons) break;

      // Guardrails first: a loop explains the denial better than a budget does.
      const guardAt = buckets.length + reserved.length;
      if (input.loop && reasons[guardAt]?.Code === 'ConditionalCheckFailed') {
        const old = reasons[guardAt]?.Item;
        throw loopDetected(input.loop, old ? unmarshall(old) : undefined);
      }
      const velocityAt = guardAt + (input.loop ? 1 : 0);
      for (const [k, charge] of velocity.entries()) {
        const reason = reasons[velocityAt + k];
        if (reason?.Code === 'ConditionalCheckFailed') throw velocityTripped(charge, reason.Item && unmarshall(reason.Item), input.now);
      }

      // A counter condition never depends on a guess: it failing means the budget is spent.
      for (const [j, ref] of reserved.entries()) {
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
        this.core.rememberTat(b.key, oldTat);
        if (!gcraAdmits(oldTat, nowUs, b.inc)) {
          denied.push({ charge: b.charge, inc: b.inc, oldTat });
        } else if (gcraBranchFor(oldTat, nowUs) !== b.branch) {
          // Only after a "reset" on a quiet key that another instance just used (see core/ratelimit.ts).
          b.branch = gcraBranchFor(oldTat, nowUs);
          wrongBranch = true;
        }
      }
      if (denied.length) throw this.refused(denied, nowUs);
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
      let tat = this.core.tatHints.get(key);
      if (bucket) {
        // reset: exactly now + inc; advance: old tat (as far as we know it) + inc.
        tat = bucket.branch === 'reset' ? nowUs + bucket.inc : gcraTatAfter(tat, nowUs, bucket.inc);
        this.core.rememberTat(key, tat);
      }
      return {
        dimension: charge.dimension,
        limit: charge.limitPerMinute,
        remaining: gcraRemaining(tat, nowUs, charge.limitPerMinute),
        resetMs: gcraResetMs(tat, nowUs),
      };
    });
    return reservationOf(input, {
      rateStates,
      expiresAt: input.expiresAt,
      holdShard: hold.shard,
      ...(velocity.length ? { velocity } : {}),
      ...(limitedOnly ? { limitedOnly } : {}),
    });
  }

  /**
   * Refuses with 429 `circuit_open` when one of the circuits is open, from one strongly consistent read of their
   * items (a BatchGetItem: 1 read unit per item instead of a ConditionCheck's 2 write units in the transaction).
   * A circuit opened anywhere is seen by the next read; one opened between this read and the transaction's
   * commit lets that request through (docs/guardrails.md, "Circuits are read, not checked in the transaction").
   */
  async refuseOpenCircuits(circuits: readonly CircuitRef[], now: number): Promise<void> {
    const keys = circuits.map((ref) => circuitKey(ref));
    const found = new Map((await this.core.batchGet(keys)).map((item) => [item.pk?.S, item]));
    for (const [i, ref] of circuits.entries()) {
      const item = found.get(keys[i]!.pk);
      const openUntil = item?.openUntil?.N;
      if (openUntil !== undefined && Number(openUntil) > now) {
        if (this.seenOpen.size >= MAX_HINTS) this.seenOpen.clear();
        this.seenOpen.set(keys[i]!.pk, now + SEEN_OPEN_MS);
        throw circuitOpen(ref, unmarshall(item!), now);
      }
    }
  }

  /**
   * Whether this instance read one of these circuits open in the last {@link SEEN_OPEN_MS}: its next requests
   * then read the circuits before reserving (refused without a write) instead of beside the transaction, so a
   * client hammering an open circuit costs reads, not a reserve and its take-back each time.
   */
  seenOpenRecently(circuits: readonly CircuitRef[], now: number): boolean {
    return circuits.some((ref) => (this.seenOpen.get(circuitKey(ref).pk) ?? 0) > now);
  }

  /**
   * Refuses at once, with no store call, a request whose rate charge a bucket refused here moments ago and
   * still cannot admit: the refusal read the bucket's tat, and other requests' admissions only move a tat later,
   * so a charge that tat cannot admit now would be refused by the store too (the same test, `gcraAdmits`, on a
   * tat at least as late). A client hammering a key past its rate limit through this instance (a retry loop)
   * then costs no transaction a request until the retry time it was given. A bucket given units back meanwhile
   * (a settle's token correction, a lease's unused requests) may admit a little earlier than this says (this
   * instance's own give-backs forget the refusal, ledger-items.ts bucketShift; another instance's do not).
   */
  refuseRateLimited(charges: readonly RateCharge[], now: number): void {
    const nowUs = now * 1000;
    const denied: Array<{ charge: RateCharge; inc: number; oldTat: number | undefined }> = [];
    for (const charge of charges) {
      const key = bucketHintKey(charge);
      const oldTat = this.core.rateRefusals.get(key);
      if (oldTat === undefined || charge.amount <= 0) continue;
      const inc = gcraIncrementUs(charge.amount, charge.limitPerMinute);
      if (gcraAdmits(oldTat, nowUs, inc)) this.core.rateRefusals.delete(key);
      else denied.push({ charge, inc, oldTat });
    }
    if (denied.length) throw rateLimited(denied, nowUs);
  }

  /** The refusal of buckets without capacity now; each bucket's tat as read is remembered (refuseRateLimited). */
  private refused(denied: ReadonlyArray<{ charge: RateCharge; inc: number; oldTat: number | undefined }>, nowUs: number): RateLimitError {
    for (const { charge, oldTat } of denied) {
      if (oldTat === undefined) continue;
      if (this.core.rateRefusals.size >= MAX_HINTS) this.core.rateRefusals.clear();
      this.core.rateRefusals.set(bucketHintKey(charge), oldTat);
    }
    return rateLimited(denied, nowUs);
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
      return { charge, key, inc: gcraIncrementUs(charge.amount, charge.limitPerMinute), branch: gcraBranch(this.core.tatHints.get(key), nowUs) };
    });
    for (let branchRetries = 0; ; branchRetries++) {
      const reasons = await this.core.transact(buckets.map((b) => this.items.chargeBucket(b, nowUs)));
      if (!reasons) break;
      const denied: Array<{ charge: RateCharge; inc: number; oldTat: number | undefined }> = [];
      for (const [i, b] of buckets.entries()) {
        const reason = reasons[i];
        if (reason?.Code !== 'ConditionalCheckFailed') continue;
        const oldTat = reason.Item?.tat?.N !== undefined ? Number(reason.Item.tat.N) : undefined;
        this.core.rememberTat(b.key, oldTat);
        if (gcraAdmits(oldTat, nowUs, b.inc)) b.branch = gcraBranchFor(oldTat, nowUs);
        else denied.push({ charge: b.charge, inc: b.inc, oldTat });
      }
      if (denied.length) throw this.refused(denied, nowUs);
      if (branchRetries >= MAX_BRANCH_RETRIES) {
        throw new RateLimitError('Too many concurrent requests for this key; slow down and retry.', {
          code: 'rate_limit_exceeded',
          headers: { 'Retry-After': '1' },
        });
      }
    }
    return buckets.map((b) => {
      const tat = b.branch === 'reset' ? nowUs + b.inc : gcraTatAfter(this.core.tatHints.get(b.key), nowUs, b.inc);
      this.core.rememberTat(b.key, tat);
      return { dimension: b.charge.dimension, limit: b.charge.limitPerMinute, remaining: gcraRemaining(tat, nowUs, b.charge.limitPerMinute), resetMs: gcraResetMs(tat, nowUs) };
    });
  }
}
