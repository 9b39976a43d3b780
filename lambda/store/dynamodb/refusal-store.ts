/**
 * The daily refusal counters (lambda/observability/refusals.ts) in the usage table (schema.ts USAGE_TABLE):
 *
 *   pk refusals#<YYYY-MM-DD> / sk <reason>#<scope>#<keyId>[#<window>]   n (ADD), reason, scope, window, keyId, userId,
 *                                                               orgId, lastAt, ttl (window: budget refusals only)
 *
 * One partition per day: the recorder coalesces a flood of refusals into one write per distinct counter per
 * flush, so a day's partition sees at most (distinct counters × flushes) writes, far under DynamoDB's per-partition
 * limit. The items carry no `dayPk`/`keyPk`/`orgPk`, so the usage indexes never see them, and usage readers
 * (which read `user#…` partitions and the indexes) never meet them.
 */
import { QueryCommand, UpdateItemCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { RefusalCount, RefusalReason, RefusalStore } from '../../observability/refusals';
import { translateError } from './client';

export interface DynamoDbRefusalStoreOptions {
  /** The usage table. */
  readonly usage: string;
  /** How long a day's counters are kept. @default 400 */
  readonly retentionDays?: number;
  /**
   * Writes in flight at once during a flush.
   * @default 8
   */
  readonly concurrency?: number;
}

const PK_PREFIX = 'refusals#';

export function refusalPartitionKey(day: string): string {
  return `${PK_PREFIX}${day}`;
}

export class DynamoDbRefusalStore implements RefusalStore {
  private readonly table: string;
  private readonly retentionSeconds: number;
  private readonly concurrency: number;

  constructor(
    private readonly client: DynamoDBClient,
    options: DynamoDbRefusalStoreOptions,
  ) {
    this.table = options.usage;
    this.retentionSeconds = (options.retentionDays ?? 400) * 86_400;
    this.concurrency = options.concurrency ?? 8;
  }

  async add(counts: readonly RefusalCount[]): Promise<void> {
    let next = 0;
    const errors: unknown[] = [];
    const worker = async () => {
      while (next < counts.length) {
        const c = counts[next++]!;
        try {
          await this.addOne(c);
        } catch (err) {
          errors.push(err);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, counts.length) }, worker));
    if (errors.length) throw translateError(errors[0]);
  }

  private async addOne(c: RefusalCount): Promise<void> {
    const values: Record<string, unknown> = {
      ':n': c.count,
      ':ttl': Math.ceil(Date.parse(`${c.day}T00:00:00Z`) / 1000) + this.retentionSeconds,
    };
    const names: Record<string, string> = { '#n': 'n', '#ttl': 'ttl' };
    const sets = ['#ttl = :ttl'];
    for (const f of ['reason', 'scope', 'window', 'keyId', 'lastAt', 'userId', 'orgId'] as const) {
      const v = c[f];
      if (v === undefined) continue;
      values[`:${f}`] = v;
      names[`#${f}`] = f;
      sets.push(`#${f} = :${f}`);
    }
    await this.client.send(
      new UpdateItemCommand({
        TableName: this.table,
        Key: marshall({ pk: refusalPartitionKey(c.day), sk: `${c.reason}#${c.scope}#${c.keyId}${c.window ? `#${c.window}` : ''}` }),
        UpdateExpression: `ADD #n :n SET ${sets.join(', ')}`,
        ExpressionAttributeNames: names,
        ExpressionAttributeValues: marshall(values),
      }),
    );
  }

  async read(days: readonly string[]): Promise<RefusalCount[]> {
    const out: RefusalCount[] = [];
    await Promise.all(
      days.map(async (day) => {
        let start: Record<string, import('@aws-sdk/client-dynamodb').AttributeValue> | undefined;
        do {
          let page;
          try {
            page = await this.client.send(
              new QueryCommand({
                TableName: this.table,
                KeyConditionExpression: 'pk = :pk',
                ExpressionAttributeValues: { ':pk': { S: refusalPartitionKey(day) } },
                ...(start ? { ExclusiveStartKey: start } : {}),
              }),
            );
          } catch (err) {
            throw translateError(err);
          }
          for (const item of page.Items ?? []) {
            const v = unmarshall(item);
            out.push({
              day,
              reason: String(v.reason) as RefusalReason,
              scope: String(v.scope),
              ...(typeof v.window === 'string' ? { window: v.window } : {}),
              keyId: String(v.keyId),
              ...(typeof v.userId === 'string' ? { userId: v.userId } : {}),
              ...(typeof v.orgId === 'string' ? { orgId: v.orgId } : {}),
              count: Number(v.n ?? 0),
              lastAt: Number(v.lastAt ?? 0),
            });
          }
          start = page.LastEvaluatedKey;
        } while (start);
      }),
    );
    return out.sort((a, b) => a.day.localeCompare(b.day) || b.count - a.count);
  }
}
