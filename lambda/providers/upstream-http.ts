/**
 * The HTTP edge shared by the providers that call their upstream over HTTP (OpenAI-compatible, Anthropic;
 * the client itself is ./upstream-client.ts):
 * one place that turns network failures, timeouts and non-2xx answers into {@link UpstreamError}s with the
 * right status, and that keeps secrets out of every message it builds.
 */
import { UpstreamError } from '../core/errors';
import { upstreamStatusFor } from './contract';
import { postToUpstream, UpstreamRequestFailed, type UpstreamResponse } from './upstream-client';

export type { UpstreamResponse } from './upstream-client';

/** An API key, or a function that returns the current one (read from a secret store, rotated). */
export type ApiKeySource = string | (() => string | Promise<string>);

/** The key for one call: the caller's own key (BYOK) when given, else the platform key. */
export async function resolveApiKey(
  providerId: string,
  source: ApiKeySource,
  ctx: { readonly apiKeyOverride?: string },
): Promise<string> {
  if (ctx.apiKeyOverride) return ctx.apiKeyOverride;
  const key = typeof source === 'function' ? await source() : source;
  if (!key) throw new UpstreamError(`provider ${providerId} has no API key configured`, { status: 502 });
  return key;
}

/** One POST to an upstream. */
export interface UpstreamPost {
  /** Names the upstream in messages, e.g. `openai`. */
  readonly providerId: string;
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: unknown;
  readonly signal: AbortSignal;
  /** Values that must never appear in a message (the API key in use). */
  readonly secrets: readonly string[];
}

/** The longest upstream error message we quote to the caller. */
const MAX_QUOTED_MESSAGE = 500;
/** The longest upstream `error.code` / `error.param` we pass on. */
const MAX_QUOTED_FIELD = 128;

/** Things that look like provider keys, scrubbed from quoted upstream messages even when they are not ours. */
const KEY_PATTERN = /\b(?:sk|pk|rk)-[A-Za-z0-9_\-*.]{4,}|\bAKIA[A-Z0-9]{12,}/g;

/** Removes `secrets` and anything that looks like an API key from `text`. */
export function redactSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) {
    if (secret.length >= 4) out = out.split(secret).join('[redacted]');
  }
  return out.replace(KEY_PATTERN, '[redacted]');
}

/**
 * The error for a failed POST or body read: a timeout, a client abort or an unreachable upstream. It may have
 * cost money (UpstreamError.mayHaveOutput) when the request had reached the upstream: the whole request was
 * sent, or `answered` (a 2xx head arrived and its body was lost).
 */
export function networkError(providerId: string, signal: AbortSignal, cause: unknown, answered = false): UpstreamError {
  const mayHaveOutput = answered || (cause instanceof UpstreamRequestFailed && cause.requestSent);
  if (cause instanceof UpstreamRequestFailed) cause = cause.cause;
  if (signal.aborted) {
    const reason: unknown = signal.reason;
    // DOMException is not an Error subclass in every realm: test the name only.
    const timedOut = (reason as { name?: unknown } | undefined)?.name === 'TimeoutError';
    return new UpstreamError(
      timedOut ? `upstream ${providerId} timed out` : `the request to upstream ${providerId} was aborted`,
      { status: 502, code: timedOut ? 'upstream_timeout' : 'upstream_aborted', cause, mayHaveOutput },
    );
  }
  if (answered) return new UpstreamError(`upstream ${providerId} closed the connection before its answer ended`, { status: 502, code: 'upstream_cut_short', cause, mayHaveOutput });
  return new UpstreamError(`upstream ${providerId} is unreachable`, {
    status: 502,
    code: 'upstream_unreachable',
    cause,
    mayHaveOutput,
  });
}

interface UpstreamErrorBody {
  readonly message?: string;
  readonly code?: string;
  readonly param?: string;
}

/** Reads `{error: {message, code|type, param}}` (OpenAI) or `{type: 'error', error: {...}}` (Anthropic). */
function parseErrorBody(text: string): UpstreamErrorBody {
  try {
    const parsed: unknown = JSON.parse(text);
    const error = (parsed as { error?: unknown } | null)?.error;
    if (typeof error === 'string') return { message: error };
    if (typeof error !== 'object' || error === null) return {};
    const e = error as Record<string, unknown>;
    const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
    return { message: str(e.message), code: str(e.code) ?? str(e.type), param: str(e.param) };
  } catch {
    return {};
  }
}

/** Builds the error for a non-2xx upstream answer; the upstream's own message is quoted, redacted. */
export async function upstreamHttpError(
  providerId: string,
  response: UpstreamResponse,
  secrets: readonly string[],
): Promise<UpstreamError> {
  const text = await response.text().catch(() => '');
  const parsed = parseErrorBody(text);
  const status = upstreamStatusFor(response.status);
  const quoted = parsed.message ? redactSecrets(parsed.message, secrets).slice(0, MAX_QUOTED_MESSAGE) : undefined;
  const what =
    response.status === 401 || response.status === 403
      ? `upstream ${providerId} rejected the API key in use (${response.status})`
      : `upstream ${providerId} answered ${response.status}`;
  const headers: Record<string, string> = {};
  const retryAfter = response.header('retry-after');
  if (status === 429 && retryAfter && /^\d{1,6}$/.test(retryAfter)) headers['Retry-After'] = retryAfter;
  // Only the caller's own mistakes carry the upstream's code and param; credential problems are ours.
  const passThrough = status !== 502;
  return new UpstreamError(quoted ? `${what}: ${quoted}` : what, {
    status,
    code: passThrough ? parsed.code && redactSecrets(parsed.code, secrets).slice(0, MAX_QUOTED_FIELD) : 'upstream_error',
    param: passThrough ? parsed.param && redactSecrets(parsed.param, secrets).slice(0, MAX_QUOTED_FIELD) : undefined,
    headers,
    upstreamStatus: response.status,
  });
}

/** POSTs JSON; resolves with the 2xx response, throws an {@link UpstreamError} otherwise. */
export async function postUpstream(request: UpstreamPost): Promise<UpstreamResponse> {
  let response: UpstreamResponse;
  try {
    response = await postToUpstream({
      url: request.url,
      headers: { 'content-type': 'application/json', ...request.headers },
      body: JSON.stringify(request.body),
      signal: request.signal,
    });
  } catch (err) {
    throw networkError(request.providerId, request.signal, err);
  }
  if (!response.ok) throw await upstreamHttpError(request.providerId, response, request.secrets);
  return response;
}

/** Reads a 2xx JSON body; a body that is not JSON is an unusable answer (502). */
export async function readJson(providerId: string, response: UpstreamResponse, signal: AbortSignal): Promise<unknown> {
  let text: string;
  try {
    text = await response.text();
  } catch (err) {
    throw networkError(providerId, signal, err, true);
  }
  try {
    return JSON.parse(text);
  } catch {
    // A 2xx answer we cannot read: the provider did the work.
    throw new UpstreamError(`upstream ${providerId} answered with a body that is not JSON`, { status: 502, mayHaveOutput: true });
  }
}

/**
 * The response body as chunks, as they arrive. A failure mid-body becomes an {@link UpstreamError}; stopping
 * early (the consumer breaks out) cancels the upstream body so the connection is released.
 */
export async function* readBody(
  providerId: string,
  response: UpstreamResponse,
  signal: AbortSignal,
): AsyncGenerator<Uint8Array> {
  const chunks = response.chunks()[Symbol.asyncIterator]();
  let done = false;
  try {
    for (;;) {
      let next: IteratorResult<Uint8Array>;
      try {
        next = await chunks.next();
      } catch (err) {
        throw networkError(providerId, signal, err, true);
      }
      if (next.done) {
        done = true;
        return;
      }
      yield next.value;
    }
  } finally {
    if (!done) response.cancel();
  }
}
