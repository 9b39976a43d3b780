/**
 * The largest answer a model family can give (its output-token limit), for models whose price data carries
 * none: a request that sets no cap is reserved for, and capped at, this (core/output-cap.ts), so an agent's
 * answer (reasoning included) is not cut short by a gateway default. First match wins; names are matched
 * without a region or provider prefix (`us.anthropic.claude-…`, `openai.gpt-…`). An operator's
 * `maxOutputTokens` in TOLLGATE_PRICES wins over this table; a model matching nothing gets
 * TOLLGATE_DEFAULT_MAX_OUTPUT_TOKENS.
 */
const FAMILIES: ReadonlyArray<readonly [RegExp, number]> = [
  [/^gpt-5/, 128_000],
  [/^gpt-4\.1/, 32_768],
  [/^gpt-4o/, 16_384],
  [/^(o1-mini)/, 65_536],
  [/^(o1|o3|o4)/, 100_000],
  [/^claude-(opus-4-1|opus-4-0|opus-4(?![-.]?\d))/, 32_000],
  [/^claude-(opus|sonnet|haiku)-4/, 64_000],
  [/^claude-3-7-sonnet/, 64_000],
  [/^claude-3-5-(sonnet|haiku)/, 8_192],
  [/^claude-(opus|sonnet|haiku)-[5-9]/, 64_000],
];

/** The output-token limit of `model` when its family is known. */
export function knownMaxOutputTokens(model: string): number | undefined {
  const bare = model.replace(/^([a-z]{2,7}\.)?(anthropic|openai)\./, '');
  return FAMILIES.find(([pattern]) => pattern.test(bare))?.[1];
}
