import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  ThrottlingException,
  ValidationException,
  AccessDeniedException,
  type ConverseStreamOutput,
} from '@aws-sdk/client-bedrock-runtime';
import { mockClient } from 'aws-sdk-client-mock';
import { ManualClock } from '../../lambda/core/clock';
import { InvalidRequestError, UpstreamError } from '../../lambda/core/errors';
import { BedrockProvider, toConverseRequest } from '../../lambda/providers/bedrock/provider';
import { asJson, asStream, callContext, chunkText, payloadsOf, readAll } from './support';

const bedrock = mockClient(BedrockRuntimeClient);
const provider = new BedrockProvider({
  client: new BedrockRuntimeClient({ region: 'us-east-1', credentials: { accessKeyId: 'test', secretAccessKey: 'test' } }),
  defaultMaxTokens: 256,
  clock: new ManualClock(1_750_000_000_000),
});

afterEach(() => bedrock.reset());

const chatBody = (extra: Record<string, unknown> = {}) => ({
  model: 'anthropic.claude-3-haiku-20240307-v1:0',
  messages: [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hello' },
  ],
  ...extra,
});

async function* streamOf(events: readonly ConverseStreamOutput[]): AsyncGenerator<ConverseStreamOutput> {
  for (const event of events) yield event;
}

describe('toConverseRequest', () => {
  it('when given messages, parameters and tools, it builds the Converse input from the parameter table', () => {
    const input = toConverseRequest(
      {
        model: 'm',
        messages: [
          { role: 'system', content: 'S' },
          { role: 'user', content: [{ type: 'text', text: 'look' }, { type: 'image_url', image_url: { url: 'data:image/jpeg;base64,AAEC' } }] },
          { role: 'assistant', content: 'calling', tool_calls: [{ id: 't1', type: 'function', function: { name: 'f', arguments: '{"a":1}' } }] },
          { role: 'tool', tool_call_id: 't1', content: 'done' },
        ],
        temperature: 0.2,
        top_p: 0.5,
        stop: ['X', 'Y'],
        max_tokens: 99,
        tools: [{ type: 'function', function: { name: 'f', description: 'F', parameters: { type: 'object' } } }],
        tool_choice: 'required',
      },
      { defaultMaxTokens: 10 },
    );
    expect(input).toEqual({
      modelId: 'm',
      system: [{ text: 'S' }],
      inferenceConfig: { maxTokens: 99, temperature: 0.2, topP: 0.5, stopSequences: ['X', 'Y'] },
      messages: [
        { role: 'user', content: [{ text: 'look' }, { image: { format: 'jpeg', source: { bytes: Buffer.from([0, 1, 2]) } } }] },
        { role: 'assistant', content: [{ text: 'calling' }, { toolUse: { toolUseId: 't1', name: 'f', input: { a: 1 } } }] },
        { role: 'user', content: [{ toolResult: { toolUseId: 't1', content: [{ text: 'done' }] } }] },
      ],
      toolConfig: {
        tools: [{ toolSpec: { name: 'f', description: 'F', inputSchema: { json: { type: 'object' } } } }],
        toolChoice: { any: {} },
      },
    });
  });

  it('when an image is given by http URL, it refuses it (Converse takes bytes only)', () => {
    expect(() =>
      toConverseRequest(
        { model: 'm', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'https://x.test/a.png' } }] }] },
        { defaultMaxTokens: 10 },
      ),
    ).toThrow(InvalidRequestError);
  });
});

describe('BedrockProvider.chatCompletions (Converse)', () => {
  it('when Converse answers, it returns an OpenAI chat.completion with usage including cache reads and writes', async () => {
    bedrock.on(ConverseCommand).resolves({
      output: { message: { role: 'assistant', content: [{ text: 'Hi ' }, { text: 'there' }] } },
      stopReason: 'end_turn',
      usage: { inputTokens: 10, outputTokens: 3, totalTokens: 43, cacheReadInputTokens: 20, cacheWriteInputTokens: 10 },
      metrics: { latencyMs: 5 },
    });
    const result = await provider.chatCompletions(chatBody(), callContext({ requestId: 'r-1' }));
    expect(asJson(result)).toEqual({
      id: 'chatcmpl-r-1',
      object: 'chat.completion',
      created: 1_750_000_000,
      model: 'anthropic.claude-3-haiku-20240307-v1:0',
      choices: [{ index: 0, message: { role: 'assistant', content: 'Hi there', refusal: null }, logprobs: null, finish_reason: 'stop' }],
      usage: { prompt_tokens: 40, completion_tokens: 3, total_tokens: 43, prompt_tokens_details: { cached_tokens: 20 } },
    });
    expect(result.kind === 'json' && result.usage).toEqual({ inputTokens: 40, outputTokens: 3, cachedInputTokens: 20, cacheWriteTokens: 10 });
    const sent = bedrock.commandCalls(ConverseCommand)[0].args[0].input;
    expect(sent.modelId).toBe('anthropic.claude-3-haiku-20240307-v1:0');
    expect(sent.system).toEqual([{ text: 'Be brief.' }]);
    expect(sent.inferenceConfig).toEqual({ maxTokens: 256 });
  });

  it('when the model asks for a tool, the answer carries tool_calls', async () => {
    bedrock.on(ConverseCommand).resolves({
      output: { message: { role: 'assistant', content: [{ toolUse: { toolUseId: 'tu1', name: 'f', input: { a: 'b' } } }] } },
      stopReason: 'tool_use',
      usage: { inputTokens: 1, outputTokens: 1, totalTokens: 2 },
      metrics: { latencyMs: 1 },
    });
    const body = asJson(await provider.chatCompletions(chatBody(), callContext())) as {
      choices: { message: { content: unknown; tool_calls: unknown }; finish_reason: string }[];
    };
    expect(body.choices[0]).toMatchObject({
      message: { content: null, tool_calls: [{ id: 'tu1', type: 'function', function: { name: 'f', arguments: '{"a":"b"}' } }] },
      finish_reason: 'tool_calls',
    });
  });

  it.each([
    ['a ValidationException', 400, () => new ValidationException({ message: 'Malformed input request', $metadata: { httpStatusCode: 400 } })],
    ['a ThrottlingException', 429, () => new ThrottlingException({ message: 'Too many requests', $metadata: { httpStatusCode: 429 } })],
    ['an AccessDeniedException', 502, () => new AccessDeniedException({ message: 'not allowed', $metadata: { httpStatusCode: 403 } })],
  ])('when Converse throws %s, it throws an UpstreamError with status %d', async (_name, status, make) => {
    bedrock.on(ConverseCommand).rejects(make());
    const err = await provider.chatCompletions(chatBody(), callContext()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as UpstreamError).status).toBe(status);
  });
});

describe('BedrockProvider.chatCompletions (ConverseStream)', () => {
  const events: ConverseStreamOutput[] = [
    { messageStart: { role: 'assistant' } },
    { contentBlockDelta: { contentBlockIndex: 0, delta: { text: 'Hel' } } },
    { contentBlockDelta: { contentBlockIndex: 0, delta: { text: 'lo' } } },
    { contentBlockStop: { contentBlockIndex: 0 } },
    { contentBlockStart: { contentBlockIndex: 1, start: { toolUse: { toolUseId: 'tu9', name: 'lookup' } } } },
    { contentBlockDelta: { contentBlockIndex: 1, delta: { toolUse: { input: '{"q":' } } } },
    { contentBlockDelta: { contentBlockIndex: 1, delta: { toolUse: { input: '"x"}' } } } },
    { contentBlockStop: { contentBlockIndex: 1 } },
    { messageStop: { stopReason: 'tool_use' } },
    { metadata: { usage: { inputTokens: 7, outputTokens: 4, totalTokens: 16, cacheReadInputTokens: 5 }, metrics: { latencyMs: 3 } } },
  ];

  it('when streaming and the caller wants usage, it translates the events into OpenAI chunks ending with usage and [DONE]', async () => {
    bedrock.on(ConverseStreamCommand).resolves({ stream: streamOf(events) });
    const stream = asStream(
      await provider.chatCompletions(chatBody({ stream: true }), callContext({ callerWantsStreamUsage: true })),
    );
    const payloads = await payloadsOf(await readAll(stream.body));
    expect(chunkText(payloads)).toBe('Hello');
    const calls = payloads.flatMap(
      (p) => (p as { choices: { delta: { tool_calls?: { id?: string; function: { arguments: string } }[] } }[] }).choices?.[0]?.delta.tool_calls ?? [],
    );
    expect(calls[0].id).toBe('tu9');
    expect(calls.map((c) => c.function.arguments).join('')).toBe('{"q":"x"}');
    expect(payloads[payloads.length - 1]).toBe('[DONE]');
    expect((payloads[payloads.length - 2] as { usage: unknown }).usage).toEqual({
      prompt_tokens: 12,
      completion_tokens: 4,
      total_tokens: 16,
      prompt_tokens_details: { cached_tokens: 5 },
    });
    expect(stream.usage()).toEqual({ inputTokens: 12, outputTokens: 4, cachedInputTokens: 5, cacheWriteTokens: 0 });
  });

  it('when the caller did not ask for usage, no usage chunk is sent but usage is recorded', async () => {
    bedrock.on(ConverseStreamCommand).resolves({ stream: streamOf(events) });
    const stream = asStream(await provider.chatCompletions(chatBody({ stream: true }), callContext()));
    const payloads = await payloadsOf(await readAll(stream.body));
    expect(payloads.some((p) => p !== '[DONE]' && 'usage' in (p as object))).toBe(false);
    expect(stream.usage()?.inputTokens).toBe(12);
  });

  it.each([
    ['a throttling exception as a union member', { throttlingException: new ThrottlingException({ message: 'slow down', $metadata: {} }) }, 'rate_limit_error'],
    ['a validation exception as a union member', { validationException: new ValidationException({ message: 'bad input', $metadata: {} }) }, 'invalid_request_error'],
  ] as const)('when the stream carries %s, it ends with an OpenAI error chunk naming it and no [DONE]', async (_name, failure, type) => {
    bedrock.on(ConverseStreamCommand).resolves({ stream: streamOf([events[0], events[1], failure as ConverseStreamOutput]) });
    const stream = asStream(await provider.chatCompletions(chatBody({ stream: true }), callContext()));
    const payloads = await payloadsOf(await readAll(stream.body));
    const last = payloads[payloads.length - 1] as { error: { type: string; code: string; message: string } };
    expect(last.error.type).toBe(type);
    expect(last.error.code).toBe(Object.keys(failure)[0]);
    expect(last.error.message).toMatch(/failed mid-stream/);
    expect(payloads).not.toContain('[DONE]');
  });

  it('when the SDK throws an exception read from the stream, it ends with an error chunk naming the exception', async () => {
    async function* failing(): AsyncGenerator<ConverseStreamOutput> {
      yield { messageStart: { role: 'assistant' } };
      throw new ThrottlingException({ message: 'Too many tokens', $metadata: {} });
    }
    bedrock.on(ConverseStreamCommand).resolves({ stream: failing() });
    const stream = asStream(await provider.chatCompletions(chatBody({ stream: true }), callContext()));
    const payloads = await payloadsOf(await readAll(stream.body));
    expect(payloads[payloads.length - 1]).toEqual({
      error: { message: 'upstream bedrock failed mid-stream (throttlingException): Too many tokens', type: 'rate_limit_error', param: null, code: 'throttlingException' },
    });
  });

  it('when the stream breaks off while being read, it ends with an error chunk (a cut answer is a failure, not an end)', async () => {
    async function* failing(): AsyncGenerator<ConverseStreamOutput> {
      yield { messageStart: { role: 'assistant' } };
      throw Object.assign(new Error('socket hang up'), { name: 'Error' });
    }
    bedrock.on(ConverseStreamCommand).resolves({ stream: failing() });
    const stream = asStream(await provider.chatCompletions(chatBody({ stream: true }), callContext()));
    const payloads = await payloadsOf(await readAll(stream.body));
    expect(payloads[payloads.length - 1]).toMatchObject({ error: { type: 'server_error', code: 'upstream_stream_broken' } });
  });

  it.each([
    ['ends before messageStop', [events[0], events[1]], 'upstream_stream_cut'],
    ['has no event at all', [], 'upstream_empty_answer'],
  ] as const)('when the stream %s, it ends with an error chunk, not [DONE]', async (_name, sent, code) => {
    bedrock.on(ConverseStreamCommand).resolves({ stream: streamOf(sent) });
    const stream = asStream(await provider.chatCompletions(chatBody({ stream: true }), callContext()));
    const payloads = await payloadsOf(await readAll(stream.body));
    expect(payloads[payloads.length - 1]).toMatchObject({ error: { type: 'server_error', code } });
    expect(payloads).not.toContain('[DONE]');
  });

  it('when the gateway aborted the call, a failure while reading is thrown (the caller is gone), not reported', async () => {
    const abort = new AbortController();
    async function* failing(): AsyncGenerator<ConverseStreamOutput> {
      yield { messageStart: { role: 'assistant' } };
      abort.abort();
      throw Object.assign(new Error('aborted'), { name: 'AbortError' });
    }
    bedrock.on(ConverseStreamCommand).resolves({ stream: failing() });
    const stream = asStream(await provider.chatCompletions(chatBody({ stream: true }), callContext({ signal: abort.signal })));
    const err = await readAll(stream.body).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UpstreamError);
  });
});
