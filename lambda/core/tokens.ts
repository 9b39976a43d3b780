/**
 * Input-token estimates used to size a reservation before the provider has counted anything, and the
 * tokenizer answer of `count_tokens` for models whose provider has no counting endpoint.
 *
 * Text is counted with OpenAI's o200k tokenizer (gpt-tokenizer, pure JS): exact for GPT-4o, GPT-5 and the
 * o-series, and close for other families, whose tokenizers are not public; {@link inputTokensFor} scales the
 * count for them (Claude's tokenizer yields ~10–30 % more tokens than o200k on English and code). Settle
 * replaces every estimate with the provider's own usage, so an estimate only sizes the hold.
 *
 * Cost: o200k takes ~0.6 ms per KB once warm (a 300 KB body: ~170 ms), too much for every request, so
 *   - a string is tokenized whole only up to {@link EXACT_CHARS}, and one estimate tokenizes at most
 *     {@link EXACT_BUDGET_CHARS} of new text whole; the rest is counted from evenly spread samples
 *     ({@link SAMPLE_WINDOWS} × {@link SAMPLE_CHARS}) scaled to its length, plus a margin;
 *   - counts of strings and JSON values from {@link CACHE_MIN_CHARS} up are kept by content hash (an agent
 *     resends the same system prompt, tools and history on every turn, so only the new part is tokenized).
 * `npm run bench:tokens` prints the cost and the error against a whole count.
 *
 * Cold start: the vocabulary is ~2.3 MB of code and takes hundreds of ms to build, so the Lambda keeps it out
 * of its bundle (a layer holds it) and builds it after the first estimate ({@link deferTokenizerLoad}).
 */
import { createHash } from 'node:crypto';

/** Strings up to this many UTF-16 units are tokenized whole (while the request's budget lasts). */
export const EXACT_CHARS = 16_384;
/** Longer strings are counted from this many windows… */
export const SAMPLE_WINDOWS = 8;
/** …of this many UTF-16 units each, evenly spread over the string. */
export const SAMPLE_CHARS = 1_024;
/**
 * UTF-16 units one estimate tokenizes whole before it samples everything else (new, uncached text only): the
 * CPU one request can cost is bounded whatever its shape (thousands of distinct mid-sized strings).
 */
export const EXACT_BUDGET_CHARS = 65_536;
/** A sampled count is raised by this factor: samples miss the rarest stretches. */
const SAMPLE_MARGIN = 1.1;
/** Counts of strings (and JSON values) at least this long are cached by content hash. */
const CACHE_MIN_CHARS = 256;
/** How many counts the cache keeps (least recently used out first; ~100 bytes each). */
const CACHE_ENTRIES = 16_384;

const PER_MESSAGE_OVERHEAD = 4;
/** A high-detail image costs OpenAI up to ~1,100 tokens and Anthropic up to ~1,600. */
const IMAGE_TOKENS = 1_600;
/** Tokens of a family without a public tokenizer, per o200k token (see the file comment). */
const OTHER_FAMILY_FACTOR = 1.2;

type CountFn = (text: string) => number;
let o200k: CountFn | undefined;
/** UTF-16 units handed to the tokenizer since load (what an estimate cost, for tests and bench/tokens.ts). */
let work = 0;

/** UTF-16 units the tokenizer has read since this module loaded. */
export function tokenizerWork(): number {
  return work;
}

/**
 * How the tokenizer is loaded: `eager` (the default: synchronously, on first use; the local server and tests)
 * or `deferred` (the Lambda: its vocabulary comes from a layer, outside the cold-start bundle, and is built on
 * the first estimate's next turn of the event loop, while that request waits on its provider; estimates made
 * before it is ready count bytes ÷ 3, which settle corrects like any estimate).
 */
let mode: 'eager' | 'deferred' = 'eager';
let loading: Promise<void> | undefined;
/** Set when the tokenizer could not be loaded in deferred mode: estimates stay at bytes ÷ 3. */
let unavailable: Error | undefined;

/** Bytes ÷ 3 (rounded up): the fallback before the tokenizer is ready; above o200k's count for most text. */
const byteThirds: CountFn = (text) => Math.ceil(Buffer.byteLength(text) / 3);

/**
 * Where the o200k encoding is required from (written out in {@link loadTokenizer}'s require, so a bundler that
 * does not leave it out bundles it). In the gateway Lambda, `gpt-tokenizer` is left out of the bundle and
 * served from the tokenizer layer (`/opt/nodejs/node_modules`, lib/constructs/tokenizer-layer.ts).
 */
export const TOKENIZER_MODULE = 'gpt-tokenizer/cjs/encoding/o200k_base';

/**
 * Builds the tokenizer now (~2 MB of vocabulary; hundreds of ms). Special tokens in the text (`<|endoftext|>`)
 * are counted as the plain text they are: a caller's text can never make the count throw.
 */
export function loadTokenizer(): void {
  if (o200k) return;
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const mod = require('gpt-tokenizer/cjs/encoding/o200k_base') as typeof import('gpt-tokenizer/cjs/encoding/o200k_base');
  const plain = { disallowedSpecial: new Set<string>() };
  o200k = (text) => {
    work += text.length;
    return mod.countTokens(text, plain);
  };
}

/** Switches to deferred loading (see {@link mode}); the Lambda entry calls it once at module load. */
export function deferTokenizerLoad(): void {
  mode = 'deferred';
}

/** Whether estimates count with the real tokenizer yet. */
export function tokenizerReady(): boolean {
  return o200k !== undefined;
}

/**
 * In deferred mode, resolves once the load started by the first estimate is over (ready, or failed and left
 * at bytes ÷ 3); resolves at once when no load was started.
 */
export function tokenizerLoading(): Promise<void> {
  return loading ?? Promise.resolve();
}

/** The count to use now: the tokenizer, or in deferred mode bytes ÷ 3 until it is ready. */
function tokenizer(): { count: CountFn; exact: boolean } {
  if (o200k) return { count: o200k, exact: true };
  if (mode === 'eager') {
    loadTokenizer();
    return { count: o200k!, exact: true };
  }
  if (!loading && !unavailable) {
    loading = new Promise<void>((resolve) => {
      setImmediate(() => {
        try {
          loadTokenizer();
        } catch (err) {
          unavailable = err instanceof Error ? err : new Error(String(err));
        }
        resolve();
      });
    });
  }
  return { count: byteThirds, exact: false };
}

/** Why the tokenizer could not be loaded in deferred mode, if it could not (estimates then stay at bytes ÷ 3). */
export function tokenizerLoadError(): Error | undefined {
  return unavailable;
}

const cache = new Map<string, number>();

function cacheKey(kind: string, text: string): string {
  return kind + createHash('sha1').update(text).digest('base64');
}

function remembered(key: string): number | undefined {
  const hit = cache.get(key);
  if (hit !== undefined) {
    cache.delete(key);
    cache.set(key, hit);
  }
  return hit;
}

function remember(key: string, n: number): number {
  cache.set(key, n);
  if (cache.size > CACHE_ENTRIES) cache.delete(cache.keys().next().value as string);
  return n;
}

/** One estimate: counts strings and JSON values, tokenizing at most {@link EXACT_BUDGET_CHARS} whole. */
class Estimate {
  private exactLeft = EXACT_BUDGET_CHARS;
  private readonly count: CountFn;
  /** False while the tokenizer loads (deferred mode): counts are bytes ÷ 3 and never remembered. */
  private readonly exact: boolean;

  constructor() {
    const t = tokenizer();
    this.count = t.count;
    this.exact = t.exact;
  }
  /** What this estimate has tokenized so far: the rate applied to text past the budget. */
  private seenChars = 0;
  private seenTokens = 0;

  private tokenize(text: string): number {
    const n = this.count(text);
    this.seenChars += text.length;
    this.seenTokens += n;
    return n;
  }

  /** Tokens of a long string from evenly spread windows, scaled to the whole length. */
  private sampled(text: string): number {
    const step = (text.length - SAMPLE_CHARS) / (SAMPLE_WINDOWS - 1);
    let tokens = 0;
    for (let i = 0; i < SAMPLE_WINDOWS; i++) {
      const start = Math.floor(i * step);
      tokens += this.tokenize(text.slice(start, start + SAMPLE_CHARS));
    }
    return Math.ceil(((tokens * text.length) / (SAMPLE_WINDOWS * SAMPLE_CHARS)) * SAMPLE_MARGIN);
  }

  /** o200k tokens of one string: whole when short, sampled when long, cached by content when not tiny. */
  text(text: string): number {
    if (text.length === 0) return 0;
    if (text.length < CACHE_MIN_CHARS || !this.exact) return this.count(text);
    const key = cacheKey('t', text);
    const hit = remembered(key);
    if (hit !== undefined) return hit;
    if (text.length > EXACT_CHARS) return remember(key, this.sampled(text));
    if (text.length > this.exactLeft && this.seenChars >= SAMPLE_CHARS * SAMPLE_WINDOWS) {
      // Past the budget: this request's own rate so far, not remembered (a later request may count it whole).
      return Math.ceil(((text.length * this.seenTokens) / this.seenChars) * SAMPLE_MARGIN);
    }
    this.exactLeft -= text.length;
    return remember(key, this.tokenize(text));
  }

  /**
   * Tokens of any JSON value as a model reads it: each string leaf tokenized (its own text, not its escaped
   * JSON form), plus one token per key and per value for the framing around it. Cached whole by its JSON
   * (a tool list, a tool call's input) when large enough.
   */
  json(value: unknown): number {
    if (typeof value === 'string') return this.text(value);
    if (value === null || value === undefined) return 0;
    if (typeof value !== 'object') return 1;
    if (!this.exact) return this.jsonWalk(value);
    const serialized = JSON.stringify(value);
    if (serialized.length < CACHE_MIN_CHARS) return this.jsonWalk(value);
    const key = cacheKey('j', serialized);
    return remembered(key) ?? remember(key, this.jsonWalk(value));
  }

  private jsonWalk(value: unknown): number {
    if (typeof value === 'string') return this.text(value);
    if (value === null || value === undefined) return 0;
    if (typeof value !== 'object') return 1;
    let total = 0;
    if (Array.isArray(value)) {
      for (const item of value) total += 1 + this.jsonWalk(item);
      return total;
    }
    for (const [k, v] of Object.entries(value)) total += 1 + this.text(k) + this.jsonWalk(v);
    return total;
  }

  /** Tokens of a message `content`: a string, or an array of parts (text, images, tool results…). */
  content(content: unknown): number {
    if (typeof content === 'string') return this.text(content);
    if (!Array.isArray(content)) return content === undefined || content === null ? 0 : this.json(content);
    let total = 0;
    for (const part of content) {
      const p = part as Record<string, unknown>;
      const type = p?.type;
      if ((type === 'text' || type === 'input_text' || type === 'output_text') && typeof p.text === 'string') total += this.text(p.text);
      else if (type === 'image_url' || type === 'image' || type === 'input_image') total += IMAGE_TOKENS;
      else if (type === 'tool_result') total += 4 + this.content(p.content);
      else total += this.json(part);
    }
    return total;
  }

  messages(messages: readonly Record<string, unknown>[]): number {
    let total = 3;
    for (const m of messages) {
      total += PER_MESSAGE_OVERHEAD + this.content(m.content);
      if (m.tool_calls !== undefined) total += this.json(m.tool_calls);
      if (typeof m.name === 'string') total += this.text(m.name);
    }
    return total;
  }
}

/** o200k tokens of one string (see the file comment for when it is sampled). */
export function textTokens(text: string): number {
  return new Estimate().text(text);
}

/** Estimated input tokens of an OpenAI chat-completions body. */
export function estimateChatInputTokens(body: { messages: readonly Record<string, unknown>[]; tools?: unknown }): number {
  const e = new Estimate();
  return e.messages(body.messages) + (body.tools === undefined ? 0 : e.json(body.tools));
}

/** Estimated input tokens of an Anthropic Messages body. */
export function estimateMessagesInputTokens(body: {
  messages: readonly Record<string, unknown>[];
  system?: unknown;
  tools?: unknown;
}): number {
  const e = new Estimate();
  return (
    e.messages(body.messages) +
    (body.system === undefined ? 0 : e.content(body.system)) +
    (body.tools === undefined ? 0 : e.json(body.tools))
  );
}

/**
 * Estimated input tokens of an OpenAI Responses body: instructions, input items (messages, function calls
 * and their outputs, reasoning items), tools and the output schema.
 */
export function estimateResponsesTokens(body: Readonly<Record<string, unknown>>): number {
  const e = new Estimate();
  let total = 3;
  if (typeof body.instructions === 'string') total += e.text(body.instructions);
  if (typeof body.input === 'string') total += PER_MESSAGE_OVERHEAD + e.text(body.input);
  else if (Array.isArray(body.input)) {
    for (const item of body.input as unknown[]) {
      if (item === null || typeof item !== 'object') continue;
      const it = item as Record<string, unknown>;
      total += PER_MESSAGE_OVERHEAD;
      if ('content' in it) total += e.content(it.content);
      else if (it.type === 'function_call_output') total += e.content(it.output);
      else total += e.json(it);
    }
  }
  if (body.tools !== undefined) total += e.json(body.tools);
  if (body.text !== undefined) total += e.json(body.text);
  return total;
}

/** Estimated input tokens of an embeddings `input` (text, texts, or pre-tokenized arrays). */
export function estimateEmbeddingInputTokens(input: unknown): number {
  const e = new Estimate();
  if (typeof input === 'string') return e.text(input);
  if (!Array.isArray(input)) return 0;
  let total = 0;
  for (const item of input) {
    if (typeof item === 'string') total += e.text(item);
    else if (typeof item === 'number') total += 1;
    else if (Array.isArray(item)) total += item.length;
  }
  return total;
}

/**
 * An o200k estimate turned into the model's own tokens: as is for OpenAI models (and the mock, which
 * imitates them), scaled by {@link OTHER_FAMILY_FACTOR} for the others.
 */
export function inputTokensFor(provider: string, o200kTokens: number): number {
  if (provider === 'openai' || provider === 'mock') return o200kTokens;
  return Math.ceil(o200kTokens * OTHER_FAMILY_FACTOR);
}
