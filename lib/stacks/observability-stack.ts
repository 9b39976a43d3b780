import { Stack, type StackProps } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import type { Construct } from 'constructs';
import { resourceName, type DeploymentConfig } from '../config';
import { Monitoring, type MonitoredMetric } from '../constructs/monitoring';
import type { TollgateFunction } from '../constructs/tollgate-function';
import type { AgentStack } from './agent-stack';
import type { DataStack } from './data-stack';
import type { GatewayStack } from './gateway-stack';
import type { GuardrailsStack } from './guardrails-stack';

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

/**
 * One dashboard and the alarms, all notifying the alerts topic. This is the infrastructure-health skeleton;
 * the business metrics of the observability issue are added as further {@link Monitoring.addSection} calls.
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

    const functions: ReadonlyArray<readonly [string, TollgateFunction]> = [
      ['gateway', gateway.gateway],
      ['sweeper', gateway.sweeper],
      ['kill-switch', guardrails.killSwitch],
      ['alert-notifier', guardrails.alertNotifier],
    ];
    this.monitoring.addSection(
      'Lambda',
      functions.flatMap(([name, f]): MonitoredMetric[] => [
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
          alarm: { threshold: 1, description: `The ${name} function was throttled (account or reserved concurrency exhausted).` },
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
    ]);

    this.monitoring.addAlarmStatus();
  }
}
