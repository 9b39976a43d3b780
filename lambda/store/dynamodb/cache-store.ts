/**
 * The response cache in its DynamoDB table (schema.ts CACHE_TABLE):
 *
 *   pk entry#<hash> / sk answer   tenant, kind, body (gzip, binary), model, costMicros, storedAt, expiresAt, ttl
 *   pk entry#<hash> / sk pending  holder, until, ttl   (request collapsing: one upstream call answers identical
 *                                 requests of a tenant at once; see core/routing/spend-layer.ts)
 *   pk stats#<day>  / sk all      hits, misses, stores, skipped, savedMicros, fallbacks, downgrades, fallbackCostMicros
 *
 * DynamoDB's TTL deletes expired items within a day or two, so reads also check `expiresAt`. An item may not
 * exceed 400 KB: an answer whose compressed body does not fit under {@link DynamoDbCacheStoreOptions.maxItemBytes}
 * is not stored (the caller still gets it).
 */
import { BatchGetItemCommand, DeleteItemCommand, GetItemCommand, PutItemCommand, UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { CachedAnswer, CacheStore, SavingsDay, SavingsDelta } from '../../core/cache/store';
import { translateError } from './client';

export interface DynamoDbCacheStoreOptions {
  readonly table: string;
  /**
   * Largest item written, attributes included (DynamoDB's limit is 400 KB).
   * @default 380_000
   */
  readonly maxItemBytes?: number;
  /** How long the daily counters are kept. @default 400 */
  readonly statsRetentionDays?: number;
}

/** Room for the item's other attributes and their names. */
const ITEM_OVERHEAD_BYTES = 1_024;

const SAVINGS_FIELDS = ['cacheHits', 'cacheMisses', 'cacheStores', 'cacheSkipped', 'savedMicros', 'fallbacks', 'downgrades', 'fallbackCostMicros'] as const;

export class DynamoDbCacheStore implements CacheStore {
  private readonly table: string;
  private readonly maxItemBytes: number;
  private readonly statsRetentionSeconds: number;

  constructor(
    private readonly client: DynamoDBClient,
    options: DynamoDbCacheStoreOptions,
  ) {
    this.table = options.table;
    this.maxItemBytes = options.maxItemBytes ?? 380_000;
    this.statsRetentionSeconds = (options.statsRetentionDays ?? 400) * 86_400;
  }

  async get(key: string, now: number): Promise<CachedAnswer | undefined> {
    let item;
    try {
      ({ Item: item } = await this.client.send(new GetItemCommand({ TableName: this.table, Key: marshall({ pk: `entry#${key}`, sk: 'answer' }) })));
    } catch (err) {
      throw translateError(err);
    }
    if (!item) return undefined;
    const v = unmarshall(item) as { tenant: string; kind: 'json' | 'sse'; body: Uint8Array; model: string; costMicros: number; storedAt: number; expiresAt: number };
    if (v.expiresAt <= now) return undefined;
    return { key, tenant: v.tenant, kind: v.kind, body: new Uint8Array(gunzipSync(v.body)), model: v.model, costMicros: v.costMicros, storedAt: v.storedAt, expiresAt: v.expiresAt };
  }

  async put(answer: CachedAnswer): Promise<boolean> {
    const body = gzipSync(answer.body);
    if (body.byteLength + ITEM_OVERHEAD_BYTES > this.maxItemBytes) return false;
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.table,
          Item: marshall({
            pk: `entry#${answer.key}`,
            sk: 'answer',
            tenant: answer.tenant,
            kind: answer.kind,
            body,
            model: answer.model,
            costMicros: answer.costMicros,
            storedAt: answer.storedAt,
            expiresAt: answer.expiresAt,
            ttl: Math.ceil(answer.expiresAt / 1000),
          }),
        }),
      );
    } catch (err) {
      throw translateError(err);
    }
    return true;
  }

  async claim(key: string, holder: string, now: number, until: number): Promise<boolean> {
    try {
      await this.client.send(
        new PutItemCommand({
          TableName: this.table,
          Item: marshall({ pk: `entry#${key}`, sk: 'pending', holder, until, ttl: Math.ceil(until / 1000) + 3_600 }),
          ConditionExpression: 'attribute_not_exists(pk) OR #until <= :now',
          ExpressionAttributeNames: { '#until': 'until' },
          ExpressionAttributeValues: marshall({ ':now': now }),
        }),
      );
      return true;
    } catch (err) {
      if ((err as { name?: string }).name === 'ConditionalCheckFailedException') return false;
      throw translateError(err);
    }
  }

  async claimed(key: string, now: number): Promise<boolean> {
    try {
      const { Item: item } = await this.client.send(
        new GetItemCommand({ TableName: this.table, Key: marshall({ pk: `entry#${key}`, sk: 'pending' }), ConsistentRead: true }),
      );
      return item !== undefined && Number(unmarshall(item).until) > now;
    } catch (err) {
      throw translateError(err);
    }
  }

  async release(key: string, holder: string): Promise<void> {
    try {
      await this.client.send(
        new DeleteItemCommand({
          TableName: this.table,
          Key: marshall({ pk: `entry#${key}`, sk: 'pending' }),
          ConditionExpression: 'holder = :h',
          ExpressionAttributeValues: marshall({ ':h': holder }),
        }),
      );
    } catch (err) {
      if ((err as { name?: string }).name === 'ConditionalCheckFailedException') return;
      throw translateError(err);
    }
  }

  async addSavings(day: string, delta: SavingsDelta): Promise<void> {
    const fields = SAVINGS_FIELDS.filter((f) => (delta[f] ?? 0) !== 0);
    if (fields.length === 0) return;
    const values: Record<string, number> = { ':ttl': Math.ceil(Date.parse(`${day}T00:00:00Z`) / 1000) + this.statsRetentionSeconds };
    for (const f of fields) values[`:${f}`] = delta[f]!;
    try {
      await this.client.send(
        new UpdateItemCommand({
          TableName: this.table,
          Key: marshall({ pk: `stats#${day}`, sk: 'all' }),
          UpdateExpression: `ADD ${fields.map((f) => `${f} :${f}`).join(', ')} SET #ttl = :ttl`,
          ExpressionAttributeNames: { '#ttl': 'ttl' },
          ExpressionAttributeValues: marshall(values),
        }),
      );
    } catch (err) {
      throw translateError(err);
    }
  }

  async readSavings(days: readonly string[]): Promise<SavingsDay[]> {
    const found = new Map<string, Record<string, unknown>>();
    for (let i = 0; i < days.length; i += 100) {
      const chunk = days.slice(i, i + 100);
      try {
        const out = await this.client.send(
          new BatchGetItemCommand({ RequestItems: { [this.table]: { Keys: chunk.map((d) => marshall({ pk: `stats#${d}`, sk: 'all' })) } } }),
        );
        for (const item of out.Responses?.[this.table] ?? []) {
          const v = unmarshall(item);
          found.set(String(v.pk).slice('stats#'.length), v);
        }
      } catch (err) {
        throw translateError(err);
      }
    }
    return days.map((day) => {
      const v = found.get(day) ?? {};
      const out: Record<string, unknown> = { day };
      for (const f of SAVINGS_FIELDS) out[f] = Number(v[f] ?? 0);
      return out as SavingsDay;
    });
  }
}
