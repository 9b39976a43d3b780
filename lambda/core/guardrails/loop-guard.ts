/**
 * The loop guard: the same request, sent again and again by one key, is refused before it reaches the
 * provider. A request is identified by its fingerprint: SHA-256 of (key, model, normalized body).
 *
 *   reserve (the existing TransactWriteItems) also checks loop#<keyId> / <fingerprint>:
 *     n_<window> < maxRepeats  AND  (fails < maxFailures OR lastFailAt < now − block(fails))
 *   settle (the existing TransactWriteItems) also counts the finished copy:
 *     ADD n_<window> 1;  upstream failure or empty answer → ADD fails 1, SET lastFailAt;  success → REMOVE fails
 *
 * Copies are counted when they finish, so a loop (every retry sent after the previous answer) is caught
 * while a deliberate parallel fan-out of identical requests is not mistaken for one.
 * So the guard costs no extra round trip. Windows are fixed (aligned to multiples of `windowMs`), so a loop
 * straddling a boundary can get up to 2 × maxRepeats copies through in one window's length; after
 * `maxFailures` failures in a row one probe copy is admitted after a block that doubles with every failed
 * probe (1, 2, 4 … 64 windows: with the defaults 10 minutes up to ~10.7 hours), and a success clears the
 * streak. The doubling is written into the condition as one term per streak length, so it still costs no read.
 */
import { createHash } from 'node:crypto';
import type { LoopGuardSettings } from './settings';

/** Failed probes double the block up to this many times (64 windows). */
export const MAX_BACKOFF_DOUBLINGS = 6;

/**
 * How long copies are refused after the last failure of a streak `fails` long: nothing below `maxFailures`,
 * then one window, doubled by each further failure (each failed probe), up to 2^{@link MAX_BACKOFF_DOUBLINGS}.
 */
export function failureBlockMs(fails: number, maxFailures: number, windowMs: number): number {
  if (fails < maxFailures) return 0;
  return windowMs * 2 ** Math.min(fails - maxFailures, MAX_BACKOFF_DOUBLINGS);
}

/** What reserve checks and counts for one call's fingerprint. */
export interface LoopCheck {
  readonly keyId: string;
  readonly fingerprint: string;
  /** Index of the fixed window `now` falls in (floor(now / windowMs)). */
  readonly window: number;
  /** ms epoch when that window ends. */
  readonly windowEnd: number;
  readonly maxRepeats: number;
  readonly maxFailures: number;
  /** Length of a window (ms): the first block after a failure streak, doubled by each failed probe. */
  readonly windowMs: number;
  readonly now: number;
}

/** Body fields that do not change what is asked (transport and bookkeeping), left out of the fingerprint. */
const VOLATILE_FIELDS = new Set(['stream', 'stream_options', 'user', 'metadata', 'store', 'service_tier']);

/** JSON with object keys sorted, so key order never changes a fingerprint. */
function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * The body's part of a fingerprint: canonical JSON of the validated request body without volatile fields
 * (`stream`, `user`, `metadata`, …) and with strings trimmed of surrounding whitespace. Hex SHA-256.
 */
export function requestFingerprint(body: Readonly<Record<string, unknown>>): string {
  const normalized: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(body)) if (!VOLATILE_FIELDS.has(k)) normalized[k] = trimStrings(v);
  return createHash('sha256').update(canonicalJson(normalized)).digest('hex');
}

function trimStrings(value: unknown): unknown {
  if (typeof value === 'string') return value.trim();
  if (Array.isArray(value)) return value.map(trimStrings);
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, trimStrings(v)]));
  }
  return value;
}

/**
 * The loop check of one call: the key and model are folded into the body fingerprint here, so the same
 * body to another model (or from another key) is another request.
 */
export function loopCheckFor(
  call: { readonly keyId: string; readonly model: string; readonly bodyFingerprint: string },
  now: number,
  settings: LoopGuardSettings,
): LoopCheck {
  const window = Math.floor(now / settings.windowMs);
  const fingerprint = createHash('sha256').update(`${call.keyId}\n${call.model}\n${call.bodyFingerprint}`).digest('hex').slice(0, 32);
  return {
    keyId: call.keyId,
    fingerprint,
    window,
    windowEnd: (window + 1) * settings.windowMs,
    maxRepeats: settings.maxRepeats,
    maxFailures: settings.maxFailures,
    windowMs: settings.windowMs,
    now,
  };
}

/**
 * Whether a complete JSON answer carries nothing (an OpenAI choice with no content and no tool call, or an
 * Anthropic message whose text blocks are all empty): for the loop guard that is a failed attempt, as it is
 * what makes an agent retry.
 */
export function isEmptyAnswer(body: unknown): boolean {
  if (typeof body !== 'object' || body === null) return false;
  const b = body as { choices?: unknown; content?: unknown; type?: unknown; data?: unknown };
  if (Array.isArray(b.choices)) {
    return b.choices.every((c: { message?: { content?: unknown; tool_calls?: unknown; refusal?: unknown } }) => {
      const m = c?.message;
      const text = typeof m?.content === 'string' ? m.content.trim() : '';
      return text === '' && !(Array.isArray(m?.tool_calls) && m.tool_calls.length > 0);
    });
  }
  if (b.type === 'message' && Array.isArray(b.content)) {
    return b.content.every((block: { type?: unknown; text?: unknown }) => block?.type === 'text' && String(block.text ?? '').trim() === '');
  }
  return false;
}
