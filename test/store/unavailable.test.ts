import { createServer, type Server, type Socket } from 'node:net';
import { StoreUnavailableError } from '../../lambda/core/errors';
import { createDynamoDbClient, translateError } from '../../lambda/store/dynamodb/client';
import { DynamoDbKeyStore } from '../../lambda/store/dynamodb/key-store';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { DynamoDbUsageStore } from '../../lambda/store/dynamodb/usage-store';
import { windowBounds, windowKey } from '../../lambda/core/windows';
import { createTestTables } from '../support/dynamo';

const TABLES = { keys: 'k', budgets: 'b', usage: 'u', byok: 'y', audit: 'a', runs: 'r' };
const T0 = Date.parse('2026-11-23T10:00:00Z');

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * The call rejects with StoreUnavailableError. That it does so instead of hanging is what the jest timeout
 * catches; how many seconds it takes is the machine's speed, so it is not asserted.
 */
async function expectUnavailable(call: () => Promise<unknown>): Promise<StoreUnavailableError> {
  const err = await call().then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(StoreUnavailableError);
  return err as StoreUnavailableError;
}

describe('an unreachable store', () => {
  it('when nothing listens at the endpoint, every adapter fails fast with StoreUnavailableError that leaks no endpoint', async () => {
    const port = await closedPort();
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: `http://127.0.0.1:${port}` });
    try {
      const ledger = new DynamoDbLedger(client, { tables: TABLES, platformShards: 2, usageRetentionDays: 1 });
      const err = await expectUnavailable(() =>
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
      await expectUnavailable(() => new DynamoDbKeyStore(client, TABLES).get('k'));
      await expectUnavailable(() =>
        new DynamoDbUsageStore(client, TABLES).query({ by: 'user', id: 'a', from: '2026-11-23T00:00:00Z', to: '2026-11-24T00:00:00Z' }),
      );
      await expectUnavailable(() => ledger.getLimits(['platform']));
    } finally {
      client.destroy();
    }
  });

  it('when the endpoint accepts connections but never answers, the request timeout turns it into StoreUnavailableError', async () => {
    const sockets: Socket[] = [];
    const server: Server = createServer((socket) => sockets.push(socket));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as { port: number };
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: `http://127.0.0.1:${port}`, requestTimeoutMs: 300, maxAttempts: 2 });
    try {
      await expectUnavailable(() => new DynamoDbKeyStore(client, TABLES).get('k'));
      // Each attempt connected, waited out its request timeout and gave up: two attempts, then the error.
      expect(sockets).toHaveLength(2);
    } finally {
      client.destroy();
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });

  it('when a table does not exist, the adapter reports the store unavailable rather than a bug', async () => {
    const db = await createTestTables();
    try {
      await expectUnavailable(() => new DynamoDbKeyStore(db.client, { keys: `${db.tables.keys}-missing` }).get('k'));
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
