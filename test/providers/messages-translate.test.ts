/**
 * Anthropic Messages ⇄ chat completions (providers/messages), the parts the SDK e2e suite does not reach:
 * every block kind, refusals, stop reasons, and the event stream from raw chat chunks.
 */
import { InvalidRequestError, UpstreamError } from '../../lambda/core/errors';
import type { MessagesBody } from '../../lambda/providers/contract';
import { messagesToChatRequest } from '../../lambda/providers/messages/request';
import { chatChunksToMessageEvents, chatCompletionToMessage } from '../../lambda/providers/messages/response';
import type { SseEvent } from '../../lambda/providers/sse';
import { parseSse } from '../../lambda/providers/sse';

const body = (extra: Record<string, unknown>): MessagesBody =>
  ({ model: 'gpt-5', max_tokens: 1000, messages: [{ role: 'user', content: 'Hi' }], ...extra }) as MessagesBody;

async function* sse(...data: unknown[]): AsyncGenerator<SseEvent> {
  for (const d of data) yield { data: typeof d === 'string' ? d : JSON.stringify(d) };
}

async function eventsOf(stream: AsyncIterable<Uint8Array>): Promise<Record<string, unknown>[]> {
  const out: Record<string, unknown>[] = [];
  for await (const e of parseSse(stream)) out.push(JSON.parse(e.data) as Record<string, unknown>);
  return out;
}

const chunk = (delta: Record<string, unknown>, finish: string | null = null) => ({
  id: 'c',
  object: 'chat.completion.chunk',
  choices: [{ index: 0, delta, finish_reason: finish }],
});

describe('messagesToChatRequest', () => {
  it("when Claude Code's shapes arrive, each block finds its chat equivalent and Anthropic-only fields are dropped", () => {
    const chat = messagesToChatRequest(
      body({
        system: [{ type: 'text', text: 'You are Claude Code.', cache_control: { type: 'ephemeral' } }],
        thinking: { type: 'enabled', budget_tokens: 2000 },
        context_management: { edits: [] },
        top_k: 5,
        metadata: { user_id: 'u1' },
        messages: [
          { role: 'user', content: [{ type: 'text', text: 'Read a.png', cache_control: { type: 'ephemeral' } }] },
          {
            role: 'assistant',
            content: [
              { type: 'thinking', thinking: 'hmm', signature: 'sig' },
              { type: 'text', text: 'Reading.' },
              { type: 'tool_use', id: 'toolu_1', name: 'Read', input: { file_path: 'a.png' } },
              { type: 'tool_use', id: 'toolu_2', name: 'Read', input: { file_path: 'b.pdf' } },
            ],
          },
          {
            role: 'user',
            content: [
              { type: 'text', text: 'Here you go' },
              { type: 'tool_result', tool_use_id: 'toolu_1', content: [{ type: 'image', source: { type: 'base64', media_type: 'image/png', data: 'AAAA' } }] },
              { type: 'tool_result', tool_use_id: 'toolu_2', is_error: true, content: 'file not found' },
            ],
          },
          { role: 'system', content: 'Plan mode is on.' },
          { role: 'user', content: [{ type: 'document', source: { type: 'base64', media_type: 'application/pdf', data: 'JVBE' }, title: 'spec.pdf' }] },
        ],
        tools: [{ name: 'Read', description: 'Reads', input_schema: { type: 'object', properties: { file_path: { type: 'string' } } }, cache_control: { type: 'ephemeral' } }],
        tool_choice: { type: 'any' },
      }),
    );
    expect(chat).toEqual({
      model: 'gpt-5',
      max_completion_tokens: 1000,
      // thinking.budget_tokens 2,000 on a reasoning model: the lowest effort.
      reasoning_effort: 'low',
      user: 'u1',
      messages: [
        { role: 'system', content: 'You are Claude Code.' },
        { role: 'user', content: [{ type: 'text', text: 'Read a.png' }] },
        {
          role: 'assistant',
          content: 'Reading.',
          tool_calls: [
            { id: 'toolu_1', type: 'function', function: { name: 'Read', arguments: '{"file_path":"a.png"}' } },
            { id: 'toolu_2', type: 'function', function: { name: 'Read', arguments: '{"file_path":"b.pdf"}' } },
          ],
        },
        // Tool messages come straight after the calls; the image a tool returned and the user's own text follow.
        { role: 'tool', tool_call_id: 'toolu_1', content: '(see the attached content)' },
        { role: 'tool', tool_call_id: 'toolu_2', content: 'Error: file not found' },
        {
          role: 'user',
          content: [
            { type: 'image_url', image_url: { url: 'data:image/png;base64,AAAA' } },
            { type: 'text', text: 'Here you go' },
          ],
        },
        { role: 'system', content: 'Plan mode is on.' },
        { role: 'user', content: [{ type: 'file', file: { filename: 'spec.pdf', file_data: 'data:application/pdf;base64,JVBE' } }] },
      ],
      tools: [{ type: 'function', function: { name: 'Read', description: 'Reads', parameters: { type: 'object', properties: { file_path: { type: 'string' } } } } }],
      tool_choice: 'required',
    });
  });

  it('when output_config (or the beta output_format) asks for a JSON schema, response_format carries it', () => {
    const schema = { type: 'object', properties: { a: { type: 'string' } } };
    for (const extra of [{ output_config: { format: { type: 'json_schema', schema } } }, { output_format: { type: 'json_schema', schema } }]) {
      expect(messagesToChatRequest(body(extra)).response_format).toEqual({ type: 'json_schema', json_schema: { name: 'output', schema } });
    }
  });

  it.each([
    ['a built-in Anthropic tool', { tools: [{ type: 'bash_20250124', name: 'bash' }] }, 'tools[0] ("bash", type "bash_20250124")'],
    ['the MCP connector', { mcp_servers: [{ type: 'url', url: 'https://x', name: 'x' }] }, 'mcp_servers'],
    ['a block with no chat equivalent', { messages: [{ role: 'user', content: [{ type: 'search_result', source: 's', title: 't', content: [] }] }] }, 'search_result'],
    ['a tool_result for a call never made', { messages: [{ role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_x', content: 'x' }] }] }, 'toolu_x'],
    ['an output format that is not json_schema', { output_config: { format: { type: 'xml' } } }, 'json_schema'],
  ])('when it holds %s, it is refused with a 400 naming it', (_label, extra, named) => {
    let caught: unknown;
    try {
      messagesToChatRequest(body(extra));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidRequestError);
    expect((caught as Error).message).toContain(named);
  });
});

describe('chatCompletionToMessage', () => {
  const identity = { id: 'msg_1', model: 'gpt-5' };
  const usage = { inputTokens: 100, outputTokens: 7, cachedInputTokens: 60, cacheWriteTokens: 0 };

  it.each([
    ['stop', 'end_turn'],
    ['length', 'max_tokens'],
    ['tool_calls', 'tool_use'],
    ['content_filter', 'refusal'],
  ])('when the finish reason is %s, the stop reason is %s', (finish, stop) => {
    const msg = chatCompletionToMessage({ choices: [{ message: { role: 'assistant', content: 'x' }, finish_reason: finish }] }, identity, usage);
    expect(msg.stop_reason).toBe(stop);
    expect(msg.usage).toEqual({ input_tokens: 40, cache_read_input_tokens: 60, cache_creation_input_tokens: 0, output_tokens: 7 });
  });

  it('when OpenAI refuses, the refusal is the text and the stop reason is refusal', () => {
    const msg = chatCompletionToMessage({ choices: [{ message: { role: 'assistant', content: null, refusal: 'I cannot.' }, finish_reason: 'stop' }] }, identity, usage);
    expect(msg).toMatchObject({ content: [{ type: 'text', text: 'I cannot.' }], stop_reason: 'refusal' });
  });

  it('when the answer has no message, it is an upstream fault (502)', () => {
    expect(() => chatCompletionToMessage({ choices: [] }, identity, usage)).toThrow(UpstreamError);
  });
});

describe('chatChunksToMessageEvents', () => {
  const identity = { id: 'msg_1', model: 'gpt-5' };

  it('when text and two parallel tool calls stream, each becomes its own block in order, with usage on message_delta', async () => {
    const events = await eventsOf(
      chatChunksToMessageEvents(
        sse(
          chunk({ role: 'assistant', content: '' }),
          chunk({ content: 'Both.' }),
          chunk({ tool_calls: [{ index: 0, id: 'call_a', type: 'function', function: { name: 'f', arguments: '' } }] }),
          chunk({ tool_calls: [{ index: 0, function: { arguments: '{"x":' } }] }),
          chunk({ tool_calls: [{ index: 0, function: { arguments: '1}' } }] }),
          chunk({ tool_calls: [{ index: 1, id: 'call_b', type: 'function', function: { name: 'g', arguments: '{}' } }] }),
          chunk({}, 'tool_calls'),
          { id: 'c', choices: [], usage: { prompt_tokens: 50, completion_tokens: 9, prompt_tokens_details: { cached_tokens: 20 } } },
          '[DONE]',
        ),
        { identity },
      ),
    );
    expect(events.map((e) => `${String(e.type)}${e.index === undefined ? '' : `#${String(e.index)}`}`)).toEqual([
      'message_start',
      'ping',
      'content_block_start#0',
      'content_block_delta#0',
      'content_block_stop#0',
      'content_block_start#1',
      'content_block_delta#1',
      'content_block_delta#1',
      'content_block_stop#1',
      'content_block_start#2',
      'content_block_delta#2',
      'content_block_stop#2',
      'message_delta',
      'message_stop',
    ]);
    expect(events[5]).toMatchObject({ content_block: { type: 'tool_use', id: 'call_a', name: 'f', input: {} } });
    expect(events[6]).toMatchObject({ delta: { type: 'input_json_delta', partial_json: '{"x":' } });
    expect(events.at(-2)).toEqual({
      type: 'message_delta',
      delta: { stop_reason: 'tool_use', stop_sequence: null },
      usage: { input_tokens: 30, cache_read_input_tokens: 20, cache_creation_input_tokens: 0, output_tokens: 9 },
    });
  });

  it('when OpenAI reports an error mid-stream, it becomes an Anthropic error event and the stream ends', async () => {
    const events = await eventsOf(
      chatChunksToMessageEvents(sse(chunk({ content: 'Hal' }), { error: { message: 'The server had an error', type: 'server_error' } }, '[DONE]'), { identity }),
    );
    expect(events.map((e) => e.type)).toEqual(['message_start', 'ping', 'content_block_start', 'content_block_delta', 'error']);
    expect(events.at(-1)).toEqual({ type: 'error', error: { type: 'api_error', message: 'The server had an error' } });
  });

  it('when the chat stream ends without [DONE], the message ends without message_delta and message_stop', async () => {
    const events = await eventsOf(chatChunksToMessageEvents(sse(chunk({ content: 'Hal' })), { identity }));
    expect(events.map((e) => e.type)).toEqual(['message_start', 'ping', 'content_block_start', 'content_block_delta']);
  });
});
