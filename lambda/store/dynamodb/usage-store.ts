/**
 * The usage ledger's read side, and the item layout its write side (the ledger's settle) uses:
 *
 *   pk     user#<userId>          base table: a user's requests in time order
 *   sk     <iso timestamp>#<requestId>
 *   keyPk  key#<keyId>            GSI byKey
 *   orgPk  org#<orgId>            GSI byOrg (only when the request has an org)
 *   dayPk  day#<YYYY-MM-DD>#<n>   GSI byDay, n = hash(requestId) % USAGE_DAY_SHARDS spreads a busy day
 *   ttl    epoch seconds          DynamoDB TTL, `retentionDays` after the request
 *
 * Money is the integer N attribute `costMicros`; token usage is flattened into four N attributes.
 */
import { QueryCommand, type AttributeValue, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { InvalidRequestError } from '../../core/errors';
import type { UsageQuery, UsageStore } from '../../core/stores';
import type { TokenUsage, UsageRecord } from '../../core/types';
import { translateError } from './client';
import { shardOf } from './hash';
import { USAGE_DAY_SHARDS, type TableNames } from './schema';

type Item = Record<string, AttributeValue>;

/** The attributes of a usage item that make up the record (keys and TTL aside). */
type StoredUsage = Omit<UsageRecord, 'usage'> & TokenUsage;

const DAY_MS = 86_400_000;
/** queryAll reads 4 partitions per day; this bounds one report. */
const MAX_QUERY_ALL_DAYS = 1_000;
const QUERY_CONCURRENCY = 8;

/** The byDay partition (0 … USAGE_DAY_SHARDS−1) a request's record lands in. */
export function usageDayShard(requestId: string): number {
  return shardOf(requestId, USAGE_DAY_SHARDS);
}

/** The sort key of a usage record: the normalised ISO timestamp, then the request id. */
export function usageSortKey(timestamp: string, requestId: string): string {
  return `${normaliseIso(timestamp)}#${requestId}`;
}

/**
 * The DynamoDB item for a usage record.
 * @param options.retentionDays how long DynamoDB keeps it (TTL)
 * @param options.shard the byDay partition; @default {@link usageDayShard}(requestId)
 */
export function usageItem(record: UsageRecord, options: { readonly retentionDays: number; readonly shard?: number }): Item {
  const timestamp = normaliseIso(record.timestamp);
  const shard = options.shard ?? usageDayShard(record.requestId);
  if (!Number.isInteger(shard) || shard < 0 || shard >= USAGE_DAY_SHARDS) {
    throw new RangeError(`usage day shard must be 0..${USAGE_DAY_SHARDS - 1}, got ${shard}`);
  }
  if (!Number.isSafeInteger(record.costMicros) || record.costMicros < 0) {
    throw new RangeError(`costMicros must be a non-negative integer, got ${record.costMicros}`);
  }
  const { usage, ...rest } = record;
  return marshall(
    {
      ...rest,
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      cachedInputTokens: usage.cachedInputTokens,
      cacheWriteTokens: usage.cacheWriteTokens,
      pk: `user#${record.userId}`,
      sk: `${timestamp}#${record.requestId}`,
      keyPk: `key#${record.keyId}`,
      orgPk: record.orgId !== undefined ? `org#${record.orgId}` : undefined,
      dayPk: `day#${timestamp.slice(0, 10)}#${shard}`,
      ttl: Math.floor(Date.parse(timestamp) / 1000) + options.retentionDays * 86_400,
    },
    { removeUndefinedValues: true },
  );
}

/** The usage record stored in an item written by {@link usageItem}. */
export function usageRecordFromItem(item: Item): UsageRecord {
  const raw = unmarshall(item) as StoredUsage;
  return {
    requestId: raw.requestId,
    timestamp: raw.timestamp,
    userId: raw.userId,
    keyId: raw.keyId,
    ...(raw.orgId !== undefined ? { orgId: raw.orgId } : {}),
    provider: raw.provider,
    model: raw.model,
    requestType: raw.requestType,
    endpoint: raw.endpoint,
    stream: raw.stream,
    usage: {
      inputTokens: raw.inputTokens,
      outputTokens: raw.outputTokens,
      cachedInputTokens: raw.cachedInputTokens,
      cacheWriteTokens: raw.cacheWriteTokens,
    },
    costMicros: raw.costMicros,
    costEstimated: raw.costEstimated,
    ...(raw.overshootMicros !== undefined ? { overshootMicros: raw.overshootMicros } : {}),
    outcome: raw.outcome,
    httpStatus: raw.httpStatus,
    durationMs: raw.durationMs,
    ...(raw.userAgent !== undefined ? { userAgent: raw.userAgent } : {}),
    byok: raw.byok,
  };
}

/** The DynamoDB implementation of {@link UsageStore}. */
export class DynamoDbUsageStore implements UsageStore {
  private readonly table: string;

  constructor(
    private readonly client: DynamoDBClient,
    tables: Pick<TableNames, 'usage'>,
  ) {
    this.table = tables.usage;
  }

  /** Records of one user, key or org with from ≤ timestamp < to, oldest first. */
  async query(q: UsageQuery): Promise<UsageRecord[]> {
    const { from, to } = range(q.from, q.to);
    const [index, attribute, prefix] =
      q.by === 'user' ? [undefined, 'pk', 'user#'] : q.by === 'key' ? ['byKey', 'keyPk', 'key#'] : ['byOrg', 'orgPk', 'org#'];
    const items = await this.queryPartition({ index, attribute, value: `${prefix}${q.id}`, from, to });
    return items.map(usageRecordFromItem);
  }

  /**
   * One key's record of one request: the key's records newest first (GSI byKey) filtered on the request id,
   * stopping at the first match or after `maxScanned` records read.
   */
  async findRequest(q: { readonly keyId: string; readonly requestId: string; readonly maxScanned: number }): Promise<UsageRecord | undefined> {
    let startKey: Item | undefined;
    let scanned = 0;
    try {
      do {
        const page = await this.client.send(
          new QueryCommand({
            TableName: this.table,
            IndexName: 'byKey',
            KeyConditionExpression: 'keyPk = :p',
            FilterExpression: 'requestId = :r',
            ExpressionAttributeValues: { ':p': { S: `key#${q.keyId}` }, ':r': { S: q.requestId } },
            ScanIndexForward: false,
            Limit: Math.min(500, Math.max(1, q.maxScanned - scanned)),
            ExclusiveStartKey: startKey,
          }),
        );
        const found = page.Items?.[0];
        if (found) return usageRecordFromItem(found);
        scanned += page.ScannedCount ?? 0;
        startKey = page.LastEvaluatedKey;
      } while (startKey && scanned < q.maxScanned);
    } catch (err) {
      throw translateError(err);
    }
    return undefined;
  }

  /** Every record with from ≤ timestamp < to, oldest first: reads each shard of each day's byDay partition. */
  async queryAll(fromIso: string, toIso: string): Promise<UsageRecord[]> {
    const { from, to } = range(fromIso, toIso);
    const first = Date.parse(from.slice(0, 10));
    const last = Date.parse(new Date(Date.parse(to) - 1).toISOString().slice(0, 10));
    const days = Math.floor((last - first) / DAY_MS) + 1;
    if (days > MAX_QUERY_ALL_DAYS) {
      throw new InvalidRequestError(`A usage report may span at most ${MAX_QUERY_ALL_DAYS} days.`, { param: 'from' });
    }
    const partitions: string[] = [];
    for (let d = 0; d < days; d++) {
      const day = new Date(first + d * DAY_MS).toISOString().slice(0, 10);
      for (let n = 0; n < USAGE_DAY_SHARDS; n++) partitions.push(`day#${day}#${n}`);
    }
    const results: Item[][] = [];
    for (let i = 0; i < partitions.length; i += QUERY_CONCURRENCY) {
      const batch = partitions.slice(i, i + QUERY_CONCURRENCY);
      results.push(
        ...(await Promise.all(
          batch.map((value) => this.queryPartition({ index: 'byDay', attribute: 'dayPk', value, from, to })),
        )),
      );
    }
    return results
      .flat()
      .sort((a, b) => ((a.sk?.S ?? '') < (b.sk?.S ?? '') ? -1 : 1))
      .map(usageRecordFromItem);
  }

  private async queryPartition(q: {
    readonly index?: string;
    readonly attribute: string;
    readonly value: string;
    readonly from: string;
    readonly to: string;
  }): Promise<Item[]> {
    const out: Item[] = [];
    let startKey: Item | undefined;
    try {
      do {
        // sk = <iso>#<id>: every sk of a record at `to` sorts after the bare `to`, so BETWEEN excludes it.
        const page = await this.client.send(
          new QueryCommand({
            TableName: this.table,
            IndexName: q.index,
            KeyConditionExpression: '#p = :p AND sk BETWEEN :from AND :to',
            ExpressionAttributeNames: { '#p': q.attribute },
            ExpressionAttributeValues: { ':p': { S: q.value }, ':from': { S: q.from }, ':to': { S: q.to } },
            ExclusiveStartKey: startKey,
          }),
        );
        out.push(...(page.Items ?? []));
        startKey = page.LastEvaluatedKey;
      } while (startKey);
    } catch (err) {
      throw translateError(err);
    }
    return out;
  }
}

function normaliseIso(text: string): string {
  const ms = Date.parse(text);
  if (Number.isNaN(ms)) throw new RangeError(`"${text}" is not an ISO-8601 timestamp`);
  return new Date(ms).toISOString();
}

function range(fromIso: string, toIso: string): { from: string; to: string } {
  let from: string;
  let to: string;
  try {
    from = normaliseIso(fromIso);
    to = normaliseIso(toIso);
  } catch (err) {
    throw new InvalidRequestError((err as Error).message, { param: 'from' });
  }
  if (from >= to) throw new InvalidRequestError(`"from" (${from}) must be before "to" (${to}).`, { param: 'from' });
  return { from, to };
}
