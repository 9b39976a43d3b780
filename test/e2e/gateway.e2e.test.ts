/**
 * End to end over real HTTP: the official OpenAI and Anthropic SDKs (base URL only) → the local gateway →
 * a fake upstream; DynamoDB Local underneath. What each test proves is in its name.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { formatUsd } from '../../lambda/core/money';
import { costOf, maxCostOf } from '../../lambda/core/pricing';
import { estimateChatInputTokens } from '../../lambda/core/tokens';
import { ManualClock } from '../../lambda/core/clock';
import { type Harness, startHarness, UPSTREAM_ANTHROPIC_KEY, UPSTREAM_OPENAI_KEY } from '../support/gateway-harness';
import { TEST_NOW } from '../support/clock';


let h: Harness;
beforeAll(async () => {
  // A fixed instant mid-hour: a run straddling an hour or midnight would split its counters across windows.
  h = await startHarness({ clock: new ManualClock(TEST_NOW) });
});
afterAll(async () => {
  await h.close();
});
beforeEach(() => h.upstream.reset());

const openai = (key: string) => new OpenAI({ apiKey: key, baseURL: h.baseURL, maxRetries: 0 });
const anthropic = (key: string) => new Anthropic({ apiKey: key, baseURL: h.url, maxRetries: 0 });

async function usageRecords(): Promise<Record<string, unknown>[]> {
  await h.settled();
  return h.scan('usage');
}

async function counter(scope: string, window: 'hour' | 'day' | 'month'): Promise<Record<string, unknown> | undefined> {
  await h.settled();
  const items = await h.scan('budgets');
  return items.find((i) => i.pk === `ctr#${scope}` && String(i.sk).startsWith(`${window}#`));
}

describe('OpenAI chat completions through the gateway', () => {
  it('when the OpenAI SDK asks for a completion, the upstream gets the platform key and the caller gets the answer with its cost', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'u-openai' });
    h.upstream.script({ replyText: 'Paris.', usage: { inputTokens: 1000, outputTokens: 200, cachedTokens: 400 } });
    const res = await openai(raw)
      .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'Capital of France?' }] })
      .withResponse();
    expect(res.data.choices[0]!.message.content).toBe('Paris.');
    const upstreamReq = h.upstream.requests[0]!;
    expect(upstreamReq.headers.authorization).toBe(`Bearer ${UPSTREAM_OPENAI_KEY}`);
    expect(JSON.stringify(upstreamReq.headers)).not.toContain(raw);
    // 600 × $2.50 + 400 × $1.25 + 200 × $10 per MTok = 1500 + 500 + 2000 µ$
    expect(res.response.headers.get('x-tollgate-cost-usd')).toBe('0.004000');
    expect(res.response.headers.get('x-request-id')).toMatch(/^req_/);
    const records = (await usageRecords()).filter((r) => r.keyId === keyId);
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ costMicros: 4000, inputTokens: 1000, cachedInputTokens: 400, outputTokens: 200, outcome: 'ok', model: 'openai/gpt-4o' });
    expect((await counter(`key:${keyId}`, 'day'))?.spent).toBe(4000);
    expect(await h.holds()).toHaveLength(0);
  });

  it('when the caller streams without asking for usage, it gets the text without a usage chunk and the gateway still settles from usage', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'u-stream' });
    h.upstream.script({ replyText: 'one two three four', usage: { inputTokens: 50, outputTokens: 4 } });
    const stream = await openai(raw).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'count' }],
      stream: true,
    });
    let text = '';
    let sawUsage = false;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) sawUsage = true;
    }
    expect(text).toBe('one two three four');
    expect(sawUsage).toBe(false);
    expect((h.upstream.requests[0]!.body as { stream_options: unknown }).stream_options).toEqual({ include_usage: true });
    const [record] = (await usageRecords()).filter((r) => r.keyId === keyId);
    // gpt-4o-mini: 50 × 0.15 + 4 × 0.60 = 7.5 + 2.4 → 10 µ$ (rounded up once)
    expect(record).toMatchObject({ costMicros: 10, inputTokens: 50, outputTokens: 4, stream: true, outcome: 'ok', costEstimated: false });
  });

  it('when the caller streams and asks for usage, the usage chunk is passed on', async () => {
    const { raw } = await h.createKey({ userId: 'u-stream-usage' });
    h.upstream.script({ usage: { inputTokens: 9, outputTokens: 3 } });
    const stream = await openai(raw).chat.completions.create({
      model: 'gpt-4o-mini',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const chunk of stream) if (chunk.usage) usage = chunk.usage;
    expect(usage?.prompt_tokens).toBe(9);
  });

  it('when a stream ends without usage, it is charged the reservation, never $0', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'u-nousage' });
    h.upstream.script({ omitUsage: true, replyText: 'partial answer' });
    const body = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: 'hello there' }], max_tokens: 100 };
    const stream = await openai(raw).chat.completions.create({ ...body, stream: true });
    for await (const _ of stream) void _;
    const [record] = (await usageRecords()).filter((r) => r.keyId === keyId);
    const price = h.gateway.prices.resolve('gpt-4o').price;
    const expected = maxCostOf(price, { inputTokens: estimateChatInputTokens(body), maxOutputTokens: 100 });
    expect(record).toMatchObject({ costMicros: expected, costEstimated: true });
    expect(expected).toBeGreaterThan(0);
  });

  it('when the upstream fails, the caller gets 502, the hold is released and the failure is recorded at $0', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'u-fail' });
    h.upstream.script({ status: 500, errorMessage: 'upstream exploded' });
    const err = await openai(raw)
      .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.APIError);
    expect((err as InstanceType<typeof OpenAI.APIError>).status).toBe(502);
    const [record] = (await usageRecords()).filter((r) => r.keyId === keyId);
    expect(record).toMatchObject({ outcome: 'upstream_error', costMicros: 0, httpStatus: 502 });
    const day = await counter(`key:${keyId}`, 'day');
    // The key's day has no limit: reserve never wrote `reserved` there (settle writes spent and committed).
    expect(day).toMatchObject({ spent: 0, committed: 0 });
    expect(day?.reserved ?? 0).toBe(0);
    expect(await h.holds()).toHaveLength(0);
  });

  it('when the upstream rejects the request as invalid, the caller sees 400 with the upstream message', async () => {
    const { raw } = await h.createKey({ userId: 'u-upstream-400' });
    h.upstream.script({ status: 400, errorMessage: "Unsupported parameter: 'foo'" });
    const err = (await openai(raw)
      .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] })
      .catch((e: unknown) => e)) as InstanceType<typeof OpenAI.APIError>;
    expect(err.status).toBe(400);
    expect(err.message).toContain("Unsupported parameter: 'foo'");
  });

  it('when the mock provider is asked, it answers with no network and a real price', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'u-mock' });
    const res = await openai(raw).chat.completions.create({ model: 'mock/gpt-4o-mini', messages: [{ role: 'user', content: 'Hello' }] });
    expect(res.choices[0]!.message.content).toBeTruthy();
    expect(h.upstream.requests).toHaveLength(0);
    const [record] = (await usageRecords()).filter((r) => r.keyId === keyId);
    const price = h.gateway.prices.resolve('mock/gpt-4o-mini').price;
    expect(record!.costMicros).toBe(
      costOf(price, { inputTokens: res.usage!.prompt_tokens, outputTokens: res.usage!.completion_tokens, cachedInputTokens: 0, cacheWriteTokens: 0 }),
    );
  });
});

describe('Anthropic Messages through the gateway', () => {
  it('when the Anthropic SDK sends a message, x-api-key authenticates and cache tokens are billed at their prices', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'u-anthropic' });
    h.upstream.script({ replyText: 'Bonjour', usage: { inputTokens: 100, outputTokens: 10, cachedTokens: 1000, cacheWriteTokens: 200 } });
    const msg = await anthropic(raw).messages.create({
      model: 'claude-sonnet-4-6',
      max_tokens: 50,
      messages: [{ role: 'user', content: 'Say hello in French' }],
    });
    expect(msg.content[0]).toMatchObject({ type: 'text', text: 'Bonjour' });
    const upstreamReq = h.upstream.requests[0]!;
    expect(upstreamReq.path).toBe('/v1/messages');
    expect(upstreamReq.headers['x-api-key']).toBe(UPSTREAM_ANTHROPIC_KEY);
    const [record] = (await usageRecords()).filter((r) => r.keyId === keyId);
    // 100 × $3 + 1000 × $0.30 + 200 × $3.75 + 10 × $15 per MTok = 300 + 300 + 750 + 150 µ$
    expect(record).toMatchObject({ inputTokens: 1300, cachedInputTokens: 1000, cacheWriteTokens: 200, costMicros: 1500 });
  });

  it('when the Anthropic SDK streams, text arrives and usage from message_start and message_delta is settled', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'u-anthropic-stream' });
    h.upstream.script({ replyText: 'streamed words here', usage: { inputTokens: 40, outputTokens: 7 } });
    const stream = anthropic(raw).messages.stream({ model: 'claude-sonnet-4-6', max_tokens: 50, messages: [{ role: 'user', content: 'go' }] });
    const final = await stream.finalMessage();
    expect(final.content[0]).toMatchObject({ type: 'text', text: 'streamed words here' });
    const [record] = (await usageRecords()).filter((r) => r.keyId === keyId);
    expect(record).toMatchObject({ inputTokens: 40, outputTokens: 7, costMicros: 40 * 3 + 7 * 15, stream: true });
  });

  it('when an Anthropic route gets a bad key, the error is in the Anthropic dialect', async () => {
    const res = await fetch(`${h.url}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': 'sk-tg-nope', 'content-type': 'application/json' },
      body: '{}',
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toEqual({ type: 'error', error: { type: 'authentication_error', message: expect.any(String) } });
  });
});

describe('embeddings, models and usage', () => {
  it('when embeddings are requested with the SDK, vectors come back and input tokens are billed', async () => {
    const { raw, keyId } = await h.createKey({ userId: 'u-embed' });
    h.upstream.script({ usage: { inputTokens: 1_000_000 } });
    const res = await openai(raw).embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
    expect(res.data).toHaveLength(2);
    const [record] = (await usageRecords()).filter((r) => r.keyId === keyId);
    expect(record).toMatchObject({ requestType: 'embeddings', costMicros: 20_000 });
  });

  it('when a key without the embed scope asks for embeddings, it gets 403', async () => {
    const { raw } = await h.createKey({ userId: 'u-noembed', scopes: ['ai:complete'] });
    const err = (await openai(raw).embeddings.create({ model: 'text-embedding-3-small', input: 'a' }).catch((e: unknown) => e)) as InstanceType<
      typeof OpenAI.APIError
    >;
    expect(err.status).toBe(403);
  });

  it('when models are listed, only priced models of configured providers appear', async () => {
    const { raw } = await h.createKey({ userId: 'u-models' });
    const ids: string[] = [];
    for await (const m of openai(raw).models.list()) ids.push(m.id);
    expect(ids).toContain('openai/gpt-4o');
    expect(ids).toContain('anthropic/claude-sonnet-4-5');
    expect(ids).toContain('mock/gpt-4o-mini');
    expect(ids.some((id) => id.startsWith('bedrock/'))).toBe(false);
  });

  it('when a caller reads /v1/usage, it sees its own spend and remaining budget', async () => {
    const { raw } = await h.createKey({ userId: 'u-usage', budget: { window: 'day', limit: 1_000_000 } });
    h.upstream.script({ usage: { inputTokens: 1000, outputTokens: 100 } });
    await openai(raw).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'x' }] });
    await h.settled();
    const res = await fetch(`${h.url}/v1/usage`, { headers: { authorization: `Bearer ${raw}` } });
    const body = (await res.json()) as { scopes: { scope: string; windows: Record<string, Record<string, unknown>> }[] };
    const key = body.scopes.find((s) => s.scope.startsWith('key:'))!;
    expect(key.windows.day).toMatchObject({ spent_usd: formatUsd(3500), limit_usd: '1.000000', remaining_usd: formatUsd(1_000_000 - 3500), requests: 1 });
  });
});
