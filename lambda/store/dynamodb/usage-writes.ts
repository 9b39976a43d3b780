/**
 * Usage records written on their own (a pooled or leased request's settle): one PutItem each, or BatchWriteItem
 * calls of up to 25 where batching is on (the local server). A record's key is its request's, so a retried
 * write replaces the same item: one record per request.
 */
import { BatchWriteItemCommand, PutItemCommand } from '@aws-sdk/client-dynamodb';
import { StoreUnavailableError } from '../../core/errors';
import type { UsageRecord } from '../../core/types';
import { translateError } from './client';
import { BATCH_WRITE_LIMIT, LedgerCore } from './ledger-core';
import { usageItem } from './usage-store';

/** Writes usage records outside a settle transaction. */
export class UsageWrites {
  constructor(private readonly core: LedgerCore) {}

  async writeUsage(records: readonly UsageRecord[]): Promise<void> {
    const items = records.map((record) => usageItem(record, { retentionDays: this.core.usageRetentionDays }));
    try {
      if (!this.core.batchUsageWrites) {
        await Promise.all(items.map((Item) => this.core.client.send(new PutItemCommand({ TableName: this.core.usage, Item }))));
        return;
      }
      for (let i = 0; i < items.length; i += BATCH_WRITE_LIMIT) {
        let pending = items.slice(i, i + BATCH_WRITE_LIMIT).map((Item) => ({ PutRequest: { Item } }));
        for (let attempt = 0; pending.length; attempt++) {
          if (attempt > 0) await this.core.sleep(Math.min(500, 20 * 2 ** attempt));
          if (attempt > 8) throw new StoreUnavailableError('The gateway cannot record usage right now.');
          const out = await this.core.client.send(new BatchWriteItemCommand({ RequestItems: { [this.core.usage]: pending } }));
          pending = (out.UnprocessedItems?.[this.core.usage] ?? []).flatMap((r) => (r.PutRequest?.Item ? [{ PutRequest: { Item: r.PutRequest.Item } }] : []));
        }
      }
    } catch (err) {
      throw translateError(err);
    }
  }
}
