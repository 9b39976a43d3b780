/**
 * LangChain (`@langchain/openai`, `@langchain/anthropic`), unchanged but for its base URL, through the gateway:
 * invoke, stream, tools both ways, structured output, the Responses API and embeddings, for OpenAI and
 * Anthropic models.
 */
import { ChatAnthropic } from '@langchain/anthropic';
import type { BaseChatModel } from '@langchain/core/language_models/chat_models';
import { AIMessage, HumanMessage, ToolMessage } from '@langchain/core/messages';
import { ChatOpenAI, OpenAIEmbeddings } from '@langchain/openai';
import { getWeather, PLAIN_ANSWER, startClientSuite, TOOL_ANSWER, WEATHER_JSON, WEATHER_SCHEMA, type ClientSuite } from './support';

let s: ClientSuite;
let key: string;
beforeAll(async () => {
  s = await startClientSuite();
  key = await s.key('u-langchain');
});
afterAll(() => s.h.close());

const chatOpenAI = (model: string, extra: Record<string, unknown> = {}) =>
  new ChatOpenAI({ model, apiKey: key, configuration: { baseURL: s.h.baseURL }, maxRetries: 0, ...extra });
const chatAnthropic = (model: string, apiKey = key) => new ChatAnthropic({ model, apiKey, anthropicApiUrl: s.h.url, maxRetries: 0 });

const weatherTool = {
  type: 'function' as const,
  function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
};

/** Each model with the upstream path the gateway must reach for it. */
const models: [string, () => BaseChatModel, string][] = [
  ['ChatOpenAI(gpt-4o-mini)', () => chatOpenAI('gpt-4o-mini'), '/v1/chat/completions'],
  ['ChatOpenAI(gpt-4o-mini, useResponsesApi)', () => chatOpenAI('gpt-4o-mini', { useResponsesApi: true }), '/v1/responses'],
  ['ChatOpenAI(claude-sonnet-4-6) (translated)', () => chatOpenAI('claude-sonnet-4-6'), '/v1/messages'],
  ['ChatOpenAI(claude-sonnet-4-6, useResponsesApi) (translated)', () => chatOpenAI('claude-sonnet-4-6', { useResponsesApi: true }), '/v1/messages'],
  ['ChatAnthropic(claude-sonnet-4-6)', () => chatAnthropic('claude-sonnet-4-6'), '/v1/messages'],
];

describe.each(models)('LangChain, %s', (_label, model, upstreamPath) => {
  it('when it invokes, it gets the answer with usage metadata', async () => {
    const reply = await model().invoke('Hi');
    expect(s.h.upstream.requests.at(-1)!.path).toBe(upstreamPath);
    expect(reply.text).toBe(PLAIN_ANSWER);
    expect((reply as AIMessage).usage_metadata?.input_tokens).toBeGreaterThan(0);
  });

  it('when it streams, the chunks concatenate to the answer', async () => {
    let text = '';
    for await (const chunk of await model().stream('Hi')) text += chunk.text;
    expect(text).toBe(PLAIN_ANSWER);
  });

  it('when it binds a tool, it gets the call, and after a ToolMessage the answer', async () => {
    const bound = model().bindTools!([weatherTool]);
    const first = (await bound.invoke([new HumanMessage('Weather in Paris?')])) as AIMessage;
    const call = first.tool_calls![0]!;
    expect(call).toMatchObject({ name: 'get_weather', args: { city: 'Paris' } });
    const second = await bound.invoke([
      new HumanMessage('Weather in Paris?'),
      first,
      new ToolMessage({ tool_call_id: call.id!, content: getWeather(call.args as { city: string }) }),
    ]);
    expect(second.text).toBe(TOOL_ANSWER);
  });

  it('when it asks withStructuredOutput, it gets the object', async () => {
    const structured = model().withStructuredOutput({ title: 'weather', description: 'The weather', ...WEATHER_SCHEMA });
    expect(await structured.invoke('Weather as JSON')).toEqual(WEATHER_JSON);
  });
});

describe('LangChain, embeddings and errors', () => {
  it('when it embeds documents, it gets one vector per document', async () => {
    const embeddings = new OpenAIEmbeddings({ model: 'text-embedding-3-small', apiKey: key, configuration: { baseURL: s.h.baseURL }, maxRetries: 0 });
    expect(await embeddings.embedDocuments(['a', 'b'])).toHaveLength(2);
  });

  it('when its budget is spent, the call fails once with the 429', async () => {
    const broke = await s.brokeKey('u-lc-broke');
    const before = s.h.upstream.requests.length;
    await expect(chatAnthropic('claude-sonnet-4-6', broke).invoke('Hi')).rejects.toThrow(/429|budget|quota/i);
    expect(s.h.upstream.requests.length).toBe(before);
  });
});
