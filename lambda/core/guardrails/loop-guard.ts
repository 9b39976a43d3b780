/**
 * The loop guard: the same request, sent again and again by one user (through any of their keys), is refused
 * before it reaches the provider. A request is identified by its fingerprint: SHA-256 of (user, model, body
 * normalized: key order, transport fields, surrounding whitespace and volatile tokens — ids, timestamps,
 * "attempt 3" counters — do not count, so near-duplicates are the same request).
 *
 *   reserve (the existing TransactWriteItems) counts the copy at ADMISSION on loop#user:<id> / <fingerprint>:
 *     IF n_<window> < maxRepeats AND (fails < maxFailures OR lastFailAt < now − block(fails))
 *     ADD n_<window> 1, fails 1                  (presumed failed until it settles)
 *   settle (the existing TransactWriteItems): failure or empty answer → SET lastFailAt;
 *     success → REMOVE fails;  the caller left → ADD fails −1
 *
 * Counting at admission (issue 15): a client that retries the instant it has an answer meets exactly the stated
 * limits (5 copies, 3 failures), however fast it is and however late settle runs; the price is that more than
 * 5 identical requests in flight at once are refused too. Distinct work (different bodies) is never counted
 * together. A growing conversation (the same answer or tool result coming back turn after turn) is caught
 * without state by {@link repeatedTurns}, before anything is reserved.
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
  /** Whose loop state this is: `user:<id>` (every key of the user shares it). */
  readonly owner: string;
  /** The key the copy came through (for messages). */
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
  /**
   * Set by the store when it counted this copy with a single write of its own (a pooled request): the request
   * id marking the copy on the loop item (a retried count or settle applies once), and whether admission
   * presumed the copy failed (false only for a fingerprint's first copy, whose item had no streak: its success
   * then needs no settle write). Absent: counted in a reserve transaction, presumed failed.
   */
  readonly copy?: { readonly id: string; readonly presumedFailed: boolean };
}

/** Body fields that do not change what is asked (transport and bookkeeping), left out of the fingerprint. */
const VOLATILE_FIELDS = new Set(['stream', 'stream_options', 'user', 'metadata', 'store', 'service_tier']);

/**
 * Volatile tokens that make copies of one request look different: item ids, UUIDs, ISO timestamps, long hex ids, long
 * digit runs (epoch times, request ids) and retry counters ("attempt 3", "retry #4"). Short numbers stay:
 * "17 × 23" and "18 × 24" are different work.
 */
const VOLATILE_TOKENS: ReadonlyArray<readonly [RegExp, string]> = [
  // Provider and agent item ids (`msg_`, `fc_`, `call_`, `toolu_`, `rs_`, `resp_` …): new on every run, never the
  // work itself. Codex's `msg_<uuid>` included (a UUID right after `_` has no word boundary before it).
  [/\b(msg|fc|call|toolu|srvtoolu|rs|resp|ctc|chatcmpl)_(?=[A-Za-z0-9-]*\d)[A-Za-z0-9-]{8,}/g, '$1_<id>'],
  [/(?<![0-9a-f])[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?![0-9a-f])/gi, '<uuid>'],
  [/\b\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?/g, '<time>'],
  [/\b\d{1,2}:\d{2}:\d{2}\b/g, '<time>'],
  [/\b(attempt|retry|try|iteration|round)\s*(?:#|no\.?|number)?\s*\d+(\s*(?:of|\/)\s*\d+)?/gi, '$1 <n>'],
  [/\b(?=[0-9a-f]*\d)(?=[0-9a-f]*[a-f])[0-9a-f]{16,}\b/gi, '<hex>'],
  [/\d{6,}/g, '<n>'],
];

/** Text with volatile tokens replaced and whitespace collapsed (near-duplicates become equal). */
export function normalizeVolatile(text: string): string {
  let out = text;
  for (const [pattern, replacement] of VOLATILE_TOKENS) out = out.replace(pattern, replacement);
  return out.replace(/\s+/g, ' ').trim();
}

/**
 * The body's part of a fingerprint: canonical JSON of the validated request body without volatile fields
 * (`stream`, `user`, `metadata`, …) and with strings trimmed and normalized ({@link normalizeVolatile}). Hex SHA-256.
 */
export function requestFingerprint(body: Readonly<Record<string, unknown>>): string {
  const keys = Object.keys(body)
    // `__proto__` never counted at the top (it was assigned, not copied, into the normalized body).
    .filter((k) => !VOLATILE_FIELDS.has(k) && k !== '__proto__' && body[k] !== undefined)
    .sort(byCodeUnit);
  let json = '{';
  for (let i = 0; i < keys.length; i++) json += `${i > 0 ? ',' : ''}${JSON.stringify(keys[i])}:${normalizedJson(body[keys[i]!])}`;
  return createHash('sha256').update(`${json}}`).digest('hex');
}

const byCodeUnit = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * JSON with object keys sorted (so key order never changes a fingerprint) and every string normalized ({@link normalizeVolatile}), in one pass: the same
 * text (fingerprints already counted in the store stay valid), without building the normalized copy first.
 */
function normalizedJson(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(normalizeVolatile(value));
  if (Array.isArray(value)) {
    let json = '[';
    for (let i = 0; i < value.length; i++) json += `${i > 0 ? ',' : ''}${normalizedJson(value[i])}`;
    return `${json}]`;
  }
  if (value !== null && typeof value === 'object') {
    const record = value as Record<string, unknown>;
    const keys = Object.keys(record)
      .filter((k) => record[k] !== undefined)
      .sort(byCodeUnit);
    let json = '{';
    for (let i = 0; i < keys.length; i++) json += `${i > 0 ? ',' : ''}${JSON.stringify(keys[i])}:${normalizedJson(record[keys[i]!])}`;
    return `${json}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * The loop check of one call: the key and model are folded into the body fingerprint here, so the same
 * body to another model (or from another key) is another request.
 */
export function loopCheckFor(
  call: { readonly keyId: string; readonly userId: string; readonly model: string; readonly bodyFingerprint: string },
  now: number,
  settings: LoopGuardSettings,
): LoopCheck {
  const window = Math.floor(now / settings.windowMs);
  const owner = `user:${call.userId}`;
  const fingerprint = createHash('sha256').update(`${owner}\n${call.model}\n${call.bodyFingerprint}`).digest('hex').slice(0, 32);
  return {
    owner,
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

/**
 * Tool calls may repeat this many more times than plain answers: an agent retrying a failing tool is allowed its
 * own bounded retries (the agent service: 1 call + 3 retries) before the gateway calls it a loop.
 */
const TOOL_REPEAT_ALLOWANCE = 2;

/** The shortest answer text that counts for {@link repeatedTurns} ("OK", "4", "Done." may repeat in any chat). */
const MIN_REPEATED_TEXT = 12;

/** What {@link repeatedTurns} found: the turn that keeps coming back and how often. */
export interface RepeatedTurn {
  readonly kind: 'assistant' | 'tool';
  readonly count: number;
  /** The first characters of the repeated content (for the message and the alert). */
  readonly sample: string;
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((part: unknown) => {
        if (typeof part === 'string') return part;
        const p = part as { type?: unknown; text?: unknown; content?: unknown };
        if (typeof p?.text === 'string') return p.text;
        if (p?.type === 'tool_result') return textOf(p.content);
        return '';
      })
      .join('\n');
  }
  return '';
}

/**
 * The growing-conversation loop, found in the body alone: the same assistant answer present `threshold` times or
 * more, or the same tool call (name and arguments, or its same result) `threshold + 2` times (normalized: case, whitespace and
 * volatile tokens do not count). A conversation that keeps failing and retrying carries each failed turn, so
 * its Nth retry holds N copies; a long chat, a batch of distinct work or an agent that makes progress does not.
 * Works for OpenAI chat messages (`assistant` content, `tool_calls` / `tool` results), Anthropic messages
 * (`tool_use` / `tool_result` blocks) and Responses API `input` items (see {@link responsesTurns}). Undefined
 * when nothing repeats that often.
 */
export function repeatedTurns(body: Readonly<Record<string, unknown>>, threshold: number): RepeatedTurn | undefined {
  if (threshold < 2 || (!Array.isArray(body.messages) && !Array.isArray(body.input))) return undefined;
  const counts = new Map<string, { kind: RepeatedTurn['kind']; tool: boolean; count: number; sample: string }>();
  const bump = (kind: RepeatedTurn['kind'], key: string, sample: string, tool = kind === 'tool') => {
    const id = `${kind}\u0000${key}`;
    const hit = counts.get(id) ?? { kind, tool, count: 0, sample: sample.slice(0, 80) };
    hit.count++;
    counts.set(id, hit);
  };
  const calls = new Map<string, string>();
  const assistantTurn = (content: unknown, made: readonly string[]) => {
    // An answer that makes tool calls is the same turn only with the same calls: "Recording it." before each
    // of ten different record_output calls is progress, not a loop.
    const text = normalizeVolatile(textOf(content)).toLowerCase();
    if (text.length >= MIN_REPEATED_TEXT || made.length > 0) bump('assistant', `${text}\u0000${made.join('\u0000')}`, text || made.join(', '), made.length > 0);
  };
  const toolResult = (callId: string, content: unknown) => {
    const call = calls.get(callId) ?? '?';
    const result = normalizeVolatile(textOf(content));
    bump('tool', `${call}=>${result}`, `${call} → ${result}`);
  };
  if (Array.isArray(body.input)) responsesTurns(body.input as readonly unknown[], calls, assistantTurn, toolResult);
  for (const m of Array.isArray(body.messages) ? (body.messages as ReadonlyArray<Record<string, unknown>>) : []) {
    if (!m || typeof m !== 'object') continue;
    if (m.role === 'assistant') {
      const made: string[] = [];
      for (const c of Array.isArray(m.tool_calls) ? (m.tool_calls as ReadonlyArray<Record<string, unknown>>) : []) {
        const fn = c?.function as { name?: unknown; arguments?: unknown } | undefined;
        const sig = `${String(fn?.name)}(${normalizeVolatile(String(fn?.arguments ?? ''))})`;
        made.push(sig);
        if (typeof c?.id === 'string') calls.set(c.id, sig);
      }
      for (const block of Array.isArray(m.content) ? (m.content as ReadonlyArray<Record<string, unknown>>) : []) {
        if (block?.type === 'tool_use' && typeof block.id === 'string') {
          const sig = `${String(block.name)}(${normalizeVolatile(JSON.stringify(block.input ?? null))})`;
          made.push(sig);
          calls.set(block.id, sig);
        }
      }
      assistantTurn(m.content, made);
    } else if (m.role === 'tool' && typeof m.tool_call_id === 'string') {
      toolResult(m.tool_call_id, m.content);
    } else if (m.role === 'user' && Array.isArray(m.content)) {
      for (const block of m.content as ReadonlyArray<Record<string, unknown>>) {
        if (block?.type === 'tool_result' && typeof block.tool_use_id === 'string') toolResult(block.tool_use_id, block.content);
      }
    }
  }
  let worst: RepeatedTurn | undefined;
  for (const c of counts.values()) {
    const limit = c.tool ? threshold + TOOL_REPEAT_ALLOWANCE : threshold;
    if (c.count >= limit && (!worst || c.count > worst.count)) worst = { kind: c.kind, count: c.count, sample: c.sample };
  }
  return worst;
}

/**
 * Responses API `input` items as turns: a run of assistant items (assistant `message`, `reasoning`, `function_call`,
 * `custom_tool_call` and the other `*_call` items) is one assistant turn, as one chat assistant message with its
 * tool calls would be; each `*_call_output` is a tool result, matched to its call by `call_id`. Reasoning items
 * are part of the turn but not of its content (their encrypted text differs on every run).
 */
function responsesTurns(
  items: readonly unknown[],
  calls: Map<string, string>,
  assistantTurn: (content: unknown, made: readonly string[]) => void,
  toolResult: (callId: string, content: unknown) => void,
): void {
  let text: unknown[] = [];
  let made: string[] = [];
  let open = false;
  const flush = () => {
    if (open) assistantTurn(text, made);
    text = [];
    made = [];
    open = false;
  };
  for (const raw of items) {
    if (typeof raw !== 'object' || raw === null) continue;
    const item = raw as Record<string, unknown>;
    const type = typeof item.type === 'string' ? item.type : typeof item.role === 'string' ? 'message' : '';
    if (type === 'message') {
      if (item.role !== 'assistant') {
        flush();
        continue;
      }
      open = true;
      if (typeof item.content === 'string') text.push({ text: item.content });
      else if (Array.isArray(item.content)) text.push(...(item.content as unknown[]));
    } else if (type === 'reasoning') {
      open = true;
    } else if (type.endsWith('_call_output')) {
      flush();
      if (typeof item.call_id === 'string') toolResult(item.call_id, item.output);
    } else if (type.endsWith('_call')) {
      open = true;
      const what = item.arguments ?? item.input ?? item.action ?? null;
      const sig = `${String(item.name ?? type)}(${normalizeVolatile(typeof what === 'string' ? what : JSON.stringify(what))})`;
      made.push(sig);
      if (typeof item.call_id === 'string') calls.set(item.call_id, sig);
    } else {
      flush();
    }
  }
  flush();
}
