import type { AttributeValue } from '@aws-sdk/client-dynamodb';
import type { CounterRef, RateCharge, ReserveInput } from '../../lambda/core/stores';
import type { ScopeId, UsageRecord } from '../../lambda/core/types';
import { windowBounds, windowKey } from '../../lambda/core/windows';
import { shardOf } from '../../lambda/store/dynamodb/hash';
import { USAGE_DAY_SHARDS } from '../../lambda/store/dynamodb/schema';
import { usageItem, usagePartitionKey, usageScopeShard, usageSortKey } from '../../lambda/store/dynamodb/usage-store';

/** The usage record of one successful gpt-4o-mini chat request of `userId` (key `key-<userId>`), for store tests. */
export function usageRecordFor(requestId: string, userId: string, cost: number, at: number): UsageRecord {
  return {
    requestId,
    timestamp: new Date(at).toISOString(),
    userId,
    keyId: `key-${userId}`,
    provider: 'openai',
    model: 'gpt-4o-mini',
    requestType: 'chat',
    endpoint: '/v1/chat/completions',
    stream: false,
    usage: { inputTokens: 100, outputTokens: 20, cachedInputTokens: 0, cacheWriteTokens: 0 },
    costMicros: cost,
    costEstimated: false,
    outcome: 'ok',
    httpStatus: 200,
    durationMs: 100,
    byok: false,
  };
}

/** The day counter of `scope` on the day of `at` (with its limit, when given), for store tests. */
export function dayCounterAt(scope: ScopeId, at: number, limit?: number): CounterRef {
  return { scope, window: 'day', windowKey: windowKey('day', at), windowEnd: windowBounds('day', at).end, ...(limit !== undefined ? { limit } : {}) };
}

let requestSeq = 0;

/** A reserve input of `userId` (key `key-<userId>`, gpt-4o-mini) with a unique request id, for store tests. */
export function reserveInputFor(
  userId: string,
  at: { readonly now: number; readonly holdTtlMs: number },
  amount: number,
  counters: CounterRef[],
  rateCharges: RateCharge[] = [],
): ReserveInput {
  requestSeq += 1;
  return {
    requestId: `r${requestSeq}-${Math.random().toString(36).slice(2, 8)}`,
    now: at.now,
    expiresAt: at.now + at.holdTtlMs,
    amount,
    counters,
    rateCharges,
    context: { keyId: `key-${userId}`, userId, model: 'gpt-4o-mini' },
  };
}

/**
 * A usage item as layout v2 wrote it (before day partitions, usage-store.ts): pk `user#<id>#<s>`, sk
 * `<iso>#<requestId>`, byDay's `dayPk` over `dayShards` shards (16; 4 in the release before).
 */
export function v2UsageItem(record: UsageRecord, options: { readonly dayShards?: number } = {}): Record<string, AttributeValue> {
  const iso = new Date(record.timestamp).toISOString();
  return {
    ...usageItem(record, { retentionDays: 30 }),
    pk: { S: usagePartitionKey(record.userId, usageScopeShard(record.requestId)) },
    sk: { S: usageSortKey(record.timestamp, record.requestId) },
    dayPk: { S: `day#${iso.slice(0, 10)}#${shardOf(record.requestId, options.dayShards ?? USAGE_DAY_SHARDS)}` },
  };
}

/** A report range around now (two days either side): what an end-to-end test just recorded is in it. */
export function recentRange(now = Date.now()): { readonly from: string; readonly to: string } {
  return { from: new Date(now - 2 * 86_400_000).toISOString(), to: new Date(now + 2 * 86_400_000).toISOString() };
}
