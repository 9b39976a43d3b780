/**
 * Guardrail events as CloudWatch metrics: the kill switch, the circuit breaker and the alert notifier call
 * {@link recordGuardrailEvent} when they act, and the observability stack alarms on the result
 * (`KillSwitchActivated` ≥ 1, `CircuitOpened` ≥ 1 in namespace `Tollgate`, dimensions service
 * `tollgate-guardrails` and `Stage`). Emitted as one EMF line each, so no PutMetricData call is made.
 */
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { DIMENSIONS, GUARDRAILS_SERVICE, type GuardrailMetric, METRICS_NAMESPACE } from './metric-names';

export interface GuardrailEventOptions {
  readonly stage: string;
  /**
   * How many times it happened (e.g. keys suspended).
   * @default 1
   */
  readonly count?: number;
  /** Searchable context (provider, scope, reason); never a secret. Not dimensions. */
  readonly metadata?: Readonly<Record<string, string>>;
  /**
   * Where the metric is published.
   * @default a Powertools Metrics in namespace `Tollgate`, service `tollgate-guardrails`, writing to stdout
   */
  readonly metrics?: Metrics;
}

/** Publishes one guardrail event immediately. */
export function recordGuardrailEvent(name: GuardrailMetric, options: GuardrailEventOptions): void {
  const metrics =
    options.metrics ??
    new Metrics({ namespace: METRICS_NAMESPACE, serviceName: GUARDRAILS_SERVICE, defaultDimensions: { [DIMENSIONS.stage]: options.stage } });
  metrics.addMetric(name, MetricUnit.Count, options.count ?? 1);
  for (const [k, v] of Object.entries(options.metadata ?? {})) metrics.addMetadata(k, v);
  metrics.publishStoredMetrics();
}
