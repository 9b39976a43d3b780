/**
 * A real local gateway with identity turned on: service JWTs (a jwt-secret with two kids), BYOK with the local
 * data-key provider, the admin API in `local-token` mode and an audit table, on real HTTP against a fake
 * upstream, with every log line captured for the secret scan.
 */
import { type AttributeValue, ScanCommand } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createGateway, type Gateway } from '../../../lambda/compose';
import { type GatewayConfig, loadConfig } from '../../../lambda/config';
import { registerService } from '../../../lambda/core/auth';
import { LocalDataKeyProvider } from '../../../lambda/core/byok/crypto';
import { type Clock, systemClock } from '../../../lambda/core/clock';
import { createApiKey, type CreateKeyInput } from '../../../lambda/core/key-admin';
import { jsonLogger } from '../../../lambda/core/log';
import { createLocalServer } from '../../../lambda/local/server';
import { createTestTables, type TestTables } from '../../support/dynamo';
import { type FakeUpstream, startFakeUpstream } from '../../support/fake-upstream';

export const ID_PEPPER = 'identity-test-pepper-5c4b3a29';
export const ID_UPSTREAM_OPENAI_KEY = 'sk-platform-openai-IDENTITY-777777';
export const ID_UPSTREAM_ANTHROPIC_KEY = 'sk-ant-platform-IDENTITY-888888';
/** Two kids: `k2` signs, `k1` (the previous secret) still verifies. */
export const JWT_SECRET_K2 = `k2-${randomBytes(24).toString('base64url')}`;
export const JWT_SECRET_K1 = `k1-${randomBytes(24).toString('base64url')}`;
export const JWT_SECRET_VALUE = `k2:${JWT_SECRET_K2},k1:${JWT_SECRET_K1}`;
export const ADMIN_TOKEN = `tga-${randomBytes(24).toString('base64url')}`;
export const BYOK_MASTER_KEY = LocalDataKeyProvider.generateMasterKey();

export interface IdentityHarness {
  readonly url: string;
  readonly gateway: Gateway;
  readonly upstream: FakeUpstream;
  readonly tables: TestTables;
  readonly auditTable: string;
  readonly config: GatewayConfig;
  readonly logs: string[];
  createKey(input?: Partial<CreateKeyInput>): Promise<{ raw: string; keyId: string }>;
  registerService(service: string, scopes: readonly string[]): Promise<void>;
  settled(): Promise<void>;
  /** Every item of every table (test tables are small). */
  scanAll(): Promise<Record<string, unknown>[]>;
  close(): Promise<void>;
}

export async function startIdentityHarness(options: { clock?: Clock; env?: Record<string, string> } = {}): Promise<IdentityHarness> {
  const upstream = await startFakeUpstream();
  const tables = await createTestTables();
  const auditTable = tables.tables.audit;
  const config: GatewayConfig = {
    ...loadConfig({
      TOLLGATE_STAGE: 'test',
      TOLLGATE_MOCK_PROVIDER: 'true',
      OPENAI_BASE_URL: upstream.openaiBaseUrl,
      ANTHROPIC_BASE_URL: upstream.anthropicBaseUrl,
      TOLLGATE_AUTH_CACHE_MS: '0',
      TOLLGATE_ADMIN_AUTH: 'local-token',
      ...options.env,
    }),
    tables: tables.tables,
  };
  const logs: string[] = [];
  const log = jsonLogger({ level: 'debug', sink: (line) => logs.push(line) });
  const clock = options.clock ?? systemClock;
  const gateway = createGateway({
    config,
    secrets: {
      keyPepper: ID_PEPPER,
      openaiApiKey: ID_UPSTREAM_OPENAI_KEY,
      anthropicApiKey: ID_UPSTREAM_ANTHROPIC_KEY,
      jwtSecret: JWT_SECRET_VALUE,
    },
    dynamodb: tables.client,
    log,
    clock,
    adminToken: ADMIN_TOKEN,
    byokDataKeys: new LocalDataKeyProvider(BYOK_MASTER_KEY),
  });
  const pending = new Set<Promise<void>>();
  const server: Server = createLocalServer({
    app: gateway.app,
    maxBodyBytes: config.maxBodyBytes,
    log,
    onRequest: (done) => {
      pending.add(done);
      void done.finally(() => pending.delete(done));
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url,
    gateway,
    upstream,
    tables,
    auditTable,
    config,
    logs,
    async createKey(input = {}) {
      const created = await createApiKey(gateway, { userId: 'alice', ...input }, { pepper: ID_PEPPER, clock });
      return { raw: created.raw, keyId: created.record.keyId };
    },
    async registerService(service, scopes) {
      await registerService(gateway.keys, { service, scopes }, { clock });
    },
    async settled() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
    async scanAll() {
      const out: Record<string, unknown>[] = [];
      for (const TableName of Object.values(tables.tables)) {
        let start: Record<string, AttributeValue> | undefined;
        do {
          const page = await tables.client.send(new ScanCommand({ TableName, ExclusiveStartKey: start }));
          out.push(...(page.Items ?? []).map((i) => ({ table: TableName, ...unmarshall(i) })));
          start = page.LastEvaluatedKey;
        } while (start);
      }
      return out;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await upstream.close();
      await tables.cleanup();
    },
  };
}
