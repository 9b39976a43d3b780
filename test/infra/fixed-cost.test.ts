import { estimateFixedCost, US_EAST_1, type CfnTemplate, type CostEstimate } from '../../bench/fixed-cost';
import { synthApp } from './app-fixture';

function estimateFor(overrides: Record<string, unknown>): CostEstimate {
  const synth = synthApp(overrides);
  try {
    return estimateFixedCost(Object.values(synth.templates).map((t) => t.toJSON() as CfnTemplate));
  } finally {
    synth.dispose();
  }
}

function line(estimate: CostEstimate, item: string) {
  const found = estimate.lines.find((l) => l.item.startsWith(item));
  if (!found) throw new Error(`no line "${item}" in ${estimate.lines.map((l) => l.item).join(', ')}`);
  return found;
}

let defaults: CostEstimate;
let variant: CostEstimate;
beforeAll(() => {
  defaults = estimateFor({});
  variant = estimateFor({ agent: { nat: 'gateway', natGateways: 2, minTasks: 2, maxTasks: 3, containerInsights: true, cpu: 512, memoryMb: 1024 }, waf: { blockedCountries: [] } });
});

describe('fixed monthly cost', () => {
  it('when the default (dev) deployment is priced, each line comes from the resources in its templates', () => {
    expect(line(defaults, 'EC2 instance t4g.nano')).toMatchObject({ quantity: 1, monthly: 4_200 * 730 });
    expect(line(defaults, 'EBS gp3 root volume')).toMatchObject({ quantity: 8, monthly: 640_000 });
    expect(line(defaults, 'Public IPv4 address (NAT instance)')).toMatchObject({ quantity: 1, monthly: 5_000 * 730 });
    expect(defaults.lines.find((l) => l.item.startsWith('NAT gateway'))).toBeUndefined();
    expect(defaults.lines.find((l) => l.item.startsWith('Fargate'))).toBeUndefined();
    expect(defaults.lines.find((l) => l.item.startsWith('Container Insights'))).toBeUndefined();
    expect(line(defaults, 'WAF web ACLs')).toMatchObject({ quantity: 1, monthly: 5_000_000 });
    expect(line(defaults, 'WAF rules')).toMatchObject({ quantity: 6, monthly: 6_000_000 });
    expect(line(defaults, 'KMS customer-managed keys')).toMatchObject({ quantity: 2, monthly: 2_000_000 });
    expect(line(defaults, 'KMS key rotations')).toMatchObject({ quantity: 2, monthly: 2_000_000 });
    expect(line(defaults, 'CloudWatch dashboards')).toMatchObject({ quantity: 1, monthly: 3_000_000 });
    expect(line(defaults, 'CloudWatch log groups')).toMatchObject({ monthly: 0 });
    expect(line(defaults, 'AWS Budgets')).toMatchObject({ quantity: 1, monthly: 0 });
    expect(line(defaults, 'SSM SecureString')).toMatchObject({ quantity: 7, monthly: 0 });
  });

  it('when alarms watch metric math, each metric in the expression is billed', () => {
    // The observability alarms (anomaly ×3, math alarms per metric, 8 table alarms × 2, billing drift) and the
    // agent's two step-scaling alarms on visible + in-flight messages (2 × 2).
    expect(line(defaults, 'CloudWatch alarm metrics')).toMatchObject({ quantity: 46, monthly: 4_600_000 });
  });

  it('when the total is computed, it is the exact integer sum of the lines, at most $30 for dev', () => {
    expect(defaults.total).toBe(defaults.lines.reduce((s, l) => s + l.monthly, 0));
    expect(Number.isInteger(defaults.total)).toBe(true);
    expect(defaults.total).toBe(29_956_000);
    expect(defaults.total).toBeLessThanOrEqual(30_000_000);
  });

  it('when traffic flows, the active month adds the gateway metrics per provider × model', () => {
    expect(defaults.activeMonthLines.map((l) => [l.item, l.quantity])).toEqual([
      ['Gateway request metrics', 9],
      ['Gateway per-model metrics', 27],
      ['Gateway error metrics', 7],
      ['Guardrail event metrics', 3],
    ]);
    expect(defaults.activeMonthTotal).toBe(defaults.total + 46 * 300_000);
  });

  it('when the config uses NAT gateways, more tasks and Container Insights and drops the geo rule, the estimate follows the template', () => {
    expect(line(variant, 'NAT gateway hours').quantity).toBe(2);
    expect(line(variant, 'Public IPv4').quantity).toBe(2);
    expect(line(variant, 'WAF rules').quantity).toBe(5);
    expect(line(variant, 'Fargate tasks (ARM64)')).toMatchObject({ quantity: 2, monthly: Math.round(2 * (16_190 + 3_560) * 730) });
    expect(line(variant, 'Container Insights metrics')).toMatchObject({ quantity: 29, monthly: 29 * 300_000 });
  });

  it('when an alarm uses anomaly detection, it is billed as three metrics', () => {
    const template: CfnTemplate = {
      Resources: {
        A: {
          Type: 'AWS::CloudWatch::Alarm',
          Properties: { Metrics: [{ MetricStat: {} }, { Expression: 'ANOMALY_DETECTION_BAND(m1, 2)' }] },
        },
      },
    };
    expect(line(estimateFixedCost([template], US_EAST_1), 'CloudWatch alarm metrics')).toMatchObject({ quantity: 3, monthly: 300_000 });
  });
});
