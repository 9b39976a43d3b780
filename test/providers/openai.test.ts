import { UpstreamError } from '../../lambda/core/errors';
import { OpenAiCompatibleProvider, OpenAiProvider } from '../../lambda/providers/openai/provider';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream';
import { asJson, asStream, callContext, chunkText, payloadsOf, readAll } from './support';

const PLATFORM_KEY = 'sk-platform-0123456789abcdef';

let upstream: FakeUpstream;
let provider: OpenAiProvider;

beforeAll(async () => {
  upstream = await startFakeUpstream();
  provider = new OpenAiProvider({ baseUrl: upstream.openaiBaseUrl, apiKey: PLATFORM_KEY });
});
afterEach(() => upstream.reset());
afterAll(() => upstream.close());

const chat = (extra: Record<string, unknown> = {}) => ({
  model: 'gpt-4o-mini',
  messages: [{ role: 'user', content: 'Say hi' }],
  ...extra,
});

async function failure(promise: Promise<unknown>): Promise<UpstreamError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  if (!(err instanceof UpstreamError)) throw new Error(`expected an UpstreamError, got ${String(err)}`);
  return err;
}

describe('OpenAiProvider.chatCompletions (non-stream)', () => {
  it('when the upstream answers, it returns its body and usage with cached tokens, sent with the platform key', async () => {
    upstream.script({ replyText: 'Hi there', usage: { inputTokens: 120, outputTokens: 7, cachedTokens: 100 } });
    const result = await provider.chatCompletions(chat(), callContext());
    const body = asJson(result) as { choices: { message: { content: string } }[] };
    expect(body.choices[0].message.content).toBe('Hi there');
    expect(result.kind === 'json' && result.usage).toEqual({
      inputTokens: 120,
      outputTokens: 7,
      cachedInputTokens: 100,
      cacheWriteTokens: 0,
    });
    const [request] = upstream.requests;
    expect(request.path).toBe('/v1/chat/completions');
    expect(request.headers.authorization).toBe(`Bearer ${PLATFORM_KEY}`);
    expect(request.body).toEqual(chat());
  });

  it('when the call carries a BYOK key, it authenticates with that key instead of the platform key', async () => {
    await provider.chatCompletions(chat(), callContext({ apiKeyOverride: 'sk-caller-own-key-999' }));
    expect(upstream.requests[0].headers.authorization).toBe('Bearer sk-caller-own-key-999');
  });

  it('when the key comes from a function, it asks the function for each call', async () => {
    let calls = 0;
    const rotating = new OpenAiProvider({ baseUrl: upstream.openaiBaseUrl, apiKey: async () => `sk-rotated-${++calls}` });
    await rotating.chatCompletions(chat(), callContext());
    await rotating.chatCompletions(chat(), callContext());
    expect(upstream.requests.map((r) => r.headers.authorization)).toEqual(['Bearer sk-rotated-1', 'Bearer sk-rotated-2']);
  });
});

describe('OpenAiProvider.chatCompletions (stream)', () => {
  it('when the caller did not ask for usage, it asks the upstream for usage anyway, records it, and drops the usage-only chunk', async () => {
    upstream.script({ replyText: 'one two three', usage: { inputTokens: 30, outputTokens: 3, cachedTokens: 10 } });
    const stream = asStream(await provider.chatCompletions(chat({ stream: true }), callContext({ callerWantsStreamUsage: false })));
    const payloads = await payloadsOf(await readAll(stream.body));

    expect((upstream.requests[0].body as Record<string, unknown>).stream_options).toEqual({ include_usage: true });
    expect(chunkText(payloads)).toBe('one two three');
    expect(payloads.some((p) => Array.isArray((p as { choices?: unknown[] }).choices) && (p as { choices: unknown[] }).choices.length === 0)).toBe(false);
    expect(payloads[payloads.length - 1]).toBe('[DONE]');
    expect(stream.usage()).toEqual({ inputTokens: 30, outputTokens: 3, cachedInputTokens: 10, cacheWriteTokens: 0 });
  });

  it('when the caller asked for usage, it passes the upstream bytes through unchanged, usage chunk included', async () => {
    upstream.script({ replyText: 'one two', usage: { inputTokens: 9, outputTokens: 2, cachedTokens: 0 } });
    const body = chat({ stream: true, stream_options: { include_usage: true } });
    const stream = asStream(await provider.chatCompletions(body, callContext({ callerWantsStreamUsage: true })));
    const text = await readAll(stream.body);
    const payloads = await payloadsOf(text);
    const usageChunk = payloads[payloads.length - 2] as { choices: unknown[]; usage: { prompt_tokens: number } };
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage.prompt_tokens).toBe(9);
    const direct = await fetch(`${upstream.openaiBaseUrl}/chat/completions`, { method: 'POST', body: JSON.stringify(body) });
    expect(text).toBe(await direct.text());
    expect(stream.usage()).toEqual({ inputTokens: 9, outputTokens: 2, cachedInputTokens: 0, cacheWriteTokens: 0 });
  });

  it('when the upstream ends the stream without usage, usage() stays undefined', async () => {
    upstream.script({ omitUsage: true });
    const stream = asStream(await provider.chatCompletions(chat({ stream: true }), callContext()));
    await readAll(stream.body);
    expect(stream.usage()).toBeUndefined();
  });

  it('when the upstream has sent only its first events, the caller already receives them (nothing is buffered)', async () => {
    upstream.script({ replyText: 'never finishes', hangAfterEvents: 2 });
    const controller = new AbortController();
    const stream = asStream(await provider.chatCompletions(chat({ stream: true }), callContext({ signal: controller.signal })));
    const iterator = stream.body[Symbol.asyncIterator]();
    const first = await iterator.next();
    expect(first.done).toBe(false);
    expect(new TextDecoder().decode(first.value)).toContain('"role":"assistant"');
    controller.abort();
    const drain = async (): Promise<void> => {
      for (let next = await iterator.next(); !next.done; next = await iterator.next());
    };
    const err = await failure(drain());
    expect(err.status).toBe(502);
  });
});

describe('OpenAiProvider errors', () => {
  it('when the upstream answers 500, it throws a 502 quoting the upstream message', async () => {
    upstream.script({ status: 500, errorMessage: 'The server had an error' });
    const err = await failure(provider.chatCompletions(chat(), callContext()));
    expect(err.status).toBe(502);
    expect(err.message).toContain('The server had an error');
  });

  it('when the upstream rejects our key with 401, it throws a 502 that never shows the key, even when the upstream echoes it', async () => {
    upstream.script({ status: 401, errorMessage: `Incorrect API key provided: ${PLATFORM_KEY}. Also sk-proj-abcdef123456.` });
    const err = await failure(provider.chatCompletions(chat(), callContext()));
    expect(err.status).toBe(502);
    expect(err.message).toContain('rejected the API key');
    expect(err.message).not.toContain(PLATFORM_KEY);
    expect(err.message).not.toContain('sk-proj-abcdef123456');
    expect(JSON.stringify({ ...err, message: err.message })).not.toContain(PLATFORM_KEY);
  });

  it('when the upstream answers 400, it passes the status and the upstream message through', async () => {
    upstream.script({ status: 400, errorMessage: "Invalid value for 'temperature'" });
    const err = await failure(provider.chatCompletions(chat(), callContext()));
    expect(err.status).toBe(400);
    expect(err.message).toContain("Invalid value for 'temperature'");
  });

  it('when the upstream answers 429 with Retry-After, it passes both through', async () => {
    upstream.script({ status: 429, errorMessage: 'Rate limit reached', retryAfter: '7' });
    const err = await failure(provider.chatCompletions(chat(), callContext()));
    expect(err.status).toBe(429);
    expect(err.headers['Retry-After']).toBe('7');
  });

  it('when the upstream does not answer before the timeout, it throws a 502 that says it timed out', async () => {
    upstream.script({ hang: true });
    // The timeout fires once the upstream holds the request (as AbortSignal.timeout would), never before it
    // arrived: a request still on its way would land in the next test's recording.
    const controller = new AbortController();
    const pending = provider.chatCompletions(chat(), callContext({ signal: controller.signal }));
    await untilUpstreamHasRequests(1);
    controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
    const err = await failure(pending);
    expect(err.status).toBe(502);
    expect(err.message).toMatch(/timed out/);
  });

  it('when the client goes away before the upstream answers, it throws a 502', async () => {
    upstream.script({ hang: true });
    const controller = new AbortController();
    const pending = provider.chatCompletions(chat(), callContext({ signal: controller.signal }));
    await untilUpstreamHasRequests(1);
    controller.abort();
    const err = await failure(pending);
    expect(err.status).toBe(502);
    expect(err.message).toMatch(/aborted/);
  });

  it('when nothing listens at the base URL, it throws a 502 that says the upstream is unreachable', async () => {
    const nowhere = new OpenAiProvider({ baseUrl: 'http://127.0.0.1:1/v1', apiKey: PLATFORM_KEY });
    const err = await failure(nowhere.chatCompletions(chat(), callContext()));
    expect(err.status).toBe(502);
    expect(err.message).toMatch(/unreachable/);
  });
});

/** Waits (by polling, without a deadline: jest's timeout catches a hang) until the fake upstream has seen n requests. */
async function untilUpstreamHasRequests(n: number): Promise<void> {
  while (upstream.requests.length < n) await new Promise((resolve) => setTimeout(resolve, 5));
}

describe('OpenAiProvider.embeddings', () => {
  it('when asked for embeddings, it posts to /embeddings and reports the input tokens', async () => {
    upstream.script({ usage: { inputTokens: 6 } });
    const result = await provider.embeddings({ model: 'text-embedding-3-small', input: ['a', 'b'] }, callContext());
    expect((result.body as { data: unknown[] }).data).toHaveLength(2);
    expect(result.usage).toEqual({ inputTokens: 6, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 });
    expect(upstream.requests[0].path).toBe('/v1/embeddings');
  });
});

describe('OpenAiCompatibleProvider', () => {
  class HeaderKeyProvider extends OpenAiCompatibleProvider {
    constructor(baseUrl: string) {
      super('compatible', { baseUrl, apiKey: 'ck-secret-1234', headers: { 'x-org': 'acme' } });
    }
    protected override authHeaders(apiKey: string): Record<string, string> {
      return { 'api-key': apiKey };
    }
  }

  it('when a subclass changes how it authenticates, its requests carry its headers and its own id in errors', async () => {
    const compatible = new HeaderKeyProvider(upstream.openaiBaseUrl);
    await compatible.chatCompletions(chat(), callContext());
    expect(upstream.requests[0].headers['api-key']).toBe('ck-secret-1234');
    expect(upstream.requests[0].headers['x-org']).toBe('acme');
    expect(upstream.requests[0].headers.authorization).toBeUndefined();
    upstream.script({ status: 503 });
    const err = await failure(compatible.chatCompletions(chat(), callContext()));
    expect(err.message).toContain('upstream compatible');
  });
});
