/**
 * The gateway's input boundary: checks that run on the raw request before any route reads it, so that every
 * malformed path, body, number or header becomes a 400/413/415 in the caller's dialect — never a 500 — and
 * nothing reaches the ledger, a counter, a key or an upstream.
 *
 *   path     %-escapes must decode to UTF-8; a path parameter is at most {@link MAX_PATH_PARAM_CHARS} characters
 *   body     valid UTF-8; JSON nested at most `maxJsonDepth` levels (TOLLGATE_MAX_JSON_DEPTH, default 64);
 *            a JSON content type when one is declared (any `charset` must be UTF-8)
 *   numbers  output caps (`max_tokens`, …) at most the model's known cap, else `maxOutputTokens`
 *            (TOLLGATE_MAX_OUTPUT_TOKENS, default 262,144)
 *   headers  values forwarded upstream are printable ASCII of bounded length
 */
import { InvalidRequestError, TollgateError } from '../core/errors';
import type { ResolvedModel } from '../core/pricing';

/** The limits of the boundary; README "Input limits". */
export interface InputLimits {
  /** The deepest JSON nesting accepted (objects and arrays). @default 64 */
  readonly maxJsonDepth: number;
  /** The largest output cap a request may ask for when the model's own cap is unknown. @default 262144 */
  readonly maxOutputTokens: number;
}

export const DEFAULT_INPUT_LIMITS: InputLimits = { maxJsonDepth: 64, maxOutputTokens: 262_144 };

/** The longest path parameter (a key id, run id, provider, scope) accepted, after decoding. */
export const MAX_PATH_PARAM_CHARS = 256;

/** The longest header value the gateway forwards to an upstream. */
export const MAX_FORWARDED_HEADER_CHARS = 256;

/**
 * Longer caps for headers that are lists growing with each client release: Claude Code's `anthropic-beta`
 * (164–221 characters in 2.1, one more feature name per beta).
 */
const FORWARDED_HEADER_CAPS: Readonly<Record<string, number>> = { 'anthropic-beta': 4096 };

/** 415: the body is declared in a form the gateway does not read. */
export class UnsupportedMediaTypeError extends TollgateError {
  readonly status = 415;
  readonly kind = 'invalid_request' as const;
}

/** Decodes one `%`-escaped path segment; a malformed escape or an over-long value is the caller's 400. */
export function decodePathParam(name: string, raw: string): string {
  let value: string;
  try {
    value = decodeURIComponent(raw);
  } catch {
    throw new InvalidRequestError(`The path parameter "${name}" has a malformed %-escape.`, { code: 'invalid_path', param: name });
  }
  if (value.length > MAX_PATH_PARAM_CHARS) {
    throw new InvalidRequestError(`The path parameter "${name}" is longer than ${MAX_PATH_PARAM_CHARS} characters.`, {
      code: 'invalid_path',
      param: name,
    });
  }
  return value;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** The body as text; 400 when it is not valid UTF-8 (JSON must be). */
export function decodeUtf8(body: Buffer): string {
  try {
    return utf8.decode(body);
  } catch {
    throw new InvalidRequestError('The request body is not valid UTF-8.', { code: 'invalid_json' });
  }
}

/**
 * The deepest nesting of `[`/`{` in `text`, outside strings, stopping as soon as it passes `limit`. One pass,
 * no recursion: it runs before JSON.parse so that no later recursive step (validation, fingerprinting,
 * token estimation, serialisation) ever sees a body deeper than the limit.
 */
export function jsonDepthExceeds(text: string, limit: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

/** 400 when a JSON text nests deeper than `maxDepth`. */
export function checkJsonDepth(text: string, maxDepth: number): void {
  if (jsonDepthExceeds(text, maxDepth)) {
    throw new InvalidRequestError(`The request body nests deeper than this gateway's limit of ${maxDepth} levels.`, {
      code: 'json_too_deep',
    });
  }
}

/**
 * 415 when the declared content type is one the gateway does not read as JSON (a form or multipart upload,
 * or a charset other than UTF-8). A missing content type, `application/json`, any `+json` type and
 * `text/plain` are read as JSON (curl without `-H` sends a form type and is accepted too: its body is still
 * parsed and validated as JSON).
 */
export function checkContentType(contentType: string | undefined): void {
  if (!contentType) return;
  // Node joins repeated headers with ", ": each declared type must be acceptable.
  for (const declared of contentType.split(',')) {
    const [mediaType = '', ...params] = declared.split(';').map((p) => p.trim().toLowerCase());
    if (mediaType.startsWith('multipart/')) {
      throw new UnsupportedMediaTypeError(`The gateway reads JSON bodies, not ${mediaType}.`, { code: 'unsupported_media_type' });
    }
    for (const param of params) {
      const [key, value = ''] = param.split('=').map((p) => p.trim());
      if (key === 'charset' && !/^"?utf-?8"?$/.test(value)) {
        throw new UnsupportedMediaTypeError('The gateway reads JSON bodies in UTF-8 only.', { code: 'unsupported_media_type' });
      }
    }
  }
}

/** Every check the raw body gets before any route sees it. */
export function checkRequestBody(req: { readonly headers: Readonly<Record<string, string>>; readonly body: Buffer }, limits: InputLimits): void {
  if (req.body.length === 0) return;
  checkContentType(req.headers['content-type']);
  checkJsonDepth(decodeUtf8(req.body), limits.maxJsonDepth);
}

/**
 * 400 when a request asks for more output than the model can give (its known cap) or, when its cap is not
 * known, more than `limits.maxOutputTokens`. Keeps reservations finite: a `max_tokens` of 1e15 would
 * otherwise price beyond any integer micro-USD amount.
 */
export function checkOutputCap(
  body: Readonly<Record<string, unknown>>,
  fields: readonly string[],
  model: ResolvedModel,
  limits: Pick<InputLimits, 'maxOutputTokens'>,
): void {
  const cap = model.price.maxOutputTokens ?? limits.maxOutputTokens;
  for (const field of fields) {
    const value = body[field];
    if (typeof value === 'number' && value > cap) {
      const whose = model.price.maxOutputTokens === undefined ? "this gateway's limit" : `the output cap of ${model.id}`;
      throw new InvalidRequestError(`Invalid value for '${field}': must be at most ${cap} (${whose}).`, {
        code: 'invalid_value',
        param: field,
      });
    }
  }
}

/**
 * 400 when a caller's stored BYOK key cannot travel in an HTTP header (stored before keys were checked for
 * printable ASCII): refused before any reservation or upstream call, with the way out.
 */
export function checkStoredByokKey(apiKey: string, provider: string): void {
  if (!/^[\x21-\x7e]+$/.test(apiKey)) {
    throw new InvalidRequestError(`Your stored ${provider} key has characters an API key cannot have; store it again with PUT /v1/byok/${provider}.`, {
      code: 'invalid_byok_key',
    });
  }
}

/** A caller header the gateway forwards upstream: printable ASCII, bounded; anything else is the caller's 400. */
export function forwardedHeader(headers: Readonly<Record<string, string>>, name: string): string | undefined {
  const value = headers[name];
  if (value === undefined || value === '') return undefined;
  const cap = FORWARDED_HEADER_CAPS[name] ?? MAX_FORWARDED_HEADER_CHARS;
  if (value.length > cap || !/^[\x20-\x7e]+$/.test(value)) {
    throw new InvalidRequestError(`The ${name} header must be printable ASCII of at most ${cap} characters.`, {
      code: 'invalid_header',
      param: name,
    });
  }
  return value;
}
