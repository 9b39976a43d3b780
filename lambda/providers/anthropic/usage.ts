/** Anthropic usage in common units. */
import type { TokenUsage } from '../../core/types';

function count(value: unknown): number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0 ? Math.floor(value) : 0;
}

/**
 * Reads an Anthropic `usage` object. Anthropic's `input_tokens` excludes cache reads and writes; ours
 * includes them: inputTokens = input + cache_read + cache_creation.
 */
export function usageFromAnthropic(usage: unknown): TokenUsage | undefined {
  if (typeof usage !== 'object' || usage === null) return undefined;
  const u = usage as Record<string, unknown>;
  const cacheRead = count(u.cache_read_input_tokens);
  const cacheWrite = count(u.cache_creation_input_tokens);
  return {
    inputTokens: count(u.input_tokens) + cacheRead + cacheWrite,
    outputTokens: count(u.output_tokens),
    cachedInputTokens: cacheRead,
    cacheWriteTokens: cacheWrite,
  };
}

/**
 * Follows usage through a Messages stream: `message_start` carries the input side, each `message_delta`
 * the cumulative output (and, on newer API versions, restated input counts, which win when present).
 */
export class AnthropicStreamUsage {
  private raw: Record<string, unknown> | undefined;
  private outputReported = false;

  /** Feeds one parsed event (`type` and its payload). */
  observe(event: Record<string, unknown>): void {
    if (event.type === 'message_start') {
      const usage = (event.message as { usage?: unknown } | undefined)?.usage;
      if (typeof usage === 'object' && usage !== null) this.raw = { ...(usage as Record<string, unknown>) };
    } else if (event.type === 'message_delta' && typeof event.usage === 'object' && event.usage !== null) {
      const present = Object.entries(event.usage as Record<string, unknown>).filter(([, v]) => typeof v === 'number');
      this.raw = { ...this.raw, ...Object.fromEntries(present) };
      if (present.some(([k]) => k === 'output_tokens')) this.outputReported = true;
    }
  }

  /**
   * The usage of a stream cut before its end: only once a `message_delta` reported the output count.
   * `message_start`'s `output_tokens` (1) is a placeholder, not a count of what was generated, so a stream cut
   * before that is charged its reservation (the gateway cannot prove the output unspent).
   */
  ofCutStream(): TokenUsage | undefined {
    return this.outputReported ? this.current() : undefined;
  }

  current(): TokenUsage | undefined {
    return usageFromAnthropic(this.raw);
  }
}
