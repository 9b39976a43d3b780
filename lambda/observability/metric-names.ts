/**
 * The names of tollgate's CloudWatch metrics, written once: the Lambda code emits them (Embedded Metric Format
 * through Powertools Metrics) and the CDK observability stack graphs and alarms on them, so a renamed metric
 * cannot silently leave a dashboard widget empty.
 *
 * Every metric is in namespace {@link METRICS_NAMESPACE} with the dimensions `service` and `Stage`
 * ({@link baseDimensions}). Request metrics are also published per `Provider` × `Model`; errors per
 * `ErrorClass`. User, key and org ids are EMF metadata (searchable in Logs Insights), never dimensions: each
 * dimension value is a separately billed metric.
 */
import type { ErrorKind } from '../core/errors';
import type { UsageOutcome } from '../core/types';

export const METRICS_NAMESPACE = 'Tollgate';

/** The `service` dimension of the gateway's request metrics. */
export const GATEWAY_SERVICE = 'tollgate-gateway';
/** The `service` dimension of guardrail events (kill switch, circuit breaker, alerts), whichever function emits them. */
export const GUARDRAILS_SERVICE = 'tollgate-guardrails';

export const DIMENSIONS = {
  service: 'service',
  stage: 'Stage',
  provider: 'Provider',
  model: 'Model',
  errorClass: 'ErrorClass',
  /** The refusal reason of {@link REFUSAL_METRICS.refusals} (lambda/observability/refusals.ts REFUSAL_REASONS). */
  reason: 'Reason',
} as const;

/** Per-request metrics (service {@link GATEWAY_SERVICE}). */
export const REQUEST_METRICS = {
  /** Count, one per finished request (every status). */
  requestCount: 'RequestCount',
  /** Count: input + output tokens of the request. */
  tokensProcessed: 'TokensProcessed',
  /** Count: input tokens, cached ones included. */
  inputTokens: 'InputTokens',
  outputTokens: 'OutputTokens',
  /** Count: input tokens read from the provider's prompt cache. */
  cachedInputTokens: 'CachedInputTokens',
  /** None (a dollar amount): what the request was billed; the sum over a period is the spend. */
  costUsd: 'CostUsd',
  /**
   * None (a dollar amount): what a request cost above its reservation; emitted only for such requests, so
   * any datapoint is worth an alarm (the provider billed past the output cap the gateway sent).
   */
  overshootUsd: 'OvershootUsd',
  /** Milliseconds from arrival until the response and its settlement finished. */
  latency: 'Latency',
  /** Milliseconds the provider took to answer (to its first byte, for streams). */
  upstreamLatency: 'UpstreamLatency',
  /** Count, with dimension `ErrorClass`. */
  errorCount: 'ErrorCount',
} as const;

/**
 * Guardrail events (service {@link GUARDRAILS_SERVICE}); each is a Count of 1 per event, emitted with
 * {@link import('./guardrail-events').recordGuardrailEvent}.
 */
export const GUARDRAIL_METRICS = {
  /** The kill switch suspended keys (a budget threshold was crossed). */
  killSwitchActivated: 'KillSwitchActivated',
  /** A circuit opened, for whatever reason (dimension `Reason` = its cause too; see guardrail-events.ts). */
  circuitOpened: 'CircuitOpened',
  /** An alert was sent (Slack, email). */
  alertSent: 'AlertSent',
} as const;
export type GuardrailMetric = (typeof GUARDRAIL_METRICS)[keyof typeof GUARDRAIL_METRICS];

/** The `service` dimension of billing reconciliation's metrics. */
export const RECONCILE_SERVICE = 'tollgate-reconcile';

/**
 * What the spend layer saved or rerouted (service {@link GATEWAY_SERVICE}, from the request observer) and
 * what billing reconciliation found (service {@link RECONCILE_SERVICE}, by `Provider`).
 */
export const SPEND_METRICS = {
  /** Count: requests answered from the response cache. */
  cacheHits: 'CacheHits',
  /** Count: requests that used the cache and were not in it. */
  cacheMisses: 'CacheMisses',
  /** None (dollars): what cache hits would have cost. */
  cacheSavedUsd: 'CacheSavedUsd',
  /** Count: requests served by a later model after a provider failure, or by a budget downgrade. */
  fallbacks: 'Fallbacks',
  /** None (dollars): |billed − ledger| of one provider for one day. */
  billingDriftUsd: 'BillingDriftUsd',
} as const;

/**
 * Requests the gateway refused (service {@link GATEWAY_SERVICE}): a Count of 1 per refusal, by {service, Stage}
 * and {service, Stage, Reason}. Scope and key are metadata (and fields of the request log line), not dimensions.
 */
export const REFUSAL_METRICS = {
  refusals: 'Refusals',
} as const;

/** The classes of {@link REQUEST_METRICS.errorCount}. */
export const ERROR_CLASSES = ['auth', 'budget', 'rate_limit', 'loop', 'upstream', 'client', 'server'] as const;
export type ErrorClass = (typeof ERROR_CLASSES)[number];

/** Error codes that mean the loop guard refused the request (whatever status the guard answers with). */
const LOOP_CODE = /loop/i;

/**
 * The class a failed request is counted under: by error kind, or — for a stream that started with 200 and
 * then failed — by its usage outcome. Returns undefined for a request that did not fail (a caller that went
 * away is not an error of the gateway).
 */
export function errorClassOf(failure: {
  readonly error?: { readonly kind: ErrorKind; readonly code?: string };
  readonly outcome?: UsageOutcome;
}): ErrorClass | undefined {
  const { error, outcome } = failure;
  if (error) {
    if (error.code && LOOP_CODE.test(error.code)) return 'loop';
    switch (error.kind) {
      case 'authentication':
      case 'permission':
        return 'auth';
      case 'insufficient_quota':
        return 'budget';
      case 'rate_limit':
        return 'rate_limit';
      case 'upstream':
        return 'upstream';
      case 'invalid_request':
      case 'not_found':
      case 'payload_too_large':
        return 'client';
      case 'unavailable':
      case 'internal':
        return 'server';
    }
  }
  if (outcome === 'upstream_error' || outcome === 'timeout' || outcome === 'stream_incomplete') return 'upstream';
  return undefined;
}

/** The dimensions every tollgate metric carries. */
export function baseDimensions(service: string, stage: string): Record<string, string> {
  return { [DIMENSIONS.service]: service, [DIMENSIONS.stage]: stage };
}
