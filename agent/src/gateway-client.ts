/**
 * The agent's only way to a model: tollgate's own `POST /v1/chat/completions`, over HTTP, with a short-lived
 * service JWT issued per call on behalf of the run's user, so every token lands on that user's budgets and
 * ledger. After every call it reads `x-tollgate-cost-usd` (micro-USD, parsed once with usdToMicros): the
 * run's cost cap is enforced on what the gateway billed, not on an estimate of our own.
 */
import { usdToMicros, type MicroUsd } from '../../lambda/core/money';
import type { ChatMessage, ToolCall } from './conversation';

/** Issues the bearer token for one call (a service JWT on behalf of `userId`). */
export type ServiceTokenSource = (onBehalfOf: { readonly userId: string; readonly orgId?: string }) => Promise<string>;

export interface ChatRequest {
  readonly model: string;
  readonly messages: readonly ChatMessage[];
  readonly tools?: readonly unknown[];
  readonly maxTokens?: number;
}

/** One completed call: the assistant's message, its usage, and what the gateway billed. */
export interface ChatReply {
  readonly content: string;
  readonly toolCalls: readonly ToolCall[];
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly costMicros: MicroUsd;
  readonly requestId?: string;
}

/** The gateway refused or failed a call; `code` is its `error.code` (e.g. `insufficient_quota`). */
export class GatewayCallError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly code: string | undefined,
    /** From `Retry-After`, when the gateway sent one. */
    readonly retryAfterMs: number | undefined,
  ) {
    super(message);
    this.name = 'GatewayCallError';
  }

  /** A short wait fixes it (a per-minute rate limit, an overloaded store or provider). */
  get retryable(): boolean {
    if (this.status === 429) return this.code === 'rate_limit_exceeded';
    return this.status === 502 || this.status === 503 || this.status === 504;
  }
}

export interface GatewayClientOptions {
  /** The gateway's base URL, without `/v1` (e.g. `http://127.0.0.1:3000`). */
  readonly baseUrl: string;
  readonly token: ServiceTokenSource;
  /**
   * Called when the gateway refuses a token (401), before one retry with a fresh token: the agent re-reads its
   * `jwt-secret` there, so a rotation reaches a running task. The refused call spent nothing.
   */
  readonly onUnauthorized?: () => void | Promise<void>;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
}

interface CompletionBody {
  readonly choices?: ReadonlyArray<{
    readonly message?: { readonly content?: string | null; readonly tool_calls?: ReadonlyArray<ToolCall> };
  }>;
  readonly usage?: { readonly prompt_tokens?: number; readonly completion_tokens?: number };
}

export class GatewayClient {
  private readonly url: string;
  private readonly fetch: typeof fetch;

  constructor(private readonly options: GatewayClientOptions) {
    this.url = `${options.baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '')}/v1/chat/completions`;
    this.fetch = options.fetch ?? globalThis.fetch;
  }

  /** Calls the model once (not streamed: the cost header comes with the answer). */
  async chat(request: ChatRequest, context: { readonly userId: string; readonly orgId?: string; readonly signal: AbortSignal }): Promise<ChatReply> {
    const body = JSON.stringify({
      model: request.model,
      messages: request.messages,
      ...(request.tools?.length ? { tools: request.tools } : {}),
      ...(request.maxTokens ? { max_tokens: request.maxTokens } : {}),
    });
    const call = async () => {
      const token = await this.options.token({ userId: context.userId, ...(context.orgId ? { orgId: context.orgId } : {}) });
      return this.fetch(this.url, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'user-agent': 'tollgate-agent' },
        body,
        signal: context.signal,
      });
    };
    let res = await call();
    if (res.status === 401 && this.options.onUnauthorized) {
      await res.arrayBuffer();
      await this.options.onUnauthorized();
      res = await call();
    }
    const text = await res.text();
    const requestId = res.headers.get('x-request-id') ?? undefined;
    if (!res.ok) {
      let message = `The gateway answered ${res.status}.`;
      let code: string | undefined;
      try {
        const err = (JSON.parse(text) as { error?: { message?: string; code?: string | null } }).error;
        if (err?.message) message = err.message;
        code = err?.code ?? undefined;
      } catch {
        // Not JSON: keep the status line.
      }
      const retryAfter = Number(res.headers.get('retry-after'));
      throw new GatewayCallError(message, res.status, code, Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter * 1000 : undefined);
    }
    const cost = res.headers.get('x-tollgate-cost-usd');
    if (cost === null) {
      // Fail closed: a call we cannot price cannot be held against the run's cap.
      throw new GatewayCallError('The gateway answered without x-tollgate-cost-usd.', 502, 'missing_cost', undefined);
    }
    const answer = JSON.parse(text) as CompletionBody;
    const message = answer.choices?.[0]?.message;
    return {
      content: message?.content ?? '',
      toolCalls: message?.tool_calls ?? [],
      inputTokens: answer.usage?.prompt_tokens ?? 0,
      outputTokens: answer.usage?.completion_tokens ?? 0,
      costMicros: usdToMicros(cost),
      ...(requestId ? { requestId } : {}),
    };
  }
}
