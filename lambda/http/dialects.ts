/**
 * The one error-to-HTTP mapping. Each route speaks a dialect; errors are rendered in it with the error's status.
 */
import {
  BudgetExceededError,
  CircuitOpenError,
  type ErrorKind,
  LoopDetectedError,
  RateLimitError,
  type TollgateError,
} from '../core/errors';
import type { HttpResponse } from './types';

export type Dialect = 'openai' | 'anthropic';

const OPENAI_TYPE: Readonly<Record<ErrorKind, string>> = {
  invalid_request: 'invalid_request_error',
  authentication: 'invalid_request_error',
  permission: 'permission_error',
  not_found: 'invalid_request_error',
  payload_too_large: 'invalid_request_error',
  rate_limit: 'rate_limit_error',
  insufficient_quota: 'insufficient_quota',
  upstream: 'upstream_error',
  unavailable: 'service_unavailable',
  internal: 'server_error',
};

const ANTHROPIC_TYPE: Readonly<Record<ErrorKind, string>> = {
  invalid_request: 'invalid_request_error',
  authentication: 'authentication_error',
  permission: 'permission_error',
  not_found: 'not_found_error',
  payload_too_large: 'request_too_large',
  rate_limit: 'rate_limit_error',
  insufficient_quota: 'rate_limit_error',
  upstream: 'api_error',
  unavailable: 'overloaded_error',
  internal: 'api_error',
};

/** Anthropic's own error types a provider failure may carry through (an `overloaded_error` stays one). */
const ANTHROPIC_UPSTREAM_TYPES = new Set(['overloaded_error', 'api_error', 'rate_limit_error']);

/** An upstream's refusal of the caller's request (passed through with its status) in Anthropic's error types. */
const ANTHROPIC_UPSTREAM_STATUS_TYPES: Readonly<Record<number, string>> = {
  400: 'invalid_request_error',
  404: 'not_found_error',
  413: 'request_too_large',
  422: 'invalid_request_error',
  429: 'rate_limit_error',
};

function anthropicType(err: TollgateError): string {
  if (err.kind !== 'upstream') return ANTHROPIC_TYPE[err.kind];
  if (err.code && ANTHROPIC_UPSTREAM_TYPES.has(err.code)) return err.code;
  // A translated provider (OpenAI, Bedrock) refusing the caller's request: the status says what kind.
  return ANTHROPIC_UPSTREAM_STATUS_TYPES[err.status] ?? ANTHROPIC_TYPE.upstream;
}

/**
 * The OpenAI `type` of a 429 no retry can help (a spent budget, a detected loop, an open circuit, a request
 * larger than the token rate). Codex (0.169–0.171, checked against the real binaries) shows the user a 429's
 * own words only for this type, together with the {@link CODEX_MESSAGE_HEADER} header: "You've hit your usage
 * limit. <header>, or try again later." For `insufficient_quota` it prints a fixed "Quota exceeded. Check your
 * plan and billing details." and for any other 429 "exceeded retry limit, last status: 429". `code` stays as
 * it was (`insufficient_quota`, `loop_detected`, `circuit_open`…) for the SDKs and apps that branch on it,
 * and the OpenAI SDKs classify by status (429: RateLimitError), not by `type`.
 */
export const FINAL_REFUSAL_TYPE = 'usage_limit_reached';

/** The header Codex appends to its usage-limit line (`x-codex-promo-message`): the refusal's sentence. */
export const CODEX_MESSAGE_HEADER = 'x-codex-promo-message';

/** A 429 that retrying cannot help (see {@link FINAL_REFUSAL_TYPE}). */
function isFinalRefusal(err: TollgateError): boolean {
  return err.status === 429 && shouldRetry(err) === false;
}

const HEADER_SAFE: Readonly<Record<string, string>> = { '…': '...', '×': 'x', '≤': '<=', '≥': '>=', '–': '-', '—': '-', '‘': "'", '’': "'", '“': '"', '”': '"', '÷': '/' };

/**
 * A message as a header value: printable ASCII only (common typography spelled out, anything else `?`), one
 * line, at most 1,000 characters, without its final full stop (Codex follows it with ", or try again later.").
 */
export function headerSafeMessage(message: string): string {
  let out = '';
  for (const ch of message) {
    const code = ch.codePointAt(0)!;
    out += code >= 0x20 && code <= 0x7e ? ch : (HEADER_SAFE[ch] ?? (ch === '\n' || ch === '\r' || ch === '\t' ? ' ' : '?'));
  }
  out = out.replace(/\s+/g, ' ').trim().replace(/(?<!\.)\.$/, '');
  return out.length > 1_000 ? `${out.slice(0, 997)}...` : out;
}

export function errorBody(dialect: Dialect, err: TollgateError): unknown {
  if (dialect === 'anthropic') {
    const type = anthropicType(err);
    return { type: 'error', error: { type, message: err.message } };
  }
  const type = isFinalRefusal(err) ? FINAL_REFUSAL_TYPE : OPENAI_TYPE[err.kind];
  return {
    error: { message: err.message, type, param: err.param ?? null, code: err.code ?? null },
  };
}

export function jsonResponse(status: number, body: unknown, headers: Record<string, string> = {}): HttpResponse {
  return { status, headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) };
}

export function errorResponse(dialect: Dialect, err: TollgateError, headers: Record<string, string> = {}): HttpResponse {
  const retry = shouldRetry(err);
  return jsonResponse(err.status, errorBody(dialect, err), {
    ...headers,
    ...err.headers,
    ...(retry === undefined ? {} : { 'x-should-retry': String(retry) }),
    ...(dialect === 'openai' && isFinalRefusal(err) ? { [CODEX_MESSAGE_HEADER]: headerSafeMessage(err.message) } : {}),
  });
}

/**
 * Whether an SDK's automatic retry can succeed (`x-should-retry`, which the OpenAI and Anthropic SDKs obey):
 * a spent budget, an open circuit and a detected loop cannot within a retry's seconds, so `false`; a rate
 * limit with `Retry-After` can, so `true`; a request larger than the whole rate limit never can. Undefined
 * leaves the SDK's own rule (retry 408/409/429/5xx).
 */
export function shouldRetry(err: TollgateError): boolean | undefined {
  // A loop refusal of copies still in flight (not a failure streak) passes once one is answered: it says so itself.
  if (err instanceof LoopDetectedError && err.headers['x-should-retry'] === 'true') return true;
  // A budget whose room only requests in flight hold (spend leaves room) frees up as they settle: it says so too.
  if (err instanceof BudgetExceededError && err.headers['x-should-retry'] === 'true') return true;
  if (err instanceof BudgetExceededError || err instanceof CircuitOpenError || err instanceof LoopDetectedError) return false;
  if (err instanceof RateLimitError) return Object.keys(err.headers).some((h) => h.toLowerCase() === 'retry-after');
  return undefined;
}

/**
 * Anthropic routes live under /v1/messages; a request carrying `anthropic-version` (every Anthropic SDK
 * sends it) speaks Anthropic on the shared routes too (`/v1/models`, unknown routes); everything else
 * speaks OpenAI.
 */
export function dialectOf(path: string, headers?: Readonly<Record<string, string>>): Dialect {
  if (path.startsWith('/v1/messages')) return 'anthropic';
  if (headers?.['anthropic-version'] !== undefined && !path.startsWith('/v1/chat/') && !path.startsWith('/v1/responses')) return 'anthropic';
  return 'openai';
}
