/**
 * Billing drift rows in the reconcile table (schema.ts RECONCILE_TABLE): pk `day#<date>`, sk `<provider>#<model>`;
 * a re-run of the same day replaces its rows.
 */
import { BatchWriteItemCommand, QueryCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
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

  async put(rows: readonly DriftRow[], options: { readonly at: number }): Promise<void> {
    for (let i = 0; i < rows.length; i += 25) {
      const chunk = rows.slice(i, i + 25);
      let pending: NonNullable<ConstructorParameters<typeof BatchWriteItemCommand>[0]['RequestItems']> = {
        [this.options.table]: chunk.map((r) => ({
          PutRequest: {
            Item: marshall({ pk: `day#${r.day}`, sk: `${r.provider}#${r.model}`, ...r, reconciledAt: options.at, ttl: Math.ceil(options.at / 1000) + this.retentionSeconds }),
          },
        })),
      };
      for (let attempt = 0; attempt < 5 && Object.keys(pending).length > 0; attempt++) {
        try {
          const out = await this.client.send(new BatchWriteItemCommand({ RequestItems: pending }));
          pending = out.UnprocessedItems ?? {};
        } catch (err) {
          throw translateError(err);
        }
      }
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
