/**
 * The response cache over real HTTP: the official SDKs (and plain fetch for raw headers and bytes) → the local
 * gateway → the fake upstream, DynamoDB Local underneath.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { randomBytes } from 'node:crypto';
import { ManualClock } from '../../lambda/core/clock';
import { type Harness, startHarness } from '../support/gateway-harness';

jest.setTimeout(90_000);

// Far in the future and mid-hour: no TTL can bite during the run and no window boundary splits it.
const T0 = Date.UTC(2031, 5, 10, 10, 30, 0);
const clock = new ManualClock(T0);
let h: Harness;
beforeAll(async () => {
  h = await startHarness({ clock, env: { TOLLGATE_CACHE_MAX_ITEM_BYTES: '8192' } });
});
afterAll(async () => {
  await h.close();
});
beforeEach(() => {
  h.upstream.reset();
  clock.set(T0);
});

const openai = (key: string, headers: Record<string, string> = {}) =>
  new OpenAI({ apiKey: key, baseURL: h.baseURL, maxRetries: 0, defaultHeaders: headers });

async function post(key: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${h.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

async function recordsOf(keyId: string): Promise<Record<string, unknown>[]> {
  await h.settled();
  return (await h.scan('usage')).filter((r) => r.keyId === keyId);
}

async function savings(): Promise<Record<string, number>> {
  await h.settled();
  const [day] = await h.gateway.cache.readSavings([new Date(T0).toISOString().slice(0, 10)]);
  return day as unknown as Record<string, number>;
}

const question = (text: string) => ({ model: 'gpt-4o-mini', messages: [{ role: 'user' as const, content: text }], temperature: 0 });

describe('response cache', () => {
  it('when a key with the cache on repeats a request, the second answer comes from the cache at $0 with the saved cost, and nothing is reserved or recorded', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'cache-a', responseCache: true });
    h.upstream.script({ replyText: 'Reset it from Settings.', usage: { inputTokens: 1000, outputTokens: 200 } });
    const before = await savings();
    const first = await openai(raw).chat.completions.create(question('How do I reset my password?')).withResponse();
    expect(first.response.headers.get('x-tollgate-cache')).toBe('miss');
    const cost = first.response.headers.get('x-tollgate-cost-usd');
    await h.settled();
    // The same request with its fields in another order and an end-user id that does not change the answer.
    const second = await post(raw, '/v1/chat/completions', '{"temperature":0,"user":"end-user-7","messages":[{"content":"How do I reset my password?","role":"user"}],"model":"gpt-4o-mini"}');
    expect(second.status).toBe(200);
    expect(second.headers.get('x-tollgate-cache')).toBe('hit');
    expect(second.headers.get('x-tollgate-cost-usd')).toBe('0.000000');
    expect(second.headers.get('x-tollgate-cache-saved-usd')).toBe(cost);
    expect(second.headers.get('x-tollgate-model')).toBe('openai/gpt-4o-mini');
    const body = (await second.json()) as { id: string; choices: Array<{ message: { content: string } }> };
    expect(body.id).toBe(first.data.id);
    expect(body.choices[0]!.message.content).toBe('Reset it from Settings.');
    expect(h.upstream.requests).toHaveLength(1);
    expect(await recordsOf(keyId)).toHaveLength(1);
    expect(await h.holds()).toHaveLength(0);
    const after = await savings();
    expect(after.cacheHits - before.cacheHits).toBe(1);
    expect(after.savedMicros - before.savedMicros).toBe(Math.round(Number(cost) * 1_000_000));
  });

  it('when another tenant sends the same request, it never gets the first tenant\'s answer; a user of the same organization does', async () => {
    const a = await h.createKey({ userId: 'org-user-1', orgId: 'acme', responseCache: true });
    const b = await h.createKey({ userId: 'org-user-2', orgId: 'acme', responseCache: true });
    const stranger = await h.createKey({ userId: 'stranger', responseCache: true });
    const other = await h.createKey({ userId: 'org-user-3', orgId: 'globex', responseCache: true });
    h.upstream.script({ replyText: 'acme internal answer' });
    await openai(a.raw).chat.completions.create(question('What is our refund policy?'));
    await h.settled();
    const sameOrg = await openai(b.raw).chat.completions.create(question('What is our refund policy?')).withResponse();
    expect(sameOrg.response.headers.get('x-tollgate-cache')).toBe('hit');
    h.upstream.script({ replyText: 'fresh answer' });
    for (const k of [stranger, other]) {
      const res = await openai(k.raw).chat.completions.create(question('What is our refund policy?')).withResponse();
      expect(res.response.headers.get('x-tollgate-cache')).toBe('miss');
      expect(res.data.choices[0]!.message.content).toBe('fresh answer');
    }
    expect(h.upstream.requests).toHaveLength(3);
  });

  it('when a parameter that changes the answer differs, it is a different entry', async () => {
    const { raw } = await h.createKey({ userId: 'cache-params', responseCache: true });
    await openai(raw).chat.completions.create(question('Same words'));
    await h.settled();
    const warmer = await openai(raw).chat.completions.create({ ...question('Same words'), temperature: 0.9 }).withResponse();
    const otherModel = await openai(raw).chat.completions.create({ ...question('Same words'), model: 'gpt-4o' }).withResponse();
    expect(warmer.response.headers.get('x-tollgate-cache')).toBe('miss');
    expect(otherModel.response.headers.get('x-tollgate-cache')).toBe('miss');
    expect(h.upstream.requests).toHaveLength(3);
  });

  it('when the key has the cache off, a request opts in with x-tollgate-cache: use, and Cache-Control: no-cache bypasses the lookup', async () => {
    const { raw } = await h.createKey({ userId: 'cache-header' });
    const plain = await openai(raw).chat.completions.create(question('opt in?')).withResponse();
    expect(plain.response.headers.get('x-tollgate-cache')).toBeNull();
    const use = { 'x-tollgate-cache': 'use' };
    expect((await openai(raw, use).chat.completions.create(question('opt in?')).withResponse()).response.headers.get('x-tollgate-cache')).toBe('miss');
    await h.settled();
    expect((await openai(raw, use).chat.completions.create(question('opt in?')).withResponse()).response.headers.get('x-tollgate-cache')).toBe('hit');
    const bypass = await openai(raw, { ...use, 'cache-control': 'no-cache' }).chat.completions.create(question('opt in?')).withResponse();
    expect(bypass.response.headers.get('x-tollgate-cache')).toBe('miss');
    expect(h.upstream.requests).toHaveLength(3);
    const bad = await post(raw, '/v1/chat/completions', question('opt in?'), { 'x-tollgate-cache': 'sometimes' });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('invalid_cache_header');
  });

  it('when a stored answer is older than the request\'s max-age or its TTL, the request goes to the provider', async () => {
    const { raw } = await h.createKey({ userId: 'cache-age', responseCache: true });
    await openai(raw, { 'cache-control': 'max-age=600' }).chat.completions.create(question('How old?'));
    await h.settled();
    clock.advance(120_000);
    const young = await openai(raw, { 'cache-control': 'max-age=300' }).chat.completions.create(question('How old?')).withResponse();
    expect(young.response.headers.get('x-tollgate-cache')).toBe('hit');
    expect(young.response.headers.get('x-tollgate-cache-age')).toBe('120');
    const strict = await openai(raw, { 'cache-control': 'max-age=60' }).chat.completions.create(question('How old?')).withResponse();
    expect(strict.response.headers.get('x-tollgate-cache')).toBe('miss');
    await h.settled();
    // That miss stored a fresh answer for 60 s: past it, the TTL has expired it.
    clock.advance(61_000);
    const expired = await openai(raw).chat.completions.create(question('How old?')).withResponse();
    expect(expired.response.headers.get('x-tollgate-cache')).toBe('miss');
  });

  it('when a hit would pass the key\'s request rate, it is refused with 429 like any request', async () => {
    const { raw } = await h.createKey({ userId: 'cache-rpm', responseCache: true, rpm: 2 });
    await openai(raw).chat.completions.create(question('rate?'));
    await h.settled();
    expect((await openai(raw).chat.completions.create(question('rate?')).withResponse()).response.headers.get('x-tollgate-cache')).toBe('hit');
    const third = await post(raw, '/v1/chat/completions', question('rate?'));
    expect(third.status).toBe(429);
    expect(third.headers.get('retry-after')).toBeTruthy();
    expect(h.upstream.requests).toHaveLength(1);
  });

  it('when a stream is repeated, the hit replays the same SSE bytes and the SDK reads the same text', async () => {
    const { raw } = await h.createKey({ userId: 'cache-stream', responseCache: true });
    h.upstream.script({ replyText: 'Streamed answer, word by word.' });
    const body = { ...question('stream it'), stream: true, stream_options: { include_usage: true } };
    const first = await post(raw, '/v1/chat/completions', body);
    const firstBytes = await first.text();
    expect(first.headers.get('x-tollgate-cache')).toBe('miss');
    await h.settled();
    const second = await post(raw, '/v1/chat/completions', body);
    expect(second.headers.get('x-tollgate-cache')).toBe('hit');
    expect(second.headers.get('content-type')).toContain('text/event-stream');
    // The same events, but for the tollgate annotation: the hit names its own request and costs $0.
    const withoutAnnotation = (sse: string) => sse.replace(/,"tollgate":\{[^}]*\}/g, '');
    const secondBytes = await second.text();
    expect(withoutAnnotation(secondBytes)).toBe(withoutAnnotation(firstBytes));
    expect(secondBytes).toContain(`"tollgate":{"cost_usd":"0.000000","request_id":"${second.headers.get('x-request-id')}"}`);
    const sdk = await openai(raw).chat.completions.create({ ...question('stream it'), stream: true, stream_options: { include_usage: true } });
    let text = '';
    for await (const chunk of sdk) text += chunk.choices[0]?.delta?.content ?? '';
    expect(text).toBe('Streamed answer, word by word.');
    expect(h.upstream.requests).toHaveLength(1);
  });

  it('when an Anthropic stream is repeated, the hit replays the Anthropic event sequence the SDK expects', async () => {
    const { raw } = await h.createKey({ userId: 'cache-anthropic', responseCache: true });
    h.upstream.script({ replyText: 'Bonjour from Claude.' });
    const client = new Anthropic({ apiKey: raw, baseURL: h.url, maxRetries: 0 });
    const ask = async () => {
      const stream = client.messages.stream({ model: 'claude-sonnet-4-6', max_tokens: 100, messages: [{ role: 'user', content: 'Say hello' }] });
      const final = await stream.finalMessage();
      return final;
    };
    const a = await ask();
    await h.settled();
    const b = await ask();
    expect(b.content).toEqual(a.content);
    expect(b.usage.output_tokens).toBe(a.usage.output_tokens);
    expect(h.upstream.requests).toHaveLength(1);
  });

  it('when an answer does not fit in a cache item, it is served but not stored, and counted as skipped', async () => {
    const { raw } = await h.createKey({ userId: 'cache-big', responseCache: true });
    // Random text does not compress: 12 KB of it cannot fit in the harness's 8 KB items.
    h.upstream.script({ replyText: randomBytes(9_000).toString('base64') });
    const before = await savings();
    const first = await openai(raw).chat.completions.create(question('big one')).withResponse();
    expect(first.response.headers.get('x-tollgate-cache')).toBe('miss');
    await h.settled();
    const second = await openai(raw).chat.completions.create(question('big one')).withResponse();
    expect(second.response.headers.get('x-tollgate-cache')).toBe('miss');
    expect((await savings()).cacheSkipped - before.cacheSkipped).toBe(2);
  });

  it('when the answer failed upstream, nothing is stored', async () => {
    const { raw } = await h.createKey({ userId: 'cache-fail', responseCache: true });
    h.upstream.script({ status: 400, errorMessage: 'bad' });
    expect((await post(raw, '/v1/chat/completions', question('fails'))).status).toBe(400);
    await h.settled();
    h.upstream.reset();
    const res = await openai(raw).chat.completions.create(question('fails')).withResponse();
    expect(res.response.headers.get('x-tollgate-cache')).toBe('miss');
  });
});

describe('local dashboard', () => {
  it('when the dashboard is asked over HTTP, it shows the cache hits, savings, fallbacks and billing drift of the window', async () => {
    const { createDashboardRoutes } = await import('../../lambda/local/dashboard/routes');
    const { createLocalServer } = await import('../../lambda/local/server');
    const { DynamoDbDriftStore } = await import('../../lambda/store/dynamodb/reconcile-store');
    const { silentLogger } = await import('../../lambda/core/log');
    const drift = new DynamoDbDriftStore(h.tables.client, { table: h.tables.tables.reconcile });
    const day = new Date(T0).toISOString().slice(0, 10);
    await drift.put([{ day, provider: 'openai', model: 'gpt-4o', ledgerMicros: 1_000_000, billedMicros: 3_500_000, driftMicros: 2_500_000, alarm: true }], { at: T0 });
    const { raw } = await h.createKey({ userId: 'cache-dash', responseCache: true });
    await openai(raw).chat.completions.create(question('dashboard?'));
    await h.settled();
    await openai(raw).chat.completions.create(question('dashboard?'));
    await h.settled();
    const server = createLocalServer({
      app: h.gateway.app,
      maxBodyBytes: h.config.maxBodyBytes,
      log: silentLogger,
      extraRoutes: createDashboardRoutes({ adminToken: 'dash-token', usage: h.gateway.usage, ledger: h.gateway.ledger, savings: h.gateway.cache, drift, clock, log: silentLogger }),
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const summary = (await (await fetch(`${base}/dashboard/summary.json?window=day`, { headers: { authorization: 'Bearer dash-token' } })).json()) as {
        savings: { cacheHits: number; savedMicros: number };
        drift: Array<{ provider: string; driftMicros: number }>;
      };
      expect(summary.savings.cacheHits).toBeGreaterThanOrEqual(1);
      expect(summary.savings.savedMicros).toBeGreaterThan(0);
      expect(summary.drift[0]).toMatchObject({ provider: 'openai', driftMicros: 2_500_000 });
      const html = await (await fetch(`${base}/dashboard?window=day`, { headers: { authorization: 'Bearer dash-token' } })).text();
      expect(html).toContain('data-testid="savings"');
      expect(html).toContain('data-testid="cache-hits"');
      expect(html).toMatch(/openai\/gpt-4o<\/strong> ledger \$1\.00 · billed \$3\.50/);
    } finally {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
