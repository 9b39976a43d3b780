import { App, Duration, Stack } from 'aws-cdk-lib';
import { REFUSAL_REASONS } from '../../lambda/observability/refusals';
import { Template } from 'aws-cdk-lib/assertions';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as sns from 'aws-cdk-lib/aws-sns';
import { Monitoring } from '../../lib/constructs/monitoring';
import { TABLES } from '../../lambda/store/dynamodb/schema';
import { synthApp, type SynthesizedApp } from './app-fixture';

let synth: SynthesizedApp;
let custom: SynthesizedApp;
beforeAll(() => {
  synth = synthApp();
  custom = synthApp({ stage: 'qa', alerts: { dailyCostUsd: 75 } });
});
afterAll(() => {
  synth.dispose();
  custom.dispose();
});

type Cfn = Record<string, unknown>;
interface Widget {
  readonly type: string;
  readonly properties: { title?: string; markdown?: string; metrics?: unknown[][]; query?: string; alarms?: unknown[] };
}

/** A token (Ref, ImportValue) as a readable placeholder, so the dashboard body parses as JSON. */
function placeholder(token: unknown): string {
  const t = token as Cfn;
  if (typeof t.Ref === 'string') return `<Ref:${t.Ref}>`;
  if (t['Fn::ImportValue']) return `<Import:${String(t['Fn::ImportValue']).replace(/^.*ExportsOutput(Ref|FnGetAtt)/, '').replace(/[0-9A-F]{8,}.*$/, '')}>`;
  if (t['Fn::GetAtt']) return `<GetAtt:${(t['Fn::GetAtt'] as string[]).join('.')}>`;
  return `<${JSON.stringify(t).replace(/"/g, "'")}>`;
}

function dashboardOf(app: SynthesizedApp): Widget[] {
  const dashboards = Object.values(app.templates.observability.findResources('AWS::CloudWatch::Dashboard'));
  expect(dashboards).toHaveLength(1);
  const body = (dashboards[0]!.Properties as { DashboardBody: Cfn }).DashboardBody;
  const parts = (body['Fn::Join'] as [string, unknown[]])[1];
  return (JSON.parse(parts.map((p) => (typeof p === 'string' ? p : placeholder(p))).join('')) as { widgets: Widget[] }).widgets;
}

/** One line per metric of a graph: `namespace metric dim=value… stat` or `= expression`. */
function describeMetric(row: unknown[]): string {
  const head = row[0];
  if (typeof head === 'object' && head !== null) return `= ${(head as { expression: string }).expression}`;
  const options = (typeof row[row.length - 1] === 'object' ? row[row.length - 1] : {}) as { stat?: string; period?: number; id?: string };
  const plain = row.filter((c): c is string => typeof c === 'string');
  const [ns, name, ...dims] = plain;
  const pairs: string[] = [];
  for (let i = 0; i < dims.length; i += 2) pairs.push(`${dims[i]}=${dims[i + 1]}`);
  return [ns, name, ...pairs, options.stat ?? 'Average', ...(options.period ? [`${options.period}s`] : [])].join(' ');
}

const GW = 'Stage=dev service=tollgate-gateway';
const GUARD = 'Stage=dev service=tollgate-guardrails';
const API = 'ApiName=tollgate-dev-api';
const fn = (name: string) => `FunctionName=<Import:${name}>`;
const table = (name: string) => `TableName=<Import:${name}>`;
const ECS = 'ClusterName=<Import:Cluster> ServiceName=<Import:Service>';
const errorsBy = (stat: string) =>
  ['auth', 'budget', 'rate_limit', 'loop', 'upstream', 'client', 'server'].map((c) => `Tollgate ErrorCount ErrorClass=${c} ${GW} ${stat}`);
const throttles = (t: string) => ['= reads + writes', `AWS/DynamoDB ReadThrottleEvents ${table(t)} Sum`, `AWS/DynamoDB WriteThrottleEvents ${table(t)} Sum`];
/** One throttle graph (and alarm) per table of lambda/store/dynamodb/schema.ts. */
const tableGraphs = Object.fromEntries(
  TABLES.map((def) => [`${def.id} table throttled requests`, throttles(`${def.id[0]!.toUpperCase()}${def.id.slice(1)}Table`)]),
);
const tableAlarms = Object.fromEntries(TABLES.map((def) => [`${def.id}-table-throttles`, '>= 1 x1']));

/** Every graph on the dashboard and exactly what it plots. */
const EXPECTED_GRAPHS: Record<string, string[]> = {
  'API 5xx': [`AWS/ApiGateway 5XXError ${API} Sum`],
  'API 4xx': [`AWS/ApiGateway 4XXError ${API} Sum`],
  'API latency p99 (ms)': [`AWS/ApiGateway Latency ${API} p99`],
  'gateway errors': [`AWS/Lambda Errors ${fn('GatewayFunction')} Sum`],
  'gateway throttles': [`AWS/Lambda Throttles ${fn('GatewayFunction')} Sum`],
  'sweeper errors': [`AWS/Lambda Errors ${fn('SweeperFunction')} Sum`],
  'sweeper throttles': [`AWS/Lambda Throttles ${fn('SweeperFunction')} Sum`],
  'kill-switch errors': [`AWS/Lambda Errors ${fn('KillSwitchFunction')} Sum`],
  'kill-switch throttles': [`AWS/Lambda Throttles ${fn('KillSwitchFunction')} Sum`],
  'alert-notifier errors': [`AWS/Lambda Errors ${fn('AlertNotifierFunction')} Sum`],
  'alert-notifier throttles': [`AWS/Lambda Throttles ${fn('AlertNotifierFunction')} Sum`],
  'alert-dispatcher errors': [`AWS/Lambda Errors ${fn('AlertDispatcherFunction')} Sum`],
  'alert-dispatcher throttles': [`AWS/Lambda Throttles ${fn('AlertDispatcherFunction')} Sum`],
  'billing-reconcile errors': [`AWS/Lambda Errors ${fn('BillingReconcileFunction')} Sum`],
  'billing-reconcile throttles': [`AWS/Lambda Throttles ${fn('BillingReconcileFunction')} Sum`],
  'gateway duration p99 (ms)': [`AWS/Lambda Duration ${fn('GatewayFunction')} p99`],
  'gateway concurrent executions': [`AWS/Lambda ConcurrentExecutions ${fn('GatewayFunction')} Maximum`],
  ...tableGraphs,
  'WAF blocked requests': ['AWS/WAFV2 BlockedRequests Region=<Ref:AWS::Region> Rule=ALL WebACL=tollgate-dev-web-acl Sum'],
  'agent CPU %': [`AWS/ECS CPUUtilization ${ECS} Average`],
  'agent memory %': [`AWS/ECS MemoryUtilization ${ECS} Average`],
  'agent runs in the dead-letter queue': ['AWS/SQS ApproximateNumberOfMessagesVisible QueueName=<Import:RunDeadLetterQueue> Maximum'],
  'sweeper invocations': [`AWS/Lambda Invocations ${fn('SweeperFunction')} Sum 600s`],
  'alert-dispatcher invocations': [`AWS/Lambda Invocations ${fn('AlertDispatcherFunction')} Sum 600s`],
  'kill-switch invocations': [`AWS/Lambda Invocations ${fn('KillSwitchFunction')} Sum 10800s`],
  'kill-switch notifications in the dead-letter queue': ['AWS/SQS ApproximateNumberOfMessagesVisible QueueName=<Import:KillSwitchDeadLetterQueue> Maximum'],
  'agent run queue: oldest run (s)': ['AWS/SQS ApproximateAgeOfOldestMessage QueueName=<Import:RunQueue> Maximum'],
  'Cost per hour (USD)': [`Tollgate CostUsd ${GW} Sum 3600s`],
  'Cost per day (USD)': [`Tollgate CostUsd ${GW} Sum 86400s`],
  'Cost by model per hour (USD)': [
    `= SEARCH('{Tollgate,service,Stage,Provider,Model} MetricName="CostUsd" service="tollgate-gateway" Stage="dev"', 'Sum', 3600)`,
  ],
  Tokens: [
    `Tollgate TokensProcessed ${GW} Sum`,
    `Tollgate InputTokens ${GW} Sum`,
    `Tollgate OutputTokens ${GW} Sum`,
    `Tollgate CachedInputTokens ${GW} Sum`,
  ],
  Requests: [`Tollgate RequestCount ${GW} Sum`],
  'Requests by model': [
    `= SEARCH('{Tollgate,service,Stage,Provider,Model} MetricName="RequestCount" service="tollgate-gateway" Stage="dev"', 'Sum', 300)`,
  ],
  'Error rate (%)': [
    '= 100 * (FILL(e_auth, 0) + FILL(e_budget, 0) + FILL(e_rate_limit, 0) + FILL(e_loop, 0) + FILL(e_upstream, 0) + FILL(e_client, 0) + FILL(e_server, 0)) / requests',
    ...errorsBy('Sum'),
    `Tollgate RequestCount ${GW} Sum`,
  ],
  'Errors by class': errorsBy('Sum'),
  'Latency p99 (ms)': [`Tollgate Latency ${GW} p99`, `Tollgate UpstreamLatency ${GW} p99`],
  'API 5xx rate (%)': ['= IF(requests >= 20, 100 * errors / requests, 0)', `AWS/ApiGateway 5XXError ${API} Sum`, `AWS/ApiGateway Count ${API} Sum`],
  'Kill switch activations': [`Tollgate KillSwitchActivated ${GUARD} Sum`],
  'Circuits opened': [`Tollgate CircuitOpened ${GUARD} Sum`],
  'Alerts sent': [`Tollgate AlertSent ${GUARD} Sum`],
  'Response cache hits and misses': [`Tollgate CacheHits ${GW} Sum 3600s`, `Tollgate CacheMisses ${GW} Sum 3600s`],
  'Saved by the response cache (USD)': [`Tollgate CacheSavedUsd ${GW} Sum 3600s`],
  'Served by fallback or downgrade': [`Tollgate Fallbacks ${GW} Sum 3600s`],
  'Billing drift by provider (USD/day)': [
    `= SEARCH('{Tollgate,service,Stage,Provider} MetricName="BillingDriftUsd" service="tollgate-reconcile" Stage="dev"', 'Maximum', 86400)`,
  ],
  'Largest billing drift (USD/day)': ['Tollgate BillingDriftUsd Stage=dev service=tollgate-reconcile Maximum 86400s'],
  'Refused today by reason': REFUSAL_REASONS.map((r) => `Tollgate Refusals Reason=${r} ${GW} Sum 86400s`),
  'Refusals by reason (per 5 minutes)': REFUSAL_REASONS.map((r) => `Tollgate Refusals Reason=${r} ${GW} Sum`),
};

describe('observability dashboard', () => {
  it('when the dashboard is synthesized, every graph plots exactly the expected metrics', () => {
    const graphs = dashboardOf(synth).filter((w) => w.type === 'metric');
    const actual = Object.fromEntries(graphs.map((w) => [w.properties.title!, w.properties.metrics!.map(describeMetric)]));
    expect(graphs).toHaveLength(Object.keys(actual).length); // titles are unique
    expect(actual).toEqual(EXPECTED_GRAPHS);
  });

  it('when the dashboard is synthesized, it has the infrastructure, business, guardrail and top-spender sections in order', () => {
    const headings = dashboardOf(synth)
      .filter((w) => w.type === 'text')
      .map((w) => w.properties.markdown);
    expect(headings).toEqual(['## API', '## Lambda', '## Gateway function', '## DynamoDB', '## Edge and agents', '## Heartbeats', '## Spend', '## Traffic', '## Savings', '## Guardrails', '## Refusals', '## Who spends']);
  });

  it('when the Logs Insights tables are synthesized, they read the gateway log group and rank users and keys by summed micro-USD cost', () => {
    const queries = Object.fromEntries(
      dashboardOf(synth)
        .filter((w) => w.type === 'log')
        .map((w) => [w.properties.title!, w.properties.query!]),
    );
    expect(Object.keys(queries)).toEqual([
      'Top 10 refused keys',
      'Top 10 users by cost (USD)',
      'Top 10 keys by cost (USD)',
      'Budget utilisation: tightest budgets (USD left, latest)',
      'Errors by class and code',
    ]);
    for (const query of Object.values(queries)) {
      expect(query.startsWith("SOURCE '<Import:GatewayLogs>' | filter message = \"request\"")).toBe(true);
      expect(query).not.toContain('| |');
    }
    expect(queries['Top 10 users by cost (USD)']).toContain('stats sum(costMicros) / 1000000 as costUsd, count(*) as requests, sum(inputTokens + outputTokens) as tokens by userId\n| sort costUsd desc\n| limit 10');
    expect(queries['Top 10 keys by cost (USD)']).toContain('by keyId, userId\n| sort costUsd desc\n| limit 10');
    expect(queries['Budget utilisation: tightest budgets (USD left, latest)']).toContain('latest(budgetRemainingMicros) / 1000000 as remainingUsd');
    expect(queries['Top 10 refused keys']).toContain('ispresent(refusalReason)\n| stats count(*) as refused by keyId, userId, orgId, refusalReason, refusalScope\n| sort refused desc\n| limit 10');
  });

  it('when the refusal widgets are synthesized, "refused today by reason" draws the day\'s sum of every reason as bars', () => {
    const widget = dashboardOf(synth).find((w) => w.properties.title === 'Refused today by reason') as unknown as { properties: { view: string; period: number; start: string } };
    expect([widget.properties.view, widget.properties.period, widget.properties.start]).toEqual(['bar', 86400, '-PT24H']);
  });

  it('when the dashboard is synthesized, one alarm status widget lists every alarm', () => {
    const status = dashboardOf(synth).filter((w) => w.type === 'alarm');
    expect(status).toHaveLength(1);
    const alarms = Object.keys(synth.templates.observability.findResources('AWS::CloudWatch::Alarm'));
    expect(status[0]!.properties.alarms).toHaveLength(alarms.length);
  });
});

interface AlarmProps {
  AlarmName: string;
  Threshold?: number;
  ThresholdMetricId?: string;
  ComparisonOperator: string;
  EvaluationPeriods: number;
  AlarmActions: unknown[];
  MetricName?: string;
  Period?: number;
  Metrics?: { Id: string; Expression?: string; MetricStat?: { Metric: { MetricName: string }; Period: number; Stat: string } }[];
}

function alarmsOf(app: SynthesizedApp): Record<string, AlarmProps> {
  return Object.fromEntries(
    Object.values(app.templates.observability.findResources('AWS::CloudWatch::Alarm')).map((r) => {
      const p = r.Properties as AlarmProps;
      return [p.AlarmName, p];
    }),
  );
}

/** Every alarm: its threshold (or anomaly band), comparison and evaluation periods. */
const EXPECTED_ALARMS: Record<string, string> = {
  'api-5xx': '>= 5 x1',
  'gateway-errors': '>= 1 x1',
  'gateway-throttles': '>= 1 x1',
  'sweeper-errors': '>= 1 x1',
  'sweeper-throttles': '>= 1 x1',
  'kill-switch-errors': '>= 1 x1',
  'kill-switch-throttles': '>= 1 x1',
  'alert-notifier-errors': '>= 1 x1',
  'alert-dispatcher-errors': '>= 1 x1',
  'billing-reconcile-errors': '>= 1 x1',
  ...tableAlarms,
  'waf-blocked': '>= 500 x1',
  'agent-dead-letters': '>= 1 x1',
  'sweeper-heartbeat': '< 1 x1',
  'alert-dispatcher-heartbeat': '< 1 x1',
  'kill-switch-heartbeat': '< 1 x1',
  'kill-switch-dead-letters': '>= 1 x1',
  'agent-queue-stalled': '>= 1800 x1',
  'cost-per-hour-anomaly': '> band(2) x2',
  'daily-cost': '>= 20 x1',
  'api-5xx-rate': '>= 5 x1',
  'kill-switch-activated': '>= 1 x1',
  'circuit-opened': '>= 1 x1',
  'billing-drift': '>= 5 x1',
};

function summarize(p: AlarmProps): string {
  const op = { GreaterThanOrEqualToThreshold: '>=', GreaterThanUpperThreshold: '>', LessThanThreshold: '<' }[p.ComparisonOperator] ?? p.ComparisonOperator;
  if (p.ThresholdMetricId) {
    const band = p.Metrics!.find((m) => m.Id === p.ThresholdMetricId)!.Expression!;
    return `${op} band(${/ANOMALY_DETECTION_BAND\(\w+, (\d+)\)/.exec(band)![1]}) x${p.EvaluationPeriods}`;
  }
  return `${op} ${p.Threshold} x${p.EvaluationPeriods}`;
}

describe('observability alarms', () => {
  it('when the alarms are synthesized, each has exactly its expected threshold, comparison and evaluation periods', () => {
    const actual = Object.fromEntries(Object.entries(alarmsOf(synth)).map(([name, p]) => [name.replace(/^tollgate-dev-/, ''), summarize(p)]));
    expect(actual).toEqual(EXPECTED_ALARMS);
  });

  it('when the alarms are synthesized, every one notifies the alerts topic and nothing else', () => {
    for (const [name, p] of Object.entries(alarmsOf(synth))) {
      expect([name, p.AlarmActions]).toEqual([name, [{ 'Fn::ImportValue': expect.stringMatching(/^Tollgate-dev-Guardrails:ExportsOutputRefAlertsTopic/) }]]);
    }
  });

  it('when the cost anomaly alarm is synthesized, it watches the hourly sum of CostUsd against a 2-deviation band for two periods', () => {
    const p = alarmsOf(synth)['tollgate-dev-cost-per-hour-anomaly']!;
    const stat = p.Metrics!.find((m) => m.MetricStat)!.MetricStat!;
    expect(stat).toMatchObject({ Metric: { Namespace: 'Tollgate', MetricName: 'CostUsd' }, Period: 3600, Stat: 'Sum' });
    expect(p).toMatchObject({ ComparisonOperator: 'GreaterThanUpperThreshold', EvaluationPeriods: 2 });
  });

  it('when alerts.dailyCostUsd and the stage are configured, the daily cost alarm takes its threshold and dimensions from them', () => {
    const p = alarmsOf(custom)['tollgate-qa-daily-cost']!;
    expect(p.Threshold).toBe(75);
    const stat = p.Metrics!.find((m) => m.MetricStat)!.MetricStat! as unknown as { Metric: { Dimensions: unknown[] }; Period: number; Stat: string };
    expect(stat).toMatchObject({ Period: 86_400, Stat: 'Sum' });
    expect(stat.Metric.Dimensions).toEqual(expect.arrayContaining([{ Name: 'Stage', Value: 'qa' }, { Name: 'service', Value: 'tollgate-gateway' }]));
  });

  it('when the kill switch and breaker alarms are synthesized, they watch the guardrail events the guardrails code emits', () => {
    const alarms = alarmsOf(synth);
    for (const [name, metric] of [['kill-switch-activated', 'KillSwitchActivated'], ['circuit-opened', 'CircuitOpened']] as const) {
      expect(alarms[`tollgate-dev-${name}`]).toMatchObject({ MetricName: metric, Period: 300 });
      synth.templates.observability.hasResourceProperties('AWS::CloudWatch::Alarm', {
        AlarmName: `tollgate-dev-${name}`,
        Namespace: 'Tollgate',
        Statistic: 'Sum',
        Dimensions: [{ Name: 'Stage', Value: 'dev' }, { Name: 'service', Value: 'tollgate-guardrails' }],
      });
    }
  });
});

describe('Monitoring construct', () => {
  function monitoring(): Monitoring {
    const stack = new Stack(new App(), 'Test');
    return new Monitoring(stack, 'M', { dashboardName: 'd', alarmNamePrefix: 'p-', alarmTopic: new sns.Topic(stack, 'T') });
  }
  const metric = (name: string) => new cloudwatch.Metric({ namespace: 'N', metricName: name, statistic: 'Sum' });

  it('when an alarmed graph plots two metrics, synth fails naming the graph', () => {
    expect(() =>
      monitoring().addSection('S', [{ id: 'two', title: 'two', metrics: [metric('a'), metric('b')], alarm: { threshold: 1, description: 'd' } }]),
    ).toThrow('Monitoring: "two" has an alarm, so its metrics must hold exactly one metric');
  });

  it('when an anomaly alarm has a non-positive band, synth fails naming alarm.stdDevs', () => {
    expect(() =>
      monitoring().addSection('S', [{ id: 'band', title: 'band', metrics: [metric('a')], alarm: { kind: 'anomaly', stdDevs: 0, description: 'd' } }]),
    ).toThrow('Monitoring: "band".alarm.stdDevs must be greater than 0, got 0');
  });

  it('when a graph sets its own period, its metric and alarm use it instead of the default', () => {
    const m = monitoring();
    m.addSection('S', [{ id: 'hourly', title: 'h', metrics: [metric('a')], period: Duration.hours(1), alarm: { threshold: 3, description: 'd' } }]);
    Template.fromStack(Stack.of(m)).hasResourceProperties('AWS::CloudWatch::Alarm', { AlarmName: 'p-hourly', Period: 3600, Threshold: 3 });
  });
});
