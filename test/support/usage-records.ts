import type { UsageRecord } from '../../lambda/core/types';

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
