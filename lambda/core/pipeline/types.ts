/** The request path's contract with the HTTP layer and the routing layer above it (see ./index.ts). */
import type { ProviderCallContext, ProviderResult } from '../../providers/contract';
import type { Principal } from '../auth';
import type { Clock } from '../clock';
import type { TollgateError } from '../errors';
import type { AlertSink } from '../guardrails/alerts';
import type { DefaultLimits } from '../guardrails/defaults';
import type { RepeatedTurn } from '../guardrails/loop-guard';
import type { GuardrailSettings } from '../guardrails/settings';
import type { Logger } from '../log';
import type { ResolvedModel } from '../pricing';
import type { SettleRetryOptions } from '../settle-retry';
import type { GuardrailStore, KeyStore, Ledger } from '../stores';
import type { RequestType, TokenUsage, UsageOutcome, UsageRecord } from '../types';

export interface PipelineOptions {
  readonly ledger: Ledger;
  readonly keys: KeyStore;
  readonly clock: Clock;
  readonly log: Logger;
  /** How long budget limits are cached in memory. */
  readonly limitsCacheMs: number;
  readonly holdTtlMs: number;
  readonly platformShards: number;
  readonly upstreamTimeoutMs: number;
  /**
   * Retries of a settle the store refused for being unreachable (bounded, with backoff); after them the hold
   * is left for the sweeper, which charges its full reservation.
   * @default 4 attempts, 250 ms × 4ⁿ apart (core/settle-retry.ts)
   */
  readonly settleRetry?: SettleRetryOptions;
  /**
   * Limits of keys, users and the platform that set none of their own (core/guardrails/defaults.ts).
   * @default none (the composition root passes the configured ones)
   */
  readonly defaults?: DefaultLimits;
  /** The least output a gateway-chosen cap reserves (core/output-cap.ts). @default 1024 */
  readonly minOutputTokens?: number;
  /** Circuit breaker, loop guard and tier alerts; without it none of them run. */
  readonly guardrails?: PipelineGuardrails;
}

export interface PipelineGuardrails {
  readonly store: GuardrailStore;
  readonly settings: GuardrailSettings;
  /** Told of every alert as it is recorded (locally: printed); in AWS the dispatcher publishes the outbox. */
  readonly sink?: AlertSink;
}

/** One billable call, already authenticated, validated, routed and estimated. */
export interface BillableCall {
  readonly requestId: string;
  readonly startedAt: number;
  readonly principal: Principal;
  readonly requestType: RequestType;
  readonly endpoint: string;
  readonly model: ResolvedModel;
  readonly stream: boolean;
  readonly estimate: {
    readonly inputTokens: number;
    /** The caller's cap (or, when `gatewayChoosesCap`, the model's cap, which the gateway may lower). */
    readonly maxOutputTokens: number;
    /** The caller set no cap: the gateway picks one (core/output-cap.ts), reserves for it and sends it upstream. */
    readonly gatewayChoosesCap?: boolean;
  };
  readonly userAgent?: string;
  readonly byok?: boolean;
  /**
   * The loop guard's fingerprint of the normalized request body (core/guardrails/loop-guard.ts
   * `requestFingerprint`); without one the loop guard does not apply to the call.
   */
  readonly fingerprint?: string;
  /** A turn the conversation keeps repeating (`repeatedTurnOf`): the call is a loop and is refused. */
  readonly repeatedTurn?: RepeatedTurn;
  /**
   * Aborted when the caller goes away. A stream's upstream call is stopped with it (nobody reads the tokens);
   * a non-stream call runs to its end and is settled with its real usage (the provider bills it anyway).
   */
  readonly clientSignal: AbortSignal;
  /** Calls the provider; `maxOutputTokens` is set when the gateway chose the cap (send it upstream). */
  readonly invoke: (ctx: Pick<ProviderCallContext, 'signal'> & { readonly maxOutputTokens?: number }) => Promise<ProviderResult>;
}

export type CallOutcome =
  | { readonly kind: 'json'; readonly body: unknown; readonly headers: Record<string, string>; readonly after: Settle }
  | { readonly kind: 'stream'; readonly body: AsyncIterable<Uint8Array>; readonly headers: Record<string, string>; readonly after: Settle }
  | { readonly kind: 'error'; readonly error: TollgateError; readonly headers: Record<string, string>; readonly after: Settle };

/** Settles a call after its response; resolves with the usage record written (undefined if settling failed). */
export type Settle = (options?: SettleOptions) => Promise<UsageRecord | undefined>;

export interface SettleOptions {
  /**
   * A fallback answers instead of this failed attempt: the caller did not experience a failure, so the loop
   * guard does not count it against the caller's loop.
   */
  readonly routedAround?: boolean;
}

/** How a call ended, as settle needs it. */
export interface Settlement {
  readonly outcome: UsageOutcome;
  readonly usage: TokenUsage | undefined;
  readonly httpStatus: number;
  readonly endedAt: number;
  /** Whether the provider may have produced output: then missing usage is charged at the reservation. */
  readonly mayHaveOutput: boolean;
  /** A complete answer with nothing in it: a failure for the loop guard. */
  readonly emptyAnswer?: boolean;
  /** A fallback answered instead: not a failure of the caller's loop. */
  readonly routedAround?: boolean;
  /** The status the provider answered, when it failed with one (kept for the loop guard's refusal message). */
  readonly upstreamStatus?: number;
}
