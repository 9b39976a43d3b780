import { InvalidRequestError, UpstreamError } from '../../lambda/core/errors';
import {
  anthropicStreamToChatChunks,
  fromAnthropicMessage,
  toAnthropicRequest,
} from '../../lambda/providers/anthropic/translate';
import type { SseEvent } from '../../lambda/providers/sse';
import { chunkText, payloadsOf, readAll } from './support';

const identity = { id: 'chatcmpl-x', model: 'claude-x', created: 1 };

describe('toAnthropicRequest', () => {
  it('when given system, user, assistant tool calls and tool results, it maps them to Anthropic blocks and merges tool results into one user turn', () => {
    const request = toAnthropicRequest(
      {
        model: 'claude-x',
        messages: [
          { role: 'system', content: 'Rule one.' },
          { role: 'developer', content: [{ type: 'text', text: 'Rule two.' }] },
          {
            role: 'user',
            content: [
              { type: 'text', text: 'What is this?' },
              { type: 'image_url', image_url: { url: 'data:image/png;base64,iVBORw0KGgo=' } },
              { type: 'image_url', image_url: { url: 'https://example.com/cat.jpg' } },
            ],
          },
          {
            role: 'assistant',
            content: null,
            tool_calls: [
              { id: 'call_1', type: 'function', function: { name: 'a', arguments: '{"x":1}' } },
              { id: 'call_2', type: 'function', function: { name: 'b', arguments: '' } },
            ],
          },
          { role: 'tool', tool_call_id: 'call_1', content: 'one' },
          { role: 'tool', tool_call_id: 'call_2', content: [{ type: 'text', text: 'two' }] },
        ],
      },
      { defaultMaxTokens: 1000 },
    );
    expect(request).toEqual({
      model: 'claude-x',
      max_tokens: 1000,
      system: 'Rule one.\n\nRule two.',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'What is this?' },
            { type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'iVBORw0KGgo=' } },
            { type: 'image', source: { type: 'url', url: 'https://example.com/cat.jpg' } },
          ],
        },
        {
          role: 'assistant',
          content: [
            { type: 'tool_use', id: 'call_1', name: 'a', input: { x: 1 } },
            { type: 'tool_use', id: 'call_2', name: 'b', input: {} },
          ],
        },
        {
          role: 'user',
          content: [
            { type: 'tool_result', tool_use_id: 'call_1', content: 'one' },
            { type: 'tool_result', tool_use_id: 'call_2', content: 'two' },
          ],
        },
      ],
    });
  });

  it('when given sampling parameters, tools and a named tool choice, it maps them through the parameter table', () => {
    const request = toAnthropicRequest(
      {
        model: 'claude-x',
        messages: [{ role: 'user', content: 'hi' }],
        temperature: 1.6,
        top_p: 0.9,
        stop: 'END',
        user: 'u-1',
        stream: true,
        max_tokens: 50,
        max_completion_tokens: 70,
        parallel_tool_calls: false,
        tools: [{ type: 'function', function: { name: 'f', description: 'does f', parameters: { type: 'object', properties: { a: { type: 'string' } } } } }],
        tool_choice: { type: 'function', function: { name: 'f' } },
      },
      { defaultMaxTokens: 1000 },
    );
    expect(request).toMatchObject({
      max_tokens: 70,
      temperature: 1,
      top_p: 0.9,
      stop_sequences: ['END'],
      metadata: { user_id: 'u-1' },
      stream: true,
      tools: [{ name: 'f', description: 'does f', input_schema: { type: 'object', properties: { a: { type: 'string' } } } }],
      tool_choice: { type: 'tool', name: 'f', disable_parallel_tool_use: true },
    });
  });

  it('when max_completion_tokens is absent, it uses max_tokens; "required" becomes tool_choice any', () => {
    const request = toAnthropicRequest(
      {
        model: 'claude-x',
        messages: [{ role: 'user', content: 'hi' }],
        max_tokens: 50,
        tools: [{ type: 'function', function: { name: 'f' } }],
        tool_choice: 'required',
      },
      { defaultMaxTokens: 1000 },
    );
    expect(request.max_tokens).toBe(50);
    expect(request.tool_choice).toEqual({ type: 'any' });
    expect(request).not.toHaveProperty('temperature');
  });

  it('when tool call arguments are not JSON, it refuses the request naming the parameter', () => {
    const attempt = () =>
      toAnthropicRequest(
        {
          model: 'claude-x',
          messages: [{ role: 'assistant', content: null, tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{oops' } }] }],
        },
        { defaultMaxTokens: 10 },
      );
    expect(attempt).toThrow(InvalidRequestError);
    expect(attempt).toThrow(/messages\[0\]\.tool_calls\[0\]\.function\.arguments/);
  });

  it('when a user message holds audio, it refuses the request rather than silently dropping it', () => {
    expect(() =>
      toAnthropicRequest(
        { model: 'claude-x', messages: [{ role: 'user', content: [{ type: 'input_audio', input_audio: {} }] }] },
        { defaultMaxTokens: 10 },
      ),
    ).toThrow(/input_audio/);
  });
});

describe('fromAnthropicMessage', () => {
  it.each([
    ['end_turn', 'stop'],
    ['stop_sequence', 'stop'],
    ['max_tokens', 'length'],
    ['tool_use', 'tool_calls'],
    ['refusal', 'content_filter'],
  ])('when the stop reason is %s, finish_reason is %s', (stopReason, finish) => {
    const { body } = fromAnthropicMessage(
      { content: [{ type: 'text', text: 'x' }], stop_reason: stopReason, usage: { input_tokens: 1, output_tokens: 1 } },
      identity,
    );
    expect((body.choices as { finish_reason: string }[])[0].finish_reason).toBe(finish);
  });

  it('when the answer has no content array, it is an unusable answer (502)', () => {
    expect(() => fromAnthropicMessage({ type: 'message' }, identity)).toThrow(UpstreamError);
  });
});

async function* events(list: readonly Record<string, unknown>[]): AsyncGenerator<SseEvent> {
  for (const e of list) yield { event: String(e.type), data: JSON.stringify(e) };
}

describe('anthropicStreamToChatChunks', () => {
  const sequence = [
    { type: 'message_start', message: { id: 'm', usage: { input_tokens: 5, cache_read_input_tokens: 10, output_tokens: 1 } } },
    { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
    { type: 'ping' },
    { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hel' } },
    { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'lo' } },
    { type: 'content_block_stop', index: 0 },
    { type: 'message_delta', delta: { stop_reason: 'max_tokens' }, usage: { output_tokens: 2 } },
    { type: 'message_stop' },
  ];

  it('when given the real event sequence, it produces role, text, finish and [DONE] chunks and tracks usage', async () => {
    const seen: unknown[] = [];
    const text = await readAll(
      anthropicStreamToChatChunks(events(sequence), { identity, includeUsage: false, onUsage: (u) => seen.push(u) }),
    );
    const payloads = await payloadsOf(text);
    expect(chunkText(payloads)).toBe('Hello');
    expect((payloads[0] as { choices: { delta: unknown }[] }).choices[0].delta).toEqual({ role: 'assistant', content: '' });
    expect((payloads[payloads.length - 2] as { choices: { finish_reason: string }[] }).choices[0].finish_reason).toBe('length');
    expect(payloads[payloads.length - 1]).toBe('[DONE]');
    expect(seen[seen.length - 1]).toEqual({ inputTokens: 15, outputTokens: 2, cachedInputTokens: 10, cacheWriteTokens: 0 });
  });

  it('when the stream ends before message_stop, it ends without [DONE]', async () => {
    const text = await readAll(
      anthropicStreamToChatChunks(events(sequence.slice(0, 5)), { identity, includeUsage: true, onUsage: () => undefined }),
    );
    expect(text).not.toContain('[DONE]');
    expect(chunkText(await payloadsOf(text))).toBe('Hello');
  });

  it('when an error event arrives mid-stream, the stream ends with an OpenAI error chunk carrying the upstream message and type', async () => {
    const broken = [...sequence.slice(0, 4), { type: 'error', error: { type: 'overloaded_error', message: 'Overloaded' } }];
    const text = await readAll(anthropicStreamToChatChunks(events(broken), { identity, includeUsage: false, onUsage: () => undefined }));
    expect(text).not.toContain('[DONE]');
    expect(text.trimEnd().split('\n\n').pop()).toBe(
      'data: {"error":{"message":"upstream anthropic failed mid-stream: Overloaded","type":"overloaded_error","param":null,"code":"overloaded_error"}}',
    );
  });

  it('when the stream ends before message_stop, it ends with an error chunk and says it was cut', async () => {
    let cut = false;
    const text = await readAll(
      anthropicStreamToChatChunks(events(sequence.slice(0, 5)), { identity, includeUsage: false, onUsage: () => undefined, onCut: () => (cut = true) }),
    );
    expect(cut).toBe(true);
    expect(text).toMatch(/"code":"upstream_stream_cut"/);
  });
});
