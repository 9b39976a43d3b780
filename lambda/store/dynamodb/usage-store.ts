/**
 * The usage ledger's read side, and the item layout its write side (the ledger's settle) uses:
 *
 *   pk     user#<userId>#<s>      base table: shard s of a user's requests, in time order
 *   sk     <iso timestamp>#<requestId>
 *   keyPk  key#<keyId>#<s>        GSI byKey
 *   orgPk  org#<orgId>#<s>        GSI byOrg (only when the request has an org)
 *   dayPk  day#<YYYY-MM-DD>#<d>   GSI byDay, d = hash(requestId) % USAGE_DAY_SHARDS spreads a busy day
 *   ttl    epoch seconds          DynamoDB TTL, `retentionDays` after the request
 *
 * s = hash(requestId) % USAGE_SCOPE_SHARDS spreads one busy user, key or org over that many partition keys, so
 * 1,000 req/s of one user stays far under DynamoDB's 1,000 WCU/s per partition (schema.ts says why 8). A
 * record's keys follow from the record alone: the sweeper's 'abandoned' record and a late settle's
 * replacement are the same item. Readers fan out over the shards in parallel and merge by sk, so every report
 * comes out in the order one partition gave; they also read the partition of the layout before the shards
 * (`user#<userId>`, `key#<keyId>`, `org#<orgId>`) so records written before it stay visible until their TTL.
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
import { USAGE_DAY_SHARDS, USAGE_SCOPE_SHARDS, type TableNames } from './schema';

type Item = Record<string, AttributeValue>;

/** The attributes of a usage item that make up the record (keys and TTL aside). */
type StoredUsage = Omit<UsageRecord, 'usage'> & TokenUsage;

const DAY_MS = 86_400_000;
/** queryAll reads 4 partitions per day; this bounds one report. */
const MAX_QUERY_ALL_DAYS = 1_000;
const QUERY_CONCURRENCY = 8;

/** Whose records a partition holds: a user's (base table), a key's (GSI byKey) or an org's (GSI byOrg). */
export type UsageScope = UsageQuery['by'];

/** Where a scope's records live, and the record field that names the scope. */
interface ScopeLayout {
  readonly index?: string;
  readonly attribute: string;
  readonly field: 'userId' | 'keyId' | 'orgId';
}

const SCOPES: Readonly<Record<UsageScope, ScopeLayout>> = {
  user: { attribute: 'pk', field: 'userId' },
  key: { index: 'byKey', attribute: 'keyPk', field: 'keyId' },
  org: { index: 'byOrg', attribute: 'orgPk', field: 'orgId' },
};

/** The partition shard (0 … USAGE_SCOPE_SHARDS−1) of a request's record in the base table, byKey and byOrg. */
export function usageScopeShard(requestId: string): number {
  return shardOf(requestId, USAGE_SCOPE_SHARDS);
}

/** The partition key of shard `shard` of a user's, key's or org's records, e.g. `user#alice#3`. */
export function usagePartitionKey(scope: UsageScope, id: string, shard: number): string {
  return `${scope}#${id}#${shard}`;
}

/**
 * Every partition key a scope's records may be under: its USAGE_SCOPE_SHARDS shards, then the single partition
 * of the layout before the shards (`user#<id>`), whose records stay until their TTL.
 */
export function usagePartitionKeys(scope: UsageScope, id: string): string[] {
  const shards = Array.from({ length: USAGE_SCOPE_SHARDS }, (_, n) => usagePartitionKey(scope, id, n));
  return [...shards, preShardPartitionKey(scope, id)];
}

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
  const scopeShard = usageScopeShard(record.requestId);
  return marshall(
    {
      ...rest,
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      cachedInputTokens: usage.cachedInputTokens,
      cacheWriteTokens: usage.cacheWriteTokens,
      pk: usagePartitionKey('user', record.userId, scopeShard),
      sk: `${timestamp}#${record.requestId}`,
      keyPk: usagePartitionKey('key', record.keyId, scopeShard),
      orgPk: record.orgId !== undefined ? usagePartitionKey('org', record.orgId, scopeShard) : undefined,
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

/** Options of {@link DynamoDbUsageStore}. */
export interface DynamoDbUsageStoreOptions {
  /**
   * Items per Query page of a report (`Limit`); every page is read either way, a smaller page only costs more
   * round trips.
   * @default DynamoDB's (pages of up to 1 MB)
   */
  readonly pageSize?: number;
}

/** The DynamoDB implementation of {@link UsageStore}. */
export class DynamoDbUsageStore implements UsageStore {
  private readonly table: string;
  private readonly pageSize: number | undefined;

  constructor(
    private readonly client: DynamoDBClient,
    tables: Pick<TableNames, 'usage'>,
    options: DynamoDbUsageStoreOptions = {},
  ) {
    this.table = tables.usage;
    if (options.pageSize !== undefined && (!Number.isInteger(options.pageSize) || options.pageSize < 1)) {
      throw new RangeError(`pageSize must be a positive integer, got ${options.pageSize}`);
    }
    this.pageSize = options.pageSize;
  }

  /**
   * Records of one user, key or org with from ≤ timestamp < to, oldest first (by sk, i.e. timestamp then request
   * id): every partition of the scope is read in parallel and the results merged.
   */
  async query(q: UsageQuery): Promise<UsageRecord[]> {
    const { from, to } = range(q.from, q.to);
    const { index, attribute, field } = SCOPES[q.by];
    const partitions = await Promise.all(
      usagePartitionKeys(q.by, q.id).map((value) => this.queryPartition({ index, attribute, value, from, to })),
    );
    return partitions
      .flat()
      .sort(compareKeys)
      .map(usageRecordFromItem)
      .filter((r) => r[field] === q.id); // `user#a#3` is shard 3 of "a" and the pre-shard partition of user "a#3"
  }

  /**
   * One key's record of one request, stopping at the first match or after `maxScanned` records read in all. The
   * record can only be in the byKey shard its request id hashes to, so that shard is read newest first, then
   * (with what is left of `maxScanned`) the key's pre-shard partition; the bound thus reaches about
   * USAGE_SCOPE_SHARDS times further back than a read of all the key's records would.
   */
  async findRequest(q: { readonly keyId: string; readonly requestId: string; readonly maxScanned: number }): Promise<UsageRecord | undefined> {
    const partitions = [usagePartitionKey('key', q.keyId, usageScopeShard(q.requestId)), preShardPartitionKey('key', q.keyId)];
    let scanned = 0;
    for (const partition of partitions) {
      let startKey: Item | undefined;
      try {
        do {
          const page = await this.client.send(
            new QueryCommand({
              TableName: this.table,
              IndexName: 'byKey',
              KeyConditionExpression: 'keyPk = :p',
              FilterExpression: 'requestId = :r AND keyId = :k',
              ExpressionAttributeValues: { ':p': { S: partition }, ':r': { S: q.requestId }, ':k': { S: q.keyId } },
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
      if (scanned >= q.maxScanned) break;
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
      .sort(compareKeys)
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
            Limit: this.pageSize,
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

/** The one partition a scope's records were under before the shards (`user#<id>`). */
function preShardPartitionKey(scope: UsageScope, id: string): string {
  return `${scope}#${id}`;
}

/**
 * The order one partition returns: by sk. Only byOrg can hold two records with one sk (two users, one request
 * id), which DynamoDB returns in no stated order; the base table's pk makes the order total.
 */
function compareKeys(a: Item, b: Item): number {
  const [skA, skB] = [a.sk?.S ?? '', b.sk?.S ?? ''];
  if (skA !== skB) return skA < skB ? -1 : 1;
  const [pA, pB] = [a.pk?.S ?? '', b.pk?.S ?? ''];
  return pA < pB ? -1 : pA > pB ? 1 : 0;
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
