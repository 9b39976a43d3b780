/**
 * The official `@anthropic-ai/sdk`, unchanged but for its base URL, through the gateway: messages (text,
 * stream, tools both ways, native structured output), the mock provider, count_tokens, models in
 * Anthropic's shape and errors.
 */
import Anthropic from '@anthropic-ai/sdk';
import { getWeather, PLAIN_ANSWER, startClientSuite, TOOL_ANSWER, WEATHER_JSON, WEATHER_SCHEMA, type ClientSuite } from './support';

let s: ClientSuite;
let key: string;
beforeAll(async () => {
  s = await startClientSuite();
  key = await s.key('u-anthropic-sdk');
});
afterAll(() => s.h.close());

const client = (apiKey = key) => new Anthropic({ apiKey, baseURL: s.h.url, maxRetries: 2 });
const tools: Anthropic.Tool[] = [
  { name: 'get_weather', description: 'Weather in a city', input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
];

describe.each([
  ['an Anthropic model', 'claude-sonnet-4-6', PLAIN_ANSWER],
  ['the mock provider', 'mock/claude-sonnet-4-6', 'Mock reply to: Hi'],
])('Anthropic SDK, messages, %s', (label, model, expected) => {
  const mock = label.includes('mock');

  it('when it asks for text, it gets the answer', async () => {
    const msg = await client().messages.create({ model, max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] });
    expect(msg.content[0]).toMatchObject({ type: 'text', text: expected });
  });

  it('when it streams, the text assembles and the message_delta carries the cost', async () => {
    const stream = client().messages.stream({ model, max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] });
    const costs: string[] = [];
    stream.on('streamEvent', (event) => {
      const extra = (event as unknown as { tollgate?: { cost_usd: string } }).tollgate;
      if (event.type === 'message_delta' && extra) costs.push(extra.cost_usd);
    });
    const final = await stream.finalMessage();
    expect(final.content[0]).toMatchObject({ type: 'text', text: expected });
    expect(costs.at(-1)).toMatch(/^0\.\d{6}$/);
  });

  it('when it declares a tool, it gets tool_use, and after tool_result the answer', async () => {
    const messages: Anthropic.MessageParam[] = [{ role: 'user', content: 'Weather in Paris?' }];
    const first = await client().messages.create({ model, max_tokens: 200, messages, tools });
    expect(first.stop_reason).toBe('tool_use');
    const use = first.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(use.name).toBe('get_weather');
    messages.push({ role: 'assistant', content: first.content }, {
      role: 'user',
      content: [{ type: 'tool_result', tool_use_id: use.id, content: getWeather(use.input as { city: string }) }],
    });
    const second = await client().messages.create({ model, max_tokens: 200, messages, tools });
    const text = second.content.find((b) => b.type === 'text') as Anthropic.TextBlock;
    expect(text.text).toContain(mock ? 'Mock reply using the tool result' : TOOL_ANSWER);
  });

  it('when it streams a tool call, the input JSON assembles', async () => {
    const final = await client().messages.stream({ model, max_tokens: 200, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools }).finalMessage();
    const use = final.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(use.name).toBe('get_weather');
    expect(typeof use.input).toBe('object');
  });

  it('when it forces a tool for structured output, the tool input is the JSON', async () => {
    const msg = await client().messages.create({
      model,
      max_tokens: 200,
      messages: [{ role: 'user', content: 'Weather as JSON' }],
      tools: [{ name: 'weather', input_schema: WEATHER_SCHEMA as unknown as Anthropic.Tool.InputSchema }],
      tool_choice: { type: 'tool', name: 'weather' },
    });
    const use = msg.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(Object.keys(use.input as object).sort()).toEqual(['city', 'temperature']);
    if (!mock) expect(use.input).toEqual(WEATHER_JSON);
  });

  it('when it counts tokens, it gets an estimate in input_tokens', async () => {
    const counted = await client().messages.countTokens({ model, messages: [{ role: 'user', content: 'Hello there' }] });
    expect(counted.input_tokens).toBeGreaterThan(0);
  });
});

describe('Anthropic SDK, the rest of its everyday calls', () => {
  it('when it lists models, it gets Anthropic shapes', async () => {
    const page = await client().models.list();
    expect(page.data.length).toBeGreaterThan(0);
    expect(page.data[0]).toMatchObject({ type: 'model', id: expect.any(String), display_name: expect.any(String) });
    const one = await client().models.retrieve('anthropic/claude-sonnet-4-6');
    expect(one).toMatchObject({ type: 'model', id: 'anthropic/claude-sonnet-4-6' });
  });

  it('when its budget is spent, it gets one 429 and the SDK does not retry', async () => {
    const broke = await s.brokeKey('u-anthropic-broke');
    const before = s.h.upstream.requests.length;
    const err = await client(broke)
      .messages.create({ model: 'claude-sonnet-4-6', max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.RateLimitError);
    expect((err as InstanceType<typeof Anthropic.RateLimitError>).headers?.get('x-should-retry')).toBe('false');
    expect(s.h.upstream.requests.length).toBe(before);
  });

  it('when its key is wrong, it gets an authentication_error', async () => {
    await expect(
      client('sk-tg-wrong').messages.create({ model: 'claude-sonnet-4-6', max_tokens: 10, messages: [{ role: 'user', content: 'Hi' }] }),
    ).rejects.toBeInstanceOf(Anthropic.AuthenticationError);
  });
});

describe("Anthropic SDK, Claude Code's request shapes", () => {
  // Claude Code's beta list grows with every release (164–221 characters in 2.1); this is a plausible future one.
  const betas = Array.from({ length: 24 }, (_, i) => `feature-number-${i}-2026-01-01`).join(',');

  it('when a system message arrives mid-conversation with a long anthropic-beta header, Anthropic gets both as sent', async () => {
    expect(betas.length).toBeGreaterThan(256);
    const messages = [
      { role: 'user', content: 'Hi' },
      { role: 'system', content: 'The user switched to plan mode.' },
      { role: 'user', content: 'Carry on' },
    ] as unknown as Anthropic.MessageParam[];
    const msg = await client().messages.create(
      { model: 'claude-sonnet-4-6', max_tokens: 100, messages },
      { headers: { 'anthropic-beta': `mid-conversation-system-2026-01-01,${betas}` } },
    );
    expect(msg.content[0]).toMatchObject({ type: 'text', text: PLAIN_ANSWER });
    const sent = s.h.upstream.requests.at(-1)!;
    expect(sent.path).toBe('/v1/messages');
    expect(sent.headers['anthropic-beta']).toBe(`mid-conversation-system-2026-01-01,${betas}`);
    expect((sent.body as { messages: unknown[] }).messages).toEqual(messages);
  });

  it('when the anthropic-beta header is over 4 KB, it gets a 400 and nothing reaches Anthropic', async () => {
    const before = s.h.upstream.requests.length;
    const err = await client()
      .messages.create({ model: 'claude-sonnet-4-6', max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] }, { headers: { 'anthropic-beta': 'b'.repeat(4097) } })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    expect(s.h.upstream.requests.length).toBe(before);
  });
});
