/**
 * Marks a scope busy (pooled) as another instance would: `poolUntil` on its limits item, ten minutes ahead, then
 * lets the ledger under test read it (its limits read is where every instance finds the mark).
 */
import { UpdateItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import type { ScopeId } from '../../lambda/core/types';
import type { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import type { TestTables } from './dynamo';

export async function markBusy(db: TestTables, l: DynamoDbLedger, scope: ScopeId, now: number, alsoRead: readonly ScopeId[] = []): Promise<void> {
  await db.client.send(
    new UpdateItemCommand({
      TableName: db.tables.budgets,
      Key: marshall({ pk: `limit#${scope}`, sk: 'limits' }),
      UpdateExpression: 'SET poolUntil = :u',
      ExpressionAttributeValues: marshall({ ':u': now + 600_000 }),
    }),
  );
  await l.getLimitSettings([scope, ...alsoRead]);
}

/** A store test's user `user` has the key `key-<user>`: marks that key pooled (usage-records.ts reserveInputFor). */
export function markPooled(db: TestTables, l: DynamoDbLedger, user: string, now: number): Promise<void> {
  return markBusy(db, l, `key:key-${user}` as ScopeId, now, [`user:${user}` as ScopeId]);
}
