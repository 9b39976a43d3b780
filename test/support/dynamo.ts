/**
 * Test helpers for the DynamoDB Local started by global-setup: each call makes its own uniquely-prefixed set
 * of tables, so test files running in parallel never see each other's items.
 */
import { DeleteTableCommand, type DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { randomBytes } from 'node:crypto';
import { createDynamoDbClient } from '../../lambda/store/dynamodb/client';
import { ensureTables } from '../../lambda/store/dynamodb/create-tables';
import type { TableNames } from '../../lambda/store/dynamodb/schema';

/** A fresh set of tables and a client for them. */
export interface TestTables {
  readonly client: DynamoDBClient;
  readonly tables: TableNames;
  /** Deletes the tables and closes the client. */
  cleanup(): Promise<void>;
}

/** The endpoint of the DynamoDB Local of this jest run. */
export function testDynamoDbEndpoint(): string {
  const endpoint = process.env.TOLLGATE_TEST_DDB_ENDPOINT;
  if (!endpoint) {
    throw new Error('TOLLGATE_TEST_DDB_ENDPOINT is not set: run the tests through jest (test/support/global-setup.ts)');
  }
  return endpoint;
}

/**
 * Creates uniquely-prefixed tables in the run's DynamoDB Local. The client sends item calls directly, as the
 * gateway's does (lambda/store/dynamodb/direct-calls.ts); `sdkOnly` sends every call through the SDK, for a
 * test that watches calls with middleware.
 */
export async function createTestTables(options: { readonly sdkOnly?: boolean } = {}): Promise<TestTables> {
  // Timeouts that only catch a dead store: on a loaded 2-core box the JVM may be busy serving the other worker
  // (and whatever else runs) for many seconds, and a timed-out write retried by the SDK is not what a test checks.
  // More attempts: a loaded DynamoDB Local answers 500 "timed out because it took too long waiting for a lock"
  // ("This request will succeed in actual DynamoDB API"), an emulator artefact the SDK retries with backoff.
  const client = createDynamoDbClient({
    region: 'us-east-1',
    endpoint: testDynamoDbEndpoint(),
    requestTimeoutMs: 120_000,
    connectionTimeoutMs: 30_000,
    maxAttempts: 10,
    directCalls: !options.sdkOnly,
  });
  const prefix = `t${Date.now().toString(36)}${randomBytes(4).toString('hex')}-`;
  const tables: TableNames = {
    keys: `${prefix}keys`,
    budgets: `${prefix}budgets`,
    usage: `${prefix}usage`,
    byok: `${prefix}byok`,
    audit: `${prefix}audit`,
    runs: `${prefix}runs`,
    cache: `${prefix}cache`,
    reconcile: `${prefix}reconcile`,
  };
  await ensureTables(client, tables, { timeoutMs: 240_000 });
  return {
    client,
    tables,
    async cleanup() {
      await Promise.all(
        Object.values(tables).map((TableName) => client.send(new DeleteTableCommand({ TableName })).catch(() => undefined)),
      );
      client.destroy();
    },
  };
}
