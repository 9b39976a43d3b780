/**
 * Run every minute: publishes the guardrail alerts the gateway queued (the outbox in the budgets table) to
 * the alerts topic, where the notifier formats them for Slack and email. The gateway never calls SNS on a
 * request's path; an alert reaches the topic within a minute and survives an SNS outage in the outbox.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SNSClient } from '@aws-sdk/client-sns';
import { type GatewayConfig, loadConfig } from '../config';
import { jsonLogger, type Logger } from '../core/log';
import { createDynamoDbClient } from '../store/dynamodb/client';
import { DynamoDbGuardrailStore } from '../store/dynamodb/guardrails-store';
import { recordGuardrailEvent } from '../observability/guardrail-events';
import { GUARDRAIL_METRICS } from '../observability/metric-names';
import { snsAlertPublisher } from './kill-switch';

const BATCH = 100;

/** Builds the scheduled handler; resolves with how many alerts were published. */
export function createAlertDispatcher(deps: {
  readonly config: GatewayConfig;
  readonly dynamodb: DynamoDBClient;
  readonly sns: SNSClient;
  readonly log: Logger;
}): () => Promise<number> {
  const topic = deps.config.killSwitch.alertsTopicArn;
  if (!topic) throw new Error('the alert dispatcher needs TOLLGATE_ALERTS_TOPIC_ARN');
  const store = new DynamoDbGuardrailStore(deps.dynamodb, { tables: deps.config.tables, platformShards: deps.config.platformShards });
  const publisher = snsAlertPublisher(deps.sns, topic);
  return async () => {
    let published = 0;
    for (;;) {
      const pending = await store.pendingAlerts(BATCH);
      for (const alert of pending) {
        await publisher.publish(alert);
        await store.markPublished(alert);
        published++;
        deps.log.log('info', 'alert published', { alertType: alert.type, scope: alert.scope });
        // Every alert sent. CircuitOpened is written where a circuit opens (the guardrail store's hook), not here.
        recordGuardrailEvent(GUARDRAIL_METRICS.alertSent, { stage: deps.config.stage, metadata: { alertType: alert.type, scope: alert.scope } });
      }
      if (pending.length < BATCH) return published;
    }
  };
}

let cached: (() => Promise<number>) | undefined;

/** The Lambda entry point (EventBridge schedule). */
export const handler = async (): Promise<void> => {
  if (!cached) {
    const config = loadConfig();
    cached = createAlertDispatcher({
      config,
      dynamodb: createDynamoDbClient({ region: config.region }),
      sns: new SNSClient({ region: config.region }),
      log: jsonLogger(),
    });
  }
  await cached();
};
