/**
 * The gateway's per-request CloudWatch metrics, as a {@link RequestObserver}: one Embedded Metric Format line
 * per finished request (and one more for a failed one) written to stdout by Powertools Metrics, which CloudWatch
 * turns into metrics with no PutMetricData call on the hot path. The observer runs after settlement (in the
 * Lambda, in middy's `requestEnd`), so publishing here is the flush.
 *
 *   request line: RequestCount, TokensProcessed, InputTokens, OutputTokens, CachedInputTokens, CostUsd,
 *                 Latency, UpstreamLatency   by {service, Stage} and {service, Stage, Provider, Model}
 *   error line:   ErrorCount                 by {service, Stage, ErrorClass}
 *   refusal line: Refusals                   by {service, Stage} and {service, Stage, Reason} (refusals.ts)
 *   metadata:     requestId, userId, keyId, orgId, status, outcome (searchable, not dimensions)
 */
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { MICROS_PER_USD } from '../core/money';
import type { RequestEvent, RequestObserver } from '../http/app';
import { DIMENSIONS, errorClassOf, GATEWAY_SERVICE, METRICS_NAMESPACE, REFUSAL_METRICS, REQUEST_METRICS, SPEND_METRICS } from './metric-names';
import { refusalOf } from './refusals';

export interface MetricsObserverOptions {
  /** The `Stage` dimension (several stages may share an account). */
  readonly stage: string;
  /**
   * Where metrics are buffered and published.
   * @default a Powertools Metrics in namespace `Tollgate`, service `tollgate-gateway`, writing to stdout
   */
  readonly metrics?: Metrics;
}

/** A Powertools Metrics instance with tollgate's namespace, service and `Stage` dimension. */
export function gatewayMetrics(stage: string): Metrics {
  return new Metrics({ namespace: METRICS_NAMESPACE, serviceName: GATEWAY_SERVICE, defaultDimensions: { [DIMENSIONS.stage]: stage } });
}

/**
 * Publishes each request's metrics as soon as it is observed. Observers are called synchronously, so one
 * request's metrics never mix with another's even when requests overlap (the local server).
 */
export function createMetricsObserver(options: MetricsObserverOptions): RequestObserver {
  const metrics = options.metrics ?? gatewayMetrics(options.stage);
  return (event: RequestEvent) => {
    const usage = event.usage;
    // An empty set publishes under the default dimensions alone: the totals the alarms watch.
    metrics.addDimensions({});
    if (usage) metrics.addDimensions({ [DIMENSIONS.provider]: usage.provider, [DIMENSIONS.model]: usage.model });
    metrics.addMetric(REQUEST_METRICS.requestCount, MetricUnit.Count, 1);
    metrics.addMetric(REQUEST_METRICS.latency, MetricUnit.Milliseconds, event.durationMs);
    if (event.upstreamMs !== undefined) metrics.addMetric(REQUEST_METRICS.upstreamLatency, MetricUnit.Milliseconds, event.upstreamMs);
    if (usage) {
      const t = usage.usage;
      metrics.addMetric(REQUEST_METRICS.tokensProcessed, MetricUnit.Count, t.inputTokens + t.outputTokens);
      metrics.addMetric(REQUEST_METRICS.inputTokens, MetricUnit.Count, t.inputTokens);
      metrics.addMetric(REQUEST_METRICS.outputTokens, MetricUnit.Count, t.outputTokens);
      metrics.addMetric(REQUEST_METRICS.cachedInputTokens, MetricUnit.Count, t.cachedInputTokens);
      // Integer micro-USD until here; CloudWatch only takes a double, so this is the one conversion.
      metrics.addMetric(REQUEST_METRICS.costUsd, MetricUnit.NoUnit, usage.costMicros / MICROS_PER_USD);
      if (usage.overshootMicros) metrics.addMetric(REQUEST_METRICS.overshootUsd, MetricUnit.NoUnit, usage.overshootMicros / MICROS_PER_USD);
    }
    const spend = event.spend;
    if (spend?.cache === 'hit') {
      metrics.addMetric(SPEND_METRICS.cacheHits, MetricUnit.Count, 1);
      if (spend.savedUsd) metrics.addMetric(SPEND_METRICS.cacheSavedUsd, MetricUnit.NoUnit, Number(spend.savedUsd));
    }
    if (spend?.cache === 'miss') metrics.addMetric(SPEND_METRICS.cacheMisses, MetricUnit.Count, 1);
    if (spend?.fallback && event.status < 400) metrics.addMetric(SPEND_METRICS.fallbacks, MetricUnit.Count, 1);
    addMetadata(metrics, event);
    metrics.publishStoredMetrics();

    const errorClass = errorClassOf({ ...(event.error ? { error: event.error } : {}), ...(usage ? { outcome: usage.outcome } : {}) });
    if (errorClass) {
      metrics.addDimension(DIMENSIONS.errorClass, errorClass);
      metrics.addMetric(REQUEST_METRICS.errorCount, MetricUnit.Count, 1);
      addMetadata(metrics, event);
      metrics.publishStoredMetrics();
    }

    const refusal = refusalOf(event);
    if (refusal) {
      metrics.addDimensions({});
      metrics.addDimensions({ [DIMENSIONS.reason]: refusal.reason });
      metrics.addMetric(REFUSAL_METRICS.refusals, MetricUnit.Count, 1);
      metrics.addMetadata('refusalScope', refusal.scope);
      addMetadata(metrics, event);
      metrics.publishStoredMetrics();
    }
  };
}

function addMetadata(metrics: Metrics, event: RequestEvent): void {
  metrics.addMetadata('requestId', event.requestId);
  metrics.addMetadata('status', String(event.status));
  const who = event.principal ?? event.usage;
  if (who) {
    metrics.addMetadata('userId', who.userId);
    metrics.addMetadata('keyId', who.keyId);
    if (who.orgId) metrics.addMetadata('orgId', who.orgId);
  }
  if (event.usage) metrics.addMetadata('outcome', event.usage.outcome);
  if (event.error) metrics.addMetadata('errorCode', event.error.code ?? event.error.kind);
}
