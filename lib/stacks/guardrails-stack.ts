import { Duration, RemovalPolicy, Stack, type StackProps } from 'aws-cdk-lib';
import * as budgets from 'aws-cdk-lib/aws-budgets';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as kms from 'aws-cdk-lib/aws-kms';
import * as sns from 'aws-cdk-lib/aws-sns';
import * as subs from 'aws-cdk-lib/aws-sns-subscriptions';
import type { Construct } from 'constructs';
import { RECONCILE_SECRET_NAMES, secretsPrefix } from '../../lambda/core/secrets';
import { resourceName, type DeploymentConfig } from '../config';
import { TollgateFunction } from '../constructs/tollgate-function';
import type { DataStack } from './data-stack';

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
    if (config.alerts.email) {
      this.alertsTopic.addSubscription(new subs.EmailSubscription(config.alerts.email));
    }

    this.budget = new budgets.CfnBudget(this, 'Budget', {
      budget: {
        budgetName: resourceName(config, 'monthly'),
        budgetType: 'COST',
        timeUnit: 'MONTHLY',
        budgetLimit: { amount: config.budget.monthlyUsd, unit: 'USD' },
      },
      notificationsWithSubscribers: config.budget.thresholdsPercent.map((threshold) => ({
        notification: {
          notificationType: 'ACTUAL',
          comparisonOperator: 'GREATER_THAN',
          threshold,
          thresholdType: 'PERCENTAGE',
        },
        subscribers: [{ subscriptionType: 'SNS', address: this.budgetTopic.topicArn }],
      })),
    });
    // Budgets checks that it may publish when the notification is created.
    if (budgetsMayPublish.policyDependable) this.budget.node.addDependency(budgetsMayPublish.policyDependable);
    this.budget.node.addDependency(this.topicKey);

    this.killSwitch = new TollgateFunction(this, 'KillSwitch', {
      entry: 'lambda/handlers/kill-switch.ts',
      description: 'Suspends API keys when the AWS budget crosses its threshold',
      timeout: Duration.minutes(5),
      logRetentionDays: config.logRetentionDays,
      environment: {
        TOLLGATE_STAGE: config.stage,
        ...data.tableEnvironment,
        TOLLGATE_ALERTS_TOPIC_ARN: this.alertsTopic.topicArn,
        TOLLGATE_BUDGET_NAME: resourceName(config, 'monthly'),
        TOLLGATE_ACCOUNT_ID: this.account,
      },
    });
    data.grantTables(this.killSwitch.fn, { keys: 'readWrite', budgets: 'readWrite' });
    // DescribeBudget verifies a notification against the budget's actual spend before anything is stopped.
    this.killSwitch.fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['budgets:ViewBudget'],
        resources: [`arn:${this.partition}:budgets::${this.account}:budget/${resourceName(config, 'monthly')}`],
      }),
    );
    // grantPublish would add kms:GenerateDataKey*; publishing to an encrypted topic needs exactly these two.
    this.killSwitch.fn.addToRolePolicy(
      new iam.PolicyStatement({ actions: ['sns:Publish'], resources: [this.alertsTopic.topicArn] }),
    );
    this.killSwitch.fn.addToRolePolicy(
      new iam.PolicyStatement({ actions: ['kms:GenerateDataKey', 'kms:Decrypt'], resources: [this.topicKey.keyArn] }),
    );
    this.budgetTopic.addSubscription(new subs.LambdaSubscription(this.killSwitch.fn));

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
    data.grantTables(this.alertDispatcher.fn, { budgets: 'readWrite' });
    for (const fn of [this.alertDispatcher.fn]) {
      fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['sns:Publish'], resources: [this.alertsTopic.topicArn] }));
      fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['kms:GenerateDataKey', 'kms:Decrypt'], resources: [this.topicKey.keyArn] }));
    }
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
    data.grantTables(this.reconcile.fn, { usage: 'read', reconcile: 'readWrite' });
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
}
