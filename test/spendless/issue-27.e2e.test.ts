/**
 * Issue 27's five findings replayed as the issue tried them, over real HTTP (fetch, as the SDKs send it → the
 * local gateway with its defaults → the fake upstream; DynamoDB Local underneath), one test per finding (the
 * fifth, `reconcile --json`, is the CLI in its own process: reconcile-cli.test.ts). Each asserts what the
 * caller and the ledger see now; `ISSUE27_REPORT=1 npx jest test/spendless/issue-27.e2e.test.ts` also prints
 * the observed lines (the "after" of the issue's closing note).
 */
import { ManualClock } from '../../lambda/core/clock';
import { type Harness, startHarness } from '../support/gateway-harness';

jest.setTimeout(120_000);

const T0 = Date.UTC(2031, 5, 10, 10, 30, 0);
const ROUTES = {
  rules: [
    { name: 'gpt-then-sonnet', alias: 'tollgate/gpt-then-sonnet', models: ['openai/gpt-4o', 'anthropic/claude-sonnet-4-5'] },
    { name: 'sonnet-then-gpt', alias: 'tollgate/sonnet-then-gpt', models: ['anthropic/claude-sonnet-4-5', 'openai/gpt-4o'] },
  ],
};
let h: Harness;
const observed: string[] = [];
const note = (line: string) => observed.push(line);

beforeAll(async () => {
  // The loop guard and the cache at their defaults (the issue's setup); only the routes are configured.
  h = await startHarness({ clock: new ManualClock(T0), env: { TOLLGATE_ROUTES: JSON.stringify(ROUTES) } });
});
afterAll(async () => {
  await h?.close();
  if (process.env.ISSUE27_REPORT === '1') process.stdout.write(`\nissue 27, observed now:\n${observed.map((l) => `  ${l}`).join('\n')}\n`);
});
beforeEach(() => h.upstream.reset());

function post(raw: string, path: string, body: Record<string, unknown>, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${h.url}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });
}
const ANTHROPIC = { 'anthropic-version': '2023-06-01' };
const sse = (data: unknown, event?: string) => `${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`;

async function recordsOf(keyIds: readonly string[]): Promise<Record<string, unknown>[]> {
  await h.settled();
  return (await h.scan('usage')).filter((r) => keyIds.includes(String(r.keyId))).sort((a, b) => String(a.sk).localeCompare(String(b.sk)));
}

describe('finding 1: an error inside a 200 stream is a failure, never cached or replayed to the org', () => {
  it('OpenAI chat `data: {"error":…server_error}`: three keys of one org each reach the upstream and get the error, never a hit', async () => {
    const keys = await Promise.all([0, 1, 2].map((i) => h.createKey({ userId: `f1-user-${i}`, orgId: 'f1-org', responseCache: true })));
    const error = sse({ error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } });
    h.upstream.script({ midStreamEvent: () => error, endAfterEvents: 1 });
    const body = { model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'Where is my parcel?' }] };
    const answers = [];
    for (const k of keys) {
      const res = await post(k.raw, '/v1/chat/completions', body);
      answers.push({ status: res.status, cache: res.headers.get('x-tollgate-cache'), body: (await res.json()) as { error: { message: string } } });
    }
    expect(answers.map((a) => a.status)).toEqual([500, 500, 500]);
    expect(answers.map((a) => a.cache)).not.toContain('hit');
    expect(h.upstream.requests).toHaveLength(3);
    const records = await recordsOf(keys.map((k) => k.keyId));
    expect(records.map((r) => r.outcome)).toEqual(['upstream_error', 'upstream_error', 'upstream_error']);
    expect(records.every((r) => Number(r.costMicros) > 0)).toBe(true);
    note(`1a OpenAI error event: 3 keys of one org -> statuses ${answers.map((a) => a.status).join('/')}, cache ${answers.map((a) => a.cache).join('/')}, ` +
      `${h.upstream.requests.length} upstream calls, outcomes ${records.map((r) => r.outcome).join('/')}, charged ${records.map((r) => r.costMicros).join('/')} µ$ (reservation, costEstimated ${records[0]!.costEstimated})`);
  });

  it('Anthropic `event: error` overloaded_error on /v1/messages: a 529 overloaded_error, not ok, not cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'f1-anthropic', responseCache: true });
    h.upstream.script({ midStreamEvent: () => sse({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }, 'error'), endAfterEvents: 1 });
    const body = { model: 'claude-sonnet-4-5', stream: true, max_tokens: 1000, messages: [{ role: 'user', content: 'Where is my parcel?' }] };
    const res = await post(raw, '/v1/messages', body, ANTHROPIC);
    const json = (await res.json()) as { type: string; error: { type: string } };
    expect(res.status).toBe(529);
    expect(json.error.type).toBe('overloaded_error');
    const [failed] = await recordsOf([keyId]);
    expect(failed!.outcome).toBe('upstream_error');
    h.upstream.script({ replyText: 'Healthy.' });
    const again = await post(raw, '/v1/messages', body, ANTHROPIC);
    expect(again.headers.get('x-tollgate-cache')).toBe('miss');
    await again.text();
    note(`1b Anthropic event: error overloaded_error -> ${res.status} ${json.error.type}, outcome ${failed!.outcome}, same request again: cache ${again.headers.get('x-tollgate-cache')}`);
  });

  it('/v1/chat/completions to Claude whose stream errors before any token: an error JSON in the OpenAI dialect, not an empty 200', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'f1-chat-claude' });
    h.upstream.script({ midStreamEvent: () => sse({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }, 'error'), endAfterEvents: 1 });
    const res = await post(raw, '/v1/chat/completions', { model: 'claude-sonnet-4-5', stream: true, messages: [{ role: 'user', content: 'Hello?' }] });
    expect(res.status).toBeGreaterThanOrEqual(500);
    const json = (await res.json()) as { error: { type: string; message: string } };
    expect(json.error.message).toMatch(/Overloaded/);
    const [failed] = await recordsOf([keyId]);
    expect(failed!.outcome).not.toBe('ok');
    note(`1c chat -> Claude error event: ${res.status} ${json.error.type} "${json.error.message}", outcome ${failed!.outcome}, charged ${failed!.costMicros} µ$`);
  });

  it('a stream cut before its end marker (no [DONE]) is a failure too: not ok, not cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'f1-cut', responseCache: true });
    h.upstream.script({ replyText: 'one two three four', endAfterEvents: 3 });
    const body = { model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'Count to four.' }] };
    const res = await post(raw, '/v1/chat/completions', body);
    const text = await res.text();
    expect(text).toMatch(/ended the stream before data: \[DONE\]/);
    const [failed] = await recordsOf([keyId]);
    expect(failed!.outcome).toBe('stream_incomplete');
    h.upstream.script({ replyText: 'Healthy.' });
    const again = await post(raw, '/v1/chat/completions', body);
    expect(again.headers.get('x-tollgate-cache')).toBe('miss');
    await again.text();
    note(`1d cut stream (no [DONE]) after 2 tokens -> 200 ending with an error chunk, outcome ${failed!.outcome}, charged ${failed!.costMicros} µ$ (estimated ${failed!.costEstimated}), same request again: cache ${again.headers.get('x-tollgate-cache')}`);
  });
});

describe('finding 2: the loop guard does not block a fallback', () => {
  it('gpt-4o answering 503 with claude-sonnet healthy behind it, the same body 8 times (loop guard defaults)', async () => {
    const { raw } = await h.createKey({ userId: 'f2-user' });
    h.upstream.scriptEach((b) => (String(b.model).startsWith('gpt-4o') ? { status: 503, errorMessage: 'overloaded' } : { replyText: 'Sonnet answered.' }));
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i++) {
      const res = await post(raw, '/v1/chat/completions', { model: 'tollgate/gpt-then-sonnet', max_tokens: 500, messages: [{ role: 'user', content: 'Summarise ticket 42.' }] });
      const json = (await res.json()) as { error?: { message: string } };
      outcomes.push(res.status === 200 ? `200 ${res.headers.get('x-tollgate-model')}` : `${res.status} ${json.error?.message.slice(0, 60)}`);
      await h.settled();
    }
    // No request is refused for a failure streak: the fallback answered each one. The repeat bound (5 identical
    // requests per 10 minutes, the README's) still applies to the caller's own repeats.
    expect(outcomes.slice(0, 5)).toEqual(Array(5).fill('200 anthropic/claude-sonnet-4-5'));
    expect(outcomes.join('\n')).not.toMatch(/failed upstream/);
    note(`2 gpt-4o 503 + sonnet healthy, same body x8 (defaults): ${outcomes.map((o, i) => `#${i + 1} ${o}`).join('; ')}`);
  });
});

describe('finding 3: fallback across dialects', () => {
  it('/v1/messages with sonnet answering 503 and an OpenAI model next: GPT-4o answers in the Anthropic dialect', async () => {
    const { raw } = await h.createKey({ userId: 'f3-user' });
    h.upstream.scriptEach((b) => (String(b.model).startsWith('claude') ? { status: 503, errorMessage: 'overloaded' } : { replyText: 'GPT answered.' }));
    const res = await post(raw, '/v1/messages', { model: 'tollgate/sonnet-then-gpt', max_tokens: 500, messages: [{ role: 'user', content: 'Hello' }] }, ANTHROPIC);
    const json = (await res.json()) as { type: string; content: Array<{ text: string }> };
    expect(res.status).toBe(200);
    expect(json.type).toBe('message');
    expect(json.content[0]!.text).toBe('GPT answered.');
    expect(res.headers.get('x-tollgate-model')).toBe('openai/gpt-4o');
    note(`3 /v1/messages, sonnet 503 -> gpt-4o: ${res.status} type ${json.type} "${json.content[0]!.text}", ${res.headers.get('x-tollgate-fallback')}`);
  });
});

describe('finding 4: identical requests at once', () => {
  it('10 copies from one user at once: 3 reach the upstream, 7 are refused as copies in flight (retry helps), none as failures', async () => {
    const { raw } = await h.createKey({ userId: 'f4-user' });
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    h.upstream.script({ replyText: 'Answered.', until: held });
    const answered: (Response | undefined)[] = Array(10).fill(undefined);
    const body = { model: 'gpt-4o-mini', max_tokens: 200, messages: [{ role: 'user', content: 'What is the status of order 7?' }] };
    const pending = Array.from({ length: 10 }, (_, i) => post(raw, '/v1/chat/completions', body).then((r) => (answered[i] = r)));
    const refused = () => answered.filter((r) => r?.status === 429) as Response[];
    try {
      while (refused().length + h.upstream.requests.length < 10) await new Promise((r) => setTimeout(r, 10));
    } finally {
      setTimeout(release, 60_000).unref();
    }
    const upstreamCalls = h.upstream.requests.length;
    const messages = await Promise.all(refused().map(async (r) => ({ retry: r.headers.get('x-should-retry'), message: ((await r.json()) as { error: { message: string } }).error.message })));
    release();
    await Promise.all(pending);
    await h.settled();
    expect(upstreamCalls).toBe(3);
    expect(messages).toHaveLength(7);
    expect(messages.every((m) => m.retry === 'true' && /identical copies of this request are in flight/.test(m.message))).toBe(true);
    note(`4a 10 copies at once, one user: ${upstreamCalls} upstream calls, ${messages.length} x 429 x-should-retry ${messages[0]!.retry} "${messages[0]!.message.slice(0, 70)}…"`);
  });

  it('8 users of one org at once with the cache on: one upstream call, 7 hits at $0', async () => {
    const keys = await Promise.all(Array.from({ length: 8 }, (_, i) => h.createKey({ userId: `f4-org-user-${i}`, orgId: 'f4-org', responseCache: true })));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    h.upstream.script({ replyText: 'Our refund policy is 30 days.', until: held });
    const body = { model: 'gpt-4o-mini', max_tokens: 200, messages: [{ role: 'user', content: 'What is the refund policy?' }] };
    const pending = keys.map((k) => post(k.raw, '/v1/chat/completions', body).then(async (r) => ({ cache: r.headers.get('x-tollgate-cache'), text: await r.text() })));
    while (h.upstream.requests.length < 1) await new Promise((r) => setTimeout(r, 10));
    release();
    const results = await Promise.all(pending);
    expect(h.upstream.requests).toHaveLength(1);
    expect(results.filter((r) => r.cache === 'hit')).toHaveLength(7);
    note(`4b 8 users of one org at once, cache on: ${h.upstream.requests.length} upstream call, ${results.filter((r) => r.cache === 'hit').length} hits, ${results.filter((r) => r.cache === 'miss').length} miss`);
  });
});
