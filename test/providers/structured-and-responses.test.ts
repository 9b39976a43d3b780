/**
 * Structured output for providers without `response_format` (a forced tool whose input is the answer), the
 * Responses API translated onto chat completions (request, answer and event stream, over Bedrock's
 * ConverseStream with aws-sdk-client-mock), what the translation refuses, and the mock's plans.
 */
import { BedrockRuntimeClient, ConverseCommand, ConverseStreamCommand, type ConverseStreamOutput } from '@aws-sdk/client-bedrock-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import { ManualClock } from '../../lambda/core/clock';
import { InvalidRequestError } from '../../lambda/core/errors';
import { toAnthropicRequest } from '../../lambda/providers/anthropic/translate';
import { BedrockProvider, toConverseRequest } from '../../lambda/providers/bedrock/provider';
import { planAnswer, sampleFromSchema } from '../../lambda/providers/mock/plan';
import { responsesToChatRequest } from '../../lambda/providers/responses/request';
import { responsesViaChat } from '../../lambda/providers/responses/via-chat';
import { asJson, asStream, callContext, payloadsOf, readAll } from './support';

const SCHEMA = { type: 'object', properties: { city: { type: 'string' }, n: { type: 'integer' } }, required: ['city', 'n'] };
const jsonSchemaFormat = { type: 'json_schema', json_schema: { name: 'weather', schema: SCHEMA } };
const chat = (extra: Record<string, unknown> = {}) => ({ model: 'm', messages: [{ role: 'user', content: 'Hi' }], ...extra });

describe('structured output as a forced tool', () => {
  it('when an Anthropic request asks for a json_schema, it gets the schema as a tool it must call', () => {
    const out = toAnthropicRequest(chat({ response_format: jsonSchemaFormat }), { defaultMaxTokens: 10 });
    expect(out.tools).toEqual([expect.objectContaining({ name: 'weather', input_schema: SCHEMA })]);
    expect(out.tool_choice).toEqual({ type: 'tool', name: 'weather' });
  });

  it('when the caller has tools too, the model must call one of them or the schema tool, named apart', () => {
    const tools = [{ type: 'function', function: { name: 'weather', parameters: { type: 'object' } } }];
    const out = toConverseRequest(chat({ response_format: jsonSchemaFormat, tools }), { defaultMaxTokens: 10 });
    expect(out.toolConfig!.tools!.map((t) => t.toolSpec!.name)).toEqual(['weather', 'weather_json']);
    expect(out.toolConfig!.toolChoice).toEqual({ any: {} });
  });

  it('when response_format is unknown or its schema is not an object, it is a 400, never dropped', () => {
    expect(() => toAnthropicRequest(chat({ response_format: { type: 'xml' } }), { defaultMaxTokens: 10 })).toThrow(InvalidRequestError);
    expect(() =>
      toConverseRequest(chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'array' } } } }), { defaultMaxTokens: 10 }),
    ).toThrow(/must describe an object/);
  });

  const bedrock = mockClient(BedrockRuntimeClient);
  const provider = new BedrockProvider({
    client: new BedrockRuntimeClient({ region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } }),
    clock: new ManualClock(1_750_000_000_000),
  });
  afterEach(() => bedrock.reset());

  it('when Bedrock answers with the schema tool, the caller gets its input as the message text and finish_reason stop', async () => {
    bedrock.on(ConverseCommand).resolves({
      output: { message: { role: 'assistant', content: [{ toolUse: { toolUseId: 't', name: 'weather', input: { city: 'Paris', n: 3 } } }] } },
      stopReason: 'tool_use',
      usage: { inputTokens: 10, outputTokens: 5, totalTokens: 15 },
      metrics: { latencyMs: 1 },
    });
    const body = asJson(await provider.chatCompletions(chat({ response_format: jsonSchemaFormat }), callContext()));
    const choice = (body.choices as Record<string, unknown>[])[0]!;
    expect(choice.finish_reason).toBe('stop');
    expect(JSON.parse((choice.message as { content: string }).content)).toEqual({ city: 'Paris', n: 3 });
    expect((choice.message as { tool_calls?: unknown }).tool_calls).toBeUndefined();
  });

  it('when the Responses API is asked for a stream on Bedrock, the events follow the Responses order with usage at the end', async () => {
    const events: ConverseStreamOutput[] = [
      { messageStart: { role: 'assistant' } },
      { contentBlockDelta: { contentBlockIndex: 0, delta: { text: 'Hello ' } } },
      { contentBlockDelta: { contentBlockIndex: 0, delta: { text: 'there' } } },
      { contentBlockStop: { contentBlockIndex: 0 } },
      { contentBlockStart: { contentBlockIndex: 1, start: { toolUse: { toolUseId: 'tu1', name: 'get_weather' } } } },
      { contentBlockDelta: { contentBlockIndex: 1, delta: { toolUse: { input: '{"city":' } } } },
      { contentBlockDelta: { contentBlockIndex: 1, delta: { toolUse: { input: '"Paris"}' } } } },
      { messageStop: { stopReason: 'tool_use' } },
      { metadata: { usage: { inputTokens: 20, outputTokens: 7, totalTokens: 27 }, metrics: { latencyMs: 1 } } },
    ];
    bedrock.on(ConverseStreamCommand).resolves({ stream: (async function* () { yield* events; })() });
    const result = asStream(
      await responsesViaChat(provider, { model: 'm', input: 'Weather?', stream: true, tools: [{ type: 'function', name: 'get_weather', parameters: { type: 'object' } }] }, callContext({ requestId: 'req_abc' }), { createdAt: 1 }),
    );
    const payloads = (await payloadsOf(await readAll(result.body))) as Record<string, unknown>[];
    expect(payloads.map((p) => p.type)).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.content_part.added',
      'response.output_text.delta',
      'response.output_text.delta',
      'response.output_text.done',
      'response.content_part.done',
      'response.output_item.done',
      'response.output_item.added',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(payloads.map((p) => p.sequence_number)).toEqual(payloads.map((_, i) => i));
    const completed = payloads.at(-1)!.response as Record<string, unknown>;
    expect(completed).toMatchObject({ id: 'resp_abc', status: 'completed', usage: { input_tokens: 20, output_tokens: 7, total_tokens: 27 } });
    expect((completed.output as Record<string, unknown>[])[1]).toMatchObject({ type: 'function_call', call_id: 'tu1', name: 'get_weather', arguments: '{"city":"Paris"}' });
    expect(result.usage()).toEqual({ inputTokens: 20, outputTokens: 7, cachedInputTokens: 0, cacheWriteTokens: 0 });
  });
});

describe('Responses requests translated to chat completions', () => {
  it('when given instructions, message items, a function call and its output, it builds the chat conversation', () => {
    const out = responsesToChatRequest({
      model: 'm',
      instructions: 'Be brief.',
      max_output_tokens: 50,
      input: [
        { role: 'user', content: [{ type: 'input_text', text: 'Weather?' }] },
        { type: 'function_call', call_id: 'c1', name: 'get_weather', arguments: '{"city":"Paris"}' },
        { type: 'function_call', call_id: 'c2', name: 'get_weather', arguments: '{"city":"Rome"}' },
        { type: 'function_call_output', call_id: 'c1', output: 'sunny' },
        { type: 'function_call_output', call_id: 'c2', output: [{ type: 'input_text', text: 'rain' }] },
      ],
      text: { format: { type: 'json_object' } },
      tool_choice: 'required',
      tools: [{ type: 'function', name: 'get_weather', parameters: { type: 'object' } }],
    });
    expect(out).toEqual({
      model: 'm',
      max_completion_tokens: 50,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'text', text: 'Weather?' }] },
        {
          role: 'assistant',
          content: null,
          tool_calls: [
            { id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } },
            { id: 'c2', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Rome"}' } },
          ],
        },
        { role: 'tool', tool_call_id: 'c1', content: 'sunny' },
        { role: 'tool', tool_call_id: 'c2', content: 'rain' },
      ],
      tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }],
      tool_choice: 'required',
      response_format: { type: 'json_object' },
    });
  });

  it.each([
    ['an item_reference', { input: [{ type: 'item_reference', id: 'msg_1' }] }, 'item_reference_unsupported'],
    ['a built-in tool', { input: 'x', tools: [{ type: 'web_search' }] }, 'unsupported_tool'],
    ['a file input', { input: [{ role: 'user', content: [{ type: 'input_file', file_id: 'f' }] }] }, 'unsupported_content'],
  ])('when the request holds %s, it is a 400 naming it, never dropped', (_what, extra, code) => {
    let err: unknown;
    try {
      responsesToChatRequest({ model: 'm', ...extra } as never);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(InvalidRequestError);
    expect((err as InvalidRequestError).code).toBe(code);
  });
});

describe('the mock provider plans', () => {
  it('when a schema asks for an object with required properties, the sample fills each by type', () => {
    const schema = {
      type: 'object',
      properties: {
        name: { type: 'string', minLength: 3 },
        age: { type: 'integer', minimum: 18 },
        tags: { type: 'array', items: { type: 'string' }, minItems: 2 },
        kind: { enum: ['a', 'b'] },
        nested: { type: 'object', properties: { ok: { type: 'boolean' }, maybe: { type: ['null', 'number'] } } },
        choice: { anyOf: [{ type: 'null' }, { type: 'string', format: 'date' }] },
      },
      required: ['name', 'age', 'tags', 'kind', 'nested', 'choice'],
    };
    expect(sampleFromSchema(schema, 'hi')).toEqual({
      name: 'hix',
      age: 18,
      tags: ['hi', 'hi'],
      kind: 'a',
      nested: { ok: true, maybe: 1 },
      choice: '2030-01-01',
    });
  });

  it('when tools are declared and no result is in, it calls the named tool; after a result it answers in text', () => {
    const tools = [
      { name: 'a', parameters: { type: 'object', properties: { x: { type: 'number' } } } },
      { name: 'b', parameters: { type: 'object', properties: { q: { type: 'string' } } } },
    ];
    expect(planAnswer({ tools, toolChoice: { name: 'b' }, lastToolResult: undefined, jsonSchema: undefined, prompt: 'find' })).toEqual({
      kind: 'tool_call',
      tool: tools[1],
      arguments: '{"q":"find"}',
    });
    expect(planAnswer({ tools, toolChoice: 'auto', lastToolResult: '42', jsonSchema: undefined, prompt: 'find' })).toEqual({ kind: 'tool_result', result: '42' });
    expect(planAnswer({ tools, toolChoice: 'none', lastToolResult: undefined, jsonSchema: undefined, prompt: 'find' })).toEqual({ kind: 'text' });
  });
});
