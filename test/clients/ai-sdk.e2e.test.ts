/**
 * The Vercel AI SDK (`ai` 7 with @ai-sdk/openai, @ai-sdk/anthropic and @ai-sdk/openai-compatible), unchanged
 * but for its base URL, through the gateway: text, streams, tools with a round trip, structured output,
 * embeddings and errors, for OpenAI and Anthropic models. `openai(model)` speaks the Responses API.
 */
import { createAnthropic } from '@ai-sdk/anthropic';
import { createOpenAI } from '@ai-sdk/openai';
import { createOpenAICompatible } from '@ai-sdk/openai-compatible';
import { APICallError, embed, embedMany, generateText, jsonSchema, type LanguageModel, Output, stepCountIs, streamText, tool } from 'ai';
import { getWeather, PLAIN_ANSWER, startClientSuite, TOOL_ANSWER, WEATHER_JSON, WEATHER_SCHEMA, type ClientSuite } from './support';

let s: ClientSuite;
let key: string;
beforeAll(async () => {
  s = await startClientSuite();
  key = await s.key('u-ai-sdk');
});
afterAll(() => s.h.close());

const openai = (apiKey = key) => createOpenAI({ apiKey, baseURL: s.h.baseURL });
const anthropic = (apiKey = key) => createAnthropic({ apiKey, baseURL: s.h.baseURL });
const compatible = (apiKey = key) => createOpenAICompatible({ name: 'tollgate', apiKey, baseURL: s.h.baseURL, includeUsage: true });

const weatherTool = tool({
  description: 'Weather in a city',
  inputSchema: jsonSchema<{ city: string }>({ type: 'object', properties: { city: { type: 'string' } }, required: ['city'], additionalProperties: false }),
  execute: async (args) => getWeather(args),
});
const weatherOutput = Output.object({ schema: jsonSchema<{ city: string; temperature: number }>(WEATHER_SCHEMA as never) });

/** Each model with the gateway path the client calls and the upstream path the gateway must reach. */
const models: [string, () => LanguageModel, string, string][] = [
  ['openai(gpt-4o-mini) (Responses API, native)', () => openai()('gpt-4o-mini'), '/v1/responses', '/v1/responses'],
  ['openai(claude-sonnet-4-6) (Responses API, translated)', () => openai()('claude-sonnet-4-6'), '/v1/responses', '/v1/messages'],
  ['openai.chat(gpt-4o-mini)', () => openai().chat('gpt-4o-mini'), '/v1/chat/completions', '/v1/chat/completions'],
  ['openai.chat(claude-sonnet-4-6) (translated)', () => openai().chat('claude-sonnet-4-6'), '/v1/chat/completions', '/v1/messages'],
  ['anthropic(claude-sonnet-4-6)', () => anthropic()('claude-sonnet-4-6'), '/v1/messages', '/v1/messages'],
  ['openai-compatible(gpt-4o-mini)', () => compatible().chatModel('gpt-4o-mini'), '/v1/chat/completions', '/v1/chat/completions'],
  ['openai-compatible(claude-sonnet-4-6)', () => compatible().chatModel('claude-sonnet-4-6'), '/v1/chat/completions', '/v1/messages'],
];

describe.each(models)('AI SDK, %s', (_label, model, gatewayPath, upstreamPath) => {
  it('when it generates text, it gets the answer and usage', async () => {
    await s.h.settled();
    const before = (await s.h.scan('usage')).length;
    const result = await generateText({ model: model(), prompt: 'Hi', maxRetries: 0 });
    expect(s.h.upstream.requests.at(-1)!.path).toBe(upstreamPath);
    await s.h.settled();
    const records = await s.h.scan('usage');
    expect(records).toHaveLength(before + 1);
    expect(records.some((r) => r.endpoint === gatewayPath && Number(r.costMicros) > 0)).toBe(true);
    expect(result.text).toBe(PLAIN_ANSWER);
    expect(result.usage.inputTokens).toBeGreaterThan(0);
  });

  it('when it streams text, the text assembles', async () => {
    const result = streamText({ model: model(), prompt: 'Hi', maxRetries: 0 });
    expect(await result.text).toBe(PLAIN_ANSWER);
  });

  it('when it runs a tool loop, the tool is called and the final answer uses its result', async () => {
    const result = await generateText({ model: model(), prompt: 'Weather in Paris?', tools: { get_weather: weatherTool }, stopWhen: stepCountIs(3), maxRetries: 0 });
    expect(result.steps[0]!.toolCalls[0]).toMatchObject({ toolName: 'get_weather', input: { city: 'Paris' } });
    expect(result.text).toBe(TOOL_ANSWER);
  });

  it('when it streams a tool loop, the tool result and the answer arrive', async () => {
    const result = streamText({ model: model(), prompt: 'Weather in Paris?', tools: { get_weather: weatherTool }, stopWhen: stepCountIs(3), maxRetries: 0 });
    expect(await result.text).toBe(TOOL_ANSWER);
    expect((await result.steps)[0]!.toolResults[0]).toMatchObject({ toolName: 'get_weather' });
  });

  it('when it asks for structured output, it gets the object', async () => {
    const result = await generateText({ model: model(), prompt: 'Weather as JSON', output: weatherOutput, maxRetries: 0 });
    expect(result.output).toEqual(WEATHER_JSON);
  });

  it('when it streams structured output, the final object parses', async () => {
    const result = streamText({ model: model(), prompt: 'Weather as JSON', output: weatherOutput, maxRetries: 0 });
    expect(await result.output).toEqual(WEATHER_JSON);
  });
});

describe('AI SDK, embeddings and errors', () => {
  it('when it embeds with @ai-sdk/openai, it gets vectors', async () => {
    const { embeddings } = await embedMany({ model: openai().embedding('text-embedding-3-small'), values: ['a', 'b'], maxRetries: 0 });
    expect(embeddings).toHaveLength(2);
  });

  it('when it embeds with @ai-sdk/openai-compatible on the mock provider, it gets a vector', async () => {
    const { embedding } = await embed({ model: compatible().embeddingModel('mock/text-embedding-3-small'), value: 'a', maxRetries: 0 });
    expect(embedding.length).toBeGreaterThan(0);
  });

  it('when its budget is spent, it gets a 429 APICallError that says insufficient_quota', async () => {
    const broke = await s.brokeKey('u-ai-broke');
    const err = await generateText({ model: openai(broke).chat('gpt-4o-mini'), prompt: 'Hi', maxRetries: 0 }).catch((e: unknown) => e);
    expect(APICallError.isInstance(err)).toBe(true);
    expect((err as APICallError).statusCode).toBe(429);
    expect((err as APICallError).responseHeaders?.['x-should-retry']).toBe('false');
    expect((err as APICallError).responseBody).toContain('insufficient_quota');
  });

  it('when its key is wrong, it gets a 401 APICallError', async () => {
    const err = await generateText({ model: anthropic('sk-tg-wrong')('claude-sonnet-4-6'), prompt: 'Hi', maxRetries: 0 }).catch((e: unknown) => e);
    expect((err as APICallError).statusCode).toBe(401);
  });
});
