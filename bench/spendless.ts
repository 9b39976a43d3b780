/**
 * Spend less per request, measured on the local gateway (real HTTP, DynamoDB Local, a fake upstream that
 * answers like OpenAI/Anthropic after a fixed provider latency):
 *
 *   1. support bot: 200 questions, 30 % of them repeats of earlier ones, on a key with the response cache on.
 *      Prints the hit ratio, dollars spent and saved, and hit vs miss latency (median, and their ratio).
 *   2. provider outage: 100 requests to a rule [openai/gpt-4o → anthropic/claude-sonnet-4-6] while OpenAI
 *      answers 503 for the middle half. Prints how many requests the fallback served, what they cost, and how
 *      many would have failed without the rule.
 *
 *   npm run bench:spendless
 */
import type { AddressInfo } from 'node:net';
import { createGateway } from '../lambda/compose';
import { loadConfig } from '../lambda/config';
import { createApiKey } from '../lambda/core/key-admin';
import { silentLogger } from '../lambda/core/log';
import { displayUsd, usdToMicros } from '../lambda/core/money';
import { startDynamoDbLocal } from '../lambda/local/dynamodb-local';
import { createLocalServer } from '../lambda/local/server';
import { createDynamoDbClient } from '../lambda/store/dynamodb/client';
import { ensureTables } from '../lambda/store/dynamodb/create-tables';
import { type FakeUpstream, startFakeUpstream } from '../test/support/fake-upstream';

const PROVIDER_LATENCY_MS = 150;
const SUPPORT_REQUESTS = 200;
const REPEAT_SHARE = 0.3;
const OUTAGE_REQUESTS = 100;

/** A deterministic generator, so every run replays the same workload. */
function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const TOPICS = ['reset my password', 'change my shipping address', 'get a refund', 'update my card', 'cancel my plan', 'download an invoice', 'add a team member', 'enable two-factor login'];

async function gatewayOn(dynamoEndpoint: string, upstream: FakeUpstream, stage: string, env: Record<string, string> = {}) {
  const config = loadConfig({ TOLLGATE_STAGE: stage, OPENAI_BASE_URL: upstream.openaiBaseUrl, ANTHROPIC_BASE_URL: upstream.anthropicBaseUrl, ...env });
  const dynamodb = createDynamoDbClient({ region: 'us-east-1', endpoint: dynamoEndpoint });
  await ensureTables(dynamodb, config.tables);
  const gw = createGateway({ config, secrets: { keyPepper: 'bench', openaiApiKey: 'sk-bench', anthropicApiKey: 'sk-ant-bench' }, dynamodb, log: silentLogger });
  const pending = new Set<Promise<void>>();
  const server = createLocalServer({
    app: gw.app,
    maxBodyBytes: config.maxBodyBytes,
    log: silentLogger,
    onRequest: (done) => {
      pending.add(done);
      void done.finally(() => pending.delete(done));
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`;
  return {
    gw,
    url,
    settled: async () => {
      while (pending.size > 0) await Promise.allSettled([...pending]);
    },
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor(s.length / 2)]!;
};

async function supportBot(dynamoEndpoint: string, upstream: FakeUpstream): Promise<void> {
  const g = await gatewayOn(dynamoEndpoint, upstream, 'bench-cache');
  const { raw, record } = await createApiKey(g.gw, { userId: 'support-bot', responseCache: true }, { pepper: 'bench', clock: { now: () => Date.now() } });
  upstream.script({ replyText: 'Open Settings, choose Account, and follow the steps shown there.', usage: { inputTokens: 900, outputTokens: 160 }, delayMs: PROVIDER_LATENCY_MS });
  const rand = seeded(16);
  const asked: string[] = [];
  const hit: number[] = [];
  const miss: number[] = [];
  let savedMicros = 0;
  try {
    for (let i = 0; i < SUPPORT_REQUESTS; i++) {
      const repeat = asked.length > 0 && rand() < REPEAT_SHARE;
      const question = repeat
        ? asked[Math.floor(rand() * asked.length)]!
        : `Customer #${i}: how do I ${TOPICS[i % TOPICS.length]}? My order number is ${100_000 + i}.`;
      if (!repeat) asked.push(question);
      const started = performance.now();
      const res = await fetch(g.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${raw}` },
        body: JSON.stringify({ model: 'gpt-4o', temperature: 0, max_tokens: 300, messages: [{ role: 'system', content: 'You are a helpful support agent.' }, { role: 'user', content: question }] }),
      });
      await res.text();
      const ms = performance.now() - started;
      await g.settled();
      if (res.headers.get('x-tollgate-cache') === 'hit') {
        hit.push(ms);
        savedMicros += usdToMicros(res.headers.get('x-tollgate-cache-saved-usd') ?? '0');
      } else miss.push(ms);
    }
    const records = await g.gw.usage.query({ by: 'key', id: record.keyId, from: '2000-01-01T00:00:00.000Z', to: '2100-01-01T00:00:00.000Z' });
    const spent = records.reduce((n, r) => n + r.costMicros, 0);
    const lines = [
      `1. support bot: ${SUPPORT_REQUESTS} requests to openai/gpt-4o, ${Math.round(REPEAT_SHARE * 100)} % chance each is a repeat, provider latency ${PROVIDER_LATENCY_MS} ms`,
      `  hit ratio:                   ${((hit.length / SUPPORT_REQUESTS) * 100).toFixed(1)} %  (${hit.length} hits, ${miss.length} misses)`,
      `  requests reached provider:   ${records.length}`,
      `  dollars spent:               ${displayUsd(spent)}`,
      `  dollars saved by the cache:  ${displayUsd(savedMicros)}  (${((savedMicros / (spent + savedMicros)) * 100).toFixed(1)} % of the uncached bill)`,
      `  median latency, hit / miss:  ${median(hit).toFixed(1)} ms / ${median(miss).toFixed(1)} ms  (a hit takes ${(median(hit) / median(miss)).toFixed(2)}× a miss)`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await g.close();
  }
}

async function outage(dynamoEndpoint: string, upstream: FakeUpstream): Promise<void> {
  const routes = { rules: [{ name: 'support', alias: 'tollgate/support', models: ['openai/gpt-4o', 'anthropic/claude-sonnet-4-6'] }] };
  const g = await gatewayOn(dynamoEndpoint, upstream, 'bench-outage', { TOLLGATE_ROUTES: JSON.stringify(routes) });
  const { raw, record } = await createApiKey(g.gw, { userId: 'support-bot-2' }, { pepper: 'bench', clock: { now: () => Date.now() } });
  let openaiDown = false;
  upstream.scriptEach((body) =>
    String(body.model).startsWith('gpt') && openaiDown
      ? { status: 503, errorMessage: 'The server is overloaded', delayMs: 20 }
      : { replyText: 'Here is how to do that.', usage: { inputTokens: 900, outputTokens: 160 }, delayMs: 20 },
  );
  const statuses: Record<string, number> = {};
  let byFallback = 0;
  let duringOutage = 0;
  try {
    for (let i = 0; i < OUTAGE_REQUESTS; i++) {
      openaiDown = i >= OUTAGE_REQUESTS / 4 && i < (OUTAGE_REQUESTS * 3) / 4;
      if (openaiDown) duringOutage++;
      const res = await fetch(g.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${raw}` },
        body: JSON.stringify({ model: 'tollgate/support', max_tokens: 300, messages: [{ role: 'user', content: `Question ${i}: where is my order?` }] }),
      });
      await res.text();
      await g.settled();
      statuses[res.status] = (statuses[res.status] ?? 0) + 1;
      if (res.status === 200 && res.headers.get('x-tollgate-fallback')) byFallback++;
    }
    const records = await g.gw.usage.query({ by: 'key', id: record.keyId, from: '2000-01-01T00:00:00.000Z', to: '2100-01-01T00:00:00.000Z' });
    const byModel = new Map<string, { n: number; micros: number }>();
    for (const r of records) {
      const k = `${r.model} ${r.outcome}`;
      const v = byModel.get(k) ?? { n: 0, micros: 0 };
      byModel.set(k, { n: v.n + 1, micros: v.micros + r.costMicros });
    }
    const fallbackCost = byModel.get('anthropic/claude-sonnet-4-6 ok')?.micros ?? 0;
    const lines = [
      `\n2. provider outage: ${OUTAGE_REQUESTS} requests to tollgate/support = [openai/gpt-4o → anthropic/claude-sonnet-4-6], OpenAI answering 503 for ${duringOutage} of them`,
      `  responses:                   ${Object.entries(statuses).map(([k, v]) => `${k}×${v}`).join(', ')}`,
      `  served by the fallback:      ${byFallback}  (without the rule: ${duringOutage} failures)`,
      `  cost of fallback answers:    ${displayUsd(fallbackCost)}  (${displayUsd(byFallback ? Math.round(fallbackCost / byFallback) : 0)} each)`,
      `  failed attempts billed:      ${displayUsd(byModel.get('openai/gpt-4o upstream_error')?.micros ?? 0)} over ${byModel.get('openai/gpt-4o upstream_error')?.n ?? 0} settled attempts`,
      `  ledger by model:             ${[...byModel.entries()].map(([k, v]) => `${k} ×${v.n} ${displayUsd(v.micros)}`).join('; ')}`,
    ];
    process.stdout.write(`${lines.join('\n')}\n`);
  } finally {
    await g.close();
  }
}

async function main(): Promise<void> {
  const dynamo = await startDynamoDbLocal({ port: 0, inMemory: true });
  const upstream = await startFakeUpstream();
  try {
    await supportBot(dynamo.endpoint, upstream);
    upstream.reset();
    await outage(dynamo.endpoint, upstream);
  } finally {
    await upstream.close();
    await dynamo.stop();
  }
}

void main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
