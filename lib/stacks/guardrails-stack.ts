import { createHash } from 'node:crypto';
import { Annotations, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as budgets from 'aws-cdk-lib/aws-budgets';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import type { Construct } from 'constructs';
import { RECONCILE_SECRET_NAMES, secretsPrefix } from '../../lambda/core/secrets';
import { COST_ALLOCATION_TAG, DeploymentConfigError, resourceName, type DeploymentConfig } from '../config';
import { TollgateFunction } from '../constructs/tollgate-function';
import type { DataStack } from './data-stack';

/** How often the kill switch is invoked with a heartbeat (it ignores it), so its silence can alarm. */
export const KILL_SWITCH_HEARTBEAT = Duration.hours(1);

/** The SNS-shaped event the heartbeat rule sends: not a Budgets notification, so the kill switch ignores it. */
export const KILL_SWITCH_HEARTBEAT_EVENT = {
  Records: [{ EventSource: 'tollgate:heartbeat', Sns: { MessageId: 'heartbeat', Message: 'tollgate kill-switch heartbeat' } }],
} as const;

/** The value of the {@link COST_ALLOCATION_TAG} on every resource of a stage. */
export function costAllocationTagValue(config: Pick<DeploymentConfig, 'stage'>): string {
  return resourceName(config, 'app').replace(/-app$/, '');
}

/** Service names AWS Budgets filters Bedrock usage by (model usage cannot carry a resource tag). */
export const BEDROCK_BUDGET_SERVICES = ['Amazon Bedrock'];

/**
 * The budget's name: the stage plus a short hash of its notification thresholds. `NotificationsWithSubscribers`
 * is create-only, so a threshold change replaces the budget; CloudFormation creates the replacement before
 * deleting the old one, and a fixed name would collide. The kill switch is told the same name.
 */
export function budgetName(config: Pick<DeploymentConfig, 'stage' | 'budget'>): string {
  const thresholds = JSON.stringify({
    actual: config.budget.thresholdsPercent,
    forecasted: config.budget.forecastThresholdsPercent,
  });
  const hash = createHash('sha256').update(thresholds).digest('hex').slice(0, 8);
  return resourceName(config, `monthly-${hash}`);
}

/** What the budget counts: this stage's tagged resources, and Bedrock model usage only when Bedrock is on. */
export function budgetFilter(config: Pick<DeploymentConfig, 'stage' | 'gateway'>): budgets.CfnBudget.ExpressionProperty {
  const tagged: budgets.CfnBudget.ExpressionProperty = {
    tags: { key: COST_ALLOCATION_TAG, values: [costAllocationTagValue(config)], matchOptions: ['EQUALS'] },
  };
  if (!config.gateway.bedrock) return tagged;
  return { or: [tagged, { dimensions: { key: 'SERVICE', values: BEDROCK_BUDGET_SERVICES, matchOptions: ['EQUALS'] } }] };
}

/** The warning synth shows when no alert destination is set (and the error when one is required). */
export const NO_ALERT_DESTINATION =
  'no alert destination: set tollgate.alerts.email and/or tollgate.alerts.slack (with `npm run secrets -- set slack-webhook-url`); until then alarms, budget notifications and the kill switch reach nobody';

export interface GuardrailsStackProps extends StackProps {
  readonly config: DeploymentConfig;
  readonly data: DataStack;
}

/**
 * Spend guardrails and alert routing:
 *
 *   AWS Budgets ──50/80/100 %──▶ budget topic ──▶ kill-switch Lambda (suspends keys)
 *                                             └─▶ alert notifier (Slack)
 *   alarms, kill switch, … ────▶ alerts topic ──▶ alert notifier (Slack), optional email
 *   gateway guardrail alerts ──▶ outbox (budgets table) ──every minute──▶ alert dispatcher ──▶ alerts topic
 *
 * Both topics are encrypted with a customer-managed key whose policy lets Budgets and CloudWatch (the services
 * that publish to them) use it, scoped to this account.
 */
export class GuardrailsStack extends Stack {
  readonly topicKey: kms.Key;
  readonly budgetTopic: sns.Topic;
  readonly alertsTopic: sns.Topic;
  readonly budget: budgets.CfnBudget;
  readonly killSwitch: TollgateFunction;
  readonly alertNotifier: TollgateFunction;
  readonly alertDispatcher: TollgateFunction;
  /** Budget notifications the kill switch could not process after every retry. */
  readonly killSwitchDeadLetterQueue: sqs.Queue;
  /** The daily billing reconciliation. */
  readonly reconcile: TollgateFunction;

  constructor(scope: Construct, id: string, props: GuardrailsStackProps) {
    super(scope, id, props);
    const { config, data } = props;

    this.topicKey = new kms.Key(this, 'TopicKey', {
      description: `tollgate ${config.stage}: encrypts the budget and alerts SNS topics`,
      enableKeyRotation: true,
      alias: `alias/${resourceName(config, 'topics')}`,
      removalPolicy: RemovalPolicy.DESTROY,
      pendingWindow: Duration.days(7),
    });
    for (const service of ['budgets.amazonaws.com', 'cloudwatch.amazonaws.com']) {
      this.topicKey.addToResourcePolicy(
        new iam.PolicyStatement({
          sid: `Allow${service.split('.')[0]}ToPublishEncrypted`,
          principals: [new iam.ServicePrincipal(service)],
          actions: ['kms:GenerateDataKey*', 'kms:Decrypt'],
          resources: ['*'],
          conditions: { StringEquals: { 'aws:SourceAccount': this.account } },
        }),
      );
    }

    this.budgetTopic = new sns.Topic(this, 'BudgetTopic', {
      topicName: resourceName(config, 'budget'),
      displayName: `tollgate ${config.stage} budget notifications`,
      masterKey: this.topicKey,
      enforceSSL: true,
    });
    const budgetsMayPublish = this.budgetTopic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowBudgetsToPublish',
        principals: [new iam.ServicePrincipal('budgets.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.budgetTopic.topicArn],
        conditions: {
          StringEquals: { 'aws:SourceAccount': this.account },
          ArnLike: { 'aws:SourceArn': `arn:${this.partition}:budgets::${this.account}:*` },
        },
      }),
    );

    this.alertsTopic = new sns.Topic(this, 'AlertsTopic', {
      topicName: resourceName(config, 'alerts'),
      displayName: `tollgate ${config.stage} alerts`,
      masterKey: this.topicKey,
      enforceSSL: true,
    });
    // CloudWatch publishes alarm state changes with its own principal: only this stage's alarms, from this account.
    this.alertsTopic.addToResourcePolicy(
      new iam.PolicyStatement({
        sid: 'AllowThisStagesAlarmsToPublish',
        principals: [new iam.ServicePrincipal('cloudwatch.amazonaws.com')],
        actions: ['sns:Publish'],
        resources: [this.alertsTopic.topicArn],
        conditions: {
          StringEquals: { 'aws:SourceAccount': this.account },
          ArnLike: { 'aws:SourceArn': `arn:${this.partition}:cloudwatch:${this.region}:${this.account}:alarm:${resourceName(config, '')}*` },
        },
      }),
    );
    if (config.alerts.email) {
      this.alertsTopic.addSubscription(new subs.EmailSubscription(config.alerts.email));
    }
    if (!config.alerts.email && !config.alerts.slack) {
      if (config.alerts.requireDestination) throw new DeploymentConfigError('tollgate.alerts', NO_ALERT_DESTINATION);
      Annotations.of(this).addWarningV2('@tollgate/alerts:no-destination', NO_ALERT_DESTINATION);
    }

    this.budget = new budgets.CfnBudget(this, 'Budget', {
      budget: {
        budgetName: budgetName(config),
        budgetType: 'COST',
        timeUnit: 'MONTHLY',
        budgetLimit: { amount: config.budget.monthlyUsd, unit: 'USD' },
        // This deployment's resources (by cost-allocation tag), plus Bedrock model usage only when this deployment
        // serves Bedrock: otherwise another team's Bedrock spend could trip the kill switch.
        filterExpression: budgetFilter(config),
      },
      notificationsWithSubscribers: [
        ...config.budget.thresholdsPercent.map((threshold) => ({ threshold, notificationType: 'ACTUAL' })),
        ...config.budget.forecastThresholdsPercent.map((threshold) => ({ threshold, notificationType: 'FORECASTED' })),
      ].map(({ threshold, notificationType }) => ({
        notification: { notificationType, comparisonOperator: 'GREATER_THAN', threshold, thresholdType: 'PERCENTAGE' },
        subscribers: [{ subscriptionType: 'SNS', address: this.budgetTopic.topicArn }],
      })),
    });
    // Budgets checks that it may publish when the notification is created.
    if (budgetsMayPublish.policyDependable) this.budget.node.addDependency(budgetsMayPublish.policyDependable);
    this.budget.node.addDependency(this.topicKey);

    this.killSwitchDeadLetterQueue = new sqs.Queue(this, 'KillSwitchDeadLetterQueue', {
      queueName: resourceName(config, 'kill-switch-dlq'),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(this.killSwitchDeadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This is itself the dead-letter queue of the kill switch (Lambda async failures and SNS deliveries that failed); an alarm fires on its first message.',
    });
    this.killSwitch = new TollgateFunction(this, 'KillSwitch', {
      entry: 'lambda/handlers/kill-switch.ts',
      deadLetterQueue: this.killSwitchDeadLetterQueue,
      description: 'Suspends API keys when the AWS budget crosses its threshold',
      timeout: Duration.minutes(5),
      logRetentionDays: config.logRetentionDays,
      environment: {
        TOLLGATE_STAGE: config.stage,
        ...data.tableEnvironment,
        TOLLGATE_ALERTS_TOPIC_ARN: this.alertsTopic.topicArn,
        TOLLGATE_BUDGET_NAME: budgetName(config),
        TOLLGATE_ACCOUNT_ID: this.account,
      },
    });
    data.grantTables(this.killSwitch.fn, {
      // Active keys by the byStatus index, then suspended in transactions of conditional updates.
      keys: ['GetItem', 'Query', 'UpdateItem', 'ConditionCheckItem'],
      // The platform circuit, its own progress marker and the alert record.
      budgets: ['GetItem', 'Query', 'PutItem', 'UpdateItem', 'DeleteItem', 'ConditionCheckItem'],
    });
    // The activation is recorded in the audit log (append-only).
    data.grantAuditAppend(this.killSwitch.fn);
    // DescribeBudget verifies a notification against the budget's actual spend before anything is stopped.
    this.killSwitch.fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['budgets:ViewBudget'],
        resources: [`arn:${this.partition}:budgets::${this.account}:budget/${budgetName(config)}`],
      }),
    );
    // grantPublish would add kms:GenerateDataKey*; publishing to an encrypted topic needs exactly these two.
    this.killSwitch.fn.addToRolePolicy(
      new iam.PolicyStatement({ actions: ['sns:Publish'], resources: [this.alertsTopic.topicArn] }),
    );
    this.grantTopicKeyForPublish(this.killSwitch.fn);
    this.budgetTopic.addSubscription(new subs.LambdaSubscription(this.killSwitch.fn, { deadLetterQueue: this.killSwitchDeadLetterQueue }));
    new events.Rule(this, 'KillSwitchHeartbeat', {
      description: 'Invokes the kill switch with a heartbeat it ignores, so an alarm notices when it cannot run',
      schedule: events.Schedule.rate(KILL_SWITCH_HEARTBEAT),
      targets: [
        new targets.LambdaFunction(this.killSwitch.fn, {
          event: events.RuleTargetInput.fromObject(KILL_SWITCH_HEARTBEAT_EVENT),
          retryAttempts: 0,
        }),
      ],
    });

    this.alertNotifier = new TollgateFunction(this, 'AlertNotifier', {
      entry: 'lambda/handlers/alert-notifier.ts',
      description: 'Posts budget notifications and alarms to Slack',
      timeout: Duration.seconds(30),
      logRetentionDays: config.logRetentionDays,
      environment: {
        TOLLGATE_STAGE: config.stage,
        TOLLGATE_SSM_PREFIX: secretsPrefix(config.stage),
      },
    });
    data.grantSecrets(this.alertNotifier.fn, ['slack-webhook-url']);

    // Guardrail alerts the gateway queued in its outbox, published every minute.
    this.alertDispatcher = new TollgateFunction(this, 'AlertDispatcher', {
      entry: 'lambda/handlers/alert-dispatcher.ts',
      description: 'Publishes queued guardrail alerts (tier alerts, breaker, loop guard) to the alerts topic',
      timeout: Duration.seconds(55),
      logRetentionDays: config.logRetentionDays,
      environment: { TOLLGATE_STAGE: config.stage, ...data.tableEnvironment, TOLLGATE_ALERTS_TOPIC_ARN: this.alertsTopic.topicArn },
    });
    // The outbox: queued alerts are read by query and marked sent (or dropped) one by one.
    data.grantTables(this.alertDispatcher.fn, { budgets: ['GetItem', 'Query', 'UpdateItem', 'DeleteItem'] });
    this.alertDispatcher.fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['sns:Publish'], resources: [this.alertsTopic.topicArn] }));
    this.grantTopicKeyForPublish(this.alertDispatcher.fn);
    new events.Rule(this, 'DispatchAlertsEveryMinute', {
      description: 'Publishes queued guardrail alerts',
      schedule: events.Schedule.rate(Duration.minutes(1)),
      targets: [new targets.LambdaFunction(this.alertDispatcher.fn)],
    });
    this.alertsTopic.addSubscription(new subs.LambdaSubscription(this.alertNotifier.fn));
    this.budgetTopic.addSubscription(new subs.LambdaSubscription(this.alertNotifier.fn));

    // Billing reconciliation (lambda/handlers/reconcile.ts): yesterday's ledger vs the providers' cost reports.
    this.reconcile = new TollgateFunction(this, 'BillingReconcile', {
      entry: 'lambda/handlers/reconcile.ts',
      description: "Compares the ledger's daily spend per provider and model with the providers' cost reports",
      timeout: Duration.minutes(5),
      logRetentionDays: config.logRetentionDays,
      environment: {
        TOLLGATE_STAGE: config.stage,
        ...data.tableEnvironment,
        TOLLGATE_SSM_PREFIX: secretsPrefix(config.stage),
        TOLLGATE_BEDROCK: String(config.gateway.bedrock),
        TOLLGATE_RECONCILE_ALARM_USD: String(config.gateway.billingDriftAlarmUsd),
        ...(config.gateway.openaiBaseUrl ? { OPENAI_BASE_URL: config.gateway.openaiBaseUrl } : {}),
        ...(config.gateway.anthropicBaseUrl ? { ANTHROPIC_BASE_URL: config.gateway.anthropicBaseUrl } : {}),
      },
    });
    // Reads a day of usage records; writes one drift row per provider and model and reads them back.
    data.grantTables(this.reconcile.fn, { usage: ['Query'], reconcile: ['Query', 'PutItem'] });
    data.grantSecrets(this.reconcile.fn, RECONCILE_SECRET_NAMES);
    if (config.gateway.bedrock) {
      // Cost Explorer has no resource-level permissions.
      this.reconcile.fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['ce:GetCostAndUsage'], resources: ['*'] }));
    }
    new events.Rule(this, 'ReconcileBillingDaily', {
      description: "Reconciles yesterday's ledger with the providers' billing",
      // 06:00 UTC: the providers' reports for the previous UTC day are complete by then.
      schedule: events.Schedule.cron({ minute: '0', hour: '6' }),
      targets: [new targets.LambdaFunction(this.reconcile.fn)],
    });
  }

  /** Publishing to the encrypted topics: the topic key, only through SNS. */
  private grantTopicKeyForPublish(grantee: iam.IGrantable): void {
    grantee.grantPrincipal.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['kms:GenerateDataKey', 'kms:Decrypt'],
        resources: [this.topicKey.keyArn],
        conditions: { StringEquals: { 'kms:ViaService': `sns.${this.region}.amazonaws.com` } },
      }),
    );
  }
}
