/**
 * An error inside a 200 stream is a failure, for every provider's stream shape: raw fetch (and the SDKs' wire
 * format) → the local gateway → the fake upstream answering 200 then the provider's error event, as OpenAI chat,
 * Anthropic and Responses do, and the real Bedrock Runtime client → a fake Bedrock over HTTP sending
 * ConverseStream's binary event stream with an exception inside it, cut short, or empty; DynamoDB Local
 * underneath.
 */
import { ManualClock } from '../../lambda/core/clock';
import { type BedrockStreamException, type FakeBedrock, type FakeBedrockScript, startFakeBedrock } from '../support/fake-bedrock';
import { type Harness, startHarness } from '../support/gateway-harness';

jest.setTimeout(120_000);

const T0 = Date.UTC(2031, 5, 10, 10, 30, 0);
const BEDROCK_MODEL = 'bedrock/amazon.nova-lite-v1:0';
const ROUTES = {
  rules: [
    { name: 'resilient', alias: 'tollgate/resilient', models: ['openai/gpt-4o', 'anthropic/claude-haiku-4-5'] },
    { name: 'bedrock-first', alias: 'tollgate/bedrock-first', models: [BEDROCK_MODEL, 'openai/gpt-4o-mini'] },
  ],
};
let h: Harness;
let bedrock: FakeBedrock;
beforeAll(async () => {
  bedrock = await startFakeBedrock();
  h = await startHarness({
    clock: new ManualClock(T0),
    env: { TOLLGATE_ROUTES: JSON.stringify(ROUTES), TOLLGATE_BEDROCK: 'true', TOLLGATE_BEDROCK_REGION: 'us-east-1' },
    gateway: { bedrockClient: bedrock.client() },
  });
});
afterAll(async () => {
  await h?.close();
  await bedrock?.close();
});
beforeEach(() => {
  h.upstream.reset();
  bedrock.reset();
});

const sse = (data: unknown, event?: string) => `${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`;

interface Shape {
  readonly name: string;
  readonly id: string;
  readonly path: string;
  readonly body: (text: string) => Record<string, unknown>;
  readonly headers: Record<string, string>;
  /** The error event exactly as the provider writes it. */
  readonly event: string;
  readonly status: number;
  /** The caller's error body, in its dialect. */
  readonly error: (body: Record<string, unknown>) => { type: unknown; message: unknown };
  readonly expected: { type: string; message: string };
}

const openaiError = (b: Record<string, unknown>) => {
  const e = b.error as Record<string, unknown>;
  return { type: e.type, message: e.message };
};

const SHAPES: Shape[] = [
  {
    name: 'OpenAI chat: data: {"error":{…server_error}}',
    id: 'chat',
    path: '/v1/chat/completions',
    body: (text) => ({ model: 'gpt-4o-mini', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: text }] }),
    headers: {},
    event: sse({ error: { message: 'The server had an error while processing your request.', type: 'server_error', param: null, code: null } }),
    status: 500,
    error: openaiError,
    expected: { type: 'upstream_error', message: 'The server had an error while processing your request.' },
  },
  {
    name: 'Anthropic: event: error overloaded_error',
    id: 'anthropic',
    path: '/v1/messages',
    body: (text) => ({ model: 'claude-haiku-4-5', stream: true, max_tokens: 1000, messages: [{ role: 'user', content: text }] }),
    headers: { 'anthropic-version': '2023-06-01' },
    event: sse({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }, 'error'),
    status: 529,
    error: (b) => {
      const e = b.error as Record<string, unknown>;
      return { type: e.type, message: e.message };
    },
    expected: { type: 'overloaded_error', message: 'Overloaded' },
  },
  {
    name: 'OpenAI chat translated to Claude: event: error overloaded_error',
    id: 'chat-claude',
    path: '/v1/chat/completions',
    body: (text) => ({ model: 'claude-haiku-4-5', stream: true, messages: [{ role: 'user', content: text }] }),
    headers: {},
    event: sse({ type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }, 'error'),
    status: 529,
    error: openaiError,
    expected: { type: 'upstream_error', message: 'upstream anthropic failed mid-stream: Overloaded' },
  },
  {
    name: 'Responses: response.failed',
    id: 'responses-failed',
    path: '/v1/responses',
    body: (text) => ({ model: 'gpt-4o-mini', stream: true, input: text }),
    headers: {},
    event: sse(
      { type: 'response.failed', sequence_number: 1, response: { id: 'resp_failed_1', object: 'response', status: 'failed', error: { code: 'server_error', message: 'Responses failed upstream.' }, output: [], usage: null } },
      'response.failed',
    ),
    status: 500,
    error: openaiError,
    expected: { type: 'upstream_error', message: 'Responses failed upstream.' },
  },
  {
    name: 'Responses: error event',
    id: 'responses-error',
    path: '/v1/responses',
    body: (text) => ({ model: 'gpt-4o-mini', stream: true, input: text }),
    headers: {},
    event: sse({ type: 'error', code: 'server_error', message: 'Responses error event.', param: null, sequence_number: 1 }, 'error'),
    status: 500,
    error: openaiError,
    expected: { type: 'upstream_error', message: 'Responses error event.' },
  },
];

async function post(raw: string, shape: Shape, text: string): Promise<Response> {
  return fetch(`${h.url}${shape.path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json', ...shape.headers },
    body: JSON.stringify(shape.body(text)),
  });
}

async function recordsOf(keyId: string): Promise<Record<string, unknown>[]> {
  await h.settled();
  return (await h.scan('usage')).filter((r) => r.keyId === keyId).sort((a, b) => String(a.sk).localeCompare(String(b.sk)));
}

describe.each(SHAPES)('$name', (shape) => {
  it('before any token: the caller gets the provider error in its dialect, the attempt is not ok, charged (never $0), and nothing is cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: `early-${shape.id}`, responseCache: true });
    const text = `error before output ${shape.name}`;
    h.upstream.script({ midStreamEvent: () => shape.event, endAfterEvents: 1 });
    const res = await post(raw, shape, text);
    expect(res.status).toBe(shape.status);
    expect(res.headers.get('content-type')).toContain('application/json');
    expect(shape.error((await res.json()) as Record<string, unknown>)).toEqual(shape.expected);
    const [failed] = await recordsOf(keyId);
    expect(failed!.outcome).toBe('upstream_error');
    expect(Number(failed!.costMicros)).toBeGreaterThan(0);
    // The same request again with the provider healthy: a miss that reaches the provider, not the error replayed.
    h.upstream.script({ replyText: 'Healthy now.' });
    const again = await post(raw, shape, text);
    expect(again.status).toBe(200);
    expect(again.headers.get('x-tollgate-cache')).not.toBe('hit');
    expect(await again.text()).toContain('Healthy');
    expect(h.upstream.requests).toHaveLength(2);
    await h.settled(); // its settle runs after the answer was sent
    expect(await h.holds()).toHaveLength(0);
  });

  it('after tokens reached the caller: the stream passes as is, but the record is not ok and the answer is not cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: `late-${shape.id}`, responseCache: true });
    const text = `error after output ${shape.name}`;
    // Past the preamble and the first text delta, then the error ends the stream, as the providers do.
    h.upstream.script({ replyText: 'one two three four five six', midStreamEvent: () => shape.event, midStreamEventAt: 4, endAfterEvents: 5 });
    const res = await post(raw, shape, text);
    expect(res.status).toBe(200);
    const streamed = await res.text();
    expect(streamed).toContain(shape.expected.message);
    const [failed] = await recordsOf(keyId);
    expect(failed!.outcome).toBe('upstream_error');
    expect(Number(failed!.costMicros)).toBeGreaterThan(0);
    h.upstream.script({ replyText: 'Healthy now.' });
    const again = await post(raw, shape, text);
    expect(again.headers.get('x-tollgate-cache')).not.toBe('hit');
    expect(await again.text()).toContain('Healthy');
    expect(h.upstream.requests).toHaveLength(2);
  });
});

it('an OpenAI chat stream failing before any token falls back to the next model of the route, which answers', async () => {
  const { raw, keyId } = await h.createKey({ userId: 'stream-error-fallback' });
  const failure = SHAPES[0]!.event;
  h.upstream.scriptEach((body) => (String(body.model).startsWith('gpt-4o') ? { midStreamEvent: () => failure, endAfterEvents: 1 } : { replyText: 'Claude took over.' }));
  const res = await fetch(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'tollgate/resilient', stream: true, messages: [{ role: 'user', content: 'Where is my order?' }] }),
  });
  expect(res.status).toBe(200);
  expect(res.headers.get('x-tollgate-model')).toBe('anthropic/claude-haiku-4-5');
  expect(res.headers.get('x-tollgate-fallback')).toBe('fallback; from=openai/gpt-4o; to=anthropic/claude-haiku-4-5; reason=upstream_500');
  expect(await res.text()).toContain('Claude');
  const records = await recordsOf(keyId);
  expect(records.map((r) => [r.model, r.outcome])).toEqual(
    expect.arrayContaining([
      ['openai/gpt-4o', 'upstream_error'],
      ['anthropic/claude-haiku-4-5', 'ok'],
    ]),
  );
});

// Bedrock: ConverseStream's exceptions, a cut stream and an empty one, reached through both surfaces that serve
// Bedrock (chat completions, and the Responses API translated over it), reported in the caller's (OpenAI) dialect.
interface BedrockSurface {
  readonly id: string;
  readonly path: string;
  readonly body: (text: string) => Record<string, unknown>;
}
const BEDROCK_SURFACES: BedrockSurface[] = [
  {
    id: 'chat',
    path: '/v1/chat/completions',
    body: (text) => ({ model: BEDROCK_MODEL, stream: true, messages: [{ role: 'user', content: text }] }),
  },
  { id: 'responses', path: '/v1/responses', body: (text) => ({ model: BEDROCK_MODEL, stream: true, input: text }) },
];

interface BedrockFailure {
  readonly name: string;
  /** Fails before any token reached the caller. */
  readonly early: FakeBedrockScript;
  /** Fails after two text deltas reached the caller. */
  readonly late: FakeBedrockScript;
  readonly status: number;
  /** In the caller's error message (and in the stream when it fails late). */
  readonly says: RegExp;
  /** The usage record's outcome: a cut or empty stream is `stream_incomplete`. @default 'upstream_error' */
  readonly outcome?: string;
}
const exception = (type: BedrockStreamException, status: number): BedrockFailure => ({
  name: `ConverseStream ${type}`,
  early: { exception: { type, message: `${type} from the model` }, exceptionAt: 1 },
  late: { replyText: 'one two three four', exception: { type, message: `${type} from the model` }, exceptionAt: 3 },
  status,
  says: new RegExp(`${type}.*${type} from the model`),
});
const BEDROCK_FAILURES: BedrockFailure[] = [
  exception('modelStreamErrorException', 500),
  exception('throttlingException', 429),
  exception('internalServerException', 500),
  exception('validationException', 400),
  {
    name: 'a ConverseStream cut before messageStop',
    early: { endAfterEvents: 1 },
    late: { replyText: 'one two three four', endAfterEvents: 3 },
    status: 500,
    says: /ended the stream before messageStop/,
    outcome: 'stream_incomplete',
  },
  {
    name: 'an empty ConverseStream (no event at all)',
    early: { endAfterEvents: 0 },
    late: { replyText: 'one two three four', endAfterEvents: 3 },
    status: 500,
    says: /empty stream|ended the stream before messageStop/,
    outcome: 'stream_incomplete',
  },
];
const BEDROCK_CASES = BEDROCK_SURFACES.flatMap((surface) => BEDROCK_FAILURES.map((failure) => ({ surface, failure, title: `${surface.path}: ${failure.name}` })));

async function postBedrock(raw: string, surface: BedrockSurface, text: string, model = BEDROCK_MODEL): Promise<Response> {
  return fetch(`${h.url}${surface.path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json' },
    body: JSON.stringify({ ...surface.body(text), model }),
  });
}

describe.each(BEDROCK_CASES)('Bedrock, $title', ({ surface, failure, title }) => {
  const id = title.replace(/[^a-z0-9]+/gi, '-').toLowerCase();

  it('before any token: the provider error in the OpenAI dialect naming what failed, not ok, charged, never cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: `bedrock-early-${id}`.slice(0, 60), responseCache: true });
    const text = `bedrock early ${title}`;
    bedrock.script(failure.early);
    const res = await postBedrock(raw, surface, text);
    expect(res.status).toBe(failure.status);
    expect(res.headers.get('content-type')).toContain('application/json');
    const body = (await res.json()) as { error: { type: string; message: string } };
    expect(body.error.type).toBe('upstream_error');
    expect(body.error.message).toMatch(failure.says);
    const [failed] = await recordsOf(keyId);
    expect(failed!.outcome).toBe(failure.outcome ?? 'upstream_error');
    expect(failed!.model).toBe(BEDROCK_MODEL);
    // No usage reported: charged its reservation, never $0.
    expect(Number(failed!.costMicros)).toBeGreaterThan(0);
    bedrock.script({ replyText: 'Healthy now.' });
    const again = await postBedrock(raw, surface, text);
    expect(again.status).toBe(200);
    expect(again.headers.get('x-tollgate-cache')).toBe('miss');
    expect(await again.text()).toContain('Healthy');
    expect(bedrock.requests).toHaveLength(2);
    await h.settled(); // its settle runs after the answer was sent
    expect(await h.holds()).toHaveLength(0);
  });

  it('after tokens reached the caller: the error ends the stream in its dialect, the record is not ok, nothing is cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: `bedrock-late-${id}`.slice(0, 60), responseCache: true });
    const text = `bedrock late ${title}`;
    bedrock.script(failure.late);
    const res = await postBedrock(raw, surface, text);
    expect(res.status).toBe(200);
    const streamed = await res.text();
    expect(streamed).toContain(' two');
    expect(streamed).toMatch(failure.says);
    expect(streamed).not.toContain('[DONE]');
    expect(streamed).not.toContain('response.completed');
    const [failed] = await recordsOf(keyId);
    expect(failed!.outcome).toBe(failure.outcome ?? 'upstream_error');
    expect(Number(failed!.costMicros)).toBeGreaterThan(0);
    bedrock.script({ replyText: 'Healthy now.' });
    const again = await postBedrock(raw, surface, text);
    expect(again.headers.get('x-tollgate-cache')).toBe('miss');
    expect(await again.text()).toContain('Healthy');
    expect(bedrock.requests).toHaveLength(2);
  });
});

describe('Bedrock, whole answers and fallback', () => {
  it('a healthy ConverseStream is ok, charged at the usage Bedrock reported, and cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'bedrock-healthy', responseCache: true });
    bedrock.script({ replyText: 'All good here.', usage: { inputTokens: 1000, outputTokens: 100 } });
    const res = await postBedrock(raw, BEDROCK_SURFACES[0]!, 'healthy bedrock');
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('[DONE]');
    const [ok] = await recordsOf(keyId);
    expect(ok!.outcome).toBe('ok');
    // amazon.nova-lite: $0.06 / $0.24 per million tokens.
    expect(Number(ok!.costMicros)).toBe(60 + 24);
    const again = await postBedrock(raw, BEDROCK_SURFACES[0]!, 'healthy bedrock');
    expect(again.headers.get('x-tollgate-cache')).toBe('hit');
    expect(bedrock.requests).toHaveLength(1);
  });

  it('a Converse answer without a message (non-stream) is a 502 failure, not an empty 200, and is not cached', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'bedrock-empty-json', responseCache: true });
    const post = () =>
      fetch(`${h.url}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${raw}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: BEDROCK_MODEL, messages: [{ role: 'user', content: 'empty json' }] }),
      });
    bedrock.script({ noMessage: true });
    const res = await post();
    expect(res.status).toBe(502);
    expect(((await res.json()) as { error: { message: string } }).error.message).toMatch(/without a message/);
    const [failed] = await recordsOf(keyId);
    expect(failed!.outcome).toBe('upstream_error');
    bedrock.script({ replyText: 'Healthy now.' });
    const again = await post();
    expect(again.status).toBe(200);
    expect(again.headers.get('x-tollgate-cache')).toBe('miss');
  });

  it.each(BEDROCK_SURFACES)('$path: an exception before any token falls back to the next model of the route, which answers', async (surface) => {
    const { raw, keyId } = await h.createKey({ userId: `bedrock-fallback-${surface.id}` });
    bedrock.script({ exception: { type: 'modelStreamErrorException', message: 'model crashed' }, exceptionAt: 1 });
    h.upstream.script({ replyText: 'OpenAI took over.' });
    const res = await postBedrock(raw, surface, 'fallback from bedrock', 'tollgate/bedrock-first');
    expect(res.status).toBe(200);
    expect(res.headers.get('x-tollgate-model')).toBe('openai/gpt-4o-mini');
    expect(res.headers.get('x-tollgate-fallback')).toBe(`fallback; from=${BEDROCK_MODEL}; to=openai/gpt-4o-mini; reason=upstream_500`);
    expect(await res.text()).toContain('OpenAI');
    const records = await recordsOf(keyId);
    expect(records.map((r) => [r.model, r.outcome])).toEqual(
      expect.arrayContaining([
        [BEDROCK_MODEL, 'upstream_error'],
        ['openai/gpt-4o-mini', 'ok'],
      ]),
    );
  });
});
