/**
 * Billing drift rows in the reconcile table (schema.ts RECONCILE_TABLE): pk `day#<date>`, sk `<provider>#<model>`;
 * a re-run of the same day replaces its rows.
 */
import { PutItemCommand, QueryCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import type { DriftRow, DriftStore } from '../../core/reconcile/reconcile';
import { translateError } from './client';

export class DynamoDbDriftStore implements DriftStore {
  private readonly retentionSeconds: number;
  constructor(
    private readonly client: DynamoDBClient,
    private readonly options: { readonly table: string; readonly retentionDays?: number },
  ) {
    this.retentionSeconds = (options.retentionDays ?? 400) * 86_400;
  }

  /** One PutItem per row: a day has one row per provider and model, a few dozen at most. */
  async put(rows: readonly DriftRow[], options: { readonly at: number }): Promise<void> {
    const ttl = Math.ceil(options.at / 1000) + this.retentionSeconds;
    for (let i = 0; i < rows.length; i += 10) {
      await Promise.all(
        rows.slice(i, i + 10).map(async (r) => {
          try {
            await this.client.send(
              new PutItemCommand({
                TableName: this.options.table,
                Item: marshall({ pk: `day#${r.day}`, sk: `${r.provider}#${r.model}`, ...r, reconciledAt: options.at, ttl }),
              }),
            );
          } catch (err) {
            throw translateError(err);
          }
        }),
      );
    }
  }

  async list(day: string): Promise<DriftRow[]> {
    try {
      const out = await this.client.send(
        new QueryCommand({ TableName: this.options.table, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: marshall({ ':pk': `day#${day}` }) }),
      );
      return (out.Items ?? []).map((i) => {
        const v = unmarshall(i);
        return { day: v.day, provider: v.provider, model: v.model, ledgerMicros: v.ledgerMicros, billedMicros: v.billedMicros, driftMicros: v.driftMicros, alarm: v.alarm };
      });
    } catch (err) {
      throw translateError(err);
    }
  }
}
