import { ManualClock } from '../../lambda/core/clock';
import { InvalidRequestError, UpstreamError } from '../../lambda/core/errors';
import { AnthropicProvider, DEFAULT_ANTHROPIC_VERSION } from '../../lambda/providers/anthropic/provider';
import { startFakeUpstream, type FakeUpstream } from '../support/fake-upstream';
import { asJson, asStream, callContext, chunkText, eventsOf, payloadsOf, readAll } from './support';

const PLATFORM_KEY = 'sk-ant-platform-0123456789';

let upstream: FakeUpstream;
let provider: AnthropicProvider;

beforeAll(async () => {
  upstream = await startFakeUpstream();
  provider = new AnthropicProvider({
    baseUrl: upstream.anthropicBaseUrl,
    apiKey: PLATFORM_KEY,
    defaultMaxTokens: 321,
    clock: new ManualClock(1_750_000_000_000),
  });
});
afterEach(() => upstream.reset());
afterAll(() => upstream.close());

const messagesBody = (extra: Record<string, unknown> = {}) => ({
  model: 'claude-sonnet-4-5',
  max_tokens: 100,
  messages: [{ role: 'user', content: 'Hello' }],
  ...extra,
});

async function failure(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => {
      throw new Error('expected a failure');
    },
    (e: unknown) => e,
  );
}

describe('AnthropicProvider.messages (native)', () => {
  it('when called, it posts the body unchanged to /v1/messages with x-api-key and the default anthropic-version', async () => {
    upstream.script({ replyText: 'Hi', usage: { inputTokens: 10, outputTokens: 4, cachedTokens: 200, cacheWriteTokens: 50 } });
    const result = await provider.messages(messagesBody(), callContext());
    const [request] = upstream.requests;
    expect(request.path).toBe('/v1/messages');
    expect(request.headers['x-api-key']).toBe(PLATFORM_KEY);
    expect(request.headers['anthropic-version']).toBe(DEFAULT_ANTHROPIC_VERSION);
    expect(request.headers.authorization).toBeUndefined();
    expect(request.body).toEqual(messagesBody());
    expect((asJson(result).content as { text: string }[])[0].text).toBe('Hi');
    // All input = 10 uncached + 200 cache reads + 50 cache writes.
    expect(result.kind === 'json' && result.usage).toEqual({
      inputTokens: 260,
      outputTokens: 4,
      cachedInputTokens: 200,
      cacheWriteTokens: 50,
    });
  });

  it("when the caller names an anthropic-version and betas, they reach the upstream", async () => {
    await provider.messages(
      messagesBody(),
      { ...callContext(), anthropicVersion: '2024-01-01', anthropicBeta: 'prompt-caching-2024-07-31,other-beta' },
    );
    expect(upstream.requests[0].headers['anthropic-version']).toBe('2024-01-01');
    expect(upstream.requests[0].headers['anthropic-beta']).toBe('prompt-caching-2024-07-31,other-beta');
  });

  it('when a forwarded header value carries a line break, it refuses the request before calling the upstream', async () => {
    const err = await failure(provider.messages(messagesBody(), { ...callContext(), anthropicBeta: 'x\r\nx-evil: 1' }));
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect(upstream.requests).toHaveLength(0);
  });

  it('when streaming, it passes the upstream events through byte for byte and follows usage from message_start and message_delta', async () => {
    upstream.script({ replyText: 'one two three', usage: { inputTokens: 20, outputTokens: 3, cachedTokens: 5, cacheWriteTokens: 1 } });
    const stream = asStream(await provider.messages(messagesBody({ stream: true }), callContext()));
    const text = await readAll(stream.body);
    const direct = await fetch(`${upstream.anthropicBaseUrl}/v1/messages`, {
      method: 'POST',
      body: JSON.stringify(messagesBody({ stream: true })),
    });
    expect(text).toBe(await direct.text());
    expect((await eventsOf(text)).map((e) => e.event)).toEqual([
      'message_start',
      'content_block_start',
      'ping',
      'content_block_delta',
      'content_block_delta',
      'content_block_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    expect(stream.usage()).toEqual({ inputTokens: 26, outputTokens: 3, cachedInputTokens: 5, cacheWriteTokens: 1 });
  });

  it('when the stream breaks off after message_start, it is cut: an error event ends it and usage() is unknown (message_start\'s output count is a placeholder)', async () => {
    upstream.script({ usage: { inputTokens: 40 }, endAfterEvents: 2 });
    const stream = asStream(await provider.messages(messagesBody({ stream: true }), callContext()));
    const text = await readAll(stream.body);
    expect(text).toMatch(/event: error\ndata: \{"type":"error","error":\{"type":"api_error","message":"upstream anthropic ended the stream before message_stop/);
    expect(stream.cut?.()).toBe(true);
    expect(stream.usage()).toBeUndefined();
  });

  it('when the upstream answers 400, it passes the status and message through; when it answers 401, it is a 502 without the key', async () => {
    upstream.script({ status: 400, errorMessage: 'max_tokens: must be greater than 0' });
    const bad = await failure(provider.messages(messagesBody(), callContext()));
    expect(bad).toBeInstanceOf(UpstreamError);
    expect((bad as UpstreamError).status).toBe(400);
    expect((bad as UpstreamError).message).toContain('max_tokens: must be greater than 0');

    upstream.script({ status: 401, errorMessage: `invalid x-api-key ${PLATFORM_KEY}` });
    const denied = (await failure(provider.messages(messagesBody(), callContext()))) as UpstreamError;
    expect(denied.status).toBe(502);
    expect(denied.message).not.toContain(PLATFORM_KEY);
  });

  it('when the caller brings their own key, it is sent instead of the platform key', async () => {
    await provider.messages(messagesBody(), callContext({ apiKeyOverride: 'sk-ant-caller-42424242' }));
    expect(upstream.requests[0].headers['x-api-key']).toBe('sk-ant-caller-42424242');
  });
});

describe('AnthropicProvider.chatCompletions (translated)', () => {
  const chatBody = (extra: Record<string, unknown> = {}) => ({
    model: 'claude-sonnet-4-5',
    messages: [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hello' },
    ],
    ...extra,
  });

  it('when not streaming, it sends a Messages request and answers with an OpenAI chat.completion', async () => {
    upstream.script({ replyText: 'Hi!', usage: { inputTokens: 10, outputTokens: 2, cachedTokens: 30 } });
    const result = await provider.chatCompletions(chatBody(), callContext({ requestId: 'r-9' }));
    expect(upstream.requests[0].body).toEqual({
      model: 'claude-sonnet-4-5',
      max_tokens: 321,
      system: 'Be brief.',
      messages: [{ role: 'user', content: [{ type: 'text', text: 'Hello' }] }],
    });
    expect(asJson(result)).toEqual({
      id: 'chatcmpl-r-9',
      object: 'chat.completion',
      created: 1_750_000_000,
      model: 'claude-sonnet-4-5',
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hi!', refusal: null }, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: 40, completion_tokens: 2, total_tokens: 42, prompt_tokens_details: { cached_tokens: 30 } },
    });
    expect(result.kind === 'json' && result.usage).toEqual({ inputTokens: 40, outputTokens: 2, cachedInputTokens: 30, cacheWriteTokens: 0 });
  });

  it('when the model calls a tool, the answer carries OpenAI tool_calls and finish_reason tool_calls', async () => {
    upstream.script({ replyText: '', toolCall: { id: 'toolu_1', name: 'get_weather', input: { city: 'Paris' } } });
    const body = asJson(await provider.chatCompletions(chatBody(), callContext())) as {
      choices: { message: { content: unknown; tool_calls: unknown }; finish_reason: string }[];
    };
    expect(body.choices[0].message.content).toBeNull();
    expect(body.choices[0].message.tool_calls).toEqual([
      { id: 'toolu_1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
    ]);
    expect(body.choices[0].finish_reason).toBe('tool_calls');
  });

  it('when streaming and the caller wants usage, it answers in OpenAI chunks with a usage chunk before [DONE]', async () => {
    upstream.script({ replyText: 'one two', usage: { inputTokens: 8, outputTokens: 2, cachedTokens: 4, cacheWriteTokens: 2 } });
    const stream = asStream(
      await provider.chatCompletions(chatBody({ stream: true }), callContext({ callerWantsStreamUsage: true })),
    );
    const payloads = await payloadsOf(await readAll(stream.body));
    expect(chunkText(payloads)).toBe('one two');
    expect(payloads[payloads.length - 1]).toBe('[DONE]');
    const usageChunk = payloads[payloads.length - 2] as { choices: unknown[]; usage: Record<string, unknown> };
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage).toEqual({
      prompt_tokens: 14,
      completion_tokens: 2,
      total_tokens: 16,
      prompt_tokens_details: { cached_tokens: 4 },
    });
    expect(stream.usage()).toEqual({ inputTokens: 14, outputTokens: 2, cachedInputTokens: 4, cacheWriteTokens: 2 });
  });

  it('when streaming and the caller did not ask for usage, there is no usage chunk but usage is still recorded', async () => {
    const stream = asStream(await provider.chatCompletions(chatBody({ stream: true }), callContext()));
    const payloads = await payloadsOf(await readAll(stream.body));
    expect(payloads.filter((p) => p !== '[DONE]' && 'usage' in (p as object))).toEqual([]);
    expect(stream.usage()?.outputTokens).toBe(5);
  });

  it('when streaming a tool call, the arguments arrive as OpenAI tool_call deltas that join to the input JSON', async () => {
    upstream.script({ replyText: 'Checking', toolCall: { id: 'toolu_7', name: 'lookup', input: { q: 'tollgate', n: 3 } } });
    const stream = asStream(await provider.chatCompletions(chatBody({ stream: true }), callContext()));
    const payloads = (await payloadsOf(await readAll(stream.body))).filter((p) => p !== '[DONE]') as {
      choices: { delta: { tool_calls?: { index: number; id?: string; function: { name?: string; arguments: string } }[] }; finish_reason: string | null }[];
    }[];
    const calls = payloads.flatMap((p) => p.choices[0]?.delta.tool_calls ?? []);
    expect(calls[0]).toMatchObject({ index: 0, id: 'toolu_7', function: { name: 'lookup' } });
    expect(JSON.parse(calls.map((c) => c.function.arguments).join(''))).toEqual({ q: 'tollgate', n: 3 });
    expect(payloads.map((p) => p.choices[0]?.finish_reason).filter(Boolean)).toEqual(['tool_calls']);
  });

  it('when the upstream answers 500, the translated call throws a 502', async () => {
    upstream.script({ status: 500, errorMessage: 'Overloaded' });
    const err = (await failure(provider.chatCompletions(chatBody(), callContext()))) as UpstreamError;
    expect(err.status).toBe(502);
    expect(err.message).toContain('Overloaded');
  });
});
