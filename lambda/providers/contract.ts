/**
 * The one contract every provider implements. Requests arrive already validated and in the caller's dialect
 * with `model` rewritten to the upstream model name. A provider turns its own usage format into
 * {@link TokenUsage}; it never prices anything (pricing is in core/pricing.ts).
 *
 * Failures: a provider throws {@link UpstreamError} (from core/errors) for upstream HTTP errors, network
 * failures, timeouts and unusable answers. It maps statuses with {@link upstreamStatusFor}.
 */
import type { StreamWatch } from '../core/stream-errors';
import type { TokenUsage } from '../core/types';

export interface ProviderCallContext {
  readonly requestId: string;
  /** Aborted when the client disconnects or the upstream timeout passes. */
  readonly signal: AbortSignal;
  /** A caller's own provider key (BYOK) to use instead of the platform key. */
  readonly apiKeyOverride?: string;
  /**
   * For OpenAI streams: whether the caller asked for `stream_options.include_usage`. The provider always
   * asks the upstream for usage; when the caller did not, the usage-only final chunk is not passed on.
   */
  readonly callerWantsStreamUsage?: boolean;
  /** The caller's `anthropic-version` header (Anthropic upstreams). */
  readonly anthropicVersion?: string;
  /** The caller's `anthropic-beta` header (Anthropic upstreams). */
  readonly anthropicBeta?: string;
  /**
   * The output cap (per choice) the reservation assumed, given when the caller set none: the provider sends it
   * upstream in its own field (`max_completion_tokens`, `max_tokens`, Bedrock's `maxTokens`,
   * `max_output_tokens`) so the answer cannot cost more than was reserved. Absent: the body carries the
   * caller's own cap.
   */
  readonly maxOutputTokens?: number;
}

/** A complete JSON answer. */
export interface JsonResult {
  readonly kind: 'json';
  /** The body to send to the caller, in the caller's dialect. */
  readonly body: unknown;
  readonly usage: TokenUsage | undefined;
}

/** A server-sent-event stream in the caller's dialect. */
export interface StreamResult {
  readonly kind: 'stream';
  /** Bytes to pass to the caller as they arrive (`text/event-stream`). */
  readonly body: AsyncIterable<Uint8Array>;
  /**
   * Usage seen in the stream so far; final once `body` has been fully consumed. Undefined when the upstream
   * reported none (the gateway then prices the request from its reservation).
   */
  usage(): TokenUsage | undefined;
  /**
   * Fed every event of `body` (as the caller receives it) before the bytes that complete it are yielded, by an
   * adapter that parses its stream anyway: the pipeline then reads whether output started, or an error event
   * came, from it instead of parsing the stream a second time. Without it the pipeline parses `body` itself.
   */
  readonly watch?: StreamWatch;
  /**
   * Whether the upstream ended the stream cleanly without its end marker (OpenAI chat `[DONE]` or a final
   * chunk with `finish_reason`, Anthropic `message_stop`, Responses `response.completed` / `.incomplete` /
   * `.failed`, Bedrock `messageStop`): a cut answer. The adapter has then ended `body` with an error event in
   * the caller's dialect, and the call settles `stream_incomplete`. Read once `body` is done.
   */
  readonly cut?: () => boolean;
}

export type ProviderResult = JsonResult | StreamResult;

/** OpenAI chat-completions request body (validated; unknown fields pass through). */
export type ChatCompletionBody = Record<string, unknown> & {
  readonly model: string;
  readonly messages: readonly Record<string, unknown>[];
  readonly stream?: boolean;
};

/** Anthropic Messages request body (validated; unknown fields pass through). */
export type MessagesBody = Record<string, unknown> & {
  readonly model: string;
  readonly max_tokens: number;
  readonly messages: readonly Record<string, unknown>[];
  readonly stream?: boolean;
};

/** OpenAI embeddings request body. */
export type EmbeddingsBody = Record<string, unknown> & {
  readonly model: string;
  readonly input: string | readonly string[] | readonly number[] | readonly (readonly number[])[];
};

/** The operations a provider may serve, by the route that reaches them. */
export type ProviderOperation = 'chatCompletions' | 'messages' | 'embeddings';

export interface Provider {
  /** The name used in `provider/model` routing: `openai`, `anthropic`, `bedrock`, `mock`. */
  readonly id: string;
  /** OpenAI `/v1/chat/completions` (translated for non-OpenAI upstreams). */
  chatCompletions?(body: ChatCompletionBody, ctx: ProviderCallContext): Promise<ProviderResult>;
  /** Anthropic `/v1/messages`. */
  messages?(body: MessagesBody, ctx: ProviderCallContext): Promise<ProviderResult>;
  /** OpenAI `/v1/embeddings` (always JSON). */
  embeddings?(body: EmbeddingsBody, ctx: ProviderCallContext): Promise<JsonResult>;
  /**
   * Refuses, before anything is reserved, a request this provider cannot express (throws
   * `InvalidRequestError`): a translating provider runs its translation here, so the gateway's own refusals
   * never hold budget or reach the loop guard. Optional: pass-through providers leave that to their upstream.
   */
  check?(operation: ProviderOperation, body: Record<string, unknown>): void;
  /**
   * OpenAI `/v1/responses`, natively. Providers without it answer the Responses API through
   * `chatCompletions` (providers/responses/via-chat.ts).
   */
  responses?(body: Record<string, unknown> & { readonly model: string }, ctx: ProviderCallContext): Promise<ProviderResult>;
  /**
   * The provider's own input-token count of a Messages body (Anthropic's `/v1/messages/count_tokens`, free
   * there). Providers without it are answered by the gateway's tokenizer (core/tokens.ts).
   */
  countTokens?(body: Record<string, unknown> & { readonly model: string }, ctx: ProviderCallContext): Promise<number>;
}

/**
 * The status the gateway answers when the upstream answered `status`: the caller's own mistakes (400, 404,
 * 413, 422) and rate limits (429) pass through; the provider rejecting *our* credentials (401, 403) and
 * every upstream 5xx are the gateway's problem: 502.
 */
export function upstreamStatusFor(status: number): number {
  if (status === 400 || status === 404 || status === 413 || status === 422 || status === 429) return status;
  return 502;
}
