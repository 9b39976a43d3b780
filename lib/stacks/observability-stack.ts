import { Duration, Stack, type StackProps } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type { Construct } from 'constructs';
import {
  baseDimensions,
  DIMENSIONS,
  ERROR_CLASSES,
  GATEWAY_SERVICE,
  GUARDRAIL_METRICS,
  GUARDRAILS_SERVICE,
  METRICS_NAMESPACE,
  REFUSAL_METRICS,
  REQUEST_METRICS,
  RECONCILE_SERVICE,
  SPEND_METRICS,
} from '../../lambda/observability/metric-names';
import { REFUSAL_REASONS } from '../../lambda/observability/refusals';
import { REQUEST_LOG_MESSAGE } from '../../lambda/observability/request-log';
import { resourceName, type DeploymentConfig } from '../config';
import { Monitoring, type MonitoredMetric } from '../constructs/monitoring';
import type { TollgateFunction } from '../constructs/tollgate-function';
import { AGENT_RUN_TIMEOUT, type AgentStack } from './agent-stack';
import type { DataStack } from './data-stack';
import type { GatewayStack } from './gateway-stack';
import { KILL_SWITCH_HEARTBEAT, type GuardrailsStack } from './guardrails-stack';

export interface ObservabilityStackProps extends StackProps {
  readonly config: DeploymentConfig;
  readonly data: DataStack;
  readonly gateway: GatewayStack;
  readonly agent: AgentStack;
  readonly guardrails: GuardrailsStack;
}

/** WAF blocks in 5 minutes that suggest an attack or a misconfigured client rather than background noise. */
const WAF_BLOCKED_ALARM = 500;
/** Gateway 5xx responses in 5 minutes before someone should look. */
const API_5XX_ALARM = 5;
/** Percentage of requests answered with 5xx in 5 minutes (of at least {@link API_5XX_RATE_MIN_REQUESTS}). */
const API_5XX_RATE_ALARM_PERCENT = 5;
/** Below this many requests in 5 minutes the 5xx rate is noise (one failure of two requests is 50 %). */
const API_5XX_RATE_MIN_REQUESTS = 20;
/** Standard deviations of the cost-per-hour anomaly band. */
const COST_ANOMALY_STD_DEVS = 2;
/** The sweeper and alert dispatcher run every minute: this long without an invocation means they stopped. */
const EVERY_MINUTE_SILENCE = Duration.minutes(10);
/** A run waiting this long means no worker takes runs (a run takes at most AGENT_RUN_TIMEOUT once started). */
const AGENT_QUEUE_STALLED = AGENT_RUN_TIMEOUT.plus(Duration.minutes(20));
/** How many users / keys the top-spenders tables show. */
const TOP_N = 10;
/** What the circuit alarm means and what to do (alarm descriptions are capped at 1,024 characters). */
export const CIRCUIT_ALARM_DESCRIPTION =
  'A spend circuit opened, for any reason (metric CircuitOpened; its Reason dimension says which: breaker = hourly spend ' +
  'limit or a request billed past its reservation, velocity = spend velocity over its ceiling, escalation = a second ' +
  'velocity trip or 200 % of a daily limit, kill-switch = the AWS budget or ledger kill switch). Every request of that ' +
  'scope (key, user, org or platform) gets 429 circuit_open until it closes or an operator resets it: ' +
  'npm run admin -- --aws circuits list, then circuits reset SCOPE --ack "why".';

/**
 * One dashboard and the alarms, all notifying the alerts topic: infrastructure health (API Gateway, Lambda,
 * DynamoDB, WAF, ECS), the business view from the gateway's own metrics (cost per hour and by model, tokens,
 * requests, error rate by class, latency, guardrail events; see lambda/observability/metric-names.ts), Logs
 * Insights tables of the top users and keys by cost and the tightest budgets, and the alarm status.
 * It is deployed last because it only reads the other stacks' resource names.
 */
export class ObservabilityStack extends Stack {
  readonly monitoring: Monitoring;

  constructor(scope: Construct, id: string, props: ObservabilityStackProps) {
    super(scope, id, props);
    const { config, data, gateway, agent, guardrails } = props;

    this.monitoring = new Monitoring(this, 'Monitoring', {
      dashboardName: resourceName(config, 'dashboard'),
      alarmNamePrefix: `${resourceName(config, '')}`,
      alarmTopic: guardrails.alertsTopic,
    });

    const api = gateway.api;
    this.monitoring.addSection('API', [
      {
        id: 'api-5xx',
        title: 'API 5xx',
        metrics: [api.metricServerError({ statistic: 'Sum' })],
        alarm: { threshold: API_5XX_ALARM, description: `The gateway answered ${API_5XX_ALARM} or more 5xx responses in 5 minutes.` },
      },
      { id: 'api-4xx', title: 'API 4xx', metrics: [api.metricClientError({ statistic: 'Sum' })] },
      { id: 'api-latency', title: 'API latency p99 (ms)', metrics: [api.metricLatency({ statistic: 'p99' })] },
    ]);

    // Throttles alarm where a throttled invocation loses service or money (the request path, the sweeper, the
    // kill switch). The notifier is retried by SNS, the dispatcher has a heartbeat alarm, and the daily reconcile
    // runs once: their throttles are charted, not alarmed (each alarm metric is $0.10/month).
    const functions: ReadonlyArray<readonly [string, TollgateFunction, { readonly throttleAlarm: boolean }]> = [
      ['gateway', gateway.gateway, { throttleAlarm: true }],
      ['sweeper', gateway.sweeper, { throttleAlarm: true }],
      ['kill-switch', guardrails.killSwitch, { throttleAlarm: true }],
      ['alert-notifier', guardrails.alertNotifier, { throttleAlarm: false }],
      ['alert-dispatcher', guardrails.alertDispatcher, { throttleAlarm: false }],
      ['billing-reconcile', guardrails.reconcile, { throttleAlarm: false }],
    ];
    this.monitoring.addSection(
      'Lambda',
      functions.flatMap(([name, f, { throttleAlarm }]): MonitoredMetric[] => [
        {
          id: `${name}-errors`,
          title: `${name} errors`,
          metrics: [f.fn.metricErrors({ statistic: 'Sum' })],
          alarm: { threshold: 1, description: `The ${name} function failed at least once in 5 minutes.` },
        },
        {
          id: `${name}-throttles`,
          title: `${name} throttles`,
          metrics: [f.fn.metricThrottles({ statistic: 'Sum' })],
          ...(throttleAlarm
            ? { alarm: { threshold: 1, description: `The ${name} function was throttled (account or reserved concurrency exhausted).` } }
            : {}),
        },
      ]),
    );
    this.monitoring.addSection('Gateway function', [
      { id: 'gateway-duration', title: 'gateway duration p99 (ms)', metrics: [gateway.gateway.fn.metricDuration({ statistic: 'p99' })] },
      {
        id: 'gateway-concurrency',
        title: 'gateway concurrent executions',
        metrics: [gateway.gateway.fn.metric('ConcurrentExecutions', { statistic: 'Maximum' })],
      },
    ]);

    this.monitoring.addSection(
      'DynamoDB',
      Object.entries(data.tables).map(([name, table]): MonitoredMetric => ({
        id: `${name}-table-throttles`,
        title: `${name} table throttled requests`,
        metrics: [
          new cloudwatch.MathExpression({
            expression: 'reads + writes',
            label: `${name} throttle events`,
            usingMetrics: {
              reads: table.metric('ReadThrottleEvents', { statistic: 'Sum' }),
              writes: table.metric('WriteThrottleEvents', { statistic: 'Sum' }),
            },
          }),
        ],
        alarm: { threshold: 1, description: `Requests to the ${name} table were throttled; on-demand capacity is ramping or a key is hot.` },
      })),
    );

    this.monitoring.addSection('Edge and agents', [
      {
        id: 'waf-blocked',
        title: 'WAF blocked requests',
        metrics: [
          new cloudwatch.Metric({
            namespace: 'AWS/WAFV2',
            metricName: 'BlockedRequests',
            dimensionsMap: { WebACL: gateway.webAcl.name ?? resourceName(config, 'web-acl'), Region: this.region, Rule: 'ALL' },
            statistic: 'Sum',
          }),
        ],
        alarm: { threshold: WAF_BLOCKED_ALARM, description: `WAF blocked ${WAF_BLOCKED_ALARM} or more requests in 5 minutes (rate limit, geo block or managed rules).` },
      },
      { id: 'agent-cpu', title: 'agent CPU %', metrics: [agent.service.metricCpuUtilization()] },
      { id: 'agent-memory', title: 'agent memory %', metrics: [agent.service.metricMemoryUtilization()] },
      {
        id: 'agent-dead-letters',
        title: 'agent runs in the dead-letter queue',
        metrics: [agent.deadLetterQueue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum' })],
        alarm: { threshold: 1, description: 'An agent run failed every delivery attempt and sits in the dead-letter queue.' },
      },
    ]);

    this.addHeartbeats(gateway, agent, guardrails);
    this.addBusiness(config, gateway);

    this.monitoring.addAlarmStatus();
  }

  /**
   * Silence alarms: the sweeper, the alert dispatcher and the kill switch run on schedules (the kill switch gets
   * a heartbeat it ignores), so no invocation in a while means they are broken, and missing data breaches. The
   * agent queue is idle most of the time (and SQS stops reporting an idle queue), so its heartbeat is the age of
   * the oldest run instead: a run that waits longer than any run takes means no worker is taking runs.
   */
  private addHeartbeats(gateway: GatewayStack, agent: AgentStack, guardrails: GuardrailsStack): void {
    const silence = (name: string, f: TollgateFunction, period: Duration): MonitoredMetric => ({
      id: `${name}-heartbeat`,
      title: `${name} invocations`,
      metrics: [f.fn.metricInvocations({ statistic: 'Sum' })],
      period,
      alarm: {
        threshold: 1,
        comparison: cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
        treatMissingData: cloudwatch.TreatMissingData.BREACHING,
        description: `The ${name} function was not invoked for ${period.toHumanString()}: its schedule or the function is broken.`,
      },
    });
    this.monitoring.addSection('Heartbeats', [
      silence('sweeper', gateway.sweeper, EVERY_MINUTE_SILENCE),
      silence('alert-dispatcher', guardrails.alertDispatcher, EVERY_MINUTE_SILENCE),
      silence('kill-switch', guardrails.killSwitch, KILL_SWITCH_HEARTBEAT.plus(KILL_SWITCH_HEARTBEAT).plus(KILL_SWITCH_HEARTBEAT)),
      {
        id: 'kill-switch-dead-letters',
        title: 'kill-switch notifications in the dead-letter queue',
        metrics: [guardrails.killSwitchDeadLetterQueue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum' })],
        alarm: { threshold: 1, description: 'A budget notification failed every kill-switch attempt: check the budget and suspend keys by hand if needed.' },
      },
      {
        id: 'agent-queue-stalled',
        title: 'agent run queue: oldest run (s)',
        metrics: [agent.queue.metricApproximateAgeOfOldestMessage({ statistic: 'Maximum' })],
        alarm: {
          threshold: AGENT_QUEUE_STALLED.toSeconds(),
          description: `An agent run has waited ${AGENT_QUEUE_STALLED.toMinutes()} minutes: no agent task is taking runs (scaling, image or task start broken).`,
        },
      },
    ]);
  }

  /** Cost, tokens, requests, errors and guardrail events from the gateway's EMF metrics, and the log queries. */
  private addBusiness(config: DeploymentConfig, gateway: GatewayStack): void {
    const dims = baseDimensions(GATEWAY_SERVICE, config.stage);
    const gw = (metricName: string, statistic: string, label?: string) =>
      new cloudwatch.Metric({ namespace: METRICS_NAMESPACE, metricName, dimensionsMap: dims, statistic, ...(label ? { label } : {}) });
    const errorsByClass = Object.fromEntries(
      ERROR_CLASSES.map((c) => [
        `e_${c}`,
        new cloudwatch.Metric({
          namespace: METRICS_NAMESPACE,
          metricName: REQUEST_METRICS.errorCount,
          dimensionsMap: { ...dims, [DIMENSIONS.errorClass]: c },
          statistic: 'Sum',
          label: c,
        }),
      ]),
    );
    const perModel = (metricName: string, statistic: string, period: Duration) =>
      new cloudwatch.MathExpression({
        expression:
          `SEARCH('{${METRICS_NAMESPACE},${DIMENSIONS.service},${DIMENSIONS.stage},${DIMENSIONS.provider},${DIMENSIONS.model}} ` +
          `MetricName="${metricName}" ${DIMENSIONS.service}="${GATEWAY_SERVICE}" ${DIMENSIONS.stage}="${config.stage}"', '${statistic}', ${period.toSeconds()})`,
        label: '',
        period,
      });
    const hour = Duration.hours(1);
    const day = Duration.days(1);

    this.monitoring.addSection('Spend', [
      {
        id: 'cost-per-hour-anomaly',
        title: 'Cost per hour (USD)',
        metrics: [gw(REQUEST_METRICS.costUsd, 'Sum', 'cost USD')],
        period: hour,
        alarm: {
          kind: 'anomaly',
          stdDevs: COST_ANOMALY_STD_DEVS,
          evaluationPeriods: 2,
          description: `Gateway spend per hour rose above its expected band (${COST_ANOMALY_STD_DEVS} standard deviations) for two hours running.`,
        },
      },
      {
        id: 'daily-cost',
        title: 'Cost per day (USD)',
        metrics: [gw(REQUEST_METRICS.costUsd, 'Sum', 'cost USD')],
        period: day,
        alarm: {
          threshold: config.alerts.dailyCostUsd,
          description: `Gateway spend reached $${config.alerts.dailyCostUsd} in a day (tollgate.alerts.dailyCostUsd).`,
        },
      },
      { id: 'cost-by-model', title: 'Cost by model per hour (USD)', metrics: [perModel(REQUEST_METRICS.costUsd, 'Sum', hour)], period: hour, stacked: true },
    ]);

    this.monitoring.addSection('Traffic', [
      {
        id: 'tokens',
        title: 'Tokens',
        metrics: [
          gw(REQUEST_METRICS.tokensProcessed, 'Sum', 'total'),
          gw(REQUEST_METRICS.inputTokens, 'Sum', 'input'),
          gw(REQUEST_METRICS.outputTokens, 'Sum', 'output'),
          gw(REQUEST_METRICS.cachedInputTokens, 'Sum', 'cached input'),
        ],
      },
      { id: 'requests', title: 'Requests', metrics: [gw(REQUEST_METRICS.requestCount, 'Sum', 'requests')] },
      { id: 'requests-by-model', title: 'Requests by model', metrics: [perModel(REQUEST_METRICS.requestCount, 'Sum', Duration.minutes(5))], stacked: true },
      {
        id: 'error-rate',
        title: 'Error rate (%)',
        metrics: [
          new cloudwatch.MathExpression({
            expression: `100 * (${Object.keys(errorsByClass).map((id) => `FILL(${id}, 0)`).join(' + ')}) / requests`,
            label: 'errors %',
            usingMetrics: { ...errorsByClass, requests: gw(REQUEST_METRICS.requestCount, 'Sum') },
          }),
        ],
      },
      { id: 'errors-by-class', title: 'Errors by class', metrics: Object.values(errorsByClass), stacked: true },
      {
        id: 'gateway-latency',
        title: 'Latency p99 (ms)',
        metrics: [gw(REQUEST_METRICS.latency, 'p99', 'request'), gw(REQUEST_METRICS.upstreamLatency, 'p99', 'upstream')],
      },
    ]);

    // What the response cache, routing and fallback saved or rerouted, and what reconciliation found.
    const drift = new cloudwatch.MathExpression({
      expression:
        `SEARCH('{${METRICS_NAMESPACE},${DIMENSIONS.service},${DIMENSIONS.stage},${DIMENSIONS.provider}} ` +
        `MetricName="${SPEND_METRICS.billingDriftUsd}" ${DIMENSIONS.service}="${RECONCILE_SERVICE}" ${DIMENSIONS.stage}="${config.stage}"', 'Maximum', ${day.toSeconds()})`,
      label: '',
      period: day,
    });
    this.monitoring.addSection('Savings', [
      {
        id: 'cache-hits',
        title: 'Response cache hits and misses',
        metrics: [gw(SPEND_METRICS.cacheHits, 'Sum', 'hits'), gw(SPEND_METRICS.cacheMisses, 'Sum', 'misses')],
        period: hour,
      },
      { id: 'cache-saved', title: 'Saved by the response cache (USD)', metrics: [gw(SPEND_METRICS.cacheSavedUsd, 'Sum', 'saved USD')], period: hour },
      { id: 'fallbacks', title: 'Served by fallback or downgrade', metrics: [gw(SPEND_METRICS.fallbacks, 'Sum', 'fallbacks')], period: hour },
      { id: 'billing-drift-by-provider', title: 'Billing drift by provider (USD/day)', metrics: [drift], period: day },
      {
        id: 'billing-drift',
        title: 'Largest billing drift (USD/day)',
        metrics: [
          new cloudwatch.Metric({
            namespace: METRICS_NAMESPACE,
            metricName: SPEND_METRICS.billingDriftUsd,
            dimensionsMap: baseDimensions(RECONCILE_SERVICE, config.stage),
            statistic: 'Maximum',
            period: day,
          }),
        ],
        period: day,
        alarm: {
          threshold: config.gateway.billingDriftAlarmUsd,
          description: `A provider billed $${config.gateway.billingDriftAlarmUsd} more or less in a day than the ledger recorded (tollgate.gateway.billingDriftAlarmUsd).`,
        },
      },
    ]);

    const api = gateway.api;
    const guard = (metricName: string) =>
      new cloudwatch.Metric({
        namespace: METRICS_NAMESPACE,
        metricName,
        dimensionsMap: baseDimensions(GUARDRAILS_SERVICE, config.stage),
        statistic: 'Sum',
      });
    this.monitoring.addSection('Guardrails', [
      {
        id: 'api-5xx-rate',
        title: 'API 5xx rate (%)',
        metrics: [
          new cloudwatch.MathExpression({
            expression: `IF(requests >= ${API_5XX_RATE_MIN_REQUESTS}, 100 * errors / requests, 0)`,
            label: '5xx %',
            usingMetrics: { errors: api.metricServerError({ statistic: 'Sum' }), requests: api.metricCount({ statistic: 'Sum' }) },
          }),
        ],
        alarm: {
          threshold: API_5XX_RATE_ALARM_PERCENT,
          description: `${API_5XX_RATE_ALARM_PERCENT} % or more of the gateway's responses were 5xx in 5 minutes (with at least ${API_5XX_RATE_MIN_REQUESTS} requests).`,
        },
      },
      {
        id: 'kill-switch-activated',
        title: 'Kill switch activations',
        metrics: [guard(GUARDRAIL_METRICS.killSwitchActivated)],
        alarm: { threshold: 1, description: 'The kill switch suspended API keys because a budget threshold was crossed.' },
      },
      {
        id: 'circuit-opened',
        title: 'Circuits opened',
        metrics: [guard(GUARDRAIL_METRICS.circuitOpened)],
        alarm: { threshold: 1, description: CIRCUIT_ALARM_DESCRIPTION },
      },
      { id: 'alerts-sent', title: 'Alerts sent', metrics: [guard(GUARDRAIL_METRICS.alertSent)] },
    ]);

    // Refusals: what the gateway refused (its whole job), by reason, and the keys refused most.
    const refusedBy = (period: Duration) =>
      REFUSAL_REASONS.map(
        (reason) =>
          new cloudwatch.Metric({
            namespace: METRICS_NAMESPACE,
            metricName: REFUSAL_METRICS.refusals,
            dimensionsMap: { ...dims, [DIMENSIONS.reason]: reason },
            statistic: 'Sum',
            label: reason,
            period,
          }),
      );
    const refusedLines = [`filter message = "${REQUEST_LOG_MESSAGE}" and ispresent(refusalReason)`];
    this.monitoring.addWidgetRow('Refusals', [
      new cloudwatch.GraphWidget({
        title: 'Refused today by reason',
        left: refusedBy(day),
        view: cloudwatch.GraphWidgetView.BAR,
        period: day,
        statistic: 'Sum',
        start: '-PT24H',
        width: 8,
        height: 6,
      }),
      new cloudwatch.GraphWidget({ title: 'Refusals by reason (per 5 minutes)', left: refusedBy(Duration.minutes(5)), stacked: true, width: 8, height: 6 }),
      new cloudwatch.LogQueryWidget({
        title: `Top ${TOP_N} refused keys`,
        logGroupNames: [gateway.gateway.logGroup.logGroupName],
        queryLines: [...refusedLines, 'stats count(*) as refused by keyId, userId, orgId, refusalReason, refusalScope', 'sort refused desc', `limit ${TOP_N}`],
        view: cloudwatch.LogQueryVisualizationType.TABLE,
        width: 8,
        height: 6,
      }),
    ]);

    // LogQueryWidget joins the lines with "| ".
    const requests = [`filter message = "${REQUEST_LOG_MESSAGE}" and ispresent(costMicros)`];
    const topBy = (field: string) => [
      ...requests,
      `stats sum(costMicros) / 1000000 as costUsd, count(*) as requests, sum(inputTokens + outputTokens) as tokens by ${field}`,
      'sort costUsd desc',
      `limit ${TOP_N}`,
    ];
    this.monitoring.addQueries('Who spends', [
      { title: `Top ${TOP_N} users by cost (USD)`, logGroups: [gateway.gateway.logGroup], queryLines: topBy('userId') },
      { title: `Top ${TOP_N} keys by cost (USD)`, logGroups: [gateway.gateway.logGroup], queryLines: topBy('keyId, userId') },
      {
        title: 'Budget utilisation: tightest budgets (USD left, latest)',
        logGroups: [gateway.gateway.logGroup],
        queryLines: [
          `filter message = "${REQUEST_LOG_MESSAGE}" and ispresent(budgetRemainingMicros)`,
          'stats latest(budgetRemainingMicros) / 1000000 as remainingUsd, sum(costMicros) / 1000000 as spentInRangeUsd by budgetScope',
          'sort remainingUsd asc',
          `limit ${TOP_N}`,
        ],
      },
      {
        title: 'Errors by class and code',
        logGroups: [gateway.gateway.logGroup],
        queryLines: [
          `filter message = "${REQUEST_LOG_MESSAGE}" and ispresent(errorClass)`,
          'stats count(*) as requests by errorClass, errorCode, status',
          'sort requests desc',
          `limit ${TOP_N * 2}`,
        ],
      },
    ]);
  }
}
