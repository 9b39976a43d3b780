/**
 * The seeded fuzz of the input boundary at scale: ≥ 10,000 hostile requests (test/support/hostile-requests.ts)
 * over real HTTP against the local gateway (fake upstream, DynamoDB Local). Prints the status histogram, the
 * 5xx and hang counts, how many requests reached the upstream, and the ledger diff (tables that changed).
 * Exits 1 when any request got a 5xx, hung, answered outside the 4xx range or its dialect, reached the
 * upstream, or changed the ledger.
 *
 *   npm run bench:fuzz                      # 10,000 requests, seed 20261126
 *   npm run bench:fuzz -- --count 50000 --seed 7 --concurrency 8
 */
import { InMemoryRunQueue } from '../lambda/core/agent/queue';
import { LocalDataKeyProvider } from '../lambda/core/byok/crypto';
import { startDynamoDbLocal } from '../lambda/local/dynamodb-local';
import { startHarness } from '../test/support/gateway-harness';
import { histogram, hostileRequests, isDialectError, sendAll } from '../test/support/hostile-requests';

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 ? Number(process.argv[i + 1]) : fallback;
  if (!Number.isInteger(value) || value < 1) throw new Error(`--${name} must be a positive whole number`);
  return value;
}

async function main(): Promise<void> {
  const count = arg('count', 10_000);
  const seed = arg('seed', 20_261_126);
  const concurrency = arg('concurrency', 8);
  // A generous start bound: the JVM is slow to come up on a busy machine.
  const ddb = await startDynamoDbLocal({ port: 0, inMemory: true, startTimeoutMs: 300_000 });
  process.env.TOLLGATE_TEST_DDB_ENDPOINT = ddb.endpoint;
  const adminToken = `tga-bench-${'f'.repeat(32)}`;
  const h = await startHarness({
    env: { TOLLGATE_STAGE: 'fuzz', TOLLGATE_ADMIN_AUTH: 'local-token' },
    gateway: { adminToken, byokDataKeys: new LocalDataKeyProvider(LocalDataKeyProvider.generateMasterKey()), runQueue: new InMemoryRunQueue() },
  });
  try {
    const apiKey = (await h.createKey({ userId: 'fuzz', scopes: ['ai:complete', 'ai:embed', 'ai:byok', 'ai:agent'], rpm: 1_000_000_000 })).raw;
    const tables = ['usage', 'budgets', 'keys', 'byok', 'runs'] as const;
    const snapshot = async () => {
      await h.settled();
      const items = await Promise.all(tables.map((t) => h.scan(t)));
      return Object.fromEntries(tables.map((t, i) => [t, new Set(items[i]!.map((x) => JSON.stringify(x, Object.keys(x).sort())))]));
    };
    const before = await snapshot();
    let done = 0;
    const startedAt = Date.now();
    const outcomes = await sendAll(h.url, hostileRequests(seed, count, { apiKey, adminToken, maxJsonDepth: h.config.maxJsonDepth }), {
      concurrency,
      onOutcome: () => {
        if (++done % 1000 === 0) process.stderr.write(`  ${done}/${count}\n`);
      },
    });
    const seconds = (Date.now() - startedAt) / 1000;
    const after = await snapshot();
    const diff = tables.map((t) => {
      const added = [...after[t]!].filter((x) => !before[t]!.has(x)).length;
      const removed = [...before[t]!].filter((x) => !after[t]!.has(x)).length;
      return { table: t, added, removed };
    });
    const hist = histogram(outcomes);
    const fiveXx = outcomes.filter((o) => typeof o.status === 'number' && o.status >= 500);
    const hangs = outcomes.filter((o) => o.status === 'hang' || o.status === 'error');
    const offDialect = outcomes.filter((o) => typeof o.status === 'number' && o.status >= 400 && o.status < 500 && !isDialectError(o.request.path, o.body));
    const accepted = outcomes.filter((o) => typeof o.status === 'number' && o.status < 400);
    const ledgerChanged = diff.filter((d) => d.added + d.removed > 0);

    console.log(`fuzz: ${count} hostile requests, seed ${seed}, concurrency ${concurrency}, ${seconds.toFixed(1)} s (${(count / seconds).toFixed(0)} req/s on this machine)`);
    console.log(`status histogram: ${Object.entries(hist).map(([s, n]) => `${s}×${n}`).join('  ')}`);
    console.log(`answered: ${outcomes.length}/${count}   5xx: ${fiveXx.length}   hangs: ${hangs.length}   2xx/3xx: ${accepted.length}   4xx outside the dialect: ${offDialect.length}`);
    console.log(`reached the upstream: ${h.upstream.requests.length}`);
    console.log(`ledger diff: ${diff.map((d) => `${d.table} +${d.added}/-${d.removed}`).join('  ')}${ledgerChanged.length === 0 ? '  (unchanged)' : ''}`);
    for (const o of [...fiveXx, ...hangs, ...accepted, ...offDialect].slice(0, 20)) {
      console.log(`  ${o.status} ${o.request.method} ${o.request.path.slice(0, 60)} — ${o.request.name}: ${o.body.slice(0, 160)}`);
    }
    const ok = outcomes.length === count && fiveXx.length + hangs.length + accepted.length + offDialect.length === 0 && h.upstream.requests.length === 0 && ledgerChanged.length === 0;
    process.exitCode = ok ? 0 : 1;
  } finally {
    await h.close();
    await ddb.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
