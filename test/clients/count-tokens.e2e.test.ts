/**
 * `POST /v1/messages/count_tokens` (Claude Code asks it before reading a file), over real HTTP with the real
 * Anthropic SDK: the provider's own count for Anthropic models (forwarded as given to a fake that answers and
 * refuses like Anthropic's endpoint), the gateway's tokenizer for the others, and never billed or counted by
 * the loop guard.
 */
import Anthropic from '@anthropic-ai/sdk';
import { estimateMessagesInputTokens } from '../../lambda/core/tokens';
import { fakeAnthropicTokenCount } from '../support/fake-upstream';
import { UPSTREAM_ANTHROPIC_KEY } from '../support/gateway-harness';
import { startClientSuite, type ClientSuite } from './support';

let s: ClientSuite;
let key: string;
beforeAll(async () => {
  s = await startClientSuite();
  key = await s.key('u-count-tokens');
});
afterAll(() => s.h.close());

const client = () => new Anthropic({ apiKey: key, baseURL: s.h.url, maxRetries: 0 });
const FILE = 'export function add(a: number, b: number): number {\n  return a + b;\n}\n'.repeat(200);
const body = (model: string) => ({
  model,
  system: 'You are a coding agent.',
  messages: [{ role: 'user' as const, content: `Read this file:\n${FILE}` }],
  tools: [{ name: 'Read', description: 'Reads a file', input_schema: { type: 'object' as const, properties: { path: { type: 'string' } } } }],
});
const countCalls = () => s.h.upstream.requests.filter((r) => r.path === '/v1/messages/count_tokens');

describe('count_tokens', () => {
  it('when the model is an Anthropic one, the answer is the provider’s own count, forwarded as sent', async () => {
    const before = countCalls().length;
    const { data, response } = await client()
      .messages.countTokens(body('claude-sonnet-4-6'), { headers: { 'anthropic-beta': 'token-counting-2024-11-01' } })
      .withResponse();
    const sent = countCalls().slice(before);
    expect(sent).toHaveLength(1);
    expect(data.input_tokens).toBe(fakeAnthropicTokenCount(sent[0]!.body as Record<string, unknown>));
    expect(response.headers.get('x-tollgate-token-count')).toBe('provider');
    // The platform's key upstream (never the caller's), the caller's beta header, and no field added.
    expect(sent[0]!.headers['x-api-key']).toBe(UPSTREAM_ANTHROPIC_KEY);
    expect(sent[0]!.headers['anthropic-beta']).toBe('token-counting-2024-11-01');
    expect(Object.keys(sent[0]!.body as object).sort()).toEqual(['messages', 'model', 'system', 'tools']);
  });

  it('when the model is not an Anthropic one, the tokenizer answers and no provider is called', async () => {
    const before = countCalls().length;
    const { data, response } = await client().messages.countTokens(body('gpt-4o')).withResponse();
    expect(countCalls().length).toBe(before);
    expect(response.headers.get('x-tollgate-token-count')).toBe('tokenizer');
    expect(data.input_tokens).toBe(estimateMessagesInputTokens(body('gpt-4o')));
    // A real tokenizer, not bytes ÷ 3: this code is ~4 bytes a token.
    expect(data.input_tokens).toBeLessThan(Buffer.byteLength(FILE) / 3.3);
  });

  it('when the provider fails, the tokenizer answers instead (scaled for Claude)', async () => {
    s.h.upstream.script({ status: 500 });
    try {
      const { data, response } = await client().messages.countTokens(body('claude-sonnet-4-6')).withResponse();
      expect(response.headers.get('x-tollgate-token-count')).toBe('tokenizer');
      expect(data.input_tokens).toBe(Math.ceil(estimateMessagesInputTokens(body('claude-sonnet-4-6')) * 1.2));
    } finally {
      s.h.upstream.scriptEach(() => ({}));
    }
  });

  it('when the provider refuses the body, the caller gets the provider’s 400 in Anthropic shape', async () => {
    const res = await fetch(`${s.h.url}/v1/messages/count_tokens`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-api-key': key, 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ ...body('claude-sonnet-4-6'), stream: true }),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ type: 'error', error: { message: expect.stringContaining('stream: Extra inputs are not permitted') } });
  });

  it('when it is called many times with the same body, nothing is billed and the loop guard never refuses it', async () => {
    await s.h.settled();
    const records = (await s.h.scan('usage')).length;
    for (let i = 0; i < 12; i++) {
      const counted = await client().messages.countTokens(body('claude-sonnet-4-6'));
      expect(counted.input_tokens).toBeGreaterThan(0);
    }
    await s.h.settled();
    expect((await s.h.scan('usage')).length).toBe(records);
    // The same Messages call is still admitted afterwards: count_tokens left no loop-guard trace.
    const msg = await client().messages.create({ ...body('claude-sonnet-4-6'), max_tokens: 100 });
    expect(msg.type).toBe('message');
  });

  it('when the key is wrong or the model unknown, it is refused in Anthropic shape', async () => {
    const bad = new Anthropic({ apiKey: 'sk-tg-wrong', baseURL: s.h.url, maxRetries: 0 });
    await expect(bad.messages.countTokens(body('claude-sonnet-4-6'))).rejects.toMatchObject({ status: 401 });
    await expect(client().messages.countTokens(body('no-such-model-x'))).rejects.toMatchObject({
      status: 400,
      error: { type: 'error', error: { type: 'invalid_request_error' } },
    });
  });
});
