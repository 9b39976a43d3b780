/**
 * A cut answer is a failure, not an answer: an upstream that closes the connection cleanly before the end
 * marker of its stream (OpenAI chat `data: [DONE]` / a chunk with `finish_reason`, Anthropic `message_stop`,
 * Responses `response.completed`), or before the end of its JSON body. Raw fetch (as the SDKs send it) → the
 * local gateway → the fake upstream cutting its answer, every surface and the translations between them;
 * DynamoDB Local underneath. (Bedrock's cut ConverseStream rows are in stream-errors.e2e.test.ts.)
 *
 * Each row: before any output the caller gets a provider error in its dialect (and a route falls back); after
 * output the stream ends with an error event in the caller's dialect; the usage record says
 * `stream_incomplete` (a body cut mid-JSON: `upstream_error`), the call is charged (the reservation when the
 * provider reported no usage), and nothing is cached: the same request again reaches the provider.
 */
import { ManualClock } from '../../lambda/core/clock';
import type { FakeScript } from '../support/fake-upstream';
import { type Harness, startHarness } from '../support/gateway-harness';

jest.setTimeout(120_000);

const T0 = Date.UTC(2031, 5, 10, 10, 30, 0);
const ROUTES = {
  rules: [
    { name: 'resilient', alias: 'tollgate/resilient', models: ['openai/gpt-4o', 'anthropic/claude-haiku-4-5'] },
    { name: 'claude-first', alias: 'tollgate/claude-first', models: ['anthropic/claude-haiku-4-5', 'openai/gpt-4o-mini'] },
  ],
};
let h: Harness;
beforeAll(async () => {
  h = await startHarness({ clock: new ManualClock(T0), env: { TOLLGATE_ROUTES: JSON.stringify(ROUTES) } });
});
afterAll(async () => {
  await h?.close();
});
beforeEach(() => h.upstream.reset());

type Dialect = 'openai' | 'anthropic';

interface Surface {
  readonly name: string;
  readonly path: string;
  readonly dialect: Dialect;
  readonly model: string;
  readonly body: (model: string, text: string, stream: boolean) => Record<string, unknown>;
  /** Events the fake sends before the first text delta (its preamble), so `endAfterEvents` of it cuts before output. */
  readonly preamble: number;
  /** What a whole stream ends with in the caller's dialect (absent from a cut one). */
  readonly marker: RegExp;
  /** What the caller's stream ends with when cut after output. */
  readonly cutEvent: RegExp;
}

const chatBody = (model: string, text: string, stream: boolean) => ({ model, stream, messages: [{ role: 'user', content: text }], ...(stream ? { stream_options: { include_usage: true } } : {}) });
const messagesBody = (model: string, text: string, stream: boolean) => ({ model, stream, max_tokens: 1000, messages: [{ role: 'user', content: text }] });
const responsesBody = (model: string, text: string, stream: boolean) => ({ model, stream, input: text });

const SURFACES: Surface[] = [
  { name: 'OpenAI chat (gpt-4o-mini)', path: '/v1/chat/completions', dialect: 'openai', model: 'gpt-4o-mini', body: chatBody, preamble: 1, marker: /^data: \[DONE\]$/m, cutEvent: /data: \{"error":\{"message":"upstream openai ended the stream before data: \[DONE\]/ },
  { name: 'Anthropic messages (claude-haiku-4-5)', path: '/v1/messages', dialect: 'anthropic', model: 'claude-haiku-4-5', body: messagesBody, preamble: 3, marker: /^event: message_stop$/m, cutEvent: /event: error\ndata: \{"type":"error","error":\{"type":"api_error","message":"upstream anthropic ended the stream before message_stop/ },
  { name: 'Responses (gpt-4o-mini)', path: '/v1/responses', dialect: 'openai', model: 'gpt-4o-mini', body: responsesBody, preamble: 4, marker: /^event: response.completed$/m, cutEvent: /event: error\ndata: \{"type":"error","sequence_number":\d+,"code":"server_error","message":"upstream openai ended the stream before response.completed/ },
  { name: 'OpenAI chat translated to Claude', path: '/v1/chat/completions', dialect: 'openai', model: 'claude-haiku-4-5', body: chatBody, preamble: 3, marker: /^data: \[DONE\]$/m, cutEvent: /data: \{"error":\{"message":"upstream anthropic ended the stream before message_stop/ },
  { name: 'Anthropic messages translated to gpt-4o-mini', path: '/v1/messages', dialect: 'anthropic', model: 'gpt-4o-mini', body: messagesBody, preamble: 1, marker: /^event: message_stop$/m, cutEvent: /event: error\ndata: \{"type":"error","error":\{"type":"api_error","message":"upstream openai ended the stream before data: \[DONE\]/ },
  { name: 'Responses translated to Claude', path: '/v1/responses', dialect: 'openai', model: 'claude-haiku-4-5', body: responsesBody, preamble: 3, marker: /^event: response.completed$/m, cutEvent: /event: error\ndata: \{"type":"error","sequence_number":\d+,"code":"server_error","message":"upstream anthropic ended the stream before message_stop/ },
];

function post(raw: string, s: Surface, body: Record<string, unknown>): Promise<Response> {
  return fetch(`${h.url}${s.path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json', ...(s.dialect === 'anthropic' ? { 'anthropic-version': '2023-06-01' } : {}) },
    body: JSON.stringify(body),
  });
}

async function recordsOf(keyId: string): Promise<Record<string, unknown>[]> {
  await h.settled();
  return (await h.scan('usage')).filter((r) => r.keyId === keyId).sort((a, b) => String(a.sk).localeCompare(String(b.sk)));
}

/** The caller's error `{type, message}` in its dialect. */
function errorOf(s: Surface, body: Record<string, unknown>): { type: unknown; message: string } {
  const e = body.error as Record<string, unknown>;
  if (s.dialect === 'anthropic') expect(body.type).toBe('error');
  return { type: e.type, message: String(e.message) };
}

/** The same request again with the provider healthy: a miss that reaches it, never the failure replayed. */
async function notCached(raw: string, s: Surface, body: Record<string, unknown>, calls: number): Promise<void> {
  h.upstream.script({ replyText: 'Healthy now.' });
  const again = await post(raw, s, body);
  expect(again.status).toBe(200);
  expect(again.headers.get('x-tollgate-cache')).toBe('miss');
  expect(await again.text()).toContain('Healthy');
  expect(h.upstream.requests).toHaveLength(calls + 1);
  await h.settled(); // its settle runs after the answer was sent
  expect(await h.holds()).toHaveLength(0);
}

const id = (s: Surface) => s.name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();

describe.each(SURFACES)('$name', (s) => {
  it.each([
    { when: 'after its preamble', cut: (s: Surface): FakeScript => ({ endAfterEvents: s.preamble }), says: /ended the stream before/ },
    { when: 'with no event at all', cut: (): FakeScript => ({ endAfterEvents: 0 }), says: /empty stream|ended the stream before/ },
  ])('a stream cut $when (before any output): the provider error in the caller dialect, stream_incomplete, charged its reservation, not cached', async ({ cut, says }) => {
    const { raw, keyId } = await h.createKey({ userId: `cut-early-${id(s)}`.slice(0, 60), responseCache: true });
    const body = s.body(s.model, `cut early ${s.name} ${String(says)}`, true);
    h.upstream.script(cut(s));
    const res = await post(raw, s, body);
    expect(res.status).toBe(500);
    expect(res.headers.get('content-type')).toContain('application/json');
    const error = errorOf(s, (await res.json()) as Record<string, unknown>);
    expect(error.type).toBe(s.dialect === 'anthropic' ? 'api_error' : 'upstream_error');
    expect(error.message).toMatch(says);
    const [failed] = await recordsOf(keyId);
    expect(failed).toMatchObject({ outcome: 'stream_incomplete', costEstimated: true });
    expect(Number(failed!.costMicros)).toBeGreaterThan(0);
    await notCached(raw, s, body, 1);
  });

  it('a stream cut after output reached the caller: it ends with an error event in the caller dialect, stream_incomplete, charged, not cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: `cut-late-${id(s)}`.slice(0, 60), responseCache: true });
    const body = s.body(s.model, `cut late ${s.name}`, true);
    // The preamble and two text deltas, then the connection closes cleanly.
    h.upstream.script({ replyText: 'one two three four five six', endAfterEvents: s.preamble + 2 });
    const res = await post(raw, s, body);
    expect(res.status).toBe(200);
    const streamed = await res.text();
    expect(streamed).toContain(' two');
    expect(streamed).not.toContain(' three');
    expect(streamed).toMatch(s.cutEvent);
    expect(streamed).not.toMatch(s.marker);
    const [failed] = await recordsOf(keyId);
    expect(failed).toMatchObject({ outcome: 'stream_incomplete', costEstimated: true });
    expect(Number(failed!.costMicros)).toBeGreaterThan(0);
    await notCached(raw, s, body, 1);
  });

  it('a JSON answer cut mid-body: a 502 in the caller dialect, not ok, charged its reservation, not cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: `cut-json-${id(s)}`.slice(0, 60), responseCache: true });
    const body = s.body(s.model, `cut json ${s.name}`, false);
    h.upstream.script({ cutBodyAt: 60 });
    const res = await post(raw, s, body);
    expect(res.status).toBe(502);
    const error = errorOf(s, (await res.json()) as Record<string, unknown>);
    expect(error.type).toBe(s.dialect === 'anthropic' ? 'api_error' : 'upstream_error');
    expect(error.message).toMatch(/not JSON|before its answer ended/);
    const [failed] = await recordsOf(keyId);
    expect(failed).toMatchObject({ outcome: 'upstream_error', costEstimated: true });
    expect(Number(failed!.costMicros)).toBeGreaterThan(0);
    await notCached(raw, s, body, 1);
  });
});

it('an Anthropic stream cut after message_delta reported the output is charged at that usage, exactly', async () => {
  const { raw, keyId } = await h.createKey({ userId: 'cut-after-usage' });
  const s = SURFACES[1]!;
  // message_start, content_block_start, ping, 4 deltas, content_block_stop, message_delta; message_stop lost.
  h.upstream.script({ replyText: 'one two three four', usage: { inputTokens: 1000, outputTokens: 100 }, endAfterEvents: 9 });
  const res = await post(raw, s, s.body(s.model, 'cut after usage', true));
  expect(res.status).toBe(200);
  expect(await res.text()).toMatch(s.cutEvent);
  const [failed] = await recordsOf(keyId);
  // claude-haiku-4-5: $1 / $5 per million tokens.
  expect(failed).toMatchObject({ outcome: 'stream_incomplete', costMicros: 1000 + 500, costEstimated: false });
});

it('an OpenAI chat stream that finished (finish_reason) but lost [DONE] is a whole answer: ok, the caller gets [DONE]', async () => {
  const { raw, keyId } = await h.createKey({ userId: 'finished-no-done' });
  const s = SURFACES[0]!;
  // role chunk, 3 text chunks, the finish chunk; the usage chunk and [DONE] lost.
  h.upstream.script({ replyText: 'one two three', endAfterEvents: 5 });
  const res = await post(raw, s, s.body(s.model, 'finished without done', true));
  const streamed = await res.text();
  expect(streamed).toContain('"finish_reason":"stop"');
  expect(streamed.trimEnd().endsWith('data: [DONE]')).toBe(true);
  const [record] = await recordsOf(keyId);
  // No usage arrived: charged its reservation.
  expect(record).toMatchObject({ outcome: 'ok', costEstimated: true });
});

describe('fallback when nothing reached the caller', () => {
  it.each([
    { path: '/v1/chat/completions', alias: 'tollgate/resilient', from: 'openai/gpt-4o', to: 'anthropic/claude-haiku-4-5', dialect: 'openai' as Dialect, stream: true },
    { path: '/v1/messages', alias: 'tollgate/claude-first', from: 'anthropic/claude-haiku-4-5', to: 'openai/gpt-4o-mini', dialect: 'anthropic' as Dialect, stream: true },
    { path: '/v1/chat/completions', alias: 'tollgate/resilient', from: 'openai/gpt-4o', to: 'anthropic/claude-haiku-4-5', dialect: 'openai' as Dialect, stream: false },
  ])('$path stream=$stream: a cut answer from $from falls back to $to', async ({ path, alias, from, to, dialect, stream }) => {
    const { raw, keyId } = await h.createKey({ userId: `cut-fallback-${path.replace(/[^a-z]+/g, '-')}-${stream}` });
    const first = from.split('/')[1]!;
    h.upstream.scriptEach((b) => (String(b.model) === first ? (stream ? { endAfterEvents: 1 } : { cutBodyAt: 40 }) : { replyText: 'The fallback answered.' }));
    const surface = SURFACES.find((x) => x.path === path)!;
    const res = await post(raw, { ...surface, dialect }, surface.body(alias, 'cut then fall back', stream));
    expect(res.status).toBe(200);
    expect(res.headers.get('x-tollgate-model')).toBe(to);
    expect(res.headers.get('x-tollgate-fallback')).toMatch(new RegExp(`^fallback; from=${from}; to=${to}; reason=upstream_50[02]$`));
    expect(await res.text()).toMatch(/The.*fallback.*answered/s);
    const records = await recordsOf(keyId);
    expect(records.map((r) => [r.model, r.outcome])).toEqual(
      expect.arrayContaining([
        [from, stream ? 'stream_incomplete' : 'upstream_error'],
        [to, 'ok'],
      ]),
    );
  });
});
