/**
 * Every surface to every provider, with the official SDKs as unchanged callers through the local gateway:
 * `@anthropic-ai/sdk` on an OpenAI model (the fake OpenAI upstream answers chat completions) and on a
 * Bedrock model (Converse, mocked with aws-sdk-client-mock: Bedrock cannot run here). JSON and stream, a
 * tool turn, structured output (`messages.parse`), refusals, and the ledger charged the provider's usage.
 * And the `openai` SDK's Responses API on an Anthropic model with Codex's kinds of tools (function, custom,
 * namespace; hosted tools refused per tool).
 */
import Anthropic from '@anthropic-ai/sdk';
import { jsonSchemaOutputFormat } from '@anthropic-ai/sdk/helpers/json-schema';
import { BedrockRuntimeClient, ConverseCommand, ConverseStreamCommand, type ConverseStreamOutput } from '@aws-sdk/client-bedrock-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import OpenAI from 'openai';
import { ManualClock } from '../../lambda/core/clock';
import { costOf } from '../../lambda/core/pricing';
import { TEST_NOW } from '../support/clock';
import { startHarness, type Harness } from '../support/gateway-harness';
import { getWeather, PLAIN_ANSWER, plausibleModel, startClientSuite, TOOL_ANSWER, WEATHER_JSON, WEATHER_SCHEMA, type ClientSuite } from './support';

const weatherTool: Anthropic.Tool = {
  name: 'get_weather',
  description: 'Weather in a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
};

/** The usage record of one request, by the `x-request-id` the gateway answered. */
async function recordOf(h: Harness, requestId: string | null | undefined): Promise<Record<string, unknown>> {
  await h.settled();
  const record = (await h.scan('usage')).find((r) => r.requestId === requestId);
  if (!record) throw new Error(`no usage record for ${String(requestId)}`);
  const { inputTokens, outputTokens, cachedInputTokens, cacheWriteTokens } = record;
  return { ...record, usage: { inputTokens, outputTokens, cachedInputTokens, cacheWriteTokens } };
}

describe('Anthropic SDK on an OpenAI model (/v1/messages → chat completions)', () => {
  let s: ClientSuite;
  let key: string;
  beforeAll(async () => {
    s = await startClientSuite();
    key = await s.key('u-messages-openai');
  });
  afterAll(() => s.h.close());
  const client = () => new Anthropic({ apiKey: key, baseURL: s.h.url, maxRetries: 0 });
  const model = 'gpt-4o-mini';
  const lastUpstream = () => s.h.upstream.requests.at(-1)!;

  it('when it asks for text with a system prompt in blocks, OpenAI gets chat messages and the caller an Anthropic message', async () => {
    const { data: msg, response } = await client()
      .messages.create({
        model,
        max_tokens: 300,
        system: [{ type: 'text', text: 'Be brief.', cache_control: { type: 'ephemeral' } }, { type: 'text', text: 'Answer in English.' }],
        messages: [{ role: 'user', content: [{ type: 'text', text: 'Hi' }] }],
        stop_sequences: ['END'],
        metadata: { user_id: 'user-42' },
      })
      .withResponse();
    expect(msg).toMatchObject({
      type: 'message',
      role: 'assistant',
      content: [{ type: 'text', text: PLAIN_ANSWER }],
      stop_reason: 'end_turn',
      stop_sequence: null,
      usage: { input_tokens: 40, output_tokens: 10, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 },
    });
    expect(msg.id).toMatch(/^msg_/);
    const sent = lastUpstream();
    expect(sent.path).toBe('/v1/chat/completions');
    expect(sent.body).toEqual({
      model,
      messages: [
        { role: 'system', content: 'Be brief.\nAnswer in English.' },
        { role: 'user', content: [{ type: 'text', text: 'Hi' }] },
      ],
      max_completion_tokens: 300,
      stop: ['END'],
      user: 'user-42',
    });
    const record = await recordOf(s.h, response.headers.get('x-request-id'));
    expect(record).toMatchObject({ endpoint: '/v1/messages', model: `openai/${model}`, outcome: 'ok' });
    expect(record.usage).toEqual({ inputTokens: 40, outputTokens: 10, cachedInputTokens: 0, cacheWriteTokens: 0 });
    const price = s.h.gateway.prices.resolve(model).price;
    expect(record.costMicros).toBe(costOf(price, { inputTokens: 40, outputTokens: 10, cachedInputTokens: 0, cacheWriteTokens: 0 }));
  });

  it('when OpenAI reports cached tokens, the message shows them as cache reads and the ledger prices them as such', async () => {
    s.h.upstream.scriptEach(() => ({ replyText: PLAIN_ANSWER, usage: { inputTokens: 1000, cachedTokens: 800, outputTokens: 10 } }));
    try {
      const { data: msg, response } = await client()
        .messages.create({ model, max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] })
        .withResponse();
      expect(msg.usage).toMatchObject({ input_tokens: 200, cache_read_input_tokens: 800, output_tokens: 10 });
      const record = await recordOf(s.h, response.headers.get('x-request-id'));
      expect(record.usage).toEqual({ inputTokens: 1000, outputTokens: 10, cachedInputTokens: 800, cacheWriteTokens: 0 });
    } finally {
      s.h.upstream.scriptEach(plausibleModel);
    }
  });

  it('when it streams, the events come in Anthropic order and message_delta carries the usage and the cost', async () => {
    const stream = client().messages.stream({ model, max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] });
    const types: string[] = [];
    let cost: string | undefined;
    stream.on('streamEvent', (event) => {
      types.push(event.type);
      const extra = (event as unknown as { tollgate?: { cost_usd: string } }).tollgate;
      if (event.type === 'message_delta' && extra) cost = extra.cost_usd;
    });
    const final = await stream.finalMessage();
    expect(final.content).toMatchObject([{ type: 'text', text: PLAIN_ANSWER }]);
    expect(final.usage).toMatchObject({ input_tokens: 40, output_tokens: 10 });
    expect(final.stop_reason).toBe('end_turn');
    const distinct = types.filter((t, i) => t !== types[i - 1]);
    expect(distinct).toEqual(['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
    expect(cost).toMatch(/^0\.\d{6}$/);
    const sent = lastUpstream().body as Record<string, unknown>;
    expect(sent.stream).toBe(true);
    expect(sent.stream_options).toEqual({ include_usage: true });
    const requestId = (await stream.withResponse()).response.headers.get('x-request-id');
    const record = await recordOf(s.h, requestId);
    expect(record.stream).toBe(true);
    expect(record.costMicros).toBe(Math.round(Number(cost) * 1e6));
  });

  it('when it declares a tool, it gets tool_use, and after tool_result the answer', async () => {
    const messages: Anthropic.MessageParam[] = [{ role: 'user', content: 'Weather in Paris?' }];
    const first = await client().messages.create({ model, max_tokens: 200, messages, tools: [weatherTool], tool_choice: { type: 'auto', disable_parallel_tool_use: true } });
    expect(first.stop_reason).toBe('tool_use');
    const use = first.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(use).toMatchObject({ id: 'call_fake_weather', name: 'get_weather', input: { city: 'Paris' } });
    expect(lastUpstream().body).toMatchObject({
      tools: [{ type: 'function', function: { name: 'get_weather', description: 'Weather in a city', parameters: weatherTool.input_schema } }],
      tool_choice: 'auto',
      parallel_tool_calls: false,
    });
    messages.push(
      { role: 'assistant', content: first.content },
      {
        role: 'user',
        content: [
          { type: 'tool_result', tool_use_id: use.id, content: [{ type: 'text', text: getWeather(use.input as { city: string }) }] },
        ],
      },
    );
    const second = await client().messages.create({ model, max_tokens: 200, messages, tools: [weatherTool] });
    expect(second.content).toEqual([{ type: 'text', text: TOOL_ANSWER }]);
    expect(second.stop_reason).toBe('end_turn');
    const sent = (lastUpstream().body as { messages: unknown[] }).messages;
    expect(sent).toEqual([
      { role: 'user', content: 'Weather in Paris?' },
      { role: 'assistant', content: null, tool_calls: [{ id: use.id, type: 'function', function: { name: 'get_weather', arguments: '{"city":"Paris"}' } }] },
      { role: 'tool', tool_call_id: use.id, content: getWeather({ city: 'Paris' }) },
    ]);
  });

  it('when it streams a tool call, the input arrives as input_json_delta and assembles', async () => {
    const stream = client().messages.stream({ model, max_tokens: 200, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools: [weatherTool] });
    const jsonDeltas: string[] = [];
    stream.on('streamEvent', (event) => {
      if (event.type === 'content_block_delta' && event.delta.type === 'input_json_delta') jsonDeltas.push(event.delta.partial_json);
    });
    const final = await stream.finalMessage();
    expect(final.stop_reason).toBe('tool_use');
    const use = final.content.find((b) => b.type === 'tool_use') as Anthropic.ToolUseBlock;
    expect(use).toMatchObject({ name: 'get_weather', input: { city: 'Paris' } });
    expect(JSON.parse(jsonDeltas.join(''))).toEqual({ city: 'Paris' });
  });

  it('when it uses messages.parse with output_config, OpenAI gets response_format json_schema and parsed_output is the JSON', async () => {
    const msg = await client().messages.parse({
      model,
      max_tokens: 200,
      messages: [{ role: 'user', content: 'Weather as JSON' }],
      output_config: { format: jsonSchemaOutputFormat(WEATHER_SCHEMA) },
    });
    expect(msg.parsed_output).toEqual(WEATHER_JSON);
    expect(lastUpstream().body).toMatchObject({
      response_format: { type: 'json_schema', json_schema: { name: 'output', schema: WEATHER_SCHEMA } },
    });
    expect((lastUpstream().body as Record<string, unknown>).output_config).toBeUndefined();
  });

  it("when it declares one of Anthropic's built-in tools, it gets a 400 naming the tool and nothing reaches OpenAI", async () => {
    const before = s.h.upstream.requests.length;
    const err = await client()
      .messages.create({
        model,
        max_tokens: 100,
        messages: [{ role: 'user', content: 'Search' }],
        tools: [weatherTool, { type: 'web_search_20250305', name: 'web_search' }],
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Anthropic.BadRequestError);
    const error = (err as InstanceType<typeof Anthropic.BadRequestError>).error as { type: string; error: { type: string; message: string } };
    expect(error.type).toBe('error');
    expect(error.error.type).toBe('invalid_request_error');
    expect(error.error.message).toContain('tools[1] ("web_search", type "web_search_20250305")');
    expect(s.h.upstream.requests.length).toBe(before);
  });

  it('when OpenAI fails mid-stream, the caller gets an Anthropic error event and the SDK throws', async () => {
    s.h.upstream.scriptEach(() => ({
      replyText: 'Partial answer here',
      midStreamEventAt: 1,
      midStreamEvent: () => `data: ${JSON.stringify({ error: { message: 'The server had an error processing your request.', type: 'server_error' } })}\n\n`,
    }));
    try {
      const stream = client().messages.stream({ model, max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] });
      const err = await stream.finalMessage().catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.APIError);
      expect(String((err as Error).message)).toContain('The server had an error');
    } finally {
      s.h.upstream.scriptEach(plausibleModel);
    }
  });

  it('when OpenAI refuses the request, the caller gets the error in the Anthropic dialect', async () => {
    s.h.upstream.scriptEach(() => ({ status: 400, errorMessage: "Invalid 'messages[1].content': too long." }));
    try {
      const err = await client()
        .messages.create({ model, max_tokens: 100, messages: [{ role: 'user', content: 'Hi' }] })
        .catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Anthropic.BadRequestError);
      const error = (err as InstanceType<typeof Anthropic.BadRequestError>).error as { type: string; error: { type: string; message: string } };
      expect(error).toMatchObject({ type: 'error', error: { type: 'invalid_request_error' } });
      expect(error.error.message).toContain('too long');
    } finally {
      s.h.upstream.scriptEach(plausibleModel);
    }
  });
});

describe('Anthropic SDK on a Bedrock model (/v1/messages → Converse)', () => {
  const bedrock = mockClient(BedrockRuntimeClient);
  let h: Harness;
  let key: string;
  const model = 'bedrock/anthropic.claude-3-haiku-20240307-v1:0';
  beforeAll(async () => {
    h = await startHarness({
      clock: new ManualClock(TEST_NOW),
      env: { TOLLGATE_BEDROCK: 'true', TOLLGATE_BEDROCK_REGION: 'us-east-1' },
      gateway: { bedrockClient: new BedrockRuntimeClient({ region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } }) },
    });
    key = (await h.createKey({ userId: 'u-messages-bedrock' })).raw;
  });
  afterEach(() => bedrock.reset());
  afterAll(async () => {
    bedrock.restore();
    await h.close();
  });
  const client = () => new Anthropic({ apiKey: key, baseURL: h.url, maxRetries: 0 });

  it('when it declares a tool, Converse gets the tool and the caller tool_use; the tool_result goes back as a toolResult', async () => {
    bedrock.on(ConverseCommand).resolvesOnce({
      output: { message: { role: 'assistant', content: [{ text: 'Checking.' }, { toolUse: { toolUseId: 'tu_1', name: 'get_weather', input: { city: 'Paris' } } }] } },
      stopReason: 'tool_use',
      usage: { inputTokens: 30, outputTokens: 8, totalTokens: 38, cacheReadInputTokens: 20 },
      metrics: { latencyMs: 1 },
    }).resolvesOnce({
      output: { message: { role: 'assistant', content: [{ text: TOOL_ANSWER }] } },
      stopReason: 'end_turn',
      usage: { inputTokens: 50, outputTokens: 12, totalTokens: 62 },
      metrics: { latencyMs: 1 },
    });
    const messages: Anthropic.MessageParam[] = [{ role: 'user', content: 'Weather in Paris?' }];
    const { data: first, response } = await client()
      .messages.create({ model, max_tokens: 200, system: 'Be brief.', messages, tools: [weatherTool] })
      .withResponse();
    expect(first).toMatchObject({
      content: [{ type: 'text', text: 'Checking.' }, { type: 'tool_use', id: 'tu_1', name: 'get_weather', input: { city: 'Paris' } }],
      stop_reason: 'tool_use',
      usage: { input_tokens: 30, cache_read_input_tokens: 20, output_tokens: 8 },
    });
    const input = bedrock.commandCalls(ConverseCommand)[0]!.args[0].input;
    expect(input).toMatchObject({
      modelId: 'anthropic.claude-3-haiku-20240307-v1:0',
      system: [{ text: 'Be brief.' }],
      inferenceConfig: { maxTokens: 200 },
      toolConfig: { tools: [{ toolSpec: { name: 'get_weather', inputSchema: { json: weatherTool.input_schema } } }] },
    });
    const record = await recordOf(h, response.headers.get('x-request-id'));
    expect(record.usage).toEqual({ inputTokens: 50, outputTokens: 8, cachedInputTokens: 20, cacheWriteTokens: 0 });
    expect(record.costMicros).toBe(costOf(h.gateway.prices.resolve(model).price, record.usage as never));

    messages.push({ role: 'assistant', content: first.content }, { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'tu_1', content: getWeather({ city: 'Paris' }) }] });
    const second = await client().messages.create({ model, max_tokens: 200, messages, tools: [weatherTool] });
    expect(second.content).toEqual([{ type: 'text', text: TOOL_ANSWER }]);
    const again = bedrock.commandCalls(ConverseCommand)[1]!.args[0].input;
    expect(again.messages).toEqual([
      { role: 'user', content: [{ text: 'Weather in Paris?' }] },
      { role: 'assistant', content: [{ text: 'Checking.' }, { toolUse: { toolUseId: 'tu_1', name: 'get_weather', input: { city: 'Paris' } } }] },
      { role: 'user', content: [{ toolResult: { toolUseId: 'tu_1', content: [{ text: getWeather({ city: 'Paris' }) }] } }] },
    ]);
  });

  it('when it streams, ConverseStream becomes Anthropic events with the tool input as input_json_delta and the usage in message_delta', async () => {
    const events: ConverseStreamOutput[] = [
      { messageStart: { role: 'assistant' } },
      { contentBlockDelta: { contentBlockIndex: 0, delta: { text: 'Let me ' } } },
      { contentBlockDelta: { contentBlockIndex: 0, delta: { text: 'check.' } } },
      { contentBlockStop: { contentBlockIndex: 0 } },
      { contentBlockStart: { contentBlockIndex: 1, start: { toolUse: { toolUseId: 'tu_2', name: 'get_weather' } } } },
      { contentBlockDelta: { contentBlockIndex: 1, delta: { toolUse: { input: '{"city":' } } } },
      { contentBlockDelta: { contentBlockIndex: 1, delta: { toolUse: { input: '"Paris"}' } } } },
      { contentBlockStop: { contentBlockIndex: 1 } },
      { messageStop: { stopReason: 'tool_use' } },
      { metadata: { usage: { inputTokens: 25, outputTokens: 9, totalTokens: 34 }, metrics: { latencyMs: 1 } } },
    ];
    bedrock.on(ConverseStreamCommand).resolves({
      stream: (async function* () {
        for (const e of events) yield e;
      })(),
    });
    const stream = client().messages.stream({ model, max_tokens: 200, messages: [{ role: 'user', content: 'Weather in Paris?' }], tools: [weatherTool] });
    const types: string[] = [];
    stream.on('streamEvent', (e) => types.push(e.type));
    const final = await stream.finalMessage();
    expect(final.content).toMatchObject([
      { type: 'text', text: 'Let me check.' },
      { type: 'tool_use', id: 'tu_2', name: 'get_weather', input: { city: 'Paris' } },
    ]);
    expect(final.stop_reason).toBe('tool_use');
    expect(final.usage).toMatchObject({ input_tokens: 25, output_tokens: 9 });
    expect(types.filter((t, i) => t !== types[i - 1])).toEqual([
      'message_start',
      'content_block_start',
      'content_block_delta',
      'content_block_stop',
      'content_block_start',
      'content_block_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
  });

  it('when it uses messages.parse, Converse is made to call the schema tool and parsed_output is its input', async () => {
    bedrock.on(ConverseCommand).resolves({
      output: { message: { role: 'assistant', content: [{ toolUse: { toolUseId: 'tu_json', name: 'output', input: WEATHER_JSON } }] } },
      stopReason: 'tool_use',
      usage: { inputTokens: 30, outputTokens: 8, totalTokens: 38 },
      metrics: { latencyMs: 1 },
    });
    const msg = await client().messages.parse({
      model,
      max_tokens: 200,
      messages: [{ role: 'user', content: 'Weather as JSON' }],
      output_config: { format: jsonSchemaOutputFormat(WEATHER_SCHEMA) },
    });
    expect(msg.parsed_output).toEqual(WEATHER_JSON);
    expect(msg.stop_reason).toBe('end_turn');
    const input = bedrock.commandCalls(ConverseCommand)[0]!.args[0].input;
    expect(input.toolConfig?.toolChoice).toEqual({ tool: { name: 'output' } });
  });

  it("when the openai SDK's Responses API calls a custom tool on a Bedrock model, Converse gets a function and the caller a custom_tool_call", async () => {
    bedrock.on(ConverseCommand).resolves({
      output: { message: { role: 'assistant', content: [{ toolUse: { toolUseId: 'tu_p', name: 'apply_patch', input: { input: '*** Begin Patch' } } }] } },
      stopReason: 'tool_use',
      usage: { inputTokens: 30, outputTokens: 8, totalTokens: 38 },
      metrics: { latencyMs: 1 },
    });
    const openai = new OpenAI({ apiKey: key, baseURL: `${h.url}/v1`, maxRetries: 0 });
    const res = await openai.responses.create({
      model,
      instructions: 'You are a coding agent.',
      input: 'Patch it',
      tools: [{ type: 'custom', name: 'apply_patch', description: 'Edits files' }],
    });
    expect(res.output).toEqual([expect.objectContaining({ type: 'custom_tool_call', call_id: 'tu_p', name: 'apply_patch', input: '*** Begin Patch' })]);
    expect(res.usage).toMatchObject({ input_tokens: 30, output_tokens: 8 });
    const input = bedrock.commandCalls(ConverseCommand)[0]!.args[0].input;
    expect(input.system).toEqual([{ text: 'You are a coding agent.' }]);
    expect(input.toolConfig?.tools?.[0]?.toolSpec).toMatchObject({ name: 'apply_patch', inputSchema: { json: { required: ['input'] } } });
  });
});

describe('Anthropic SDK on an Anthropic model: structured output passes through', () => {
  let s: ClientSuite;
  let key: string;
  beforeAll(async () => {
    s = await startClientSuite();
    key = await s.key('u-messages-native-json');
  });
  afterAll(() => s.h.close());

  it('when it uses messages.parse, Anthropic gets output_config as sent and parsed_output is the JSON', async () => {
    const client = new Anthropic({ apiKey: key, baseURL: s.h.url, maxRetries: 0 });
    const msg = await client.messages.parse({
      model: 'claude-sonnet-4-6',
      max_tokens: 200,
      messages: [{ role: 'user', content: 'Weather as JSON' }],
      output_config: { format: jsonSchemaOutputFormat(WEATHER_SCHEMA) },
    });
    expect(msg.parsed_output).toEqual(WEATHER_JSON);
    const sent = s.h.upstream.requests.at(-1)!;
    expect(sent.path).toBe('/v1/messages');
    expect((sent.body as Record<string, unknown>).output_config).toEqual({ format: { type: 'json_schema', schema: WEATHER_SCHEMA } });
  });
});

describe("openai SDK's Responses API on an Anthropic model, with the tools coding agents send", () => {
  let s: ClientSuite;
  let key: string;
  beforeAll(async () => {
    s = await startClientSuite();
    key = await s.key('u-responses-anthropic');
  });
  afterAll(() => s.h.close());
  const client = () => new OpenAI({ apiKey: key, baseURL: s.h.baseURL, maxRetries: 0 });
  const model = 'claude-sonnet-4-6';
  const lastUpstream = () => s.h.upstream.requests.at(-1)!;
  const PATCH = '*** Begin Patch\n*** Add File: hello.txt\n+hello\n*** End Patch\n';
  /** Codex's kinds of tools: a function, a custom (free-form grammar) tool, and a namespace of MCP tools. */
  const codexTools = [
    { type: 'function', name: 'shell', description: 'Runs a command', strict: false, parameters: { type: 'object', properties: { command: { type: 'array', items: { type: 'string' } } }, required: ['command'] } },
    { type: 'custom', name: 'apply_patch', description: 'Edits files', format: { type: 'grammar', syntax: 'lark', definition: 'start: begin_patch hunk+ end_patch' } },
    { type: 'namespace', name: 'files', description: 'An MCP server', tools: [{ type: 'function', name: 'read', description: 'Reads a file', parameters: { type: 'object', properties: { path: { type: 'string' } } } }] },
  ] as unknown as OpenAI.Responses.Tool[];
  /** The fake Claude calls `call` first, and answers once a tool result is in. */
  const scriptCall = (call: { name: string; input: Record<string, unknown> }) =>
    s.h.upstream.scriptEach((body) => {
      const last = (body.messages as { role: string; content: unknown }[]).at(-1)!;
      const answered = Array.isArray(last.content) && last.content.some((b: { type?: string }) => b.type === 'tool_result');
      return answered
        ? { replyText: TOOL_ANSWER, usage: { inputTokens: 60, outputTokens: 12, cachedTokens: 30 } }
        : { replyText: '', usage: { inputTokens: 50, outputTokens: 20 }, toolCall: { id: 'toolu_1', ...call } };
    });
  afterEach(() => s.h.upstream.scriptEach(plausibleModel));

  it('when Claude calls the custom tool, the caller gets a custom_tool_call with the raw input, and the output goes back as a tool_result', async () => {
    scriptCall({ name: 'apply_patch', input: { input: PATCH } });
    const first = await client().responses.create({ model, instructions: 'You are a coding agent.', input: 'Add hello.txt', tools: codexTools });
    const sent = lastUpstream().body as { system: string; tools: { name: string; description?: string; input_schema: unknown }[] };
    expect(sent.system).toBe('You are a coding agent.');
    expect(sent.tools.map((t) => t.name)).toEqual(['shell', 'apply_patch', 'files__read']);
    expect(sent.tools[1]!.input_schema).toEqual({ type: 'object', properties: { input: { type: 'string' } }, required: ['input'], additionalProperties: false });
    expect(sent.tools[1]!.description).toContain('start: begin_patch hunk+ end_patch');
    const call = first.output.find((i) => i.type === 'custom_tool_call') as OpenAI.Responses.ResponseCustomToolCall;
    expect(call).toMatchObject({ type: 'custom_tool_call', call_id: 'toolu_1', name: 'apply_patch', input: PATCH });
    expect(first.output.some((i) => i.type === 'function_call')).toBe(false);

    const { data: second, response } = await client()
      .responses.create({
        model,
        input: [
          { role: 'user', content: 'Add hello.txt' },
          { type: 'reasoning', id: 'rs_1', summary: [] },
          { type: 'custom_tool_call', call_id: call.call_id, name: 'apply_patch', input: PATCH },
          { type: 'custom_tool_call_output', call_id: call.call_id, output: 'Done!' },
        ] as unknown as OpenAI.Responses.ResponseInput,
        tools: codexTools,
      })
      .withResponse();
    expect(second.output_text).toBe(TOOL_ANSWER);
    expect((lastUpstream().body as { messages: unknown[] }).messages).toEqual([
      { role: 'user', content: [{ type: 'text', text: 'Add hello.txt' }] },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'apply_patch', input: { input: PATCH } }] },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: 'Done!' }] },
    ]);
    // The ledger charged Anthropic's own usage: 60 input + 30 cache reads, 12 output.
    const record = await recordOf(s.h, response.headers.get('x-request-id'));
    expect(record.usage).toEqual({ inputTokens: 90, outputTokens: 12, cachedInputTokens: 30, cacheWriteTokens: 0 });
    expect(record.costMicros).toBe(costOf(s.h.gateway.prices.resolve(model).price, record.usage as never));
    expect(second.usage).toMatchObject({ input_tokens: 90, output_tokens: 12, input_tokens_details: { cached_tokens: 30 } });
  });

  it('when Claude calls a namespaced tool, the caller gets a function_call with its own name and the namespace', async () => {
    scriptCall({ name: 'files__read', input: { path: 'README.md' } });
    const first = await client().responses.create({ model, input: 'Read the README', tools: codexTools });
    const call = first.output.find((i) => i.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
    expect(call).toMatchObject({ name: 'read', namespace: 'files', call_id: 'toolu_1' });
    expect(JSON.parse(call.arguments)).toEqual({ path: 'README.md' });
    const second = await client().responses.create({
      model,
      input: [
        { role: 'user', content: 'Read the README' },
        { type: 'function_call', call_id: call.call_id, name: 'read', namespace: 'files', arguments: call.arguments },
        { type: 'function_call_output', call_id: call.call_id, output: '# tollgate' },
      ] as unknown as OpenAI.Responses.ResponseInput,
      tools: codexTools,
    });
    expect(second.output_text).toBe(TOOL_ANSWER);
    const messages = (lastUpstream().body as { messages: { content: { name?: string }[] }[] }).messages;
    expect(messages[1]!.content[0]).toMatchObject({ type: 'tool_use', name: 'files__read', input: { path: 'README.md' } });
  });

  it('when it streams a custom tool call, the events are in Responses order and the input arrives whole', async () => {
    scriptCall({ name: 'apply_patch', input: { input: PATCH } });
    const stream = client().responses.stream({ model, input: 'Add hello.txt', tools: codexTools });
    const types: string[] = [];
    const deltas: string[] = [];
    stream.on('event', (e) => types.push(e.type));
    stream.on('response.custom_tool_call_input.delta', (e) => deltas.push(e.delta));
    const final = await stream.finalResponse();
    expect(final.output).toEqual([expect.objectContaining({ type: 'custom_tool_call', name: 'apply_patch', input: PATCH, status: 'completed' })]);
    expect(deltas.join('')).toBe(PATCH);
    expect(types.filter((t, i) => t !== types[i - 1])).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.custom_tool_call_input.delta',
      'response.custom_tool_call_input.done',
      'response.output_item.done',
      'response.completed',
    ]);
    expect(final.usage).toMatchObject({ input_tokens: 50, output_tokens: 20 });
  });

  it('when it streams a function call, the arguments arrive as deltas before response.completed with usage', async () => {
    scriptCall({ name: 'shell', input: { command: ['ls'] } });
    const stream = client().responses.stream({ model, input: 'List files', tools: codexTools });
    const types: string[] = [];
    stream.on('event', (e) => types.push(e.type));
    const final = await stream.finalResponse();
    const call = final.output.find((i) => i.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
    expect(JSON.parse(call.arguments)).toEqual({ command: ['ls'] });
    expect(types.filter((t, i) => t !== types[i - 1])).toEqual([
      'response.created',
      'response.in_progress',
      'response.output_item.added',
      'response.function_call_arguments.delta',
      'response.function_call_arguments.done',
      'response.output_item.done',
      'response.completed',
    ]);
  });

  it('when it declares a hosted OpenAI tool, it gets a 400 naming that tool and why, and nothing reaches Anthropic', async () => {
    await s.h.settled();
    const before = s.h.upstream.requests.length;
    const recordsBefore = (await s.h.scan('usage')).length;
    const err = await client()
      .responses.create({ model, input: 'Hi', tools: [...codexTools, { type: 'web_search' }] as OpenAI.Responses.Tool[] })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OpenAI.BadRequestError);
    const e = err as InstanceType<typeof OpenAI.BadRequestError>;
    expect(e.code).toBe('unsupported_tool');
    expect(e.param).toBe('tools[3]');
    expect(e.message).toContain('"web_search" is a tool OpenAI runs on its own servers');
    expect(s.h.upstream.requests.length).toBe(before);
    await s.h.settled();
    expect((await s.h.scan('usage')).length).toBe(recordsBefore);
  });
});
