/**
 * The transaction items of the ledger's money and guardrail writes, one builder each: counter reserve and
 * correction, rate buckets (GCRA charge and shift), the loop guard's count and streak, velocity
 * windows. They only build requests; who runs them, and with what else, is reserve.ts / settle.ts / leases.ts.
 */
import type { TransactWriteItem, Update } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { failureBlockMs, type LoopCheck, MAX_BACKOFF_DOUBLINGS } from '../../core/guardrails/loop-guard';
import type { VelocityCharge } from '../../core/guardrails/velocity';
import type { MicroUsd } from '../../core/money';
import { type GcraBranch, gcraBusyCeilingUs, gcraFloorUs, gcraIncrementUs } from '../../core/ratelimit';
import type { CounterRef, RateCharge, Reservation, SettleInput } from '../../core/stores';
import { bucketHintKey, bucketTtl, counterPk, counterTtl, loopKey, type StoredHoldCounter, velocityKey } from './items';
import { DAY_S, type Item, LedgerCore } from './ledger-core';

/** Builds the transaction items of the budgets table (keys in items.ts; circuits are read, reserve.ts). */
export class LedgerItems {
  constructor(private readonly core: LedgerCore) {}

  /**
   * Counts the copy at admission: passes while the fingerprint's copies admitted in this window (`n<window>`)
   * are fewer than the maximum and its failure streak is short or old, then adds one to both. The copy is
   * presumed failed until it settles (settle clears the streak on success, or takes the presumption back when
   * the caller left), so a client that retries the instant it gets an answer meets exactly the stated limits.
   */
  loopCheck(check: LoopCheck): TransactWriteItem {
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
        TableName: this.core.budgets,
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
  velocityAdd(charge: VelocityCharge): TransactWriteItem {
    return {
      Update: {
        TableName: this.core.budgets,
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
  velocitySettle(input: SettleInput): TransactWriteItem[] {
    return this.velocityCorrections([{ velocity: input.reservation.velocity ?? [], cost: input.cost }]);
  }

  /**
   * Settle's loop guard update for a copy counted in the reserve transaction (presumed failed there): a failure
   * stamps lastFailAt (the block runs from it), a success clears the streak, no outcome (the caller left) takes the
   * presumed failure back. A copy counted on its own (`copy`: loop-counts.ts) settles on its own, outside.
   */
  loopStreak(input: SettleInput): TransactWriteItem[] {
    const check = input.reservation.loop;
    if (!check || check.copy) return [];
    return [{ Update: this.loopStreakUpdate(check, input.loopOutcome, input.loopStatus) }];
  }

  loopStreakUpdate(check: LoopCheck, outcome: 'failed' | 'succeeded' | undefined, status?: number): Update {
    const values: Item = { ':ttl': { N: String(Math.ceil((check.windowEnd + check.windowMs) / 1000) + DAY_S) } };
    let update: string;
    if (outcome === 'failed') {
      // lastStatus: what the provider answered, for the refusal's message.
      update = status === undefined ? 'SET lastFailAt = :now, #ttl = :ttl' : 'SET lastFailAt = :now, lastStatus = :st, #ttl = :ttl';
      values[':now'] = { N: String(this.core.clock.now()) };
      if (status !== undefined) values[':st'] = { N: String(status) };
    } else if (outcome === 'succeeded') {
      update = 'SET #ttl = :ttl REMOVE fails, lastFailAt';
    } else {
      update = 'ADD fails :minus SET #ttl = :ttl';
      values[':minus'] = { N: '-1' };
    }
    return {
      TableName: this.core.budgets,
      Key: marshall(loopKey(check)),
      UpdateExpression: update,
      ExpressionAttributeNames: { '#ttl': 'ttl' },
      ExpressionAttributeValues: values,
    };
  }

  reserveCounter(ref: CounterRef, amount: MicroUsd): TransactWriteItem {
    const values: Item = { ':a': { N: String(amount) }, ':ttl': { N: String(counterTtl(ref)) } };
    let condition: string | undefined;
    if (ref.limit !== undefined) {
      // committed + a <= limit, written without arithmetic: committed <= limit - a (precomputed).
      condition = 'attribute_not_exists(committed) OR committed <= :max';
      values[':max'] = { N: String(ref.limit - amount) };
    }
    return {
      Update: {
        TableName: this.core.budgets,
        Key: marshall({ pk: counterPk(ref), sk: ref.windowKey }),
        UpdateExpression: 'ADD committed :a, reserved :a SET #ttl = :ttl',
        ConditionExpression: condition,
        ExpressionAttributeNames: { '#ttl': 'ttl' },
        ExpressionAttributeValues: values,
        ReturnValuesOnConditionCheckFailure: condition ? 'ALL_OLD' : undefined,
      },
    };
  }

  counterUpdate(
    ref: CounterRef,
    delta: { readonly committed: number; readonly spent: number; readonly requests: number; readonly reserved?: number },
  ): TransactWriteItem {
    return this.counterUpdateAt({ pk: counterPk(ref), sk: ref.windowKey, ttl: counterTtl(ref) }, delta);
  }

  /**
   * Grants' corrections of their holds' counters (a pool's release, a reclaim of idle room), one update per
   * counter however many grants name it (a transaction may not write an item twice): `delta` on each counter the
   * grant reserved on; on one it did not (`u`, items.ts grantReservesOn), only what was spent (committed and
   * spent += delta.spent, nothing reserved to take back); no write where the sum is nothing.
   */
  heldCounterUpdates(
    parts: ReadonlyArray<{
      readonly counters: readonly StoredHoldCounter[];
      readonly delta: { readonly committed: number; readonly spent: number; readonly requests: number; readonly reserved?: number };
    }>,
  ): TransactWriteItem[] {
    const sums = new Map<string, { at: StoredHoldCounter; committed: number; spent: number; requests: number; reserved: number }>();
    for (const { counters, delta } of parts) {
      for (const at of counters) {
        const key = `${at.pk}\n${at.sk}`;
        const sum = sums.get(key) ?? { at, committed: 0, spent: 0, requests: 0, reserved: 0 };
        sum.committed += at.u ? delta.spent : delta.committed;
        sum.spent += delta.spent;
        sum.requests += delta.requests;
        sum.reserved += at.u ? 0 : (delta.reserved ?? 0);
        sums.set(key, sum);
      }
    }
    return [...sums.values()]
      .filter((d) => d.committed !== 0 || d.spent !== 0 || d.requests !== 0 || d.reserved !== 0)
      .map((d) => this.counterUpdateAt(d.at, { committed: d.committed, spent: d.spent, requests: d.requests, ...(d.reserved !== 0 ? { reserved: d.reserved } : {}) }));
  }

  /**
   * Grants' corrections of the velocity windows they were admitted into (`admittedMicros` each) to what they
   * cost, one update per window however many grants name it; none where the sum is nothing.
   */
  velocityCorrections(parts: ReadonlyArray<{ readonly velocity: readonly VelocityCharge[]; readonly cost: MicroUsd }>): TransactWriteItem[] {
    const sums = new Map<string, { charge: VelocityCharge; delta: number }>();
    for (const { velocity, cost } of parts) {
      for (const charge of velocity) {
        const key = JSON.stringify(velocityKey(charge));
        const sum = sums.get(key) ?? { charge, delta: 0 };
        sum.delta += cost - charge.admittedMicros;
        if (charge.windowEnd > sum.charge.windowEnd) sum.charge = charge;
        sums.set(key, sum);
      }
    }
    return [...sums.values()]
      .filter((d) => d.delta !== 0)
      .map(({ charge, delta }) => ({
        Update: {
          TableName: this.core.budgets,
          Key: marshall(velocityKey(charge)),
          UpdateExpression: 'ADD v :d SET #ttl = if_not_exists(#ttl, :ttl)',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: { ':d': { N: String(delta) }, ':ttl': { N: String(Math.ceil(charge.windowEnd / 1000) + DAY_S) } },
        },
      }));
  }

  /** {@link counterUpdate} of a counter named by its key and TTL (as a hold stores its counters). */
  counterUpdateAt(
    at: { readonly pk: string; readonly sk: string; readonly ttl: number },
    delta: { readonly committed: number; readonly spent: number; readonly requests: number; readonly reserved?: number },
  ): TransactWriteItem {
    const adds = ['committed :c', 'spent :s', 'requests :r'];
    const values: Item = {
      ':c': { N: String(delta.committed) },
      ':s': { N: String(delta.spent) },
      ':r': { N: String(delta.requests) },
      ':ttl': { N: String(at.ttl) },
    };
    if (delta.reserved !== undefined) {
      adds.push('reserved :h');
      values[':h'] = { N: String(delta.reserved) };
    }
    return {
      Update: {
        TableName: this.core.budgets,
        Key: marshall({ pk: at.pk, sk: at.sk }),
        UpdateExpression: `ADD ${adds.join(', ')} SET #ttl = if_not_exists(#ttl, :ttl)`,
        ExpressionAttributeNames: { '#ttl': 'ttl' },
        ExpressionAttributeValues: values,
      },
    };
  }

  chargeBucket(b: { charge: RateCharge; inc: number; branch: GcraBranch }, nowUs: number): TransactWriteItem {
    const common = {
      TableName: this.core.budgets,
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
  tokenAdjustments(input: SettleInput): TransactWriteItem[] {
    if (input.actualTokens === undefined) return [];
    const nowUs = this.core.clock.now() * 1000;
    return input.reservation.rateCharges
      .filter((c) => c.dimension === 'tokens')
      .flatMap((charge) => this.bucketShift(charge, (input.actualTokens as number) - charge.amount, nowUs));
  }

  /** Moves a bucket's tat by `units` (negative: gives units back), keeping this instance's hint in step. */
  bucketShift(charge: RateCharge, units: number, nowUs: number): TransactWriteItem[] {
    const inc = gcraIncrementUs(units, charge.limitPerMinute);
    if (inc === 0) return [];
    const key = bucketHintKey(charge);
    const hint = this.core.tatHints.get(key);
    if (hint !== undefined) this.core.rememberTat(key, hint + inc);
    // Units given back may let a request the bucket refused here pass before the refusal's retry time.
    if (inc < 0) this.core.rateRefusals.delete(key);
    return [
      {
        Update: {
          TableName: this.core.budgets,
          Key: marshall({ pk: `rl#${charge.keyId}`, sk: charge.dimension }),
          UpdateExpression: 'ADD tat :inc SET #ttl = if_not_exists(#ttl, :ttl)',
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: { ':inc': { N: String(inc) }, ':ttl': { N: String(bucketTtl(nowUs)) } },
        },
      },
    ];
  }

  /** A lease's request units it did not use, given back to the bucket (tokens are corrected by tokenAdjustments). */
  requestRefunds(reservation: Reservation, usedRequests: number): TransactWriteItem[] {
    const nowUs = this.core.clock.now() * 1000;
    return reservation.rateCharges
      .filter((c) => c.dimension === 'requests' && c.amount > usedRequests)
      .flatMap((charge) => this.bucketShift(charge, usedRequests - charge.amount, nowUs));
  }
}
