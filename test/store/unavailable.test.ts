import { createServer, type Server, type Socket } from 'node:net';
import { StoreUnavailableError } from '../../lambda/core/errors';
import { createDynamoDbClient, translateError } from '../../lambda/store/dynamodb/client';
import { DynamoDbKeyStore } from '../../lambda/store/dynamodb/key-store';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { DynamoDbUsageStore } from '../../lambda/store/dynamodb/usage-store';
import { windowBounds, windowKey } from '../../lambda/core/windows';
import { createTestTables } from '../support/dynamo';

const TABLES = { keys: 'k', budgets: 'b', usage: 'u', byok: 'y', audit: 'a', runs: 'r', cache: 'c', reconcile: 'rc' };
const T0 = Date.parse('2026-11-23T10:00:00Z');

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

async function expectUnavailableWithin(ms: number, call: () => Promise<unknown>): Promise<StoreUnavailableError> {
  const started = Date.now();
  const err = await call().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(Date.now() - started).toBeLessThan(ms);
  expect(err).toBeInstanceOf(StoreUnavailableError);
  return err as StoreUnavailableError;
}

describe('an unreachable store', () => {
  it('when nothing listens at the endpoint, every adapter fails fast with StoreUnavailableError that leaks no endpoint', async () => {
    const port = await closedPort();
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: `http://127.0.0.1:${port}` });
    try {
      const ledger = new DynamoDbLedger(client, { tables: TABLES, platformShards: 2, usageRetentionDays: 1 });
      const err = await expectUnavailableWithin(3_000, () =>
        ledger.reserve({
          requestId: 'r1',
          now: T0,
          expiresAt: T0 + 60_000,
          amount: 10,
          counters: [{ scope: 'user:a', window: 'day', windowKey: windowKey('day', T0), windowEnd: windowBounds('day', T0).end, limit: 100 }],
          rateCharges: [],
          context: { keyId: 'k', userId: 'a', model: 'm' },
        }),
      );
      expect(err.status).toBe(503);
      expect(err.message).not.toContain(String(port));
      expect(err.message).not.toContain('127.0.0.1');
      await expectUnavailableWithin(3_000, () => new DynamoDbKeyStore(client, TABLES).get('k'));
      await expectUnavailableWithin(3_000, () =>
        new DynamoDbUsageStore(client, TABLES).query({ by: 'user', id: 'a', from: '2026-11-23T00:00:00Z', to: '2026-11-24T00:00:00Z' }),
      );
      await expectUnavailableWithin(3_000, () => ledger.getLimits(['platform']));
    } finally {
      client.destroy();
    }
  });

  it('when the endpoint accepts connections but never answers, the request timeout turns it into StoreUnavailableError', async () => {
    const sockets: Socket[] = [];
    const server: Server = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: `http://127.0.0.1:${port}`, requestTimeoutMs: 300 });
    try {
      await expectUnavailableWithin(4_000, () => new DynamoDbKeyStore(client, TABLES).get('k'));
    } finally {
      client.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('when a table does not exist, the adapter reports the store unavailable rather than a bug', async () => {
    const db = await createTestTables();
    try {
      await expectUnavailableWithin(3_000, () => new DynamoDbKeyStore(db.client, { keys: `${db.tables.keys}-missing` }).get('k'));
    } finally {
      await db.cleanup();
    }
  });

  it('when an error is not about availability, translateError hands it back unchanged', () => {
    const bug = new TypeError('x is undefined');
    expect(translateError(bug)).toBe(bug);
    const validation = Object.assign(new Error('bad expression'), { name: 'ValidationException', $metadata: { httpStatusCode: 400 } });
    expect(translateError(validation)).toBe(validation);
  });
});
