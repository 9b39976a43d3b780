/** Jest global teardown: stops the DynamoDB Local that global-setup started (if it started one). */
import type { DynamoDbLocal } from '../../lambda/local/dynamodb-local';
import { DDB_HANDLE } from './global-setup';

export default async function globalTeardown(): Promise<void> {
  const store = globalThis as Record<symbol, unknown>;
  const ddb = store[DDB_HANDLE] as DynamoDbLocal | undefined;
  if (!ddb) return;
  delete store[DDB_HANDLE];
  await ddb.stop();
}
