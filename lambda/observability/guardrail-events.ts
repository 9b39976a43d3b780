/**
 * Guardrail events as CloudWatch metrics: the kill switch, the circuit breaker and the alert notifier call
 * {@link recordGuardrailEvent} when they act, and the observability stack alarms on the result
 * (`KillSwitchActivated` ≥ 1, `CircuitOpened` ≥ 1 in namespace `Tollgate`, dimensions service
 * `tollgate-guardrails` and `Stage`). Emitted as one EMF line each, so no PutMetricData call is made.
 */
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { DIMENSIONS, GUARDRAIL_METRICS, GUARDRAILS_SERVICE, type GuardrailMetric, METRICS_NAMESPACE } from './metric-names';

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

/** The `Reason` dimension of {@link GUARDRAIL_METRICS.circuitOpened}: why a circuit opened (a circuit's cause). */
export const CIRCUIT_REASON_DIMENSION = 'Reason';

/** Where an EMF line goes. @default stdout (where the Lambda runtime's CloudWatch agent picks EMF up) */
export type EmfWriter = (line: string) => void;

const stdoutWriter: EmfWriter = (line) => void process.stdout.write(`${line}\n`);

/**
 * The EMF document of one opened circuit: `CircuitOpened` = 1 published twice over, under `service` × `Stage`
 * (the series the circuit alarm watches, whatever the reason) and under `service` × `Stage` × `Reason` (the
 * cause: `breaker` for hourly spend and overshoot, `velocity`, `escalation`, `kill-switch`), so a graph can split
 * by reason without the alarm missing a new one. Scope and reason text are metadata, never dimensions.
 */
export function circuitOpenedEmf(
  circuit: { readonly scope: string; readonly cause: string; readonly reason: string; readonly openedAt: number; readonly closesAt?: number },
  options: { readonly stage: string },
): Record<string, unknown> {
  return {
    _aws: {
      Timestamp: circuit.openedAt,
      CloudWatchMetrics: [
        {
          Namespace: METRICS_NAMESPACE,
          Dimensions: [
            [DIMENSIONS.service, DIMENSIONS.stage],
            [DIMENSIONS.service, DIMENSIONS.stage, CIRCUIT_REASON_DIMENSION],
          ],
          Metrics: [{ Name: GUARDRAIL_METRICS.circuitOpened, Unit: MetricUnit.Count }],
        },
      ],
    },
    [DIMENSIONS.service]: GUARDRAILS_SERVICE,
    [DIMENSIONS.stage]: options.stage,
    [CIRCUIT_REASON_DIMENSION]: circuit.cause,
    [GUARDRAIL_METRICS.circuitOpened]: 1,
    scope: circuit.scope,
    reason: circuit.reason,
    closesAt: circuit.closesAt === undefined ? 'on-acknowledgement' : new Date(circuit.closesAt).toISOString(),
  };
}

/**
 * The hook every guardrail store is built with on AWS (`onCircuitOpened`): one EMF line per circuit the store
 * actually opened, whichever guard asked for it.
 */
export function circuitOpenedRecorder(stage: string, write: EmfWriter = stdoutWriter): (circuit: Parameters<typeof circuitOpenedEmf>[0]) => void {
  return (circuit) => write(JSON.stringify(circuitOpenedEmf(circuit, { stage })));
}
