/**
 * A seeded fuzz of the input boundary over real HTTP: hundreds of hostile requests (broken paths, bodies,
 * numbers, types, headers and credentials; test/support/hostile-requests.ts) against the local gateway with a
 * fake upstream and DynamoDB Local. Every one must be answered (none hangs), with a 4xx in its route's dialect
 * (none is a 5xx), without reaching the upstream, and the ledger, counters, keys, BYOK keys and runs must be
 * exactly as before. `npm run bench:fuzz` runs the same generator for ≥ 10,000 requests.
 */
import { InMemoryRunQueue } from '../../lambda/core/agent/queue';
import { LocalDataKeyProvider } from '../../lambda/core/byok/crypto';
import { type Harness, startHarness } from '../support/gateway-harness';
import { hostileRequests, histogram, isDialectError, sendAll } from '../support/hostile-requests';

jest.setTimeout(300_000);

const SEED = 20_261_126;
const CASES = 600;
const ADMIN_TOKEN = `tga-fuzz-${'a'.repeat(32)}`;

let h: Harness;
let apiKey: string;
beforeAll(async () => {
  h = await startHarness({
    env: { TOLLGATE_STAGE: 'fuzz', TOLLGATE_ADMIN_AUTH: 'local-token' },
    gateway: { adminToken: ADMIN_TOKEN, byokDataKeys: new LocalDataKeyProvider(LocalDataKeyProvider.generateMasterKey()), runQueue: new InMemoryRunQueue() },
  });
  apiKey = (await h.createKey({ userId: 'fuzz', scopes: ['ai:complete', 'ai:embed', 'ai:byok', 'ai:agent'], rpm: 1_000_000 })).raw;
});
afterAll(async () => {
  await h?.close();
});

/** Every table a refused request must leave alone (the audit log excepted: admin attempts are audited). */
async function ledgerSnapshot(): Promise<string> {
  await h.settled();
  const tables = ['usage', 'budgets', 'keys', 'byok', 'runs'] as const;
  const items = await Promise.all(tables.map((t) => h.scan(t)));
  const stable = (list: Record<string, unknown>[]) => list.map((i) => JSON.stringify(i, Object.keys(i).sort())).sort();
  return JSON.stringify(Object.fromEntries(tables.map((t, i) => [t, stable(items[i]!)])));
}

describe('seeded fuzz of the input boundary', () => {
  it(`when ${CASES} hostile requests (seed ${SEED}) hit the gateway, each gets a 4xx in its dialect, none hangs, none reaches the upstream and the ledger is unchanged`, async () => {
    const before = await ledgerSnapshot();
    h.upstream.reset();
    const outcomes = await sendAll(h.url, hostileRequests(SEED, CASES, { apiKey, adminToken: ADMIN_TOKEN, maxJsonDepth: h.config.maxJsonDepth }), { concurrency: 4 });
    const after = await ledgerSnapshot();

    // Every request answered: the count is the bound, not the clock.
    expect(outcomes).toHaveLength(CASES);
    const wrong = outcomes
      .filter((o) => typeof o.status !== 'number' || o.status < 400 || o.status >= 500 || !isDialectError(o.request.path.split('?')[0]!, o.body))
      .map((o) => `${o.status} ${o.request.method} ${o.request.name}: ${o.body.slice(0, 160)}`);
    expect(wrong).toEqual([]);
    expect(histogram(outcomes)).not.toHaveProperty('hang');
    expect(h.upstream.requests.map((r) => `${r.method} ${r.path}`)).toEqual([]);
    expect(after).toBe(before);
  });

  it('when the same seed is used twice, the generator yields the same requests', () => {
    const ctx = { apiKey: 'k', adminToken: 't', maxJsonDepth: 64 };
    const a = [...hostileRequests(7, 200, ctx)].map((r) => `${r.method} ${r.path} ${r.name} ${r.body?.toString('base64') ?? ''}`);
    const b = [...hostileRequests(7, 200, ctx)].map((r) => `${r.method} ${r.path} ${r.name} ${r.body?.toString('base64') ?? ''}`);
    expect(a).toEqual(b);
    expect(new Set(a).size).toBeGreaterThan(150);
  });
});
