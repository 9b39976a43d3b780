/**
 * An Anthropic-dialect caller (the real `@anthropic-ai/sdk`, as Claude Code) on OpenAI models through the local
 * gateway against the fake OpenAI upstream: a `max_tokens` above the model's own output limit is lowered to
 * that limit, sent so and reserved at it (a budget that could not hold the caller's figure admits the call);
 * a thinking budget or an effort becomes `reasoning_effort` on reasoning models and nothing on the others.
 */
import Anthropic from '@anthropic-ai/sdk';
import { EFFORT_THRESHOLDS } from '../../lambda/providers/messages/request';
import { startClientSuite, type ClientSuite } from './support';

let s: ClientSuite;
beforeAll(async () => {
  s = await startClientSuite();
});
afterAll(() => s.h.close());

const client = (key: string) => new Anthropic({ apiKey: key, baseURL: s.h.url, maxRetries: 0 });
const lastChat = () => s.h.upstream.requests.filter((r) => r.path === '/v1/chat/completions').at(-1)!.body as Record<string, unknown>;
const ask = (key: string, body: Partial<Anthropic.MessageCreateParamsNonStreaming> & { model: string; max_tokens: number }) =>
  // An explicit timeout: the SDK otherwise insists on streaming for a large max_tokens.
  client(key).messages.create({ messages: [{ role: 'user', content: 'Say hi.' }], ...body } as Anthropic.MessageCreateParamsNonStreaming, { timeout: 120_000 });

describe('Anthropic SDK on OpenAI models: output limits and reasoning', () => {
  it('when max_tokens is above gpt-4o’s 16,384, OpenAI gets 16,384 and the reservation is at 16,384, so a budget too small for the caller’s figure admits it', async () => {
    const { raw, keyId } = await s.h.createKey({ userId: 'u-limits-clamp' });
    // gpt-4o output is $10 per million: 64,000 tokens would hold $0.64, 16,384 holds $0.16 (+ the input).
    await s.h.gateway.ledger.setLimit(`key:${keyId}`, 'day', 200_000);
    s.h.upstream.script({ replyText: 'hi', usage: { inputTokens: 20, outputTokens: 5 } });
    const msg = await ask(raw, { model: 'gpt-4o', max_tokens: 64_000 });
    expect(msg.content).toEqual([{ type: 'text', text: 'hi' }]);
    expect(lastChat()).toMatchObject({ model: 'gpt-4o', max_completion_tokens: 16_384 });
    // The same request on a native Anthropic model is forwarded as sent (pass-through is faithful).
    s.h.upstream.script({ replyText: 'hi', usage: { inputTokens: 20, outputTokens: 5 } });
    await ask(raw, { model: 'claude-haiku-4-5', max_tokens: 20_000 });
    expect((s.h.upstream.requests.at(-1)!.body as Record<string, unknown>).max_tokens).toBe(20_000);
  });

  it('when the budget cannot hold even the clamped cap, the refusal names the clamped figure’s cost, not the caller’s', async () => {
    const { raw, keyId } = await s.h.createKey({ userId: 'u-limits-tight' });
    await s.h.gateway.ledger.setLimit(`key:${keyId}`, 'day', 100_000); // $0.10 < $0.16
    const before = s.h.upstream.requests.length;
    const err = await ask(raw, { model: 'gpt-4o', max_tokens: 64_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    expect((err as Error).message).toMatch(/needs up to \$0\.16/);
    expect(s.h.upstream.requests.length).toBe(before);
  });

  it.each([
    ['a small thinking budget', 'low', { thinking: { type: 'enabled', budget_tokens: 4_000 } }],
    ['a middling thinking budget', 'medium', { thinking: { type: 'enabled', budget_tokens: EFFORT_THRESHOLDS.low } }],
    ['a large thinking budget', 'high', { thinking: { type: 'enabled', budget_tokens: 31_999 } }],
    ['an effort (with adaptive thinking)', 'medium', { thinking: { type: 'adaptive' }, output_config: { effort: 'medium' } }],
    ['effort max', 'high', { output_config: { effort: 'max' } }],
  ])('when a gpt-5 request carries %s, OpenAI gets reasoning_effort %s', async (_what, effort, extra) => {
    const key = await s.key(`u-effort-${effort}-${_what.length}`);
    s.h.upstream.script({ replyText: 'hi', usage: { inputTokens: 20, outputTokens: 5 } });
    await ask(key, { model: 'gpt-5.1', max_tokens: 40_000, ...(extra as object) });
    expect(lastChat()).toMatchObject({ model: 'gpt-5.1', reasoning_effort: effort, max_completion_tokens: 40_000 });
    expect(lastChat()).not.toHaveProperty('thinking');
  });

  it('when thinking is off, adaptive without an effort, or the model does not reason (gpt-4o), no reasoning_effort is sent', async () => {
    const key = await s.key('u-effort-none');
    for (const [model, extra] of [
      ['gpt-5.1', { thinking: { type: 'disabled' } }],
      ['gpt-5.1', { thinking: { type: 'adaptive' } }],
      ['gpt-4o', { thinking: { type: 'enabled', budget_tokens: 10_000 } }],
    ] as const) {
      s.h.upstream.script({ replyText: 'hi', usage: { inputTokens: 20, outputTokens: 5 } });
      await ask(key, { model, max_tokens: 12_000, ...(extra as object) });
      expect(lastChat()).not.toHaveProperty('reasoning_effort');
    }
  });
});
