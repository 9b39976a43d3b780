/**
 * Refusals an agent can show as they are: each names the limit, the scope and what to do in one sentence,
 * in the caller's dialect, through the real OpenAI and Anthropic SDKs (what Codex, the Agents SDK and Claude
 * Code print), and says whether retrying helps.
 */
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import { windowBounds } from '../../lambda/core/windows';
import { TEST_NOW } from '../support/clock';
import { plausibleModel, startClientSuite, type ClientSuite } from './support';

let s: ClientSuite;
beforeAll(async () => {
  s = await startClientSuite();
});
afterAll(() => s.h.close());

const openai = (key: string) => new OpenAI({ apiKey: key, baseURL: s.h.baseURL, maxRetries: 0 });
const anthropic = (key: string) => new Anthropic({ apiKey: key, baseURL: s.h.url, maxRetries: 0 });
const dayEnd = () => `${new Date(windowBounds('day', TEST_NOW).end).toISOString().slice(0, 10)} 00:00 UTC`;

describe('refusals an agent shows', () => {
  it('when a key’s daily budget is spent, both dialects say how much of which budget, when it resets and who can raise it', async () => {
    const { raw, keyId } = await s.h.createKey({ userId: 'u-denial-budget' });
    await s.h.gateway.ledger.setLimit(`key:${keyId}`, 'day', 20_000); // $0.02
    // One call spends half of it ($0.01 of 4,000 input tokens), so the refusal can say how much was spent.
    s.h.upstream.script({ usage: { inputTokens: 4_000, outputTokens: 10 } });
    await openai(raw).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20 });
    await s.h.settled();
    s.h.upstream.scriptEach(plausibleModel);
    // Up to $0.015: more than is left, less than the whole budget.
    const big = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: 'write a long essay' }], max_tokens: 1_500 };
    const err = await openai(raw).chat.completions.create(big).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.code).toBe('insufficient_quota');
    expect(e.headers?.get('x-should-retry')).toBe('false');
    expect(e.error).toMatchObject({
      message: expect.stringMatching(
        new RegExp(`^Budget exceeded: key ${keyId} has spent \\$0\\.\\d+ of its \\$0\\.02 daily budget and this request needs up to \\$0\\.\\d+; it resets at ${dayEnd()}, or ask an admin to raise it \\(budgets set key:${keyId} day USD\\)\\.$`),
      ),
    });

    const aerr = await anthropic(raw)
      .messages.create({ model: 'claude-sonnet-4-6', max_tokens: 1_000, messages: [{ role: 'user', content: 'write a long essay' }] })
      .catch((x: unknown) => x);
    expect(aerr).toBeInstanceOf(Anthropic.RateLimitError);
    const a = aerr as InstanceType<typeof Anthropic.RateLimitError>;
    expect(a.error).toMatchObject({ type: 'error', error: { message: expect.stringContaining(`key ${keyId} has spent`) } });
    expect((a.error as { error: { message: string } }).error.message).toContain(`daily budget and this request needs up to`);
  });

  it('when one request alone costs more than the budget, it says so and what to send instead', async () => {
    const { raw, keyId } = await s.h.createKey({ userId: 'u-denial-whole' });
    await s.h.gateway.ledger.setLimit(`key:${keyId}`, 'day', 1_000); // $0.001
    const err = await openai(raw)
      .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4_000 })
      .catch((e: unknown) => e);
    expect((err as Error).message).toMatch(
      new RegExp(`key ${keyId} has a daily budget of \\$0\\.001? and this request needs up to \\$0\\.\\d+, more than the whole limit; send a smaller request`),
    );
  });

  it('when a key’s request rate is used up, the refusal names the limit and when to retry, and retrying helps', async () => {
    const { raw, keyId } = await s.h.createKey({ userId: 'u-denial-rpm', rpm: 1 });
    await openai(raw).chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'one' }] });
    const err = await openai(raw)
      .chat.completions.create({ model: 'gpt-4o', messages: [{ role: 'user', content: 'two' }] })
      .catch((e: unknown) => e);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.headers?.get('x-should-retry')).toBe('true');
    expect(e.error).toMatchObject({
      message: expect.stringMatching(new RegExp(`^Rate limit reached for key ${keyId}: its 1 requests per minute \\(this request needs 1\\) are used up; retry in \\d+`)),
    });
    expect((e.error as { message: string }).message).toContain("or ask an admin to raise the key's limit");
  });

  it('when an agent repeats the same request, the loop refusal names the count, the limit and the scope, and says not to retry', async () => {
    const { raw, keyId } = await s.h.createKey({ userId: 'u-denial-loop' });
    const body = { model: 'gpt-4o', messages: [{ role: 'user' as const, content: 'the same question every time' }] };
    let refused: InstanceType<typeof OpenAI.RateLimitError> | undefined;
    for (let i = 0; i < 8 && !refused; i++) {
      const r = await openai(raw).chat.completions.create(body).catch((e: unknown) => e);
      if (r instanceof OpenAI.RateLimitError) refused = r;
      await s.h.settled();
    }
    expect(refused).toBeDefined();
    expect(refused!.headers?.get('x-should-retry')).toBe('false');
    expect(refused!.error).toMatchObject({
      code: 'loop_detected',
      message: expect.stringMatching(new RegExp(`^Loop detected: this request \\(or a near-copy\\) was sent \\d+ times within \\d+ minutes by user:u-denial-loop \\(last through key ${keyId}\\) \\(at most \\d+\\); change the request or wait before retrying\\.$`)),
    });
  });
});
