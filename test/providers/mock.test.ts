import { ManualClock } from '../../lambda/core/clock';
import { UpstreamError } from '../../lambda/core/errors';
import { estimateTokens, MockProvider } from '../../lambda/providers/mock/provider';
import { asJson, asStream, callContext, chunkText, eventsOf, payloadsOf, readAll } from './support';

const provider = new MockProvider({ clock: new ManualClock(1_750_000_000_000) });

const chat = (text: string, extra: Record<string, unknown> = {}) => ({
  model: 'echo',
  messages: [
    { role: 'user', content: 'earlier question' },
    { role: 'assistant', content: 'earlier answer' },
    { role: 'user', content: text },
  ],
  ...extra,
});

describe('MockProvider.chatCompletions', () => {
  it('when asked twice the same thing, it answers the same text quoting the last user message, with estimated usage', async () => {
    const first = await provider.chatCompletions(chat('What is the capital of France, and why is it Paris?'), callContext());
    const second = await provider.chatCompletions(chat('What is the capital of France, and why is it Paris?'), callContext());
    const reply = `Mock reply to: ${'What is the capital of France, and why is it Paris?'.slice(0, 40)}`;
    const body = asJson(first) as { choices: { message: { content: string } }[]; usage: { prompt_tokens: number } };
    expect(body.choices[0].message.content).toBe(reply);
    expect(asJson(second)).toEqual(body);
    const input =
      estimateTokens('earlier question') + estimateTokens('earlier answer') + estimateTokens('What is the capital of France, and why is it Paris?') + 3 * 4;
    expect(first.kind === 'json' && first.usage).toEqual({
      inputTokens: input,
      outputTokens: estimateTokens(reply),
      cachedInputTokens: 0,
      cacheWriteTokens: 0,
    });
    expect(body.usage.prompt_tokens).toBe(input);
  });

  it('when max_tokens is small, the reply is cut to fit and finish_reason is length', async () => {
    const result = await provider.chatCompletions(chat('hello there', { max_tokens: 2 }), callContext());
    const body = asJson(result) as { choices: { message: { content: string }; finish_reason: string }[] };
    expect(body.choices[0].message.content).toBe('Mock rep');
    expect(body.choices[0].finish_reason).toBe('length');
    expect(result.kind === 'json' && result.usage?.outputTokens).toBe(2);
  });

  it('when the last user message says tollgate:fail, it throws a 502', async () => {
    const err = await provider.chatCompletions(chat('please tollgate:fail now'), callContext()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).status).toBe(502);
  });

  it('when only an earlier message says tollgate:fail, it answers normally', async () => {
    const body = { model: 'echo', messages: [{ role: 'user', content: 'tollgate:fail' }, { role: 'user', content: 'fine' }] };
    expect((await provider.chatCompletions(body, callContext())).kind).toBe('json');
  });

  it('when the last user message says tollgate:empty, the reply is empty with zero output tokens', async () => {
    const result = await provider.chatCompletions(chat('tollgate:empty'), callContext());
    expect((asJson(result) as { choices: { message: { content: string } }[] }).choices[0].message.content).toBe('');
    expect(result.kind === 'json' && result.usage?.outputTokens).toBe(0);
  });

  it('when the last user message says tollgate:slow:<ms>, it waits at least that long', async () => {
    // Jest's fake timers, not the wall clock: the answer is pending at 59 ms and arrives at 60 ms.
    jest.useFakeTimers({ doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask'] });
    try {
      let answered = false;
      const call = provider.chatCompletions(chat('tollgate:slow:60'), callContext()).then((r) => {
        answered = true;
        return r;
      });
      await jest.advanceTimersByTimeAsync(59);
      expect(answered).toBe(false);
      await jest.advanceTimersByTimeAsync(1);
      await call;
      expect(answered).toBe(true);
    } finally {
      jest.useRealTimers();
    }
  });

  it('when a slow call is aborted by a timeout, it stops waiting and throws a 502 that says it timed out', async () => {
    // Not aborted, the call would answer normally after 10 minutes (past jest's timeout) instead of throwing.
    const err = await provider
      .chatCompletions(chat('tollgate:slow:600000'), callContext({ signal: AbortSignal.timeout(30) }))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).message).toMatch(/timed out/);
  });

  it('when streaming, it sends several chunks ending with [DONE], and a usage chunk only when the caller asked', async () => {
    const withUsage = asStream(
      await provider.chatCompletions(chat('stream me please', { stream: true }), callContext({ callerWantsStreamUsage: true })),
    );
    const payloads = await payloadsOf(await readAll(withUsage.body));
    expect(chunkText(payloads)).toBe('Mock reply to: stream me please');
    expect(payloads.length).toBeGreaterThan(4);
    expect(payloads[payloads.length - 1]).toBe('[DONE]');
    const usageChunk = payloads[payloads.length - 2] as { choices: unknown[]; usage: { completion_tokens: number } };
    expect(usageChunk.choices).toEqual([]);
    expect(usageChunk.usage.completion_tokens).toBe(estimateTokens('Mock reply to: stream me please'));
    expect(withUsage.usage()?.outputTokens).toBe(estimateTokens('Mock reply to: stream me please'));

    const withoutUsage = asStream(await provider.chatCompletions(chat('stream me please', { stream: true }), callContext()));
    const plain = await payloadsOf(await readAll(withoutUsage.body));
    expect(plain.some((p) => p !== '[DONE]' && 'usage' in (p as object))).toBe(false);
    expect(withoutUsage.usage()).toEqual(withUsage.usage());
  });

  it('when a stream is aborted midway, reading it throws', async () => {
    const controller = new AbortController();
    const stream = asStream(await provider.chatCompletions(chat('a b c d e f', { stream: true }), callContext({ signal: controller.signal })));
    const iterator = stream.body[Symbol.asyncIterator]();
    await iterator.next();
    controller.abort();
    await expect(iterator.next()).rejects.toBeInstanceOf(UpstreamError);
  });
});

describe('MockProvider.messages', () => {
  const messages = (text: string, extra: Record<string, unknown> = {}) => ({
    model: 'echo',
    max_tokens: 100,
    system: 'You are a mock.',
    messages: [{ role: 'user', content: [{ type: 'text', text }] }],
    ...extra,
  });

  it('when not streaming, it answers an Anthropic message whose usage counts the system prompt', async () => {
    const result = await provider.messages(messages('hi'), callContext({ requestId: 'r2' }));
    const body = asJson(result) as { id: string; content: { text: string }[]; stop_reason: string; usage: { input_tokens: number } };
    expect(body.id).toBe('msg_mock_r2');
    expect(body.content).toEqual([{ type: 'text', text: 'Mock reply to: hi' }]);
    expect(body.stop_reason).toBe('end_turn');
    expect(body.usage.input_tokens).toBe(estimateTokens('hi') + estimateTokens('You are a mock.') + 8);
  });

  it('when streaming, it sends the real Anthropic event sequence and the text joins to the reply', async () => {
    const stream = asStream(await provider.messages(messages('stream', { stream: true }), callContext()));
    const events = await eventsOf(await readAll(stream.body));
    const types = events.map((e) => e.event);
    expect(types.slice(0, 3)).toEqual(['message_start', 'content_block_start', 'ping']);
    expect(types.slice(-3)).toEqual(['content_block_stop', 'message_delta', 'message_stop']);
    const text = events
      .filter((e) => e.event === 'content_block_delta')
      .map((e) => (JSON.parse(e.data) as { delta: { text: string } }).delta.text)
      .join('');
    expect(text).toBe('Mock reply to: stream');
    expect(stream.usage()?.outputTokens).toBe(estimateTokens('Mock reply to: stream'));
  });
});

describe('MockProvider.embeddings', () => {
  it('when given texts, it returns one deterministic unit vector per text of the default 8 dimensions', async () => {
    const result = await provider.embeddings({ model: 'e', input: ['alpha', 'beta'] }, callContext());
    const again = await provider.embeddings({ model: 'e', input: ['alpha'] }, callContext());
    const data = (result.body as { data: { embedding: number[] }[] }).data;
    expect(data).toHaveLength(2);
    expect(data[0].embedding).toHaveLength(8);
    expect(data[0].embedding).not.toEqual(data[1].embedding);
    expect((again.body as { data: { embedding: number[] }[] }).data[0].embedding).toEqual(data[0].embedding);
    expect(Math.hypot(...data[0].embedding)).toBeCloseTo(1, 6);
    expect(result.usage).toEqual({ inputTokens: estimateTokens('alpha') + estimateTokens('beta'), outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 });
  });

  it('when dimensions is given, the vectors have that many', async () => {
    const result = await provider.embeddings({ model: 'e', input: 'x', dimensions: 20 }, callContext());
    expect((result.body as { data: { embedding: number[] }[] }).data[0].embedding).toHaveLength(20);
  });
});
