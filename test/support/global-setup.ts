/**
 * Jest global setup: starts ONE DynamoDB Local (in memory, on a free port) for the whole run and hands its
 * endpoint to the test workers through TOLLGATE_TEST_DDB_ENDPOINT (workers inherit the environment of this
 * process, which starts them after setup). Set TOLLGATE_TEST_DDB_ENDPOINT yourself to reuse a running one.
 * The handle lives on globalThis for global-teardown, which jest runs in this same process.
 */
import { startDynamoDbLocal, type DynamoDbLocal } from '../../lambda/local/dynamodb-local';
import { ensureAgentBinaries } from '../clients/agent-binaries';

/** Where global-teardown finds the instance to stop. */
export const DDB_HANDLE = Symbol.for('tollgate.test.dynamodbLocal');

export default async function globalSetup(): Promise<void> {
  // Node 20 here, 22 on Lambda: the SDK's "upgrade Node" notice would otherwise print once per test worker.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  // The real Claude Code and Codex CLIs for test/clients (once per machine, before the workers start, so two
  // suites never install them at once).
  ensureAgentBinaries();
  if (process.env.TOLLGATE_TEST_DDB_ENDPOINT) return;
  let ddb: DynamoDbLocal;
  try {
    // The JVM's start on a loaded 2-core machine can take a minute or more; this only catches one that never answers.
    ddb = await startDynamoDbLocal({ port: 0, inMemory: true, startTimeoutMs: 240_000 });
  } catch (err) {
    throw new Error(`Cannot start DynamoDB Local for the tests: ${(err as Error).message}`, { cause: err });
  }
  (globalThis as Record<symbol, unknown>)[DDB_HANDLE] = ddb;
  process.env.TOLLGATE_TEST_DDB_ENDPOINT = ddb.endpoint;
}
