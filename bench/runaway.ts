/**
 * Replays the runaway shapes of issue 10 against the local gateway with DEFAULT settings (a key made with no
 * flags, nothing configured): an agent classifying a ~4,000-token ticket with openai/o1-pro ($150 / $600 per
 * million tokens) gets "Classification failed - no result" back (~4,300 output tokens, ~$3.18 a call) and
 * retries at once, ignoring every refusal, for 60 s or 300 attempts:
 *
 *   1. identical retries                                 the same body again and again
 *   2. growing conversation                              each retry carries the failed turn (the ReAct shape)
 *   3. 8 parallel growing loops on one key               8 workers, 38 attempts each
 *   4. one user rotating 3 keys, growing                 attempt i through key i mod 3
 *   5. slow overnight drip                               891 identical attempts, one every 40 s, on a simulated
 *                                                        clock that starts at the next UTC midnight after now
 *                                                        (so DynamoDB Local's TTL can never expire its items)
 *
 * Then a false-positive workload that must pass untouched: a 40-turn chat, 50 distinct classifications (5 at
 * a time), an agent that succeeds in 12 tool calls, and 40 embeddings (8 at a time), one user each.
 *
 * Prints per shape: calls that reached the provider, dollars recorded, time until stopped, alerts raised.
 *
 *   npm run bench:runaway
 */
import type { AddressInfo } from 'node:net';
import { createGateway, type Gateway } from '../lambda/compose';
import { loadConfig } from '../lambda/config';
import { type Clock, ManualClock, systemClock } from '../lambda/core/clock';
import { createApiKey } from '../lambda/core/key-admin';
import { silentLogger } from '../lambda/core/log';
import { displayUsd } from '../lambda/core/money';
import { startDynamoDbLocal } from '../lambda/local/dynamodb-local';
import { createLocalServer } from '../lambda/local/server';
import { createDynamoDbClient } from '../lambda/store/dynamodb/client';
import { ensureTables } from '../lambda/store/dynamodb/create-tables';
import { type FakeScript, type FakeUpstream, startFakeUpstream } from '../test/support/fake-upstream';

const FAILED_ANSWER = 'Classification failed - no result';
const OUTPUT_TOKENS = 4_300;
/** ~4,000 tokens by the gateway's estimate (UTF-8 bytes ÷ 3). */
const TICKET = `Classify the following support ticket into one of: billing, shipping, refund, other.\n${'The customer writes about an order. '.repeat(340)}`;
const REAL_TIME_LIMIT_MS = 60_000;
const DAY_MS = 86_400_000;

type Message = { role: string; content: string | null; tool_calls?: unknown[]; tool_call_id?: string };

interface Env {
  readonly dynamoEndpoint: string;
  readonly upstream: FakeUpstream;
}

interface Bench {
  readonly gw: Gateway;
  readonly url: string;
  newKey(userId: string): Promise<{ raw: string; keyId: string }>;
  close(): Promise<void>;
}

async function startGateway(env: Env, stage: string, clock: Clock): Promise<Bench> {
  const config = loadConfig({ TOLLGATE_STAGE: stage, OPENAI_BASE_URL: env.upstream.openaiBaseUrl, ...(process.env.TOLLGATE_LEASES ? { TOLLGATE_LEASES: process.env.TOLLGATE_LEASES } : {}) });
  const dynamodb = createDynamoDbClient({ region: 'us-east-1', endpoint: env.dynamoEndpoint });
  await ensureTables(dynamodb, config.tables);
  const gw = createGateway({ config, secrets: { keyPepper: 'bench', openaiApiKey: 'sk-bench' }, dynamodb, log: silentLogger, clock });
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
  return {
    gw,
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    newKey: async (userId) => {
      const { raw, record } = await createApiKey(gw, { userId }, { pepper: 'bench', clock });
      return { raw, keyId: record.keyId };
    },
    close: async () => {
      while (pending.size > 0) await Promise.allSettled([...pending]);
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The fake o1-pro: a failed classification, billed like the real one, honouring the cap it was sent. */
function failingClassifier(body: Record<string, unknown>): FakeScript {
  const cap = typeof body.max_completion_tokens === 'number' ? body.max_completion_tokens : typeof body.max_tokens === 'number' ? body.max_tokens : OUTPUT_TOKENS;
  return { replyText: FAILED_ANSWER, usage: { inputTokens: 4_000, outputTokens: Math.min(OUTPUT_TOKENS, cap) } };
}

async function post(url: string, key: string, body: unknown): Promise<{ status: number; code?: string; body: unknown }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` }, body: JSON.stringify(body) });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = text;
  }
  const code = res.status === 200 ? undefined : ((parsed as { error?: { code?: string } })?.error?.code ?? undefined);
  return { status: res.status, ...(code ? { code } : {}), body: parsed };
}

interface ShapeResult {
  readonly label: string;
  readonly attempts: number;
  readonly reached: number;
  readonly spentMicros: number;
  /** Seconds from the first attempt until the last call that reached the provider had been answered. */
  readonly secondsToStop: number | undefined;
  readonly alerts: string[];
  readonly responses: Record<string, number>;
}

interface Attempt {
  readonly at: number;
  readonly status: number;
  readonly code?: string;
}

/** Runs one loop shape: `workers` clients, each sending `next(worker, i)` until refused attempts run out. */
async function runShape(
  env: Env,
  options: {
    readonly label: string;
    readonly stage: string;
    readonly clock: Clock;
    readonly keys: number;
    readonly workers: number;
    readonly attemptsPerWorker: number;
    /** Simulated gap between attempts (drip); 0 = retry at once, real time. */
    readonly gapMs: number;
    readonly growing: boolean;
  },
): Promise<ShapeResult> {
  const { upstream } = env;
  const bench = await startGateway(env, options.stage, options.clock);
  const userId = `agent-${options.stage}`;
  const keys: Array<{ raw: string; keyId: string }> = [];
  for (let k = 0; k < options.keys; k++) keys.push(await bench.newKey(userId));
  upstream.reset();
  upstream.scriptEach(failingClassifier);
  const startedReal = Date.now();
  const startedClock = options.clock.now();
  const attempts: Attempt[] = [];
  let sent = 0;
  const worker = async (w: number) => {
    const messages: Message[] = [{ role: 'user', content: `${TICKET}\nTicket #${w + 1}.` }];
    for (let i = 0; i < options.attemptsPerWorker; i++) {
      if (options.gapMs === 0 && Date.now() - startedReal > REAL_TIME_LIMIT_MS) return;
      const key = keys[sent++ % keys.length]!;
      const r = await post(`${bench.url}/v1/chat/completions`, key.raw, { model: 'o1-pro', messages });
      attempts.push({ at: options.gapMs > 0 ? options.clock.now() - startedClock : Date.now() - startedReal, status: r.status, ...(r.code ? { code: r.code } : {}) });
      if (options.growing && r.status === 200) {
        messages.push({ role: 'assistant', content: FAILED_ANSWER }, { role: 'user', content: 'That did not work. Classify the ticket again.' });
      }
      if (options.gapMs > 0 && options.clock instanceof ManualClock) options.clock.advance(options.gapMs);
    }
  };
  await Promise.all(Array.from({ length: options.workers }, (_, w) => worker(w)));
  await bench.close();
  const records = [];
  for (const k of keys) {
    records.push(...(await bench.gw.usage.query({ by: 'key', id: k.keyId, from: '2000-01-01T00:00:00.000Z', to: '2200-01-01T00:00:00.000Z' })));
  }
  const sinceMs = Math.min(startedClock, Date.now()) - 60_000;
  const alerts = (await bench.gw.guardrails.listAlerts(sinceMs))
    .filter((a) => a.scope.includes(userId) || keys.some((k) => a.scope.includes(k.keyId)) || a.scope === 'platform')
    .map((a) => `${a.type} ${a.scope.replace(/key:[^ ]+/, 'key:…')}`);
  const lastOk = attempts.reduce((last, a) => (a.status === 200 ? Math.max(last, a.at) : last), -1);
  const refusedAfter = attempts.some((a) => a.status !== 200 && a.at >= lastOk);
  const responses: Record<string, number> = {};
  for (const a of attempts) {
    const k = a.code ? `${a.status} ${a.code}` : String(a.status);
    responses[k] = (responses[k] ?? 0) + 1;
  }
  return {
    label: options.label,
    attempts: attempts.length,
    reached: upstream.requests.length,
    spentMicros: records.reduce((sum, r) => sum + r.costMicros, 0),
    secondsToStop: refusedAfter ? Math.max(0, lastOk) / 1000 : undefined,
    alerts,
    responses,
  };
}

/** A long chat, a batch of distinct classifications, an agent that succeeds, parallel embeddings. */
async function falsePositives(env: Env): Promise<Array<{ label: string; requests: number; refused: number; detail: string }>> {
  const bench = await startGateway(env, 'bench-fp', systemClock);
  const { upstream } = env;
  upstream.reset();
  upstream.scriptEach((body) => {
    const messages = (body.messages ?? []) as Message[];
    const last = messages[messages.length - 1];
    const tools = messages.filter((m) => m.role === 'tool').length;
    if (Array.isArray(body.tools)) {
      if (tools < 12) {
        return { replyText: 'Recording it.', toolCall: { id: `call_${tools + 1}`, name: 'record_output', input: { item: tools + 1, value: tools % 2 ? 'positive' : 'negative' } } };
      }
      return { replyText: 'All 12 reviews are classified and recorded.' };
    }
    return { replyText: `Answer to "${String(last?.content ?? '').slice(0, 60)}": here is what I found.`, usage: { inputTokens: 200 + messages.length * 60, outputTokens: 120 } };
  });
  const out: Array<{ label: string; requests: number; refused: number; detail: string }> = [];
  const tally = (label: string, results: Array<{ status: number; code?: string; body?: unknown }>) => {
    const refused = results.filter((r) => r.status !== 200);
    if (process.env.BENCH_VERBOSE) for (const r of refused) process.stderr.write(`${label}: ${JSON.stringify(r.body)}\n`);
    out.push({ label, requests: results.length, refused: refused.length, detail: refused.map((r) => `${r.status} ${r.code ?? ''}`).join(', ') });
  };

  // A 40-turn chat that keeps its history.
  const chatKey = await bench.newKey('fp-chat');
  const chat: Message[] = [{ role: 'system', content: 'You are a helpful assistant.' }];
  const chatResults = [];
  for (let turn = 1; turn <= 40; turn++) {
    chat.push({ role: 'user', content: `Question ${turn}: tell me about topic number ${turn} in our product roadmap.` });
    const r = await post(`${bench.url}/v1/chat/completions`, chatKey.raw, { model: 'gpt-4o', messages: chat });
    chatResults.push(r);
    const reply = (r.body as { choices?: Array<{ message?: { content?: string } }> }).choices?.[0]?.message?.content ?? '';
    chat.push({ role: 'assistant', content: reply });
  }
  tally('long chat session (40 turns, gpt-4o, growing history)', chatResults);

  // 50 distinct tickets, 5 at a time, no max_tokens.
  const batchKey = await bench.newKey('fp-batch');
  const tickets = Array.from({ length: 50 }, (_, i) => `Classify ticket ${i + 1}: ${['my card was charged twice', 'the parcel never arrived', 'I want my money back', 'how do I change my address', 'the app crashes on login'][i % 5]} (order ${1000 + i}, customer ${['Ann', 'Bo', 'Cy', 'Di', 'Ed', 'Flo', 'Gus', 'Hal', 'Ida', 'Jo'][i % 10]})`);
  const batchResults: Array<{ status: number; code?: string }> = [];
  for (let i = 0; i < tickets.length; i += 5) {
    batchResults.push(...(await Promise.all(tickets.slice(i, i + 5).map((t) => post(`${bench.url}/v1/chat/completions`, batchKey.raw, { model: 'gpt-4o-mini', messages: [{ role: 'user', content: t }] })))));
  }
  tally('batch of 50 distinct classifications (gpt-4o-mini, 5 at a time)', batchResults);

  // An agent that makes progress: 12 record_output calls (same "recorded" result, different arguments), then done.
  const agentKey = await bench.newKey('fp-agent');
  const agent: Message[] = [{ role: 'system', content: 'Classify each review, record each result.' }, { role: 'user', content: 'Classify the 12 reviews.' }];
  const tools = [{ type: 'function', function: { name: 'record_output', parameters: { type: 'object', properties: {} } } }];
  const agentResults = [];
  for (let step = 0; step < 14; step++) {
    const r = await post(`${bench.url}/v1/chat/completions`, agentKey.raw, { model: 'gpt-4o', messages: agent, tools });
    agentResults.push(r);
    const msg = (r.body as { choices?: Array<{ message?: Message & { tool_calls?: Array<{ id: string }> } }> }).choices?.[0]?.message;
    if (!msg?.tool_calls?.length) break;
    agent.push({ role: 'assistant', content: msg.content, tool_calls: msg.tool_calls });
    for (const c of msg.tool_calls) agent.push({ role: 'tool', tool_call_id: c.id, content: 'recorded' });
  }
  tally(`agent that succeeds (${agentResults.length} steps, 12 tool calls, gpt-4o)`, agentResults);

  // 40 embeddings, 8 at a time.
  const embedKey = await bench.newKey('fp-embed');
  const embedResults: Array<{ status: number; code?: string }> = [];
  for (let i = 0; i < 40; i += 8) {
    embedResults.push(
      ...(await Promise.all(
        Array.from({ length: 8 }, (_, j) => post(`${bench.url}/v1/embeddings`, embedKey.raw, { model: 'text-embedding-3-small', input: `document ${i + j}: section about topic ${i + j}` })),
      )),
    );
  }
  tally('parallel embeddings (40, 8 at a time)', embedResults);
  await bench.close();
  return out;
}

function nextUtcMidnight(now: number): number {
  return (Math.floor(now / DAY_MS) + 1) * DAY_MS;
}

async function main(): Promise<void> {
  const dynamo = await startDynamoDbLocal({ port: 0, inMemory: true });
  const upstream = await startFakeUpstream();
  const env: Env = { dynamoEndpoint: dynamo.endpoint, upstream };
  try {
    process.stdout.write('Runaway shapes against default settings (o1-pro, ~4,000 tokens in / ~4,300 out, "Classification failed - no result")\n\n');
    const results: ShapeResult[] = [];
    const onlyFalsePositives = process.argv.includes('--false-positives');
    const shape = async (o: Parameters<typeof runShape>[1]) => {
      const r = await runShape(env, o);
      results.push(r);
      process.stdout.write(`  ${r.label}: ${r.reached} reached, ${displayUsd(r.spentMicros)}\n`);
    };
    if (!onlyFalsePositives) await shape({ label: 'identical retries', stage: 'bench-identical', clock: systemClock, keys: 1, workers: 1, attemptsPerWorker: 300, gapMs: 0, growing: false });
    if (!onlyFalsePositives) await shape({ label: 'growing conversation', stage: 'bench-growing', clock: systemClock, keys: 1, workers: 1, attemptsPerWorker: 300, gapMs: 0, growing: true });
    if (!onlyFalsePositives) await shape({ label: '8 parallel growing loops, one key', stage: 'bench-parallel', clock: systemClock, keys: 1, workers: 8, attemptsPerWorker: 38, gapMs: 0, growing: true });
    if (!onlyFalsePositives) await shape({ label: 'one user rotating 3 keys, growing', stage: 'bench-rotate', clock: systemClock, keys: 3, workers: 1, attemptsPerWorker: 300, gapMs: 0, growing: true });
    // The simulated night starts at the next UTC midnight: derived from now, so no TTL can have expired it.
    const night = new ManualClock(nextUtcMidnight(Date.now()));
    if (!onlyFalsePositives) await shape({ label: 'slow overnight drip (891 × every 40 s, simulated)', stage: 'bench-drip', clock: night, keys: 1, workers: 1, attemptsPerWorker: 891, gapMs: 40_000, growing: false });

    if (results.length > 0) {
    const rows = results.map((r) => ({
      shape: r.label,
      attempts: String(r.attempts),
      'reached provider': String(r.reached),
      spent: displayUsd(r.spentMicros),
      'stopped after': r.secondsToStop === undefined ? 'never' : `${r.secondsToStop.toFixed(r.secondsToStop >= 100 ? 0 : 2)} s`,
      alerts: r.alerts.length ? r.alerts.join('; ') : '—',
    }));
    process.stdout.write(`\n${table(rows)}\n\nresponses:\n${results.map((r) => `  ${r.label}: ${Object.entries(r.responses).map(([k, v]) => `${k}×${v}`).join(', ')}`).join('\n')}\n`);
    const worst = Math.max(...results.map((r) => r.spentMicros));
    process.stdout.write(`\nworst shape: ${displayUsd(worst)} (target ≤ $20, goal ≤ $5)\n`);
    }

    process.stdout.write('\nFalse-positive workload (must pass untouched):\n');
    const fp = await falsePositives(env);
    process.stdout.write(
      `${table(fp.map((f) => ({ workload: f.label, requests: String(f.requests), 'refused (false positives)': String(f.refused), detail: f.detail || '—' })))}\n`,
    );
    process.stdout.write(`\nfalse positives: ${fp.reduce((a, f) => a + f.refused, 0)} of ${fp.reduce((a, f) => a + f.requests, 0)} requests\n`);
  } finally {
    await upstream.close();
    await dynamo.stop();
  }
}

function table(rows: ReadonlyArray<Record<string, string>>): string {
  const cols = Object.keys(rows[0] ?? {});
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: readonly string[]) => `| ${cells.map((c, i) => c.padEnd(width[i]!)).join(' | ')} |`;
  return [line(cols), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => r[c] ?? '')))].join('\n');
}

void main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
