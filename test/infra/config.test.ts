import { DEFAULT_CONFIG, DeploymentConfigError, resolveDeploymentConfig } from '../../lib/config';

describe('resolveDeploymentConfig', () => {
  it('when nothing is set, it returns the defaults (geo list CN/RU, 1,000 per 5 min, 1 NAT, 50/80/100 %)', () => {
    const config = resolveDeploymentConfig(undefined);
    expect(config).toEqual(DEFAULT_CONFIG);
    expect(config.waf.blockedCountries).toEqual(['CN', 'RU']);
    expect(config.waf.ratePerIpPer5Min).toBe(1000);
    expect(config.agent.natGateways).toBe(1);
    expect(config.budget.thresholdsPercent).toEqual([50, 80, 100]);
  });

  it('when the prod profile is chosen, it switches to NAT gateways, an always-on task, Container Insights and a required alert destination; explicit settings still win', () => {
    const prod = resolveDeploymentConfig({ profile: 'prod' });
    expect(prod.agent).toMatchObject({ nat: 'gateway', natGateways: 2, minTasks: 1, maxTasks: 2, containerInsights: true });
    expect(prod.alerts.requireDestination).toBe(true);
    expect(resolveDeploymentConfig({ profile: 'prod', agent: { natGateways: 1, minTasks: 0 } }).agent).toMatchObject({ nat: 'gateway', natGateways: 1, minTasks: 0 });
    expect(DEFAULT_CONFIG.agent).toMatchObject({ nat: 'instance', minTasks: 0, containerInsights: false });
  });

  it('when settings are given, they replace the defaults section by section', () => {
    const config = resolveDeploymentConfig({ stage: 'prod', waf: { blockedCountries: [] }, agent: { natGateways: 2 } });
    expect(config.stage).toBe('prod');
    expect(config.waf.blockedCountries).toEqual([]);
    expect(config.waf.ratePerIpPer5Min).toBe(1000);
    expect(config.agent).toEqual({ ...DEFAULT_CONFIG.agent, natGateways: 2 });
  });

  it('when the context arrives as a JSON string (-c tollgate=...), it is parsed', () => {
    expect(resolveDeploymentConfig('{"stage":"qa"}').stage).toBe('qa');
  });

  it('when the top-level stage context is set, it wins over tollgate.stage', () => {
    expect(resolveDeploymentConfig({ stage: 'qa' }, { stage: 'prod' }).stage).toBe('prod');
  });

  it('when a setting is bad, it throws a DeploymentConfigError', () => {
    expect(() => resolveDeploymentConfig({ stage: 'Prod' })).toThrow(DeploymentConfigError);
  });

  it.each<[string, unknown, string]>([
    ['not JSON', '{stage', 'tollgate: is not valid JSON'],
    ['not an object', [1], 'tollgate: must be an object'],
    ['an unknown top-level key', { wafRate: 5 }, 'tollgate.wafRate: is not a setting'],
    ['an unknown nested key', { waf: { rate: 5 } }, 'tollgate.waf.rate: is not a setting'],
    ['an upper-case stage', { stage: 'Prod' }, 'tollgate.stage: must be 1-20 lower-case'],
    ['a too long stage', { stage: 'a'.repeat(21) }, 'tollgate.stage:'],
    ['a made-up region', { region: 'moon-1' }, 'tollgate.region: must be an AWS region'],
    ['a zero budget', { budget: { monthlyUsd: 0 } }, 'tollgate.budget.monthlyUsd: must be a dollar amount'],
    ['a budget with fractions of a cent', { budget: { monthlyUsd: 10.001 } }, 'tollgate.budget.monthlyUsd:'],
    ['a budget given as text', { budget: { monthlyUsd: '100' } }, 'tollgate.budget.monthlyUsd:'],
    ['empty thresholds', { budget: { thresholdsPercent: [] } }, 'tollgate.budget.thresholdsPercent: must be 1 to 5 increasing'],
    ['unsorted thresholds', { budget: { thresholdsPercent: [80, 50] } }, 'tollgate.budget.thresholdsPercent:'],
    ['a negative threshold', { budget: { thresholdsPercent: [-5] } }, 'tollgate.budget.thresholdsPercent:'],
    ['a bad email', { alerts: { email: 'ops' } }, 'tollgate.alerts.email: must be an email address'],
    ['a negative daily cost', { alerts: { dailyCostUsd: -1 } }, 'tollgate.alerts.dailyCostUsd:'],
    ['a WAF rate below 10', { waf: { ratePerIpPer5Min: 5 } }, 'tollgate.waf.ratePerIpPer5Min: must be a whole number from 10'],
    ['a fractional WAF rate', { waf: { ratePerIpPer5Min: 100.5 } }, 'tollgate.waf.ratePerIpPer5Min:'],
    ['a country name instead of a code', { waf: { blockedCountries: ['Russia'] } }, 'tollgate.waf.blockedCountries: must be a list of two-letter'],
    ['a lower-case country code', { waf: { blockedCountries: ['cn'] } }, 'tollgate.waf.blockedCountries:'],
    ['duplicate countries', { waf: { blockedCountries: ['CN', 'CN'] } }, 'tollgate.waf.blockedCountries: has duplicates'],
    ['countries not in a list', { waf: { blockedCountries: 'CN' } }, 'tollgate.waf.blockedCountries: must be a list'],
    ['a bad count-only rule name', { waf: { commonRuleSetCountOnly: ['no spaces'] } }, 'tollgate.waf.commonRuleSetCountOnly:'],
    ['a zero API rate', { api: { throttleRatePerSecond: 0 } }, 'tollgate.api.throttleRatePerSecond:'],
    ['a huge API burst', { api: { throttleBurst: 1e9 } }, 'tollgate.api.throttleBurst:'],
    ['too little gateway memory', { gateway: { memoryMb: 64 } }, 'tollgate.gateway.memoryMb:'],
    ['a body limit over API Gateway\'s 10 MB', { gateway: { maxBodyBytes: 11 * 1024 * 1024 } }, 'tollgate.gateway.maxBodyBytes:'],
    ['too many platform shards', { gateway: { platformShards: 65 } }, 'tollgate.gateway.platformShards:'],
    ['an upstream timeout past the Lambda limit', { gateway: { upstreamTimeoutMs: 900_000 } }, 'tollgate.gateway.upstreamTimeoutMs:'],
    ['bedrock as text', { gateway: { bedrock: 'yes' } }, 'tollgate.gateway.bedrock: must be true or false'],
    ['an http base URL', { gateway: { openaiBaseUrl: 'http://example.com/v1' } }, 'tollgate.gateway.openaiBaseUrl: must be an https:// URL'],
    ['a base URL that is not a URL', { gateway: { anthropicBaseUrl: 'anthropic' } }, 'tollgate.gateway.anthropicBaseUrl:'],
    ['zero NAT gateways', { agent: { natGateways: 0 } }, 'tollgate.agent.natGateways: must be a whole number from 1 to 2'],
    ['three NAT gateways', { agent: { natGateways: 3 } }, 'tollgate.agent.natGateways:'],
    ['too many agent tasks', { agent: { maxTasks: 11 } }, 'tollgate.agent.maxTasks:'],
    ['fewer max than min tasks', { agent: { minTasks: 2, maxTasks: 1 } }, 'tollgate.agent.maxTasks: must be at least minTasks (2)'],
    ['the retired desiredCount', { agent: { desiredCount: 1 } }, 'tollgate.agent.desiredCount: is not a setting'],
    ['an unknown NAT kind', { agent: { nat: 'none' } }, 'tollgate.agent.nat: must be "instance" or "gateway"'],
    ['an unknown profile', { profile: 'staging' }, 'tollgate.profile: must be one of dev, prod'],
    ['six budget notifications', { budget: { thresholdsPercent: [20, 40, 60, 80], forecastThresholdsPercent: [90, 100] } }, 'tollgate.budget: AWS Budgets allows 5'],
    ['an operator that is not a role ARN', { admin: { operatorRoleArns: ['alice'] } }, 'tollgate.admin.operatorRoleArns: must be a list of IAM role ARNs'],
    ['a CPU size Fargate lacks', { agent: { cpu: 300 } }, 'tollgate.agent.cpu: must be one of'],
    ['memory that does not fit the CPU', { agent: { cpu: 256, memoryMb: 4096 } }, 'tollgate.agent.memoryMb: must be 512 to 2048'],
    ['a log retention CloudWatch lacks', { logRetentionDays: 31 }, 'tollgate.logRetentionDays: must be a CloudWatch retention'],
  ])('when it is given %s, it throws naming the setting', (_what, raw, message) => {
    expect(() => resolveDeploymentConfig(raw)).toThrow(message);
  });
});
