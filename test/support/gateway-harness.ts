/**
 * A real local gateway for end-to-end tests: its own tables in the run's DynamoDB Local, the real
 * composition (createGateway), the real node:http server on a free port, and a fake upstream on real HTTP.
 * Every log line is captured so tests can scan them for secrets.
 */
import { QueryCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGateway, type Gateway, type GatewayDependencies, type GatewaySecrets } from '../../lambda/compose';
import { type GatewayConfig, loadConfig } from '../../lambda/config';
import { type Clock, systemClock } from '../../lambda/core/clock';
import { createApiKey, type CreateKeyInput } from '../../lambda/core/key-admin';
import { jsonLogger } from '../../lambda/core/log';
import { createLocalServer } from '../../lambda/local/server';
import { HOLD_SHARDS } from '../../lambda/store/dynamodb/schema';
import { createTestTables, type TestTables } from './dynamo';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream';
import { trackInFlight } from './in-flight';

export const TEST_PEPPER = 'test-pepper-9f8e7d6c5b4a';
export const UPSTREAM_OPENAI_KEY = 'sk-upstream-openai-SECRET-123456';
export const UPSTREAM_ANTHROPIC_KEY = 'sk-ant-upstream-SECRET-654321';
/** The harness gateway's `jwt-secret` (kid `test`), so service JWTs work in e2e tests. */
export const TEST_JWT_SECRET = `test:${'j'.repeat(40)}`;

export interface Harness {
  readonly url: string;
  readonly baseURL: string;
  readonly gateway: Gateway;
  readonly upstream: FakeUpstream;
  readonly tables: TestTables;
  readonly config: GatewayConfig;
  readonly logs: string[];
  createKey(input?: Partial<CreateKeyInput>): Promise<{ raw: string; keyId: string }>;
  /** Resolves when every request so far has finished, settlement included. */
  settled(): Promise<void>;
  /** Every item of a table (small test tables only); for `usage`, its usage records (not the refusal counters). */
  scan(table: keyof TestTables['tables']): Promise<Record<string, unknown>[]>;
  /** Holds (reservations) still in the budgets table. */
  holds(): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
}

export interface HarnessOptions {
  /** Environment the gateway's config is read from (on top of the harness defaults). */
  readonly env?: Record<string, string>;
  readonly clock?: Clock;
  /** Secrets replacing the harness defaults. */
  readonly secrets?: Partial<GatewaySecrets>;
  /** More composition options (the admin token, a BYOK data-key provider, …). */
  readonly gateway?: Omit<Partial<GatewayDependencies>, 'config' | 'secrets' | 'dynamodb' | 'log' | 'clock'>;
}

export async function startHarness(options: HarnessOptions = {}): Promise<Harness> {
  const upstream = await startFakeUpstream();
  const tables = await createTestTables();
  const config: GatewayConfig = {
    ...loadConfig({
      TOLLGATE_MOCK_PROVIDER: 'true',
      OPENAI_BASE_URL: upstream.openaiBaseUrl,
      ANTHROPIC_BASE_URL: upstream.anthropicBaseUrl,
      TOLLGATE_AUTH_CACHE_MS: '0',
      ...options.env,
    }),
    tables: tables.tables,
  };
  const logs: string[] = [];
  const log = jsonLogger({ level: 'debug', sink: (line) => logs.push(line) });
  const secrets: GatewaySecrets = {
    keyPepper: TEST_PEPPER,
    openaiApiKey: UPSTREAM_OPENAI_KEY,
    anthropicApiKey: UPSTREAM_ANTHROPIC_KEY,
    jwtSecret: TEST_JWT_SECRET,
    ...options.secrets,
  };
  const gateway = createGateway({
    ...options.gateway,
    config,
    secrets,
    dynamodb: tables.client,
    log,
    ...(options.clock ? { clock: options.clock } : {}),
  });
  const inFlight = trackInFlight();
  const server: Server = createLocalServer({ app: gateway.app, maxBodyBytes: config.maxBodyBytes, log, onRequest: inFlight.onRequest });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clock = options.clock ?? systemClock;
  return {
    url,
    baseURL: `${url}/v1`,
    gateway,
    upstream,
    tables,
    config,
    logs,
    async createKey(input = {}) {
      const created = await createApiKey(gateway, { userId: 'alice', ...input }, { pepper: secrets.keyPepper, clock });
      return { raw: created.raw, keyId: created.record.keyId };
    },
    async settled() {
      await inFlight.settled();
      await gateway.refusals.recorder.flushed();
    },
    async scan(table) {
      // The usage table also holds the daily refusal counters (refusal-store.ts); a scan of it means its records.
      const records = table === 'usage' ? { FilterExpression: 'NOT begins_with(pk, :r)', ExpressionAttributeValues: { ':r': { S: 'refusals#' } } } : {};
      const out = await tables.client.send(new ScanCommand({ TableName: tables.tables[table], ...records }));
      return (out.Items ?? []).map((i) => unmarshall(i));
    },
    async holds() {
      const all: Record<string, unknown>[] = [];
      for (let n = 0; n < HOLD_SHARDS; n++) {
        const out = await tables.client.send(
          new QueryCommand({
            TableName: tables.tables.budgets,
            KeyConditionExpression: 'pk = :pk',
            ExpressionAttributeValues: { ':pk': { S: `hold#${n}` } },
          }),
        );
        all.push(...(out.Items ?? []).map((i) => unmarshall(i)));
      }
      return all;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await upstream.close();
      await tables.cleanup();
    },
  };
}
