import { ListTablesCommand } from '@aws-sdk/client-dynamodb';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { startDynamoDbLocal, DynamoDbLocalStartError } from '../../lambda/local/dynamodb-local';
import { createDynamoDbClient } from '../../lambda/store/dynamodb/client';
import { ensureTables } from '../../lambda/store/dynamodb/create-tables';
import { testDynamoDbEndpoint } from '../support/dynamo';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe('DynamoDB Local launcher', () => {
  it('when started on disk and stopped, it answers in between, keeps tables, writes its pid and leaves no java process', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'tollgate-ddb-'));
    const pidFile = path.join(dir, 'ddb.pid');
    try {
      // A second JVM starting on a loaded machine: the start timeout only catches one that never answers.
      const ddb = await startDynamoDbLocal({ port: 0, dataDir: path.join(dir, 'data'), pidFile, startTimeoutMs: 240_000 });
      expect(alive(ddb.pid)).toBe(true);
      expect(readFileSync(pidFile, 'utf8').trim()).toBe(String(ddb.pid));
      const client = createDynamoDbClient({ region: 'eu-west-1', endpoint: ddb.endpoint, requestTimeoutMs: 120_000, connectionTimeoutMs: 30_000 });
      const tables = { keys: 'x-keys', budgets: 'x-budgets', usage: 'x-usage', byok: 'x-byok', audit: 'x-audit', runs: 'x-runs' };
      await ensureTables(client, tables);
      await ensureTables(client, tables); // idempotent
      const { TableNames } = await client.send(new ListTablesCommand({}));
      expect(TableNames).toEqual(['x-audit', 'x-budgets', 'x-byok', 'x-keys', 'x-runs', 'x-usage']);
      client.destroy();

      await ddb.stop();
      await ddb.stop(); // idempotent
      expect(alive(ddb.pid)).toBe(false);
      expect(existsSync(pidFile)).toBe(false);
      expect(existsSync(path.join(dir, 'data', 'shared-local-instance.db'))).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('when the port is taken, it refuses to start with a message naming the port', async () => {
    const port = Number(new URL(testDynamoDbEndpoint()).port);
    await expect(startDynamoDbLocal({ port })).rejects.toThrow(new DynamoDbLocalStartError(`Port ${port} is already in use: stop what listens there or choose another port`));
  });

  it('when Java cannot be found, it says so', async () => {
    await expect(startDynamoDbLocal({ port: 0, javaCommand: 'java-that-does-not-exist' })).rejects.toThrow(/Java was not found/);
  });
});
