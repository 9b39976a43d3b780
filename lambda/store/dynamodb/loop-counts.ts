/**
 * The loop guard's single-item writes for requests admitted without their own reserve transaction (a pooled
 * key, a lease): count the copy at admission, settle its streak, take a refused request's count back.
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

  async countLoop(check: LoopCheck): Promise<void> {
    const update = this.items.loopCheck(check).Update!;
    try {
      await this.core.client.send(new UpdateItemCommand({ ...update, ReturnValuesOnConditionCheckFailure: 'ALL_OLD' }));
    } catch (err) {
      if (errorName(err) === 'ConditionalCheckFailedException') {
        const old = (err as { Item?: Item }).Item;
        throw loopDetected(check, old ? unmarshall(old) : undefined);
      }
      throw translateError(err);
    }
  }

  async settleLoop(check: LoopCheck, outcome: 'failed' | 'succeeded' | undefined, status?: number): Promise<void> {
    try {
      await this.core.client.send(new UpdateItemCommand(this.items.loopStreakUpdate(check, outcome, status)));
    } catch (err) {
      throw translateError(err);
    }
  }

  async recordLoopCopy(check: LoopCheck, outcome: 'failed' | 'succeeded' | undefined, status?: number): Promise<void> {
    const values: Item = {
      ':one': { N: '1' },
      ':ttl': { N: String(Math.ceil((check.windowEnd + check.windowMs) / 1000) + DAY_S) },
    };
    let update: string;
    if (outcome === 'failed') {
      update = `ADD #n :one, fails :one SET lastFailAt = :now, ${status === undefined ? '' : 'lastStatus = :st, '}#ttl = :ttl REMOVE #prev`;
      values[':now'] = { N: String(this.core.clock.now()) };
      if (status !== undefined) values[':st'] = { N: String(status) };
    } else if (outcome === 'succeeded') {
      update = 'ADD #n :one SET #ttl = :ttl REMOVE fails, lastFailAt, #prev';
    } else {
      update = 'ADD #n :one SET #ttl = :ttl REMOVE #prev';
    }
    try {
      await this.core.client.send(
        new UpdateItemCommand({
          TableName: this.core.budgets,
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

  /** Takes back a copy the loop guard counted for a request that was then refused (its count and presumed failure). */
  async uncountLoop(check: LoopCheck): Promise<void> {
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
