/**
 * A real local gateway with identity turned on: service JWTs (a jwt-secret with two kids), BYOK with the local
 * data-key provider, the admin API in `local-token` mode and an audit table, on real HTTP against a fake
 * upstream, with every log line captured for the secret scan.
 */
import { type AttributeValue, ScanCommand } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { randomBytes } from 'node:crypto';
import { registerService } from '../../../lambda/core/auth';
import { LocalDataKeyProvider } from '../../../lambda/core/byok/crypto';
import { type Clock, systemClock } from '../../../lambda/core/clock';
import { type Harness, startHarness } from '../../support/gateway-harness';

export const ID_PEPPER = 'identity-test-pepper-5c4b3a29';
export const ID_UPSTREAM_OPENAI_KEY = 'sk-platform-openai-IDENTITY-777777';
export const ID_UPSTREAM_ANTHROPIC_KEY = 'sk-ant-platform-IDENTITY-888888';
/** Two kids: `k2` signs, `k1` (the previous secret) still verifies. */
export const JWT_SECRET_K2 = `k2-${randomBytes(24).toString('base64url')}`;
export const JWT_SECRET_K1 = `k1-${randomBytes(24).toString('base64url')}`;
export const JWT_SECRET_VALUE = `k2:${JWT_SECRET_K2},k1:${JWT_SECRET_K1}`;
export const ADMIN_TOKEN = `tga-${randomBytes(24).toString('base64url')}`;
export const BYOK_MASTER_KEY = LocalDataKeyProvider.generateMasterKey();

export interface IdentityHarness extends Harness {
  readonly auditTable: string;
  registerService(service: string, scopes: readonly string[]): Promise<void>;
  /** Every item of every table (test tables are small). */
  scanAll(): Promise<Record<string, unknown>[]>;
}

/** The e2e harness with identity switched on: its own pepper, platform keys, JWT secret, admin token, BYOK keys. */
export async function startIdentityHarness(options: { clock?: Clock; env?: Record<string, string> } = {}): Promise<IdentityHarness> {
  const clock = options.clock ?? systemClock;
  const h = await startHarness({
    env: { TOLLGATE_STAGE: 'test', TOLLGATE_ADMIN_AUTH: 'local-token', ...options.env },
    clock,
    secrets: {
      keyPepper: ID_PEPPER,
      openaiApiKey: ID_UPSTREAM_OPENAI_KEY,
      anthropicApiKey: ID_UPSTREAM_ANTHROPIC_KEY,
      jwtSecret: JWT_SECRET_VALUE,
    },
    gateway: { adminToken: ADMIN_TOKEN, byokDataKeys: new LocalDataKeyProvider(BYOK_MASTER_KEY) },
  });
  const { tables } = h;
  return {
    ...h,
    auditTable: tables.tables.audit,
    async registerService(service, scopes) {
      await registerService(h.gateway.keys, { service, scopes }, { clock });
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
  };
}
