/**
 * Amazon Bedrock through the Converse API: OpenAI chat completions translated to Converse / ConverseStream
 * and back. The client is injected, so tests pass one mocked with aws-sdk-client-mock.
 */
import type {
  BedrockRuntimeClient,
  ContentBlock,
  ConverseCommandInput,
  ConverseStreamOutput,
  ImageFormat,
  Message,
  TokenUsage as BedrockTokenUsage,
  Tool,
  ToolChoice,
  ToolUseBlock,
} from '@aws-sdk/client-bedrock-runtime';
import { systemClock, type Clock } from '../../core/clock';
import { lazy } from '../../core/lazy';
import { InvalidRequestError, UpstreamError } from '../../core/errors';
import type { TokenUsage } from '../../core/types';
import { upstreamStatusFor, type ChatCompletionBody, type Provider, type ProviderCallContext, type ProviderOperation, type ProviderResult } from '../contract';
import {
  ChatChunkEncoder,
  chatCompletionBody,
  type ChatAnswerIdentity,
  type ChatFinishReason,
  type ChatToolCall,
} from '../openai/chat-format';
import {
  mapParams,
  readChatRequest,
  readStructuredOutput,
  stopSequences,
  type StructuredOutput,
  type ChatPart,
  type ChatToolChoice,
  type ParamRule,
} from '../openai/chat-request';
import { encodeSseJson } from '../sse';
import { redactSecrets } from '../upstream-http';

/** A JSON document as the SDK types it (tool inputs and schemas). */
type DocumentType = NonNullable<ToolUseBlock['input']>;

/** OpenAI parameter → Converse `inferenceConfig` field. */
export const BEDROCK_INFERENCE_PARAMS: readonly ParamRule[] = [
  { from: 'temperature', to: 'temperature' },
  { from: 'top_p', to: 'topP' },
  { from: 'stop', to: 'stopSequences', convert: stopSequences },
];

/** Converse `stopReason` → OpenAI `finish_reason`; anything else is `stop`. */
export const BEDROCK_FINISH_REASONS: Readonly<Record<string, ChatFinishReason>> = {
  end_turn: 'stop',
  stop_sequence: 'stop',
  max_tokens: 'length',
  model_context_window_exceeded: 'length',
  tool_use: 'tool_calls',
  guardrail_intervened: 'content_filter',
  content_filtered: 'content_filter',
};

const IMAGE_FORMATS: Readonly<Record<string, ImageFormat>> = {
  'image/png': 'png',
  'image/jpeg': 'jpeg',
  'image/jpg': 'jpeg',
  'image/gif': 'gif',
  'image/webp': 'webp',
};

const TOOL_CHOICES: Readonly<Record<ChatToolChoice['type'], (c: ChatToolChoice) => ToolChoice | undefined>> = {
  auto: () => ({ auto: {} }),
  any: () => ({ any: {} }),
  // Converse has no "none"; the tools stay declared (earlier tool turns need them) and the model may choose.
  none: () => undefined,
  tool: (c) => ({ tool: { name: c.type === 'tool' ? c.name : '' } }),
};

export interface BedrockProviderOptions {
  /** The client, or a function creating it on first use (so a cold start need not load the Bedrock SDK). */
  readonly client: BedrockRuntimeClient | (() => Promise<BedrockRuntimeClient>);
  /** `maxTokens` for requests that set neither max_completion_tokens nor max_tokens. @default 4096 */
  readonly defaultMaxTokens?: number;
  /** Stamps `created` on answers. @default systemClock */
  readonly clock?: Clock;
}

function renderPart(part: ChatPart, turn: number): ContentBlock {
  switch (part.type) {
    case 'text':
      return { text: part.text };
    case 'image': {
      const format = part.source.kind === 'base64' ? IMAGE_FORMATS[part.source.mediaType] : undefined;
      if (part.source.kind !== 'base64' || !format) {
        throw new InvalidRequestError('Bedrock models take images only as base64 data: URLs of png, jpeg, gif or webp', {
          param: `messages[${turn}].content`,
        });
      }
      return { image: { format, source: { bytes: Buffer.from(part.source.data, 'base64') } } };
    }
    case 'tool_call':
      return { toolUse: { toolUseId: part.id, name: part.name, input: part.input as DocumentType } };
    case 'tool_result':
      return { toolResult: { toolUseId: part.toolCallId, content: [{ text: part.text }] } };
  }
}

/** Translates an OpenAI chat request into a Converse request. */
export function toConverseRequest(
  body: ChatCompletionBody,
  options: { readonly defaultMaxTokens: number },
): ConverseCommandInput {
  const request = readChatRequest(body, options);
  const messages: Message[] = request.turns.map((turn, i) => ({
    role: turn.role,
    content: turn.parts.map((part) => renderPart(part, i)),
  }));
  const input: ConverseCommandInput = {
    modelId: body.model,
    messages,
    inferenceConfig: { maxTokens: request.maxTokens, ...mapParams(body, BEDROCK_INFERENCE_PARAMS) },
  };
  if (request.system.length > 0) input.system = request.system.map((text) => ({ text }));
  const structured = readStructuredOutput(body);
  if (request.tools.length > 0 || structured) {
    const tools: Tool[] = [
      ...request.tools.map((tool) => ({
        toolSpec: {
          name: tool.name,
          ...(tool.description ? { description: tool.description } : {}),
          inputSchema: { json: tool.parameters as DocumentType },
        },
      })),
      ...(structured
        ? [{ toolSpec: { name: structured.toolName, description: structured.description, inputSchema: { json: structured.schema as DocumentType } } }]
        : []),
    ];
    let toolChoice = request.toolChoice ? TOOL_CHOICES[request.toolChoice.type](request.toolChoice) : undefined;
    // Structured output: the answer must be a tool call, the schema's own unless the caller named another.
    if (structured && !toolChoice?.tool) {
      toolChoice = request.tools.length > 0 && request.toolChoice?.type !== 'none' ? { any: {} } : { tool: { name: structured.toolName } };
    }
    input.toolConfig = { tools, ...(toolChoice ? { toolChoice } : {}) };
  }
  return input;
}

/** Converse usage in common units: Bedrock's `inputTokens` excludes cache reads and writes; ours includes them. */
export function usageFromBedrock(usage: BedrockTokenUsage | undefined): TokenUsage | undefined {
  if (!usage) return undefined;
  const cacheRead = usage.cacheReadInputTokens ?? 0;
  const cacheWrite = usage.cacheWriteInputTokens ?? 0;
  return {
    inputTokens: (usage.inputTokens ?? 0) + cacheRead + cacheWrite,
    outputTokens: usage.outputTokens ?? 0,
    cachedInputTokens: cacheRead,
    cacheWriteTokens: cacheWrite,
  };
}

function finishReason(stopReason: string | undefined): ChatFinishReason {
  return (stopReason && BEDROCK_FINISH_REASONS[stopReason]) || 'stop';
}

/** Turns an SDK failure into an {@link UpstreamError}: the caller's mistakes pass through, the rest is 502. */
export function bedrockError(err: unknown, signal: AbortSignal): UpstreamError {
  if (err instanceof UpstreamError) return err;
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } } | undefined;
  if (signal.aborted || e?.name === 'AbortError') {
    const reason: unknown = signal.reason;
    // DOMException is not an Error subclass in every realm: test the name only.
    const timedOut = (reason as { name?: unknown } | undefined)?.name === 'TimeoutError';
    // A timeout comes long after the request left: Bedrock may be generating (and billing) the answer.
    return new UpstreamError(timedOut ? 'upstream bedrock timed out' : 'the request to upstream bedrock was aborted', {
      status: 502,
      code: timedOut ? 'upstream_timeout' : 'upstream_aborted',
      mayHaveOutput: timedOut,
    });
  }
  const httpStatus = e?.$metadata?.httpStatusCode;
  if (httpStatus === undefined) {
    return new UpstreamError('upstream bedrock is unreachable', { status: 502, code: 'upstream_unreachable' });
  }
  const status = upstreamStatusFor(httpStatus);
  const detail = typeof e?.message === 'string' && e.message !== '' ? `: ${redactSecrets(e.message, []).slice(0, 500)}` : '';
  const name = e?.name ?? 'error';
  return new UpstreamError(`upstream bedrock answered ${httpStatus} (${name})${detail}`, {
    status,
    code: status === 502 ? 'upstream_error' : name,
    cause: err,
    upstreamStatus: httpStatus,
  });
}

/**
 * Exceptions ConverseStream delivers inside the stream (`:message-type: exception`), with the OpenAI error type
 * the caller sees for each: it decides the status the gateway answers when nothing reached the caller yet
 * (core/stream-errors.ts: `rate_limit_error` 429, `invalid_request_error` 400, `server_error` 500).
 */
export const BEDROCK_STREAM_EXCEPTIONS: Readonly<Record<string, string>> = {
  internalServerException: 'server_error',
  modelStreamErrorException: 'server_error',
  serviceUnavailableException: 'server_error',
  throttlingException: 'rate_limit_error',
  validationException: 'invalid_request_error',
};

/** A stream failure as an OpenAI error chunk (`data: {"error":{…}}`), as OpenAI itself reports one mid-stream. */
function errorChunk(message: string, type: string, code: string): Uint8Array {
  return encodeSseJson({ error: { message, type, param: null, code } });
}

/** The exception an SDK error read from the stream stands for (`ThrottlingException` → `throttlingException`). */
function streamExceptionOf(err: unknown): { readonly name: string; readonly message: string } | undefined {
  const e = err as { name?: unknown; message?: unknown } | undefined;
  if (typeof e?.name !== 'string' || e.name === '') return undefined;
  const name = e.name[0]!.toLowerCase() + e.name.slice(1);
  return name in BEDROCK_STREAM_EXCEPTIONS ? { name, message: typeof e.message === 'string' ? e.message : '' } : undefined;
}

/**
 * Translates ConverseStream events into OpenAI chunks ending with `data: [DONE]`; Bedrock sends usage in
 * `metadata` after `messageStop`, so the usage chunk (when `includeUsage`) and `[DONE]` follow the stream's end.
 *
 * A stream that does not answer is a failure the caller sees as OpenAI reports one, an error chunk and no
 * `[DONE]` (core/stream-errors.ts then makes it a provider error, or a fallback, when nothing reached the caller
 * yet): an exception inside the stream, a stream that ends before `messageStop` (a cut or empty answer), or one
 * whose connection fails. Only the gateway's own abort (caller gone, timeout) is thrown, as an UpstreamError.
 */
export async function* converseStreamToChatChunks(
  events: AsyncIterable<ConverseStreamOutput>,
  options: {
    readonly identity: ChatAnswerIdentity;
    readonly includeUsage: boolean;
    readonly onUsage: (usage: TokenUsage | undefined) => void;
    /** The structured-output tool, whose input streams as the message's text. */
    readonly structured?: StructuredOutput;
    /** The call's signal: a failure after it aborted is the gateway's abort, thrown rather than reported. */
    readonly signal?: AbortSignal;
    /** Told when the stream ended cleanly before `messageStop` (a cut or empty answer). */
    readonly onCut?: () => void;
  },
): AsyncGenerator<Uint8Array> {
  const encoder = new ChatChunkEncoder(options.identity);
  const toolIndex = new Map<number, number>();
  const jsonBlocks = new Set<number>();
  let usage: TokenUsage | undefined;
  let started = false;
  let stopped = false;
  const detail = (message: string) => (message ? `: ${redactSecrets(message, []).slice(0, 500)}` : '');

  try {
    for await (const event of events) {
      if (event.messageStart) {
        started = true;
        yield encoder.start();
      } else if (event.contentBlockStart) {
        const toolUse = event.contentBlockStart.start?.toolUse;
        if (toolUse && options.structured && toolUse.name === options.structured.toolName) {
          jsonBlocks.add(event.contentBlockStart.contentBlockIndex ?? 0);
        } else if (toolUse) {
          toolIndex.set(event.contentBlockStart.contentBlockIndex ?? 0, toolIndex.size);
          yield encoder.toolCallStart(toolIndex.size - 1, { id: toolUse.toolUseId ?? '', name: toolUse.name ?? '' });
        }
      } else if (event.contentBlockDelta) {
        const delta = event.contentBlockDelta.delta;
        const at = toolIndex.get(event.contentBlockDelta.contentBlockIndex ?? 0);
        if (delta?.text !== undefined && delta.text !== '') yield encoder.text(delta.text);
        else if (delta?.toolUse?.input && jsonBlocks.has(event.contentBlockDelta.contentBlockIndex ?? 0)) yield encoder.text(delta.toolUse.input);
        else if (delta?.toolUse?.input && at !== undefined) yield encoder.toolCallArguments(at, delta.toolUse.input);
      } else if (event.messageStop) {
        stopped = true;
        const reason = event.messageStop.stopReason;
        yield encoder.finish(jsonBlocks.size > 0 && reason === 'tool_use' && toolIndex.size === 0 ? 'stop' : finishReason(reason));
      } else if (event.metadata) {
        usage = usageFromBedrock(event.metadata.usage);
        options.onUsage(usage);
      } else {
        // An exception as a union member (how a client that does not throw them hands them over).
        const name = Object.keys(BEDROCK_STREAM_EXCEPTIONS).find((n) => event[n as keyof ConverseStreamOutput]);
        if (name) {
          const failure = event[name as keyof ConverseStreamOutput] as { message?: string };
          yield errorChunk(`upstream bedrock failed mid-stream (${name})${detail(failure.message ?? '')}`, BEDROCK_STREAM_EXCEPTIONS[name]!, name);
          return;
        }
      }
    }
  } catch (err) {
    if (options.signal?.aborted) throw err instanceof UpstreamError ? err : bedrockError(err, options.signal);
    // The SDK throws the stream's exceptions (ModelStreamErrorException, ThrottlingException, …) from the iterator.
    const exception = streamExceptionOf(err);
    if (exception) {
      yield errorChunk(`upstream bedrock failed mid-stream (${exception.name})${detail(exception.message)}`, BEDROCK_STREAM_EXCEPTIONS[exception.name]!, exception.name);
    } else {
      const message = err instanceof Error ? err.message : String(err);
      yield errorChunk(`the stream from upstream bedrock broke off${detail(message)}`, 'server_error', 'upstream_stream_broken');
    }
    return;
  }
  if (!stopped) {
    options.onCut?.();
    yield errorChunk(
      started ? 'upstream bedrock ended the stream before messageStop (a cut answer)' : 'upstream bedrock answered an empty stream',
      'server_error',
      started ? 'upstream_stream_cut' : 'upstream_empty_answer',
    );
    return;
  }
  if (options.includeUsage && usage) yield encoder.usage(usage);
  yield encoder.done();
}

/** The Bedrock SDK's commands, loaded with the first Bedrock request. */
const bedrockSdk = lazy(() => import('@aws-sdk/client-bedrock-runtime'));

/** Bedrock's Converse API, reached with OpenAI chat completions (the only operation it offers). */
export class BedrockProvider implements Provider {
  readonly id = 'bedrock';
  private readonly client: () => Promise<BedrockRuntimeClient>;
  private readonly defaultMaxTokens: number;
  private readonly clock: Clock;

  constructor(options: BedrockProviderOptions) {
    const client = options.client;
    this.client = typeof client === 'function' ? lazy(client) : () => Promise.resolve(client);
    this.defaultMaxTokens = options.defaultMaxTokens ?? 4096;
    this.clock = options.clock ?? systemClock;
  }

  /** Chat requests are translated once here, before the reservation, to refuse what Converse cannot express. */
  check(operation: ProviderOperation, body: Record<string, unknown>): void {
    if (operation === 'chatCompletions') toConverseRequest(body as ChatCompletionBody, { defaultMaxTokens: this.defaultMaxTokens });
  }

  async chatCompletions(body: ChatCompletionBody, ctx: ProviderCallContext): Promise<ProviderResult> {
    const input = toConverseRequest(body, { defaultMaxTokens: ctx.maxOutputTokens ?? this.defaultMaxTokens });
    const structured = readStructuredOutput(body);
    const identity: ChatAnswerIdentity = {
      id: `chatcmpl-${ctx.requestId}`,
      model: body.model,
      created: Math.floor(this.clock.now() / 1000),
    };
    const [client, sdk] = await Promise.all([this.client(), bedrockSdk()]);
    if (!body.stream) {
      const output = await client
        .send(new sdk.ConverseCommand(input), { abortSignal: ctx.signal })
        .catch((err: unknown) => Promise.reject(bedrockError(err, ctx.signal)));
      // An answer without a message is no answer: a failure (never cached), not an empty 200.
      if (!output.output?.message) throw new UpstreamError('upstream bedrock answered without a message', { status: 502, code: 'upstream_empty_answer' });
      const texts: string[] = [];
      const toolCalls: ChatToolCall[] = [];
      for (const block of output.output.message.content ?? []) {
        if (block.text !== undefined) texts.push(block.text);
        if (block.toolUse && structured && block.toolUse.name === structured.toolName) {
          texts.push(JSON.stringify(block.toolUse.input ?? {}));
        } else if (block.toolUse) {
          toolCalls.push({
            id: block.toolUse.toolUseId ?? '',
            name: block.toolUse.name ?? '',
            arguments: JSON.stringify(block.toolUse.input ?? {}),
          });
        }
      }
      const usage = usageFromBedrock(output.usage);
      const answer = chatCompletionBody(identity, {
        text: texts.length === 0 && toolCalls.length > 0 ? null : texts.join(''),
        toolCalls,
        finishReason: structured && output.stopReason === 'tool_use' && toolCalls.length === 0 ? 'stop' : finishReason(output.stopReason),
        usage: usage ?? { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 },
      });
      return { kind: 'json', body: answer, usage };
    }

    const output = await client
      .send(new sdk.ConverseStreamCommand(input), { abortSignal: ctx.signal })
      .catch((err: unknown) => Promise.reject(bedrockError(err, ctx.signal)));
    if (!output.stream) throw new UpstreamError('upstream bedrock answered without a stream', { status: 502 });
    let usage: TokenUsage | undefined;
    let cut = false;
    const chunks = converseStreamToChatChunks(output.stream, {
      identity,
      signal: ctx.signal,
      includeUsage: ctx.callerWantsStreamUsage === true,
      onUsage: (u) => {
        usage = u;
      },
      onCut: () => {
        cut = true;
      },
      ...(structured ? { structured } : {}),
    });
    return { kind: 'stream', body: chunks, usage: () => usage, cut: () => cut };
  }
}
