/**
 * Subscribed to the budget SNS topic: hands each AWS Budgets notification to the {@link KillSwitch}, which
 * verifies it with DescribeBudget before it opens the platform circuit and suspends every active key. The
 * SDK adapters for Budgets and SNS live here, at the edge; the decision is in core/guardrails/kill-switch.ts.
 */
import { BudgetsClient, DescribeBudgetCommand } from '@aws-sdk/client-budgets';
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { PublishCommand, SNSClient } from '@aws-sdk/client-sns';
import type { Context, SNSEvent } from 'aws-lambda';
import { type GatewayConfig, loadConfig } from '../config';
import { systemClock } from '../core/clock';
import { alertMessage } from '../core/guardrails/alerts';
import { type BudgetReader, KillSwitch, type KillSwitchReporter } from '../core/guardrails/kill-switch';
import { jsonLogger, type Logger } from '../core/log';
import { usdToMicros } from '../core/money';
import type { Alert, GuardrailStore } from '../core/stores';
import { circuitOpenedRecorder, recordGuardrailEvent } from '../observability/guardrail-events';
import { GUARDRAIL_METRICS } from '../observability/metric-names';
import { DynamoDbAuditLog } from '../store/dynamodb/audit-store';
import { createDynamoDbClient } from '../store/dynamodb/client';
import { DynamoDbGuardrailStore } from '../store/dynamodb/guardrails-store';
import { DynamoDbKeyStore } from '../store/dynamodb/key-store';
import { DynamoDbKeyStatusBatch } from '../store/dynamodb/key-status-batch';

/** Reads a budget's limit and actual spend with DescribeBudget. */
export function budgetsReader(client: BudgetsClient, accountId: string): BudgetReader {
  return {
    async describe(budgetName) {
      let out;
      try {
        out = await client.send(new DescribeBudgetCommand({ AccountId: accountId, BudgetName: budgetName }));
      } catch (err) {
        if ((err as { name?: string })?.name === 'NotFoundException') return undefined;
        throw err;
      }
      const limit = out.Budget?.BudgetLimit?.Amount;
      const actual = out.Budget?.CalculatedSpend?.ActualSpend?.Amount;
      if (limit === undefined || actual === undefined) return undefined;
      // Budgets reports amounts as decimal strings with up to ~10 decimals; keep six.
      const toMicros = (v: string) => usdToMicros(Number(v).toFixed(6));
      return { limitMicros: toMicros(limit), actualMicros: toMicros(actual) };
    },
  };
}

/** Publishes an alert to the alerts topic in the `{source:'tollgate', type, summary, details}` shape. */
export function snsAlertPublisher(client: SNSClient, topicArn: string): { publish(alert: Alert): Promise<void> } {
  return {
    async publish(alert) {
      await client.send(
        new PublishCommand({
          TopicArn: topicArn,
          Subject: `tollgate ${alert.type}`.slice(0, 100),
          Message: JSON.stringify(alertMessage(alert)),
        }),
      );
    },
  };
}

/** Reports to the alerts topic and keeps the alert in the table (no outbox: it is published right here). */
export function killSwitchReporter(store: GuardrailStore, publisher: { publish(alert: Alert): Promise<void> }): KillSwitchReporter {
  return {
    async report(alert) {
      await store.recordAlert(alert, { dedupeKey: `kill-switch#${alert.id}`, dedupeUntil: alert.at + 86_400_000, outbox: false });
      await publisher.publish(alert);
    },
  };
}

export interface KillSwitchHandlerDependencies {
  readonly config: GatewayConfig;
  readonly dynamodb: DynamoDBClient;
  readonly budgets: BudgetsClient;
  readonly sns: SNSClient;
  readonly log: Logger;
}

/** Builds the SNS handler (tests pass clients mocked at the edge). */
export function createKillSwitchHandler(deps: KillSwitchHandlerDependencies): (event: SNSEvent, context?: Pick<Context, 'getRemainingTimeInMillis'>) => Promise<void> {
  const { config } = deps;
  const { budgetName, accountId, alertsTopicArn, thresholdPercent } = config.killSwitch;
  if (!budgetName || !accountId || !alertsTopicArn) {
    throw new Error('the kill switch needs TOLLGATE_BUDGET_NAME, TOLLGATE_ACCOUNT_ID and TOLLGATE_ALERTS_TOPIC_ARN');
  }
  const store = new DynamoDbGuardrailStore(deps.dynamodb, { tables: config.tables, platformShards: config.platformShards, onCircuitOpened: circuitOpenedRecorder(config.stage) });
  const keys = new DynamoDbKeyStore(deps.dynamodb, config.tables);
  const bulk = new DynamoDbKeyStatusBatch(deps.dynamodb, config.tables);
  // The activation is an administrative change by `kill-switch`: it goes to the audit log.
  const audit = config.tables.audit ? new DynamoDbAuditLog(deps.dynamodb, { table: config.tables.audit, retentionDays: config.usageRetentionDays }) : undefined;
  return async (event, context) => {
    const killSwitch = new KillSwitch({
      keys,
      bulk,
      store,
      budgets: budgetsReader(deps.budgets, accountId),
      reporter: killSwitchReporter(store, snsAlertPublisher(deps.sns, alertsTopicArn)),
      ...(audit ? { audit } : {}),
      clock: systemClock,
      log: deps.log,
      budgetName,
      thresholdPercent,
      ...(context ? { remainingMs: () => context.getRemainingTimeInMillis() } : {}),
    });
    for (const record of event.Records) {
      const result = await killSwitch.handle(record.Sns.Message);
      deps.log.log('info', 'kill switch handled a notification', { messageId: record.Sns.MessageId, ...result });
      if (result.action === 'activated') {
        // The observability stack's "kill switch activated" alarm watches this metric.
        recordGuardrailEvent(GUARDRAIL_METRICS.killSwitchActivated, {
          stage: config.stage,
          metadata: { suspendedKeys: String(result.suspendedKeys) },
        });
      }
      // An unfinished pass throws so that Lambda's async retry finishes it.
      if ('completed' in result && !result.completed) throw new Error('kill switch pass incomplete; retrying');
    }
  };
}

let cached: ReturnType<typeof createKillSwitchHandler> | undefined;

/** The Lambda entry point; clients are created once per container. */
export const handler = async (event: SNSEvent, context: Context): Promise<void> => {
  if (!cached) {
    const config = loadConfig();
    cached = createKillSwitchHandler({
      config,
      dynamodb: createDynamoDbClient({ region: config.region }),
      // Budgets is a global service served from us-east-1.
      budgets: new BudgetsClient({ region: 'us-east-1' }),
      sns: new SNSClient({ region: config.region }),
      log: jsonLogger(),
    });
  }
  return cached(event, context);
};
