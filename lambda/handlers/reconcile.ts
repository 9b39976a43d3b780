/**
 * Billing reconciliation, run daily by EventBridge (guardrails stack) and by `npm run admin -- reconcile --day
 * YYYY-MM-DD`: reads the ledger's day and the providers' cost reports (admin keys from the secret source),
 * stores one drift row per provider and model, and publishes `BillingDriftUsd` per provider; the observability
 * stack alarms on it past `reconcile.alarmDriftUsd`.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { fromNodeProviderChain } from '@aws-sdk/credential-providers';
import { SSMClient } from '@aws-sdk/client-ssm';
import { Metrics, MetricUnit } from '@aws-lambda-powertools/metrics';
import { type GatewayConfig, loadConfig } from '../config';
import { jsonLogger, type Logger } from '../core/log';
import { MICROS_PER_USD } from '../core/money';
import { type ReconcileResult, reconcileDay } from '../core/reconcile/reconcile';
import { AnthropicCostReport, type BillingReport, BedrockCostExplorerReport, OpenAiCostReport } from '../core/reconcile/reports';
import { RECONCILE_SECRET_NAMES, type SecretSource, SsmSecretSource } from '../core/secrets';
import { DIMENSIONS, METRICS_NAMESPACE, RECONCILE_SERVICE, SPEND_METRICS } from '../observability/metric-names';
import { createDynamoDbClient } from '../store/dynamodb/client';
import { DynamoDbDriftStore } from '../store/dynamodb/reconcile-store';
import { DynamoDbUsageStore } from '../store/dynamodb/usage-store';

export interface ReconcileDependencies {
  readonly config: GatewayConfig;
  readonly dynamodb: DynamoDBClient;
  readonly secrets: SecretSource;
  readonly now: number;
  readonly log: Logger;
  /** Where `BillingDriftUsd` goes. @default none (the CLI prints instead) */
  readonly metrics?: Metrics;
  /** Cost Explorer credentials. @default the Node provider chain (the Lambda's role) */
  readonly awsCredentials?: ConstructorParameters<typeof BedrockCostExplorerReport>[0]['credentials'];
  readonly fetch?: typeof fetch;
}

/** A provider not compared, and why (no admin key, Bedrock not enabled): its drift is unknown, not zero. */
export interface SkippedProvider {
  readonly provider: string;
  readonly reason: string;
}

/** One run: the drift rows and unreadable reports, plus the providers that were not compared at all. */
export interface ReconcileRun extends ReconcileResult {
  readonly skipped: readonly SkippedProvider[];
}

/** The providers this deployment cannot compare, and why. */
export async function skippedProviders(d: Pick<ReconcileDependencies, 'config' | 'secrets'>): Promise<SkippedProvider[]> {
  const [openaiKey, anthropicKey] = await Promise.all([d.secrets.get('openai-admin-key'), d.secrets.get('anthropic-admin-key')]);
  return [
    ...(openaiKey ? [] : [{ provider: 'openai', reason: 'no admin key (openai-admin-key / TOLLGATE_SECRET_OPENAI_ADMIN_KEY)' }]),
    ...(anthropicKey ? [] : [{ provider: 'anthropic', reason: 'no admin key (anthropic-admin-key / TOLLGATE_SECRET_ANTHROPIC_ADMIN_KEY)' }]),
    ...(d.config.reconcile.bedrock ? [] : [{ provider: 'bedrock', reason: 'Cost Explorer reconciliation not enabled' }]),
  ];
}

/** The reports this deployment can read: each provider with an admin key, Bedrock when enabled. */
export async function billingReports(d: Omit<ReconcileDependencies, 'dynamodb' | 'now' | 'log' | 'metrics'>): Promise<BillingReport[]> {
  const [openaiKey, anthropicKey] = await Promise.all([d.secrets.get('openai-admin-key'), d.secrets.get('anthropic-admin-key')]);
  const f = d.fetch ? { fetch: d.fetch } : {};
  return [
    ...(openaiKey ? [new OpenAiCostReport({ baseUrl: d.config.reconcile.openaiAdminBaseUrl, adminKey: openaiKey, ...f })] : []),
    ...(anthropicKey ? [new AnthropicCostReport({ baseUrl: d.config.reconcile.anthropicAdminBaseUrl, adminKey: anthropicKey, ...f })] : []),
    ...(d.config.reconcile.bedrock
      ? [
          new BedrockCostExplorerReport({
            credentials: d.awsCredentials ?? fromNodeProviderChain(),
            ...(d.config.reconcile.costExplorerEndpoint ? { endpoint: d.config.reconcile.costExplorerEndpoint } : {}),
            ...f,
          }),
        ]
      : []),
  ];
}

/** Reconciles one day: stores drift rows, publishes the drift metric, logs every alarm. */
export async function runReconcile(day: string, d: ReconcileDependencies): Promise<ReconcileRun> {
  const [reports, skipped] = await Promise.all([billingReports(d), skippedProviders(d)]);
  const result = await reconcileDay(day, {
    usage: new DynamoDbUsageStore(d.dynamodb, d.config.tables),
    reports,
    store: new DynamoDbDriftStore(d.dynamodb, { table: d.config.tables.reconcile }),
    alarmDriftMicros: d.config.reconcile.alarmDriftMicros,
    now: d.now,
  });
  const byProvider = new Map<string, number>();
  for (const r of result.rows) byProvider.set(r.provider, (byProvider.get(r.provider) ?? 0) + Math.abs(r.driftMicros));
  for (const report of reports) if (!byProvider.has(report.provider) && !result.failed.some((f) => f.provider === report.provider)) byProvider.set(report.provider, 0);
  if (d.metrics) {
    for (const [provider, micros] of byProvider) {
      d.metrics.addDimensions({});
      d.metrics.addDimensions({ [DIMENSIONS.provider]: provider });
      d.metrics.addMetric(SPEND_METRICS.billingDriftUsd, MetricUnit.NoUnit, micros / MICROS_PER_USD);
      d.metrics.addMetadata('day', day);
      d.metrics.publishStoredMetrics();
    }
  }
  for (const r of result.rows.filter((x) => x.alarm)) d.log.log('error', 'billing drift past threshold', { ...r });
  for (const f of result.failed) d.log.log('error', 'billing report unreadable', f);
  d.log.log('info', 'billing reconciled', {
    day,
    rows: result.rows.length,
    alarms: result.rows.filter((r) => r.alarm).length,
    failed: result.failed.length,
    skipped: skipped.map((s) => s.provider),
  });
  return { ...result, skipped };
}

/** Yesterday (UTC) of an instant: the last day every provider has finished reporting. */
export function yesterdayOf(now: number): string {
  return new Date(now - 86_400_000).toISOString().slice(0, 10);
}

let cold: { config: GatewayConfig; dynamodb: DynamoDBClient; secrets: SecretSource } | undefined;

/** EventBridge's daily call; `{ "day": "YYYY-MM-DD" }` in the event re-runs a given day. */
export async function handler(event: { readonly day?: string } = {}): Promise<{ day: string; rows: number; alarms: number; failed: number }> {
  if (!cold) {
    const config = loadConfig();
    cold = {
      config,
      dynamodb: createDynamoDbClient({ region: config.region }),
      secrets: new SsmSecretSource({ client: new SSMClient({ region: config.region }), prefix: config.ssmPrefix ?? `/tollgate/${config.stage}/`, names: RECONCILE_SECRET_NAMES }),
    };
  }
  const now = Date.now();
  const day = event.day ?? yesterdayOf(now);
  const metrics = new Metrics({ namespace: METRICS_NAMESPACE, serviceName: RECONCILE_SERVICE, defaultDimensions: { [DIMENSIONS.stage]: cold.config.stage } });
  const result = await runReconcile(day, { ...cold, now, log: jsonLogger(), metrics });
  return { day, rows: result.rows.length, alarms: result.rows.filter((r) => r.alarm).length, failed: result.failed.length };
}
