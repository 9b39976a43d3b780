/**
 * The loop guard's single-item writes: count the copy at admission, settle its streak, take a refused request's
 * count back. Every copy is counted here, outside any transaction (where a condition and an update cost two write
 * units each): a pooled or leased request's as below, and a request held on its own (ledger.ts reserveOwn) in
 * parallel with its reserve transaction, presumed failed from the start (`presume`), so it settles with one more
 * single write, success or not, exactly as its transaction's copy did: 2 write units in all instead of 4.
 *
 * A pooled or leased request's copy ({@link LoopCounts.countCopy}) costs ONE write in the common case (issue 21):
 *
 *   admission  ADD n<w> 1, c<w> {requestId}   SET fails = if_not_exists(fails, −1) + 1   REMOVE n<w−1>, c<w−2>
 *              IF the loop limits hold AND NOT contains(c<w>, requestId)
 *   settle     presumed failed (the item had `fails`): as a reserve transaction's copy (success: REMOVE fails;
 *                failure: lastFailAt; caller left: fails −1, once, on the copy's marker)
 *              not presumed (no `fails` before: a new fingerprint, or the first copy after a success): success
 *                or caller left → no write; failure → fails +1 and lastFailAt, once, on the copy's marker
 *
 * Exactly once: the copy's request id in the window's set `c<w>` makes a retried count (an answer lost after
 * DynamoDB applied it) fail its condition, which then reads as "counted"; the writes that add or take back a
 * failure remove the id under the condition that it is there. A copy counted by a lost answer is taken as not
 * presumed (its presumption is unknown), which can only leave the streak longer, never shorter. The sets keep
 * the current and the previous window's ids (a loop admits at most maxRepeats a window), so a settle up to a
 * whole window late still finds its marker; later than that its failure is not added (nor a presumption taken
 * back). The price of not presuming a streak's first copy failed (a new fingerprint, or the first copy after a
 * success, which removes `fails`): while its failure is not yet written, the client's retries see a streak one
 * short, so if that settle is slower than maxFailures − 1 of the client's round trips, one copy more than
 * maxFailures gets through (never more than one a streak: every later copy of it is presumed failed).
 *
 * A leased copy whose count core/lease defers to its settle ({@link LoopCounts.recordLoopCopy}) is counted with
 * its outcome in one write, marked the same way (its id joins `c<w>` only if absent), so it too applies once.
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { LoopCheck } from '../../core/guardrails/loop-guard';
import { errorName, translateError } from './client';
import { loopDetected } from './denials';
import { loopKey } from './items';
import { DAY_S, type Item, LedgerCore } from './ledger-core';
import { LedgerItems } from './ledger-items';

/** Loop guard counts outside a reserve transaction. */
export class LoopCounts {
  constructor(
    private readonly core: LedgerCore,
    private readonly items: LedgerItems,
  ) {}

  // -------------------------------------------------------------------------------------------------------
  // Budget leases (core/lease): a lease is a hold taken by reserve; these are its per-request writes and its return.

  /**
   * Counts a pooled or leased request's copy in one write, exactly once (see the file header); answers the check with the
   * copy's marker and whether it was presumed failed, for its settle. Throws LoopDetectedError.
   */
  async countCopy(check: LoopCheck, requestId: string, options: { readonly presume?: boolean } = {}): Promise<LoopCheck> {
    const base = this.items.loopCheck(check).Update!;
    const update = {
      ...base,
      UpdateExpression: 'ADD #n :one, #c :copies SET fails = if_not_exists(fails, :neg) + :one, #ttl = :ttl REMOVE #prev, #cold',
      ConditionExpression: `(${base.ConditionExpression}) AND NOT contains(#c, :copy)`,
      ExpressionAttributeNames: { ...base.ExpressionAttributeNames, '#c': copiesAttr(check.window), '#cold': copiesAttr(check.window - 2) },
      // presume: every copy counts as failed until it settles (as in a reserve transaction), so copies in flight
      // at once are bounded by maxFailures exactly; the price is one write at a successful settle.
      ExpressionAttributeValues: {
        ...base.ExpressionAttributeValues,
        ':neg': { N: options.presume ? '0' : '-1' },
        ':copies': { SS: [requestId] },
        ':copy': { S: requestId },
      },
      ReturnValues: 'UPDATED_OLD' as const,
      ReturnValuesOnConditionCheckFailure: 'ALL_OLD' as const,
    };
    try {
      const out = await this.core.client.send(new UpdateItemCommand(update));
      return { ...check, copy: { id: requestId, presumedFailed: options.presume === true || out.Attributes?.fails !== undefined } };
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') {
        const old = (err as { Item?: Item }).Item;
        // Counted already: an earlier attempt of this write was applied and its answer lost (presumed as asked; not
        // presumed, its presumption is unknown and taken as not: the streak can only be left longer).
        if (old?.[copiesAttr(check.window)]?.SS?.includes(requestId)) return { ...check, copy: { id: requestId, presumedFailed: options.presume === true } };
        throw loopDetected(check, old ? unmarshall(old) : undefined);
      }
      throw translateError(err);
    }
  }

  async settleLoop(check: LoopCheck, outcome: 'failed' | 'succeeded' | undefined, status?: number): Promise<void> {
    const copy = check.copy;
    if (copy && !copy.presumedFailed) {
      // Not presumed failed: a success (or a caller who left) leaves the streak as it is, with no write.
      return outcome === 'failed' ? this.settleCopy(check, copy.id, 'failed', status) : undefined;
    }
    if (copy && outcome === undefined) return this.settleCopy(check, copy.id, undefined);
    try {
      await this.core.client.send(new UpdateItemCommand(this.items.loopStreakUpdate(check, outcome, status)));
    } catch (err) {
      throw translateError(err);
    }
  }

  /**
   * The settle writes that move the streak by one (a presumed copy whose caller left: −1; a copy not presumed
   * that failed: +1), once: they remove the copy's marker and apply only while it is there.
   */
  private async settleCopy(check: LoopCheck, copyId: string, outcome: 'failed' | undefined, status?: number): Promise<void> {
    const values: Item = {
      ':d': { N: outcome === 'failed' ? '1' : '-1' },
      ':copies': { SS: [copyId] },
      ':copy': { S: copyId },
      ':ttl': { N: String(Math.ceil((check.windowEnd + check.windowMs) / 1000) + DAY_S) },
    };
    if (outcome === 'failed') values[':now'] = { N: String(this.core.clock.now()) };
    // lastStatus: what the provider answered, for the refusal's message.
    if (outcome === 'failed' && status !== undefined) values[':st'] = { N: String(status) };
    try {
      await this.core.client.send(
        new UpdateItemCommand({
          TableName: this.core.budgets,
          Key: marshall(loopKey(check)),
          UpdateExpression: `ADD fails :d SET #ttl = :ttl${outcome === 'failed' ? ', lastFailAt = :now' : ''}${values[':st'] ? ', lastStatus = :st' : ''} DELETE #c :copies`,
          ConditionExpression: 'contains(#c, :copy)',
          ExpressionAttributeNames: { '#c': copiesAttr(check.window), '#ttl': 'ttl' },
          ExpressionAttributeValues: values,
        }),
      );
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') return; // applied before (a retry), or its window long gone
      throw translateError(err);
    }
  }

  /**
   * A leased copy counted only at its settle, with its outcome, in one write, once: the copy's request id joins
   * the window's set `c<w>` under the condition that it is not there yet, so a retry of a write DynamoDB applied
   * (its answer lost) fails that condition and changes nothing.
   */
  async recordLoopCopy(check: LoopCheck, requestId: string, outcome: 'failed' | 'succeeded' | undefined, status?: number): Promise<void> {
    const values: Item = {
      ':one': { N: '1' },
      ':copies': { SS: [requestId] },
      ':copy': { S: requestId },
      ':ttl': { N: String(Math.ceil((check.windowEnd + check.windowMs) / 1000) + DAY_S) },
    };
    let update: string;
    if (outcome === 'failed') {
      update = `ADD #n :one, fails :one, #c :copies SET lastFailAt = :now, ${status === undefined ? '' : 'lastStatus = :st, '}#ttl = :ttl REMOVE #prev, #cold`;
      values[':now'] = { N: String(this.core.clock.now()) };
      if (status !== undefined) values[':st'] = { N: String(status) };
    } else if (outcome === 'succeeded') {
      update = 'ADD #n :one, #c :copies SET #ttl = :ttl REMOVE fails, lastFailAt, #prev, #cold';
    } else {
      update = 'ADD #n :one, #c :copies SET #ttl = :ttl REMOVE #prev, #cold';
    }
    try {
      await this.core.client.send(
        new UpdateItemCommand({
          TableName: this.core.budgets,
          Key: marshall(loopKey(check)),
          UpdateExpression: update,
          ConditionExpression: 'NOT contains(#c, :copy)',
          ExpressionAttributeNames: {
            '#n': `n${check.window}`,
            '#prev': `n${check.window - 1}`,
            '#c': copiesAttr(check.window),
            '#cold': copiesAttr(check.window - 2),
            '#ttl': 'ttl',
          },
          ExpressionAttributeValues: values,
        }),
      );
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') return; // recorded before: a retry whose first answer was lost
      throw translateError(err);
    }
  }

  /** Takes back a copy the loop guard counted for a request that was then refused (its count and presumed failure). */
  async uncountLoop(check: LoopCheck): Promise<void> {
    const copy = check.copy;
    if (copy) {
      try {
        await this.core.client.send(
          new UpdateItemCommand({
            TableName: this.core.budgets,
            Key: marshall(loopKey(check)),
            UpdateExpression: `ADD #n :minus${copy.presumedFailed ? ', fails :minus' : ''} DELETE #c :copies`,
            ConditionExpression: 'contains(#c, :copy)',
            ExpressionAttributeNames: { '#n': `n${check.window}`, '#c': copiesAttr(check.window) },
            ExpressionAttributeValues: { ':minus': { N: '-1' }, ':copies': { SS: [copy.id] }, ':copy': { S: copy.id } },
          }),
        );
      } catch (err) {
        if (errorName(err) === 'ConditionalCheckFailedException') return; // taken back before, or its window moved on
        throw translateError(err);
      }
      return;
    }
    try {
      await this.core.client.send(
        new UpdateItemCommand({
          TableName: this.core.budgets,
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
}

/** The string set of the ids of copies counted by {@link LoopCounts.countCopy} in window `w`. */
function copiesAttr(window: number): string {
  return `c${window}`;
}
