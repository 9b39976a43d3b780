/**
 * Money scenarios shared by the fault and burst tests (which assert) and `npm run bench:faults` (which prints
 * the figures). Everything is real: a DynamoDB Local of the scenario's own (on a data dir, so it can be killed
 * and restarted on the same data), the real composition, the node:http server and a fake upstream on loopback.
 *
 * Loops here are bounded in count; waits poll with a bounded number of short sleeps, never assert a duration.
 */
import { type AttributeValue, QueryCommand, ScanCommand } from '@aws-sdk/client-dynamodb';
import { unmarshall } from '@aws-sdk/util-dynamodb';
import { mkdtempSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createGateway, type Gateway } from '../../lambda/compose';
import { type GatewayConfig, loadConfig } from '../../lambda/config';
import { systemClock } from '../../lambda/core/clock';
import { createApiKey } from '../../lambda/core/key-admin';
import { jsonLogger } from '../../lambda/core/log';
import { usdToMicros } from '../../lambda/core/money';
import { maxCostOf } from '../../lambda/core/pricing';
import { estimateChatInputTokens } from '../../lambda/core/tokens';
import { type DynamoDbLocal, startDynamoDbLocal } from '../../lambda/local/dynamodb-local';
import { createLocalServer } from '../../lambda/local/server';
import { createDynamoDbClient, type DynamoDbClientOptions } from '../../lambda/store/dynamodb/client';
import { ensureTables } from '../../lambda/store/dynamodb/create-tables';
import { HOLD_SHARDS } from '../../lambda/store/dynamodb/schema';
import { type FakeUpstream, startFakeUpstream } from './fake-upstream';

const PEPPER = 'money-scenario-pepper';
const MODEL = 'gpt-4o';
/** What the fake upstream reports for every answer (OpenAI wire terms). */
const ANSWER = { inputTokens: 12, outputTokens: 5, cachedTokens: 0, cacheWriteTokens: 0 };

/** A gateway on a DynamoDB Local of its own, which the scenario may kill and restart on the same data. */
export interface OwnStoreGateway {
  readonly url: string;
  readonly gateway: Gateway;
  readonly config: GatewayConfig;
  readonly upstream: FakeUpstream;
  readonly logs: string[];
  /** Kills DynamoDB Local (SIGKILL: a crash, not a shutdown) and waits until it is gone. */
  killStore(): Promise<void>;
  /** Starts DynamoDB Local again on the same port and data dir. */
  restartStore(): Promise<void>;
  /** Resolves when every request so far has finished, settlement included. */
  settled(): Promise<void>;
  /** Every item of the usage table. */
  usage(): Promise<Array<Record<string, unknown>>>;
  /** How many holds (reservations) are left in the budgets table. */
  holds(): Promise<number>;
  close(): Promise<void>;
}

export interface OwnStoreOptions {
  readonly env?: Record<string, string>;
  /** Client settings replacing the defaults (the bench's baseline uses the old ones). */
  readonly client?: Partial<DynamoDbClientOptions>;
}

export async function startOwnStoreGateway(options: OwnStoreOptions = {}): Promise<OwnStoreGateway> {
  const dataDir = mkdtempSync(path.join(tmpdir(), 'tollgate-faults-'));
  let ddb: DynamoDbLocal = await startDynamoDbLocal({ port: 0, inMemory: false, dataDir, startTimeoutMs: 120_000 });
  const port = ddb.port;
  const client = createDynamoDbClient({ region: 'us-east-1', endpoint: ddb.endpoint, ...options.client });
  const upstream = await startFakeUpstream();
  const config: GatewayConfig = loadConfig({
    TOLLGATE_MOCK_PROVIDER: 'true',
    OPENAI_BASE_URL: upstream.openaiBaseUrl,
    ANTHROPIC_BASE_URL: upstream.anthropicBaseUrl,
    TOLLGATE_TABLE_PREFIX: 'faults-',
    ...options.env,
  });
  await ensureTables(client, config.tables);
  const logs: string[] = [];
  const log = jsonLogger({ level: 'info', sink: (line) => logs.push(line) });
  const gateway = createGateway({
    config,
    secrets: { keyPepper: PEPPER, openaiApiKey: 'sk-upstream-faults', anthropicApiKey: 'sk-ant-upstream-faults' },
    dynamodb: client,
    log,
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
    config,
    upstream,
    logs,
    async killStore() {
      // SIGTERM: the JVM exits at once (connections refused, as when the store dies) and closes its database on the
      // way out. After a SIGKILL, DynamoDB Local sometimes lost a write it had acknowledged (a reserve's hold, in
      // about one run in four on a busy machine), which DynamoDB never does; the answer then had no record.
      process.kill(ddb.pid, 'SIGTERM');
      await ddb.stop();
    },
    async restartStore() {
      ddb = await startDynamoDbLocal({ port, inMemory: false, dataDir, startTimeoutMs: 120_000 });
    },
    async settled() {
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
    async usage() {
      const out: Array<Record<string, unknown>> = [];
      let start: Record<string, AttributeValue> | undefined;
      do {
        // Usage records only, not the table's daily refusal counters (lambda/store/dynamodb/refusal-store.ts).
        const page = await client.send(
          new ScanCommand({
            TableName: config.tables.usage,
            FilterExpression: 'NOT begins_with(pk, :r)',
            ExpressionAttributeValues: { ':r': { S: 'refusals#' } },
            ExclusiveStartKey: start,
          }),
        );
        out.push(...(page.Items ?? []).map((i) => unmarshall(i)));
        start = page.LastEvaluatedKey;
      } while (start);
      return out;
    },
    async holds() {
      let n = 0;
      for (let shard = 0; shard < HOLD_SHARDS; shard++) {
        const page = await client.send(
          new QueryCommand({
            TableName: config.tables.budgets,
            KeyConditionExpression: 'pk = :pk',
            ExpressionAttributeValues: { ':pk': { S: `hold#${shard}` } },
            Select: 'COUNT',
          }),
        );
        n += page.Count ?? 0;
      }
      return n;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await upstream.close();
      client.destroy();
      await ddb.stop();
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** One answer as the caller saw it. */
export interface CallerAnswer {
  readonly status: number;
  readonly code?: string;
  readonly requestId: string | null;
  readonly retryAfter: string | null;
  readonly shouldRetry: string | null;
  /** `x-tollgate-cost-usd` in micro-USD: what the provider reported the answer cost (200s only). */
  readonly costMicros?: number;
}

async function call(url: string, key: string, body: unknown): Promise<CallerAnswer> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = (await res.json().catch(() => ({}))) as { error?: { code?: string } };
  return {
    status: res.status,
    ...(json.error?.code ? { code: json.error.code } : {}),
    requestId: res.headers.get('x-request-id'),
    retryAfter: res.headers.get('retry-after'),
    shouldRetry: res.headers.get('x-should-retry'),
    ...(res.status === 200 && res.headers.get('x-tollgate-cost-usd') ? { costMicros: usdToMicros(res.headers.get('x-tollgate-cost-usd') as string) } : {}),
  };
}

/** `status code` → count, e.g. `{ "200": 20, "429 gateway_busy": 312, "429 insufficient_quota": 168 }`. */
export function histogramOf(answers: readonly CallerAnswer[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const a of answers) {
    const k = a.status === 200 ? '200' : `${a.status} ${a.code ?? ''}`.trim();
    out[k] = (out[k] ?? 0) + 1;
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => a.localeCompare(b)));
}

async function polled(check: () => boolean, maxPolls = 1_200, everyMs = 50): Promise<boolean> {
  for (let i = 0; i < maxPolls; i++) {
    if (check()) return true;
    await new Promise((resolve) => setTimeout(resolve, everyMs));
  }
  return check();
}

/** The figures of the fault scenario. */
export interface FaultFigures {
  readonly limit: number;
  readonly reservation: number;
  /** Answers the provider delivered to callers (200s), and what they cost at the provider. */
  readonly delivered: { readonly answers: number; readonly micros: number };
  /** What the gateway recorded: usage records and the budget counter. */
  readonly recorded: { readonly records: number; readonly micros: number; readonly abandoned: number; readonly counterSpent: number; readonly counterCommitted: number };
  /** Settles that failed for good while the store was down (left for the sweeper). */
  readonly settlesLeftForSweeper: number;
  /** 200s whose request id has no usage record (must be 0). */
  readonly unrecordedAnswers: number;
  readonly overspend: number;
  readonly holdsLeft: number;
  readonly upstreamCalls: number;
  readonly histogram: Record<string, number>;
  readonly phases: { readonly inFlightAtKill: Record<string, number>; readonly duringOutage: Record<string, number>; readonly afterRestart: Record<string, number> };
}

/**
 * Kills the store mid-traffic: `inFlight` requests are at the provider when DynamoDB Local dies (their settles
 * fail, are retried, and are left for the sweeper), `duringOutage` more arrive while it is down (503, nothing
 * forwarded), it restarts on the same data, `afterRestart` more run into the budget (`fits` reservations),
 * and the sweeper runs as after the hold TTL.
 */
export async function runFaultScenario(
  g: OwnStoreGateway,
  options: { readonly inFlight?: number; readonly duringOutage?: number; readonly afterRestart?: number; readonly fits?: number } = {},
): Promise<FaultFigures> {
  const inFlight = options.inFlight ?? 12;
  const duringOutage = options.duringOutage ?? 8;
  const afterRestart = options.afterRestart ?? 40;
  const fits = options.fits ?? 30;
  const { raw, record } = await createApiKey(g.gateway, { userId: 'faults' }, { pepper: PEPPER, clock: systemClock });
  const keyId = record.keyId;
  // Distinct bodies of one length (one reservation each), so the loop guard has nothing to say.
  let seq = 0;
  const body = () => ({ model: MODEL, max_tokens: 50, messages: [{ role: 'user', content: `fault ${String(seq++).padStart(4, '0')}` }] });
  const price = g.gateway.prices.resolve(MODEL).price;
  const reservation = maxCostOf(price, { inputTokens: estimateChatInputTokens(body()), maxOutputTokens: 50 });
  const limit = fits * reservation;
  await g.gateway.ledger.setLimit(`key:${keyId}`, 'day', limit);

  // 0. One request first: a cold JVM answers its first transactions slowly.
  g.upstream.script({ usage: ANSWER });
  const warmup = [await call(g.url, raw, body())];
  await g.settled();
  g.upstream.reset();

  // 1. Requests at the provider when the store dies.
  // The provider holds their answers until the store is gone, however long the kill takes on a busy machine, so
  // every settle starts against a dead store (not a timing guess of 600 ms).
  let storeDead: () => void = () => undefined;
  const afterKill = new Promise<void>((resolve) => (storeDead = resolve));
  g.upstream.script({ usage: ANSWER, until: afterKill });
  const first = Array.from({ length: inFlight }, () => call(g.url, raw, body()));
  await polled(() => g.upstream.requests.length >= inFlight);
  await g.killStore();
  storeDead();
  const atKill = await Promise.all(first);
  // Their settles retry and give up while the store is still down.
  const gaveUp = () => g.logs.filter((l) => l.includes('hold left for the sweeper')).length;
  await polled(() => gaveUp() >= atKill.filter((a) => a.status === 200).length);

  // 2. Requests while the store is down: spend cannot be verified.
  g.upstream.script({ usage: ANSWER });
  const outage: CallerAnswer[] = [];
  for (let i = 0; i < duringOutage; i++) outage.push(await call(g.url, raw, body()));

  // 3. The store comes back on the same data; traffic with longer answers runs into the budget.
  await g.restartStore();
  g.upstream.script({ usage: { ...ANSWER, outputTokens: 45 } });
  const after: CallerAnswer[] = [];
  for (let i = 0; i < afterRestart; i += 4) {
    after.push(...(await Promise.all(Array.from({ length: Math.min(4, afterRestart - i) }, () => call(g.url, raw, body())))));
  }
  await g.settled();

  // 4. The sweeper, as after the hold TTL.
  await g.gateway.ledger.sweepExpired(systemClock.now() + g.config.holdTtlMs + 1);

  const all = [...warmup, ...atKill, ...outage, ...after];
  const ok = all.filter((a) => a.status === 200);
  const records = (await g.usage()).filter((u) => u.keyId === keyId);
  const recordedIds = new Set(records.map((r) => String(r.requestId)));
  const [day] = await g.gateway.pipeline.readCounters(
    g.gateway.pipeline.countersFor([`key:${keyId}`], new Map(), systemClock.now(), 'r').filter((c) => c.window === 'day'),
  );
  const holds = await g.holds();
  return {
    limit,
    reservation,
    delivered: { answers: ok.length, micros: ok.reduce((sum, a) => sum + (a.costMicros ?? 0), 0) },
    settlesLeftForSweeper: gaveUp(),
    recorded: {
      records: records.length,
      micros: records.reduce((sum, r) => sum + Number(r.costMicros), 0),
      abandoned: records.filter((r) => r.outcome === 'abandoned').length,
      counterSpent: day?.spent ?? 0,
      counterCommitted: day?.committed ?? 0,
    },
    unrecordedAnswers: ok.filter((a) => !recordedIds.has(String(a.requestId))).length,
    overspend: Math.max(0, (day?.committed ?? 0) - limit),
    holdsLeft: holds,
    upstreamCalls: g.upstream.requests.length + warmup.filter((a) => a.status === 200).length,
    histogram: histogramOf(all),
    phases: { inFlightAtKill: histogramOf(atKill), duringOutage: histogramOf(outage), afterRestart: histogramOf(after) },
  };
}

/** The figures of one burst. */
export interface BurstFigures {
  readonly histogram: Record<string, number>;
  readonly answers: readonly CallerAnswer[];
  readonly upstreamCalls: number;
  readonly limit: number;
  readonly recordedMicros: number;
  readonly records: number;
  readonly counterSpent: number;
  readonly counterCommitted: number;
  readonly holdsLeft: number;
}

/**
 * `size` concurrent requests on one new key whose day budget fits `fits` reservations; the upstream reports
 * no usage, so every admitted request costs exactly its reservation however settles interleave.
 */
export async function runBurst(g: OwnStoreGateway, options: { readonly size: number; readonly fits: number; readonly userId: string }): Promise<BurstFigures> {
  const { raw, record } = await createApiKey(g.gateway, { userId: options.userId }, { pepper: PEPPER, clock: systemClock });
  const keyId = record.keyId;
  let seq = 0;
  const body = () => ({ model: MODEL, max_tokens: 50, messages: [{ role: 'user', content: `burst ${String(seq++).padStart(4, '0')}` }] });
  const price = g.gateway.prices.resolve(MODEL).price;
  const limit = options.fits * maxCostOf(price, { inputTokens: estimateChatInputTokens(body()), maxOutputTokens: 50 });
  await g.gateway.ledger.setLimit(`key:${keyId}`, 'day', limit);
  g.upstream.reset();
  g.upstream.script({ omitUsage: true, delayMs: 20 });
  const answers = await Promise.all(Array.from({ length: options.size }, () => call(g.url, raw, body())));
  await g.settled();
  const records = (await g.usage()).filter((u) => u.keyId === keyId);
  const [day] = await g.gateway.pipeline.readCounters(
    g.gateway.pipeline.countersFor([`key:${keyId}`], new Map(), systemClock.now(), 'r').filter((c) => c.window === 'day'),
  );
  return {
    histogram: histogramOf(answers),
    answers,
    upstreamCalls: g.upstream.requests.length,
    limit,
    recordedMicros: records.reduce((sum, r) => sum + Number(r.costMicros), 0),
    records: records.length,
    counterSpent: day?.spent ?? 0,
    counterCommitted: day?.committed ?? 0,
    holdsLeft: await g.holds(),
  };
}
