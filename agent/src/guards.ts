/**
 * The loop guards of one run: iterations, cost, repeated tool failures and the wall clock. Each is checked in
 * the loop (see loop.ts) and ends the run with its own status, keeping what the run produced.
 *
 *   iteration guard   at most `maxIterations` model calls                        → stopped_iterations
 *   cost guard        spent (sum of x-tollgate-cost-usd) reaches the cap         → stopped_cost
 *   tool retries      the same failing call (name + arguments) at most 3 retries,
 *                     each after a growing backoff; a 5th attempt is refused     → stopped_loop
 *   wall clock        the run's deadline; an in-flight call is aborted           → timed_out
 *
 * An empty tool result is an answer, never a failure: it neither counts nor retries.
 */
import type { MicroUsd } from '../../lambda/core/money';

/** Retries of one failing tool call (so at most 1 + 3 attempts). */
export const MAX_TOOL_RETRIES = 3;

export interface GuardLimits {
  readonly maxIterations: number;
  readonly maxCostMicros: MicroUsd;
  /** ms epoch after which the run is timed out. */
  readonly deadline: number;
  /** First retry's backoff; doubles per retry. @default 250 */
  readonly retryBaseMs?: number;
}

/** A canonical key of a tool call: the name and its arguments with sorted keys (whitespace-insensitive). */
export function toolCallSignature(name: string, args: unknown): string {
  const canonical = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(canonical);
    if (v !== null && typeof v === 'object') {
      return Object.fromEntries(Object.keys(v as object).sort().map((k) => [k, canonical((v as Record<string, unknown>)[k])]));
    }
    return v;
  };
  return `${name}:${JSON.stringify(canonical(args))}`;
}

/** Counts failures per tool call signature and decides whether (and after how long) it may run again. */
export class ToolRetryGuard {
  private readonly failures = new Map<string, number>();

  constructor(private readonly retryBaseMs: number) {}

  /** 'refuse' when the call has failed 1 + {@link MAX_TOOL_RETRIES} times already; else the wait before it. */
  admit(signature: string): { readonly kind: 'run'; readonly waitMs: number } | { readonly kind: 'refuse'; readonly failures: number } {
    const failed = this.failures.get(signature) ?? 0;
    if (failed > MAX_TOOL_RETRIES) return { kind: 'refuse', failures: failed };
    return { kind: 'run', waitMs: failed === 0 ? 0 : this.retryBaseMs * 2 ** (failed - 1) };
  }

  failed(signature: string): void {
    this.failures.set(signature, (this.failures.get(signature) ?? 0) + 1);
  }

  succeeded(signature: string): void {
    this.failures.delete(signature);
  }
}

/** Why a run must stop now, if it must. */
export type GuardStop = 'stopped_iterations' | 'stopped_cost' | 'timed_out';

/** The guards checked before each model call. */
export function checkBeforeCall(state: { readonly iterations: number; readonly spentMicros: MicroUsd; readonly now: number }, limits: GuardLimits): GuardStop | undefined {
  if (state.now >= limits.deadline) return 'timed_out';
  if (state.spentMicros >= limits.maxCostMicros) return 'stopped_cost';
  if (state.iterations >= limits.maxIterations) return 'stopped_iterations';
  return undefined;
}
