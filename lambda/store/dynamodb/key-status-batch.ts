/**
 * Bulk key status changes for the kill switch: up to 100 conditional updates per TransactWriteItems, so
 * thousands of keys take tens of round trips instead of thousands. Each update keeps the single-key
 * semantics of {@link DynamoDbKeyStore.setStatus}'s `onlyIfStatus` / `onlyIfActor`: a key that changed
 * meanwhile (an operator resumed or revoked it) fails its condition, and the batch is retried without it.
 */
import { type CancellationReason, type DynamoDBClient, TransactWriteItemsCommand, type TransactWriteItem } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import type { KeyStatusBatch } from '../../core/stores';
import { errorName, translateError } from './client';
import type { TableNames } from './schema';

/** What the kill switch changes on many keys at once. */
type BatchChange = Parameters<KeyStatusBatch['setStatusMany']>[1];

const MAX_ITEMS = 100;

export class DynamoDbKeyStatusBatch implements KeyStatusBatch {
  private readonly table: string;

  constructor(
    private readonly client: DynamoDBClient,
    tables: Pick<TableNames, 'keys'>,
  ) {
    this.table = tables.keys;
  }

  async setStatusMany(keyIds: readonly string[], change: BatchChange): Promise<number> {
    let changed = 0;
    for (let i = 0; i < keyIds.length; i += MAX_ITEMS) changed += await this.chunk(keyIds.slice(i, i + MAX_ITEMS), change);
    return changed;
  }

  private async chunk(ids: readonly string[], change: BatchChange): Promise<number> {
    let pending = [...new Set(ids)];
    for (let attempt = 0; pending.length > 0; attempt++) {
      const items = pending.map((keyId) => this.update(keyId, change));
      try {
        await this.client.send(new TransactWriteItemsCommand({ TransactItems: items }));
        return pending.length;
      } catch (err) {
        if (errorName(err) !== 'TransactionCanceledException') throw translateError(err);
        const reasons = (err as { CancellationReasons?: CancellationReason[] }).CancellationReasons ?? [];
        const failedIds = new Set(pending.filter((_, j) => reasons[j]?.Code === 'ConditionalCheckFailed'));
        if (failedIds.size === 0 && attempt >= 10) throw translateError(err);
        // Drop the keys not in the expected state (they keep whatever they are); conflicts just retry.
        pending = pending.filter((id) => !failedIds.has(id));
        if (failedIds.size === 0) await new Promise((resolve) => setTimeout(resolve, Math.random() * 20 * 2 ** attempt));
      }
    }
    return 0;
  }

  private update(keyId: string, change: BatchChange): TransactWriteItem {
    const conditions = ['attribute_exists(keyId)', '#status = :onlyStatus'];
    const values: Record<string, unknown> = {
      ':status': change.status,
      ':actor': change.actor,
      ':reason': change.reason,
      ':onlyStatus': change.onlyIfStatus,
    };
    if (change.onlyIfActor !== undefined) {
      conditions.push('statusChangedBy = :onlyActor');
      values[':onlyActor'] = change.onlyIfActor;
    }
    return {
      Update: {
        TableName: this.table,
        Key: marshall({ keyId }),
        UpdateExpression: 'SET #status = :status, statusChangedBy = :actor, statusReason = :reason',
        ConditionExpression: conditions.join(' AND '),
        ExpressionAttributeNames: { '#status': 'status' },
        ExpressionAttributeValues: marshall(values),
      },
    };
  }
}
