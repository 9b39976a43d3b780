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
  variant = estimateFor({ agent: { natGateways: 2, desiredCount: 2, cpu: 512, memoryMb: 1024 }, waf: { blockedCountries: [] } });
});

describe('fixed monthly cost', () => {
  it('when the default deployment is priced, each line comes from the resources in its templates', () => {
    expect(line(defaults, 'NAT gateway hours')).toMatchObject({ quantity: 1, monthly: 45_000 * 730 });
    expect(line(defaults, 'Public IPv4')).toMatchObject({ quantity: 1, monthly: 5_000 * 730 });
    expect(line(defaults, 'WAF web ACLs')).toMatchObject({ quantity: 1, monthly: 5_000_000 });
    expect(line(defaults, 'WAF rules')).toMatchObject({ quantity: 4, monthly: 4_000_000 });
    expect(line(defaults, 'Fargate tasks (ARM64)')).toMatchObject({ quantity: 1, monthly: Math.round((8_095 + 1_780) * 730) });
    expect(line(defaults, 'KMS')).toMatchObject({ quantity: 2, monthly: 2_000_000 });
    expect(line(defaults, 'CloudWatch dashboards')).toMatchObject({ quantity: 1, monthly: 3_000_000 });
    expect(line(defaults, 'AWS Budgets')).toMatchObject({ quantity: 1, monthly: 0 });
    expect(line(defaults, 'SSM SecureString')).toMatchObject({ quantity: 7, monthly: 0 });
  });

  it('when alarms watch metric math, each metric in the expression is billed', () => {
    // 13 single-metric alarms (API 5xx, 5 functions × errors/throttles, WAF, agent dead letters) + 4 table alarms × 2 metrics
    // + observability: cost anomaly (3: metric + band), daily cost (1), API 5xx rate (2: 5xx + count),
    //   kill switch activated (1), circuit opened (1); and the runs and audit tables' throttle alarms (2 × 2).
    expect(line(defaults, 'CloudWatch alarm metrics')).toMatchObject({ quantity: 40, monthly: 4_000_000 });
  });

  it('when the total is computed, it is the exact integer sum of the lines', () => {
    expect(defaults.total).toBe(defaults.lines.reduce((s, l) => s + l.monthly, 0));
    expect(Number.isInteger(defaults.total)).toBe(true);
    expect(defaults.total).toBe(61_708_750);
  });

  it('when the config doubles NAT gateways and tasks and drops the geo rule, the estimate follows the template', () => {
    expect(line(variant, 'NAT gateway hours').quantity).toBe(2);
    expect(line(variant, 'Public IPv4').quantity).toBe(2);
    expect(line(variant, 'WAF rules').quantity).toBe(3);
    expect(line(variant, 'Fargate tasks (ARM64)')).toMatchObject({ quantity: 2, monthly: Math.round(2 * (16_190 + 3_560) * 730) });
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
