/**
 * OpenAI Responses API answers: the `response` object and its event stream (`response.created` …
 * `response.completed`, each with a `sequence_number`), written from a chat-completions answer of any
 * translating provider, plus the conversion between Responses usage and {@link TokenUsage}.
 */
import type { TokenUsage } from '../../core/types';
import { usageFromOpenAi } from '../openai/chat-format';
import { encodeSseJson, type SseEvent } from '../sse';
import type { ResponsesBody, ResponsesToolMap, ResponsesToolTarget } from './request';

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Reads a Responses `usage` object (`input_tokens` includes the cached ones). */
export function usageFromResponses(usage: unknown): TokenUsage | undefined {
  if (!isRecord(usage)) return undefined;
  const details = isRecord(usage.input_tokens_details) ? usage.input_tokens_details : {};
  return {
    inputTokens: count(usage.input_tokens),
    outputTokens: count(usage.output_tokens),
    cachedInputTokens: count(details.cached_tokens),
    cacheWriteTokens: 0,
  };
}

/** Writes {@link TokenUsage} as a Responses `usage` object. */
export function usageToResponses(usage: TokenUsage): Record<string, unknown> {
  return {
    input_tokens: usage.inputTokens,
    input_tokens_details: { cached_tokens: usage.cachedInputTokens },
    output_tokens: usage.outputTokens,
    output_tokens_details: { reasoning_tokens: 0 },
    total_tokens: usage.inputTokens + usage.outputTokens,
  };
}

/** Identity of one translated response. */
export interface ResponseIdentity {
  /** `resp_…`; item ids derive from it. */
  readonly id: string;
  readonly model: string;
  /** Seconds since the epoch. */
  readonly createdAt: number;
}

type Status = 'completed' | 'incomplete' | 'in_progress';

/** The echo of the request's settings every response object carries. */
function requestEcho(body: ResponsesBody): Record<string, unknown> {
  const text = isRecord(body.text) && isRecord(body.text.format) ? { format: body.text.format } : { format: { type: 'text' } };
  return {
    instructions: typeof body.instructions === 'string' ? body.instructions : null,
    max_output_tokens: typeof body.max_output_tokens === 'number' ? body.max_output_tokens : null,
    parallel_tool_calls: body.parallel_tool_calls !== false,
    previous_response_id: null,
    reasoning: { effort: null, summary: null },
    // Nothing is stored by the gateway for translated models.
    store: false,
    temperature: typeof body.temperature === 'number' ? body.temperature : 1,
    text,
    tool_choice: body.tool_choice ?? 'auto',
    tools: Array.isArray(body.tools) ? body.tools : [],
    top_p: typeof body.top_p === 'number' ? body.top_p : 1,
    truncation: 'disabled',
    user: typeof body.user === 'string' ? body.user : null,
    metadata: isRecord(body.metadata) ? body.metadata : {},
  };
}

function responseObject(
  identity: ResponseIdentity,
  body: ResponsesBody,
  state: { status: Status; output: unknown[]; usage: TokenUsage | undefined; incompleteReason?: string },
): Record<string, unknown> {
  return {
    id: identity.id,
    object: 'response',
    created_at: identity.createdAt,
    status: state.status,
    error: null,
    incomplete_details: state.incompleteReason ? { reason: state.incompleteReason } : null,
    model: identity.model,
    output: state.output,
    ...requestEcho(body),
    usage: state.usage ? usageToResponses(state.usage) : null,
  };
}

function messageItem(id: string, text: string, status: Status): Record<string, unknown> {
  return {
    id,
    type: 'message',
    status,
    role: 'assistant',
    content: status === 'in_progress' ? [] : [{ type: 'output_text', text, annotations: [], logprobs: [] }],
  };
}

function functionCallItem(id: string, call: { callId: string; name: string; arguments: string }, status: Status): Record<string, unknown> {
  return { id, type: 'function_call', status, arguments: call.arguments, call_id: call.callId, name: call.name };
}

/** The string input of a custom tool call, from the `{"input": …}` arguments of the function it became. */
function customInput(args: string): string {
  try {
    const parsed: unknown = JSON.parse(args);
    if (isRecord(parsed) && typeof parsed.input === 'string') return parsed.input;
  } catch {
    // Not JSON: the model wrote the input bare; pass it on as written.
  }
  return args;
}

/**
 * The output item of one tool call of the chat answer: a `function_call` (with `namespace` when it came from
 * one) or, for a custom tool, a `custom_tool_call` with the string input.
 */
function toolCallItem(
  id: string,
  call: { callId: string; name: string; arguments: string },
  target: ResponsesToolTarget | undefined,
  status: Status,
): Record<string, unknown> {
  const namespace = target?.namespace ? { namespace: target.namespace } : {};
  if (target?.kind === 'custom') {
    const input = status === 'in_progress' ? '' : customInput(call.arguments);
    return { id, type: 'custom_tool_call', status, call_id: call.callId, name: target.name, input, ...namespace };
  }
  return { ...functionCallItem(id, { ...call, name: target?.name ?? call.name }, status), ...namespace };
}

/** Chat `finish_reason` → the response's status and `incomplete_details.reason`. */
function ending(finishReason: unknown): { status: Status; incompleteReason?: string } {
  if (finishReason === 'length') return { status: 'incomplete', incompleteReason: 'max_output_tokens' };
  if (finishReason === 'content_filter') return { status: 'incomplete', incompleteReason: 'content_filter' };
  return { status: 'completed' };
}

/** Translates a non-stream `chat.completion` into a Responses `response` object. */
export function chatCompletionToResponse(
  completion: unknown,
  identity: ResponseIdentity,
  body: ResponsesBody,
  usage: TokenUsage | undefined,
  tools: ResponsesToolMap = new Map(),
): Record<string, unknown> {
  const c = isRecord(completion) ? completion : {};
  const choice = Array.isArray(c.choices) && isRecord(c.choices[0]) ? c.choices[0] : {};
  const message = isRecord(choice.message) ? choice.message : {};
  const output: unknown[] = [];
  if (typeof message.content === 'string' && message.content !== '') {
    output.push(messageItem(`msg_${identity.id.slice(5)}`, message.content, 'completed'));
  }
  if (Array.isArray(message.tool_calls)) {
    message.tool_calls.forEach((call: unknown, i: number) => {
      if (!isRecord(call) || !isRecord(call.function)) return;
      const name = String(call.function.name);
      const target = tools.get(name);
      output.push(
        toolCallItem(
          `${target?.kind === 'custom' ? 'ctc' : 'fc'}_${identity.id.slice(5)}_${i}`,
          { callId: String(call.id), name, arguments: String(call.function.arguments ?? '{}') },
          target,
          'completed',
        ),
      );
    });
  }
  return responseObject(identity, body, { ...ending(choice.finish_reason), output, usage });
}

/**
 * Translates a `chat.completion.chunk` event stream into the Responses event stream. Items open as their
 * first delta arrives (a message for text, a function_call per tool call) and close when the next opens or
 * the answer finishes; usage comes from the chat usage chunk (ask the provider for it) and the final
 * `response.completed` (or `response.incomplete`) carries it. A stream that ends without `[DONE]` ends here
 * without a final event too, as the upstream did; an error chunk (`data: {"error":{…}}`) becomes the `error`
 * event and ends the stream.
 */
export async function* chatChunksToResponseEvents(
  chunks: AsyncIterable<SseEvent>,
  options: { readonly identity: ResponseIdentity; readonly body: ResponsesBody; readonly tools?: ResponsesToolMap },
): AsyncGenerator<Uint8Array> {
  const { identity, body } = options;
  const tools = options.tools ?? new Map<string, ResponsesToolTarget>();
  let sequence = 0;
  const emit = (type: string, data: Record<string, unknown>): Uint8Array =>
    encodeSseJson({ type, sequence_number: sequence++, ...data }, { event: type });
  const output: Record<string, unknown>[] = [];
  type Open =
    | { kind: 'message'; index: number; id: string; text: string }
    | {
        kind: 'call';
        index: number;
        id: string;
        chatIndex: number;
        callId: string;
        name: string;
        arguments: string;
        target: ResponsesToolTarget | undefined;
      };
  let open: Open | undefined;
  const calls = new Map<number, Extract<Open, { kind: 'call' }>>();
  let finishReason: unknown;
  let usage: TokenUsage | undefined;

  function* close(): Generator<Uint8Array> {
    if (!open) return;
    const o = open;
    open = undefined;
    if (o.kind === 'message') {
      const part = { type: 'output_text', text: o.text, annotations: [], logprobs: [] };
      yield emit('response.output_text.done', { item_id: o.id, output_index: o.index, content_index: 0, text: o.text, logprobs: [] });
      yield emit('response.content_part.done', { item_id: o.id, output_index: o.index, content_index: 0, part });
      const item = messageItem(o.id, o.text, 'completed');
      output[o.index] = item;
      yield emit('response.output_item.done', { output_index: o.index, item });
    } else if (o.target?.kind === 'custom') {
      // The string input is known only once the whole `{"input": …}` argument object has arrived.
      const input = customInput(o.arguments);
      if (input !== '') yield emit('response.custom_tool_call_input.delta', { item_id: o.id, output_index: o.index, delta: input });
      yield emit('response.custom_tool_call_input.done', { item_id: o.id, output_index: o.index, input });
      const item = toolCallItem(o.id, o, o.target, 'completed');
      output[o.index] = item;
      yield emit('response.output_item.done', { output_index: o.index, item });
    } else {
      const name = o.target?.name ?? o.name;
      yield emit('response.function_call_arguments.done', { item_id: o.id, output_index: o.index, name, arguments: o.arguments });
      const item = toolCallItem(o.id, o, o.target, 'completed');
      output[o.index] = item;
      yield emit('response.output_item.done', { output_index: o.index, item });
    }
  }

  const initial = responseObject(identity, body, { status: 'in_progress', output: [], usage: undefined });
  yield emit('response.created', { response: initial });
  yield emit('response.in_progress', { response: initial });

  for await (const event of chunks) {
    if (event.data === '[DONE]') {
      yield* close();
      const end = ending(finishReason);
      const final = responseObject(identity, body, { ...end, output, usage });
      yield emit(end.status === 'completed' ? 'response.completed' : 'response.incomplete', { response: final });
      return;
    }
    let chunk: Record<string, unknown>;
    try {
      chunk = JSON.parse(event.data) as Record<string, unknown>;
    } catch {
      continue;
    }
    // A provider failure reported in the chat stream is the Responses API's `error` event, and the stream's end.
    if (isRecord(chunk.error) && !('choices' in chunk)) {
      const e = chunk.error;
      // Its code is the chat error's type, which decides the status when nothing reached the caller yet
      // (core/stream-errors.ts).
      const code = typeof e.type === 'string' ? e.type : typeof e.code === 'string' ? e.code : 'server_error';
      yield emit('error', { code, message: typeof e.message === 'string' ? e.message : '', param: null });
      return;
    }
    if (isRecord(chunk.usage)) usage = usageFromOpenAi(chunk.usage);
    const choice = Array.isArray(chunk.choices) && isRecord(chunk.choices[0]) ? chunk.choices[0] : undefined;
    if (!choice) continue;
    if (choice.finish_reason !== null && choice.finish_reason !== undefined) finishReason = choice.finish_reason;
    const delta = isRecord(choice.delta) ? choice.delta : {};
    if (typeof delta.content === 'string' && delta.content !== '') {
      if (open?.kind !== 'message') {
        yield* close();
        const index = output.length;
        const id = `msg_${identity.id.slice(5)}_${index}`;
        open = { kind: 'message', index, id, text: '' };
        output.push(messageItem(id, '', 'in_progress'));
        yield emit('response.output_item.added', { output_index: index, item: messageItem(id, '', 'in_progress') });
        yield emit('response.content_part.added', {
          item_id: id,
          output_index: index,
          content_index: 0,
          part: { type: 'output_text', text: '', annotations: [], logprobs: [] },
        });
      }
      open.text += delta.content;
      yield emit('response.output_text.delta', { item_id: open.id, output_index: open.index, content_index: 0, delta: delta.content, logprobs: [] });
    }
    if (Array.isArray(delta.tool_calls)) {
      for (const raw of delta.tool_calls) {
        if (!isRecord(raw)) continue;
        const chatIndex = typeof raw.index === 'number' ? raw.index : 0;
        const fn = isRecord(raw.function) ? raw.function : {};
        let call = calls.get(chatIndex);
        if (!call) {
          yield* close();
          const index = output.length;
          const name = typeof fn.name === 'string' ? fn.name : '';
          const target = tools.get(name);
          call = {
            kind: 'call',
            index,
            id: `${target?.kind === 'custom' ? 'ctc' : 'fc'}_${identity.id.slice(5)}_${index}`,
            chatIndex,
            callId: typeof raw.id === 'string' ? raw.id : `call_${identity.id.slice(5)}_${index}`,
            name,
            arguments: '',
            target,
          };
          calls.set(chatIndex, call);
          open = call;
          output.push(toolCallItem(call.id, call, target, 'in_progress'));
          yield emit('response.output_item.added', { output_index: index, item: toolCallItem(call.id, call, target, 'in_progress') });
        }
        if (typeof fn.arguments === 'string' && fn.arguments !== '') {
          call.arguments += fn.arguments;
          if (call.target?.kind !== 'custom') {
            yield emit('response.function_call_arguments.delta', { item_id: call.id, output_index: call.index, delta: fn.arguments });
          }
        }
      }
    }
  }
}
