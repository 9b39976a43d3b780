/**
 * The official `openai` SDK (v7), unchanged but for its base URL, through the gateway to a fake upstream that
 * answers like the real APIs: chat completions and the Responses API for an OpenAI model (native) and an
 * Anthropic model (translated), the mock provider, embeddings, models and errors.
 */
import OpenAI from 'openai';
import { getWeather, startClientSuite, TOOL_ANSWER, PLAIN_ANSWER, WEATHER_JSON, WEATHER_SCHEMA, type ClientSuite } from './support';

let s: ClientSuite;
let key: string;
beforeAll(async () => {
  s = await startClientSuite();
  key = await s.key('u-openai-sdk');
});
afterAll(() => s.h.close());

const client = (apiKey = key) => new OpenAI({ apiKey, baseURL: s.h.baseURL, maxRetries: 2 });
const tools: OpenAI.Chat.Completions.ChatCompletionTool[] = [
  {
    type: 'function',
    function: { name: 'get_weather', description: 'Weather in a city', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
  },
];

describe.each([
  ['an OpenAI model', 'gpt-4o-mini'],
  ['an Anthropic model', 'claude-sonnet-4-6'],
])('openai SDK, chat completions, %s', (_label, model) => {
  it('when it asks for text, it gets the answer', async () => {
    const res = await client().chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }] });
    expect(res.choices[0]!.message.content).toBe(PLAIN_ANSWER);
  });

  it('when it streams with include_usage, the usage chunk carries the cost the gateway settles', async () => {
    const stream = await client().chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let cost: string | undefined;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta?.content ?? '';
      if (chunk.usage) cost = (chunk as unknown as { tollgate?: { cost_usd: string } }).tollgate?.cost_usd;
    }
    expect(text).toBe(PLAIN_ANSWER);
    expect(cost).toMatch(/^0\.\d{6}$/);
    await s.h.settled();
    const records = await s.h.scan('usage');
    const micros = Math.round(Number(cost) * 1e6);
    expect(records.some((r) => r.stream === true && String(r.model).endsWith(model) && r.costMicros === micros)).toBe(true);
  });

  it('when it declares a tool, it gets the call, and after sending the result it gets the answer', async () => {
    const messages: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Weather in Paris?' }];
    const first = await client().chat.completions.create({ model, messages, tools });
    const call = first.choices[0]!.message.tool_calls![0]! as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall;
    expect(first.choices[0]!.finish_reason).toBe('tool_calls');
    expect(JSON.parse(call.function.arguments)).toEqual({ city: 'Paris' });
    messages.push(first.choices[0]!.message, { role: 'tool', tool_call_id: call.id, content: getWeather(JSON.parse(call.function.arguments)) });
    const second = await client().chat.completions.create({ model, messages, tools });
    expect(second.choices[0]!.message.content).toBe(TOOL_ANSWER);
  });

  it('when it streams a tool call, the chunks assemble into the call', async () => {
    const stream = client().chat.completions.stream({ model, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools });
    const final = await stream.finalChatCompletion();
    const call = final.choices[0]!.message.tool_calls![0]! as OpenAI.Chat.Completions.ChatCompletionMessageFunctionToolCall;
    expect(call.function.name).toBe('get_weather');
    expect(JSON.parse(call.function.arguments)).toEqual({ city: 'Paris' });
  });

  it('when it asks for a json_schema response_format, the content parses to the schema', async () => {
    const res = await client().chat.completions.create({
      model,
      messages: [{ role: 'user', content: 'Weather as JSON' }],
      response_format: { type: 'json_schema', json_schema: { name: 'weather', schema: WEATHER_SCHEMA, strict: true } },
    });
    expect(JSON.parse(res.choices[0]!.message.content!)).toEqual(WEATHER_JSON);
    expect(res.choices[0]!.finish_reason).toBe('stop');
  });

  it('when it asks for json_object in a stream, the streamed content parses', async () => {
    const stream = client().chat.completions.stream({
      model,
      messages: [{ role: 'user', content: 'Weather as JSON' }],
      response_format: { type: 'json_object' },
    });
    const final = await stream.finalChatCompletion();
    expect(JSON.parse(final.choices[0]!.message.content!)).toEqual(expect.objectContaining({ city: 'Paris' }));
  });
});

describe.each([
  ['an OpenAI model (native)', 'gpt-4o-mini'],
  ['an Anthropic model (translated)', 'claude-sonnet-4-6'],
  ['the mock provider', 'mock/gpt-4o-mini'],
])('openai SDK, Responses API, %s', (label, model) => {
  const mock = label.includes('mock');

  it('when it sends a string input with instructions, it gets output_text and usage', async () => {
    const res = await client().responses.create({ model, input: 'Hi', instructions: 'Be brief.', max_output_tokens: 200 });
    expect(res.status).toBe('completed');
    expect(res.output_text).toBe(mock ? 'Mock reply to: Hi' : PLAIN_ANSWER);
    expect(res.usage!.input_tokens).toBeGreaterThan(0);
  });

  it('when it streams, the events arrive in order and response.completed carries usage and cost', async () => {
    const stream = await client().responses.create({ model, input: [{ role: 'user', content: 'Hi' }], stream: true });
    const types: string[] = [];
    const sequence: number[] = [];
    let text = '';
    let completed: Record<string, unknown> | undefined;
    for await (const event of stream) {
      types.push(event.type);
      sequence.push(event.sequence_number);
      if (event.type === 'response.output_text.delta') text += event.delta;
      if (event.type === 'response.completed') completed = event as unknown as Record<string, unknown>;
    }
    expect(text).toBe(mock ? 'Mock reply to: Hi' : PLAIN_ANSWER);
    expect(sequence).toEqual(sequence.map((_, i) => i));
    const distinct = types.filter((t, i) => t !== types[i - 1]);
    expect(distinct).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect((completed!.response as { usage: { output_tokens: number } }).usage.output_tokens).toBeGreaterThan(0);
    expect((completed!.tollgate as { cost_usd: string }).cost_usd).toMatch(/^0\.\d{6}$/);
  });

  it('when it declares a function tool, it gets a function_call, and after function_call_output the answer', async () => {
    const fnTools: OpenAI.Responses.Tool[] = [
      { type: 'function', name: 'get_weather', description: 'Weather', strict: false, parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } },
    ];
    const first = await client().responses.create({ model, input: 'Weather in Paris?', tools: fnTools });
    const call = first.output.find((i) => i.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
    expect(call.name).toBe('get_weather');
    const args = JSON.parse(call.arguments) as { city: string };
    if (!mock) expect(args).toEqual({ city: 'Paris' });
    const second = await client().responses.create({
      model,
      input: [
        { role: 'user', content: 'Weather in Paris?' },
        { type: 'function_call', call_id: call.call_id, name: call.name, arguments: call.arguments },
        { type: 'function_call_output', call_id: call.call_id, output: getWeather(args) },
      ],
      tools: fnTools,
    });
    expect(second.output_text).toContain(mock ? 'Mock reply using the tool result' : TOOL_ANSWER);
  });

  it('when it streams a function call, the arguments arrive as deltas and done', async () => {
    const stream = client().responses.stream({
      model,
      input: 'Weather in Paris?',
      tools: [{ type: 'function', name: 'get_weather', strict: false, parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }],
    });
    const deltas: string[] = [];
    stream.on('response.function_call_arguments.delta', (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    const call = final.output.find((i) => i.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
    expect(deltas.join('')).toBe(call.arguments);
    expect(typeof JSON.parse(call.arguments)).toBe('object');
  });

  it('when it asks for text.format json_schema, output_text parses to the schema', async () => {
    const res = await client().responses.create({
      model,
      input: 'Weather as JSON',
      text: { format: { type: 'json_schema', name: 'weather', schema: WEATHER_SCHEMA, strict: true } },
    });
    const parsed = JSON.parse(res.output_text) as Record<string, unknown>;
    expect(Object.keys(parsed).sort()).toEqual(['city', 'temperature']);
    expect(typeof parsed.temperature).toBe('number');
  });

  it('when it sends previous_response_id, it gets a 400 that says why', async () => {
    const err = await client()
      .responses.create({ model, input: 'Hi', previous_response_id: 'resp_123' })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    expect((err as InstanceType<typeof OpenAI.BadRequestError>).code).toBe('previous_response_id_unsupported');
  });
});

describe('openai SDK, the rest of its everyday calls', () => {
  it('when it embeds texts, it gets one vector per text', async () => {
    const res = await client().embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
    expect(res.data).toHaveLength(2);
  });

  it('when it embeds on the mock provider, the vectors are deterministic', async () => {
    const a = await client().embeddings.create({ model: 'mock/text-embedding-3-small', input: 'same' });
    const b = await client().embeddings.create({ model: 'mock/text-embedding-3-small', input: 'same' });
    expect(a.data[0]!.embedding).toEqual(b.data[0]!.embedding);
  });

  it('when it lists and retrieves models, it gets OpenAI shapes', async () => {
    const page = await client().models.list();
    expect(page.data.some((m) => m.id === 'openai/gpt-4o-mini')).toBe(true);
    const one = await client().models.retrieve('openai/gpt-4o-mini');
    expect(one).toMatchObject({ id: 'openai/gpt-4o-mini', object: 'model', owned_by: 'openai' });
    await expect(client().models.retrieve('no-such-model')).rejects.toBeInstanceOf(OpenAI.NotFoundError);
  });

  it('when its budget is spent, it gets one 429 insufficient_quota and the SDK does not retry', async () => {
    const broke = await s.brokeKey('u-openai-broke');
    const before = s.h.upstream.requests.length;
    const err = await client(broke)
      .chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hi' }] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.RateLimitError);
    const e = err as InstanceType<typeof OpenAI.RateLimitError>;
    expect(e.code).toBe('insufficient_quota');
    expect(e.headers?.get('x-should-retry')).toBe('false');
    expect(s.h.upstream.requests.length).toBe(before);
  });

  it('when its key is wrong, it gets 401 AuthenticationError', async () => {
    await expect(client('sk-tg-wrong').chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'Hi' }] })).rejects.toBeInstanceOf(
      OpenAI.AuthenticationError,
    );
  });

  it('when it reads a recorded request by id, it gets its cost; another key gets 404', async () => {
    const res = await client().chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'cost?' }] }).withResponse();
    const requestId = res.response.headers.get('x-request-id')!;
    await s.h.settled();
    const mine = await fetch(`${s.h.baseURL}/usage/requests/${requestId}`, { headers: { authorization: `Bearer ${key}` } });
    expect(mine.status).toBe(200);
    expect(await mine.json()).toMatchObject({ request_id: requestId, cost_usd: res.response.headers.get('x-tollgate-cost-usd'), outcome: 'ok' });
    const other = await fetch(`${s.h.baseURL}/usage/requests/${requestId}`, { headers: { authorization: `Bearer ${await s.key('u-other')}` } });
    expect(other.status).toBe(404);
  });
});
