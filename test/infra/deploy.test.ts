/**
 * Issue 13 on the synthesized templates: a fresh-account deploy (generated secrets, nothing waits on what does not
 * exist), alarms that reach people, a WAF that lets prompts through, a budget that sees this deployment, least
 * privilege, the two cost profiles, and cfn-lint over every template. Two apps are synthesized for the whole file:
 * the default (`dev`) and `prod` with an email destination and named operator roles.
 */
import { Annotations, Match, type Template } from 'aws-cdk-lib/assertions';
import { estimateFixedCost, type CfnTemplate } from '../../bench/fixed-cost';
import { DeploymentConfigError, MAX_BUDGET_NOTIFICATIONS, resolveDeploymentConfig } from '../../lib/config';
import { BODY_FINDINGS_RULE, BODY_INSPECTING_RULES, MANAGED_BLOCKING_RULES, WAF_RATE_RETRY_AFTER_SECONDS, WAF_REDACTED_HEADERS, WAF_RESPONSE_BODIES } from '../../lib/constructs/gateway-waf';
import { CUSTOM_RESOURCE_TIMEOUT } from '../../lib/stacks/data-stack';
import { NO_ALERT_DESTINATION } from '../../lib/stacks/guardrails-stack';
import { synthApp, type SynthesizedApp } from './app-fixture';
import { cfnLint } from './cfn-lint';
import { chatBody, LEGITIMATE_PROMPTS } from './waf-corpus';
import { evaluateWebAcl, matchesStatement } from './waf-evaluator';

const OPERATOR = 'arn:aws:iam::123456789012:role/platform-admin';
/** Two full synths, or cfn-lint over ten templates, on a loaded 2-core box: a bound that only catches a hang. */
const HANG = 900_000;

let dev: SynthesizedApp;
let prod: SynthesizedApp;
/** Dev with Bedrock on, other ACTUAL thresholds and a 90-day log retention. */
let variant: SynthesizedApp;
beforeAll(() => {
  dev = synthApp();
  prod = synthApp({ profile: 'prod', alerts: { email: 'ops@example.com' }, admin: { operatorRoleArns: [OPERATOR] }, waf: { rateScope: 'all', ratePerIpPer5Min: 20_000 } });
  variant = synthApp({ gateway: { bedrock: true }, budget: { thresholdsPercent: [60, 90, 100] }, logRetentionDays: 90 });
}, HANG);
afterAll(() => {
  dev.dispose();
  prod.dispose();
  variant.dispose();
});

type Resource = { Type: string; Properties?: Record<string, unknown>; [k: string]: unknown };
type PolicyStatement = { Effect?: string; Action: string | string[]; Resource?: unknown; Condition?: Record<string, Record<string, unknown>> };

function resources(template: Template, type?: string): Record<string, Resource> {
  const all = template.toJSON().Resources as Record<string, Resource>;
  return Object.fromEntries(Object.entries(all).filter(([, r]) => !type || r.Type === type));
}

type BudgetProps = {
  Budget: { BudgetName: string; FilterExpression: unknown };
  NotificationsWithSubscribers: Array<{ Notification: { NotificationType: string; Threshold: number } }>;
};

function budgetOf(app: SynthesizedApp): BudgetProps {
  const all = Object.values(resources(app.templates.guardrails, 'AWS::Budgets::Budget'));
  expect(all).toHaveLength(1);
  return all[0].Properties as BudgetProps;
}

function allTemplates(app: SynthesizedApp): Template[] {
  return Object.values(app.templates);
}

function statements(app: SynthesizedApp): PolicyStatement[] {
  return allTemplates(app).flatMap((t) =>
    Object.values(resources(t, 'AWS::IAM::Policy')).flatMap((p) => (p.Properties as { PolicyDocument: { Statement: PolicyStatement[] } }).PolicyDocument.Statement),
  );
}

function actions(s: PolicyStatement): string[] {
  return ([] as string[]).concat(s.Action);
}

function logicalId(app: SynthesizedApp, stack: keyof SynthesizedApp['stacks'], construct: { node: { defaultChild?: unknown } }): string {
  const s = app.stacks[stack];
  return s.getLogicalId((construct.node.defaultChild ?? construct) as never);
}

describe('fresh-account deploy', () => {
  it('when the data stack deploys, a custom resource creates the key pepper and JWT secret as SecureStrings with the data key, and no value is in the template', () => {
    const generated = Object.values(resources(dev.templates.data, 'Custom::TollgateGeneratedSecret'));
    expect(generated.map((g) => g.Properties?.ParameterName).sort()).toEqual(['/tollgate/dev/jwt-secret', '/tollgate/dev/key-pepper']);
    const keyId = logicalId(dev, 'data', dev.stacks.data.key);
    for (const g of generated) {
      expect(Object.keys(g.Properties ?? {}).sort()).toEqual(['KeyAlias', 'KeyId', 'Kind', 'ParameterName', 'RemoveOnDelete', 'ServiceTimeout', 'ServiceToken']);
      expect(g.Properties?.KeyAlias).toBe('alias/tollgate-dev-data');
      expect(g.Properties?.KeyId).toEqual({ 'Fn::GetAtt': [keyId, 'Arn'] });
      expect(g.Properties?.RemoveOnDelete).toBe('false');
    }
    for (const t of allTemplates(dev)) {
      expect(JSON.stringify(t.toJSON().Outputs ?? {})).not.toMatch(/pepper|jwt-secret/i);
      expect(resources(t, 'AWS::SSM::Parameter')).not.toEqual(expect.objectContaining({ Type: 'SecureString' }));
    }
  });

  it('when the secret generator is granted, it may only write, read and tag the two generated names, encrypt with the data key and decrypt them (to re-encrypt) through SSM', () => {
    const fnRole = logicalId(dev, 'data', dev.stacks.data.secretGenerator.fn.role as never);
    const policy = Object.values(resources(dev.templates.data, 'AWS::IAM::Policy')).find((p) => JSON.stringify(p.Properties?.Roles).includes(fnRole));
    const stmts = (policy?.Properties as { PolicyDocument: { Statement: PolicyStatement[] } }).PolicyDocument.Statement;
    const ssm = stmts.filter((s) => actions(s).some((a) => a.startsWith('ssm:')));
    const onNames = ssm.find((s) => actions(s).includes('ssm:PutParameter'));
    expect(actions(onNames!).sort()).toEqual(['ssm:AddTagsToResource', 'ssm:GetParameter', 'ssm:ListTagsForResource', 'ssm:PutParameter']);
    expect(JSON.stringify(onNames!.Resource)).toMatch(/key-pepper.*jwt-secret|jwt-secret.*key-pepper/);
    // DescribeParameters has no resource-level permission; it returns metadata (type, key), never a value. CDK
    // merges it with the X-Ray actions of active tracing, which have none either.
    const describe = ssm.filter((s) => s !== onNames);
    expect(describe).toHaveLength(1);
    expect(describe[0].Resource).toBe('*');
    expect(actions(describe[0]).filter((a) => !a.startsWith('xray:'))).toEqual(['ssm:DescribeParameters']);
    const kms = stmts.find((s) => actions(s).includes('kms:Encrypt'));
    expect(kms?.Condition?.StringEquals).toEqual(expect.objectContaining({ 'kms:ViaService': expect.anything(), 'kms:EncryptionContext:PARAMETER_ARN': expect.any(Array) }));
    const decrypt = stmts.find((s) => actions(s).includes('kms:Decrypt'));
    expect(decrypt?.Condition?.StringEquals).toEqual(kms?.Condition?.StringEquals);
  });

  it('when secrets.removeOnDelete is not set, the generator cannot delete a parameter; the agent task only needs a generated secret from a stack it depends on', () => {
    expect(statements(dev).some((s) => actions(s).includes('ssm:DeleteParameter'))).toBe(false);
    const task = Object.values(resources(dev.templates.agent, 'AWS::ECS::TaskDefinition'))[0];
    const container = (task.Properties as { ContainerDefinitions: Array<{ Secrets?: unknown[]; Environment: Array<{ Name: string; Value: unknown }> }> }).ContainerDefinitions[0];
    // The task reads (and re-reads, after a rotation) the jwt-secret itself: no ECS secret read once at start.
    expect(container.Secrets).toBeUndefined();
    expect(container.Environment.find((e) => e.Name === 'TOLLGATE_JWT_SECRET_PARAMETER')?.Value).toBe('/tollgate/dev/jwt-secret');
    const taskRole = (task.Properties as { TaskRoleArn: { 'Fn::GetAtt': [string, string] } }).TaskRoleArn['Fn::GetAtt'][0];
    const taskPolicy = Object.values(resources(dev.templates.agent, 'AWS::IAM::Policy')).find((p) => JSON.stringify(p.Properties?.Roles).includes(taskRole));
    const reads = (taskPolicy?.Properties as { PolicyDocument: { Statement: PolicyStatement[] } }).PolicyDocument.Statement.filter((s) => actions(s).includes('ssm:GetParameter'));
    expect(reads).toHaveLength(1);
    expect(JSON.stringify(reads[0].Resource)).toContain('parameter/tollgate/dev/jwt-secret');
    expect(JSON.stringify(reads[0].Resource)).not.toContain('key-pepper');
    expect(dev.stacks.agent.dependencies).toContain(dev.stacks.data);
  });

  it('when provider keys are not set, no stack waits on them: nothing creates or resolves them at deploy (the gateway reads them at runtime)', () => {
    for (const t of allTemplates(dev)) {
      const json = JSON.stringify(t.toJSON());
      expect(json).not.toMatch(/resolve:ssm-secure/);
      expect(JSON.stringify(t.toJSON().Parameters ?? {})).not.toMatch(/api-key/);
    }
  });
});

describe('alarms reach people', () => {
  it('when CloudWatch publishes to the alerts topic, the policy allows it for this stage\'s alarms and this account only', () => {
    const topicId = logicalId(dev, 'guardrails', dev.stacks.guardrails.alertsTopic);
    dev.templates.guardrails.hasResourceProperties('AWS::SNS::TopicPolicy', {
      Topics: [{ Ref: topicId }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Allow',
            Principal: { Service: 'cloudwatch.amazonaws.com' },
            Action: 'sns:Publish',
            Condition: {
              StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } },
              ArnLike: { 'aws:SourceArn': { 'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp(':alarm:tollgate-dev-\\*$')])] } },
            },
          }),
        ]),
      },
    });
  });

  it('when an alarm notifies the alerts topic, its name is in the policy\'s scope and it also notifies on OK', () => {
    const notifying = allTemplates(dev).flatMap((t) => Object.values(resources(t, 'AWS::CloudWatch::Alarm'))).filter((a) => JSON.stringify(a.Properties?.AlarmActions ?? []).includes('AlertsTopic'));
    expect(notifying.length).toBeGreaterThan(25);
    for (const a of notifying) {
      expect(a.Properties?.AlarmName).toMatch(/^tollgate-dev-/);
      expect(a.Properties?.OKActions).toEqual(a.Properties?.AlarmActions);
    }
  });

  it('when no email or Slack is configured, synth warns loudly; with the prod profile it fails naming tollgate.alerts', () => {
    Annotations.fromStack(dev.stacks.guardrails).hasWarning('*', Match.stringLikeRegexp('no alert destination'));
    Annotations.fromStack(prod.stacks.guardrails).hasNoWarning('*', Match.stringLikeRegexp('no alert destination'));
    expect(() => synthApp({ profile: 'prod' })).toThrow(new DeploymentConfigError('tollgate.alerts', NO_ALERT_DESTINATION));
  });

  it.each([
    ['sweeper', 600],
    ['alert-dispatcher', 600],
    ['kill-switch', 10_800],
  ])('when the %s is silent, its heartbeat alarm fires: fewer than 1 invocation per period, missing data breaching', (name, period) => {
    dev.templates.observability.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: `tollgate-dev-${name}-heartbeat`,
      MetricName: 'Invocations',
      Namespace: 'AWS/Lambda',
      Period: period,
      Threshold: 1,
      ComparisonOperator: 'LessThanThreshold',
      TreatMissingData: 'breaching',
    });
  });

  it('when the kill switch is only called by budget notifications, an hourly heartbeat invokes it with an event it ignores', () => {
    const fnId = logicalId(dev, 'guardrails', dev.stacks.guardrails.killSwitch.fn);
    dev.templates.guardrails.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 hour)',
      Targets: [Match.objectLike({ Arn: { 'Fn::GetAtt': [fnId, 'Arn'] }, Input: Match.stringLikeRegexp('heartbeat') })],
    });
  });

  it('when agent runs wait longer than any run takes, the queue alarm fires; an idle queue (no data) is not an incident', () => {
    dev.templates.observability.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'tollgate-dev-agent-queue-stalled',
      MetricName: 'ApproximateAgeOfOldestMessage',
      Threshold: 1800,
      TreatMissingData: 'notBreaching',
    });
  });
});

describe('WAF lets prompts through', () => {
  const webAclOf = (app: SynthesizedApp) =>
    Object.values(resources(app.templates.gateway, 'AWS::WAFv2::WebACL'))[0].Properties as unknown as Parameters<typeof evaluateWebAcl>[0];

  it('when a managed group inspects bodies, each of its body rules only counts (and labels)', () => {
    const acl = webAclOf(dev) as unknown as { Rules: Array<{ Name: string; Statement: { ManagedRuleGroupStatement?: { Name: string; RuleActionOverrides: Array<{ Name: string; ActionToUse: object }> } } }> };
    for (const [group, { rules }] of Object.entries(BODY_INSPECTING_RULES)) {
      const rule = acl.Rules.find((r) => r.Statement.ManagedRuleGroupStatement?.Name === group);
      const counted = (rule?.Statement.ManagedRuleGroupStatement?.RuleActionOverrides ?? []).filter((o) => 'Count' in o.ActionToUse).map((o) => o.Name);
      expect(counted).toEqual(expect.arrayContaining([...rules]));
    }
  });

  it.each(LEGITIMATE_PROMPTS.map((p) => [p.name, p.prompt]))('when a prompt carries %s, it passes on /v1 and the same body is blocked on /admin', (_name, prompt) => {
    const body = chatBody(prompt);
    for (const uriPath of ['/dev/v1/chat/completions', '/v1/chat/completions', '/dev/v1/messages']) {
      expect(evaluateWebAcl(webAclOf(dev), { uriPath, body }, BODY_INSPECTING_RULES)).toEqual({ action: 'ALLOW' });
    }
    expect(evaluateWebAcl(webAclOf(dev), { uriPath: '/dev/admin/keys', body }, BODY_INSPECTING_RULES)).toEqual({ action: 'BLOCK', rule: BODY_FINDINGS_RULE });
  });

  it('when a path climbs out of /v1 (/dev/v1/../admin), the body findings still block it', () => {
    const body = chatBody('<script>alert(1)</script>');
    expect(evaluateWebAcl(webAclOf(dev), { uriPath: '/dev/v1/../admin/keys', body }, BODY_INSPECTING_RULES)).toEqual({ action: 'BLOCK', rule: BODY_FINDINGS_RULE });
  });

  it('when the body rules were left blocking, the corpus test would fail (the evaluator is not vacuous)', () => {
    const acl = JSON.parse(JSON.stringify(webAclOf(dev))) as { Rules: Array<{ Statement: { ManagedRuleGroupStatement?: { RuleActionOverrides?: unknown[] } } }> };
    for (const r of acl.Rules) if (r.Statement.ManagedRuleGroupStatement) r.Statement.ManagedRuleGroupStatement.RuleActionOverrides = [];
    const outcome = evaluateWebAcl(acl as never, { uriPath: '/dev/v1/chat/completions', body: chatBody(LEGITIMATE_PROMPTS[0].prompt) }, BODY_INSPECTING_RULES);
    expect(outcome.action).toBe('BLOCK');
  });

  it('when WAF blocks, it answers JSON in the OpenAI error shape: 429 with Retry-After for the rate rule, 403 for geo and body findings', () => {
    type Block = { CustomResponse?: { ResponseCode: number; CustomResponseBodyKey: string; ResponseHeaders?: Array<{ Name: string; Value: string }> } };
    const acl = webAclOf(dev) as unknown as {
      CustomResponseBodies: Record<string, { ContentType: string; Content: string }>;
      Rules: Array<{ Name: string; Action?: { Block?: Block } }>;
    };
    for (const [key, body] of Object.entries(acl.CustomResponseBodies)) {
      expect({ key, type: body.ContentType }).toEqual({ key, type: 'APPLICATION_JSON' });
      const parsed = JSON.parse(body.Content) as { error: Record<string, unknown> };
      expect(Object.keys(parsed)).toEqual(['error']);
      expect(parsed.error).toEqual({ message: expect.any(String), type: expect.any(String), param: null, code: expect.any(String) });
    }
    const answers = Object.fromEntries(
      acl.Rules.filter((r) => r.Action?.Block).map((r) => {
        const c = r.Action?.Block?.CustomResponse;
        expect({ rule: r.Name, body: c !== undefined && acl.CustomResponseBodies[c.CustomResponseBodyKey] !== undefined }).toEqual({ rule: r.Name, body: true });
        const headers = Object.fromEntries((c?.ResponseHeaders ?? []).map((h) => [h.Name, h.Value]));
        const code = (JSON.parse(acl.CustomResponseBodies[c!.CustomResponseBodyKey].Content) as { error: { code: string } }).error.code;
        return [r.Name, { status: c?.ResponseCode, code, headers }];
      }),
    );
    expect(answers).toEqual({
      GeoBlock: { status: 403, code: 'request_blocked', headers: { 'x-should-retry': 'false' } },
      RatePerIp: { status: 429, code: 'rate_limit_exceeded', headers: { 'Retry-After': String(WAF_RATE_RETRY_AFTER_SECONDS), 'x-should-retry': 'true' } },
      [BODY_FINDINGS_RULE]: { status: 403, code: 'request_blocked', headers: { 'x-should-retry': 'false' } },
    });
  });

  it('when a managed group\'s own rule blocks, it answers the same JSON 403 (x-should-retry: false); body rules still only count', () => {
    type Override = { Name: string; ActionToUse: { Count?: object; Block?: { CustomResponse?: { ResponseCode: number; CustomResponseBodyKey: string; ResponseHeaders?: Array<{ Name: string; Value: string }> } } } };
    const acl = webAclOf(dev) as unknown as { Rules: Array<{ Name: string; Statement: { ManagedRuleGroupStatement?: { Name: string; RuleActionOverrides: Override[] } } }> };
    let blocking = 0;
    for (const [group, rules] of Object.entries(MANAGED_BLOCKING_RULES)) {
      const overrides = acl.Rules.find((r) => r.Statement.ManagedRuleGroupStatement?.Name === group)!.Statement.ManagedRuleGroupStatement!.RuleActionOverrides;
      const counted = [...(BODY_INSPECTING_RULES[group]?.rules ?? []), ...(group === 'AWSManagedRulesCommonRuleSet' ? dev.config.waf.commonRuleSetCountOnly : [])];
      for (const name of rules) {
        const o = overrides.filter((x) => x.Name === name);
        expect({ group, name, overrides: o.length }).toEqual({ group, name, overrides: 1 });
        if (counted.includes(name)) {
          expect({ name, count: o[0]!.ActionToUse.Count }).toEqual({ name, count: {} });
          continue;
        }
        blocking++;
        expect({ name, answer: o[0]!.ActionToUse.Block?.CustomResponse }).toEqual({
          name,
          answer: { ResponseCode: 403, CustomResponseBodyKey: 'forbidden', ResponseHeaders: [{ Name: 'x-should-retry', Value: 'false' }] },
        });
      }
    }
    expect(blocking).toBeGreaterThanOrEqual(25);
    expect(WAF_RESPONSE_BODIES.forbidden.status).toBe(403);
  });

  it('when the rate rule counts, by default it leaves authenticated /v1 traffic (a NAT\'d backend) to the gateway\'s per-key limits; rateScope all counts everything', () => {
    type RateRule = { Name: string; Statement: { RateBasedStatement?: { Limit: number; ScopeDownStatement?: Record<string, unknown> } } };
    const rateOf = (app: SynthesizedApp) => (webAclOf(app) as unknown as { Rules: RateRule[] }).Rules.find((r) => r.Name === 'RatePerIp')!.Statement.RateBasedStatement!;
    const scope = rateOf(dev).ScopeDownStatement!;
    expect(dev.config.waf.rateScope).toBe('unauthenticated');
    const counted = (uriPath: string, headers: Record<string, string>) => matchesStatement(scope, { uriPath, body: '{}', headers });
    expect(counted('/dev/v1/chat/completions', { authorization: 'Bearer tg_live_x' })).toBe(false);
    expect(counted('/dev/v1/messages', { 'x-api-key': 'tg_live_x' })).toBe(false);
    expect(counted('/v1/chat/completions', { authorization: 'Bearer tg_live_x' })).toBe(false);
    expect(counted('/dev/v1/chat/completions', {})).toBe(true);
    expect(counted('/dev/admin/keys', { authorization: 'AWS4-HMAC-SHA256 x' })).toBe(true);
    expect(counted('/dev/v1/../admin/keys', { authorization: 'Bearer tg_live_x' })).toBe(true);
    expect(counted('/dev/health', {})).toBe(true);
    expect(rateOf(prod)).toEqual({ Limit: 20_000, AggregateKeyType: 'IP', EvaluationWindowSec: 300 });
    expect(() => resolveDeploymentConfig({ waf: { rateScope: 'everything' } })).toThrow(/tollgate.waf.rateScope: must be "unauthenticated" or "all"/);
  });

  it('when WAF logs, it writes to an aws-waf-logs- group with retention and redacts the Authorization and x-api-key headers', () => {
    const aclId = logicalId(dev, 'gateway', dev.stacks.gateway.webAcl as never);
    dev.templates.gateway.hasResourceProperties('AWS::Logs::LogGroup', { LogGroupName: 'aws-waf-logs-tollgate-dev-web-acl', RetentionInDays: 30 });
    dev.templates.gateway.hasResourceProperties('AWS::WAFv2::LoggingConfiguration', {
      ResourceArn: { 'Fn::GetAtt': [aclId, 'Arn'] },
      LogDestinationConfigs: [{ 'Fn::Join': ['', Match.arrayWith([Match.stringLikeRegexp(':log-group:aws-waf-logs-tollgate-dev-web-acl$')])] }],
      RedactedFields: WAF_REDACTED_HEADERS.map((name) => ({ SingleHeader: { Name: name } })),
    });
  });
});

describe('the budget sees this deployment', () => {
  it('when any resource carries tags, it carries the cost-allocation tag of this stage', () => {
    let tagged = 0;
    for (const t of allTemplates(dev)) {
      for (const [id, r] of Object.entries(resources(t))) {
        const tags = r.Properties?.Tags;
        if (tags === undefined) continue;
        tagged++;
        const list = Array.isArray(tags) ? (tags as Array<{ Key: string; Value: string }>) : Object.entries(tags as object).map(([Key, Value]) => ({ Key, Value }));
        expect({ id, tag: list.find((x) => x.Key === 'tollgate:deployment')?.Value }).toEqual({ id, tag: 'tollgate-dev' });
      }
    }
    expect(tagged).toBeGreaterThan(40);
  });

  /** Types whose resources cost money (or whose children do): each must carry the cost-allocation tag. */
  const BILLED: Readonly<Record<string, string>> = {
    'AWS::DynamoDB::Table': 'requests, storage, PITR',
    'AWS::Lambda::Function': 'invocations and duration',
    'AWS::KMS::Key': '$1/month per key, requests',
    'AWS::SQS::Queue': 'requests',
    'AWS::SNS::Topic': 'publishes and deliveries',
    'AWS::EC2::Instance': 'the NAT instance (and its root volume: PropagateTagsToVolumeOnCreation)',
    'AWS::EC2::NatGateway': 'NAT gateway hours and data',
    'AWS::EC2::EIP': 'public IPv4 address hours',
    'AWS::EC2::FlowLog': 'flow log delivery',
    'AWS::EC2::VPCEndpoint': 'interface endpoints are billed hourly (the gateway endpoints here are free)',
    'AWS::ECS::Cluster': 'Container Insights metrics',
    'AWS::ECS::Service': 'Fargate tasks (PropagateTags: SERVICE)',
    'AWS::ECS::TaskDefinition': 'tasks run from it outside the service (RunTask) take its tags only when asked',
    'AWS::Logs::LogGroup': 'ingestion and storage',
    'AWS::WAFv2::WebACL': '$5/month plus $1 per rule and requests',
    'AWS::ApiGateway::RestApi': 'requests',
    'AWS::ApiGateway::Stage': 'requests (the stage is what Cost Explorer attributes REST API usage to)',
    'AWS::CloudWatch::Alarm': '$0.10 per alarm metric',
    'AWS::CloudWatch::Dashboard': '$3/month beyond the free three',
    'AWS::SSM::Parameter': 'standard parameters are free; tagged all the same',
  };
  /** Types that cost nothing by themselves, or whose cost is billed through a tagged resource. */
  const NOT_BILLED: Readonly<Record<string, string>> = {
    'AWS::Budgets::Budget': 'budgets are billed per account (the first two free), never by tag: nothing to attribute',
    'Custom::TollgateGeneratedSecret': 'runs on the tagged secret-generator Lambda',
    'AWS::WAFv2::LoggingConfiguration': 'billed as ingestion into the tagged aws-waf-logs- log group',
    'AWS::WAFv2::WebACLAssociation': 'free',
    'AWS::ApiGateway::Account': 'free (account setting)',
    'AWS::ApiGateway::Deployment': 'free',
    'AWS::ApiGateway::Method': 'free',
    'AWS::ApiGateway::RequestValidator': 'free',
    'AWS::ApiGateway::Resource': 'free',
    'AWS::ApplicationAutoScaling::ScalableTarget': 'free',
    'AWS::ApplicationAutoScaling::ScalingPolicy': 'free (its alarms are tagged)',
    'AWS::EC2::InternetGateway': 'free',
    'AWS::EC2::Route': 'free',
    'AWS::EC2::RouteTable': 'free',
    'AWS::EC2::SecurityGroup': 'free',
    'AWS::EC2::Subnet': 'free',
    'AWS::EC2::SubnetRouteTableAssociation': 'free',
    'AWS::EC2::VPC': 'free',
    'AWS::EC2::VPCGatewayAttachment': 'free',
    'AWS::Events::Rule': 'scheduled rules are free',
    'AWS::IAM::InstanceProfile': 'free',
    'AWS::IAM::Policy': 'free',
    'AWS::IAM::Role': 'free',
    'AWS::KMS::Alias': 'free',
    'AWS::Lambda::Permission': 'free',
    'AWS::Lambda::LayerVersion': 'free: its code counts towards the account code storage quota, not the bill; the tagged functions using it are billed',
    'AWS::SNS::Subscription': 'billed as deliveries of the tagged topic',
    'AWS::SNS::TopicPolicy': 'free',
    'AWS::SQS::QueuePolicy': 'free',
  };

  it('when any variant is synthesized, every resource that costs money carries the cost-allocation tag, Fargate tasks and the NAT volume included', () => {
    const billed = new Set<string>();
    for (const app of [dev, prod, variant]) {
      const want = `tollgate-${app.config.stage}`;
      for (const t of allTemplates(app)) {
        for (const [id, r] of Object.entries(resources(t))) {
          // A new resource type must be classified here before it ships.
          expect({ type: r.Type, classified: r.Type in BILLED || r.Type in NOT_BILLED }).toEqual({ type: r.Type, classified: true });
          if (!(r.Type in BILLED)) continue;
          billed.add(r.Type);
          const tags = r.Properties?.Tags;
          const list = Array.isArray(tags) ? (tags as Array<{ Key: string; Value: string }>) : Object.entries((tags ?? {}) as object).map(([Key, Value]) => ({ Key, Value }));
          expect({ id, tag: list.find((x) => x.Key === 'tollgate:deployment')?.Value }).toEqual({ id, tag: want });
          if (r.Type === 'AWS::ECS::Service') expect({ id, propagate: r.Properties?.PropagateTags, managed: r.Properties?.EnableECSManagedTags }).toEqual({ id, propagate: 'SERVICE', managed: true });
          if (r.Type === 'AWS::EC2::Instance') expect({ id, volume: r.Properties?.PropagateTagsToVolumeOnCreation }).toEqual({ id, volume: true });
        }
      }
    }
    // The walk saw the resources that cost the most: Fargate, NAT (instance in dev, gateways in prod), WAF, tables.
    expect([...billed]).toEqual(expect.arrayContaining(['AWS::ECS::Service', 'AWS::EC2::Instance', 'AWS::EC2::NatGateway', 'AWS::EC2::EIP', 'AWS::WAFv2::WebACL', 'AWS::DynamoDB::Table']));
  });

  it('when the budget is created with Bedrock off, it is filtered to the tag only and notifies on ACTUAL and FORECASTED, at most 5 times', () => {
    const budget = budgetOf(dev);
    // Another team's Bedrock use in the account must not trip this deployment's kill switch.
    expect(budget.Budget.FilterExpression).toEqual({ Tags: { Key: 'tollgate:deployment', Values: ['tollgate-dev'], MatchOptions: ['EQUALS'] } });
    expect(JSON.stringify(budget.Budget)).not.toContain('Bedrock');
    const n = budget.NotificationsWithSubscribers.map((x) => `${x.Notification.NotificationType}@${x.Notification.Threshold}`);
    expect(n).toEqual(['ACTUAL@50', 'ACTUAL@80', 'ACTUAL@100', 'FORECASTED@100']);
    expect(n.length).toBeLessThanOrEqual(MAX_BUDGET_NOTIFICATIONS);
    expect(() => resolveDeploymentConfig({ budget: { thresholdsPercent: [25, 50, 75, 100], forecastThresholdsPercent: [80, 100] } })).toThrow(
      /tollgate.budget: AWS Budgets allows 5 notifications per budget/,
    );
  });

  it('when Bedrock is enabled, the budget also counts Amazon Bedrock usage (model usage carries no tag)', () => {
    expect(budgetOf(variant).Budget.FilterExpression).toEqual({
      Or: [
        { Tags: { Key: 'tollgate:deployment', Values: ['tollgate-dev'], MatchOptions: ['EQUALS'] } },
        { Dimensions: { Key: 'SERVICE', Values: ['Amazon Bedrock'], MatchOptions: ['EQUALS'] } },
      ],
    });
  });

  it('when the thresholds change, the budget gets a new name (the create-only replacement cannot collide) and the kill switch follows it', () => {
    const devName = budgetOf(dev).Budget.BudgetName;
    const variantName = budgetOf(variant).Budget.BudgetName;
    expect(devName).toMatch(/^tollgate-dev-monthly-[0-9a-f]{8}$/);
    expect(variantName).toMatch(/^tollgate-dev-monthly-[0-9a-f]{8}$/);
    expect(variantName).not.toBe(devName);
    // Same thresholds, same name: an unrelated setting (here: Bedrock on) does not replace the budget.
    const sameThresholds = synthApp({ gateway: { bedrock: true } });
    try {
      expect(budgetOf(sameThresholds).Budget.BudgetName).toBe(devName);
    } finally {
      sameThresholds.dispose();
    }
    for (const app of [dev, variant]) {
      const name = budgetOf(app).Budget.BudgetName;
      const fnId = logicalId(app, 'guardrails', app.stacks.guardrails.killSwitch.fn);
      const fn = resources(app.templates.guardrails)[fnId].Properties as { Environment: { Variables: Record<string, unknown> } };
      expect(fn.Environment.Variables.TOLLGATE_BUDGET_NAME).toBe(name);
      const viewBudget = statements(app).filter((st) => actions(st).includes('budgets:ViewBudget'));
      expect(viewBudget).toHaveLength(1);
      expect(JSON.stringify(viewBudget[0].Resource)).toContain(`:budget/${name}`);
    }
  });

  it('when a budget notification fails the kill switch, it lands in a dead-letter queue (Lambda retries and SNS delivery alike) that alarms', () => {
    const dlqId = logicalId(dev, 'guardrails', dev.stacks.guardrails.killSwitchDeadLetterQueue);
    const fnId = logicalId(dev, 'guardrails', dev.stacks.guardrails.killSwitch.fn);
    expect(resources(dev.templates.guardrails)[fnId].Properties?.DeadLetterConfig).toEqual({ TargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] } });
    dev.templates.guardrails.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'lambda',
      Endpoint: { 'Fn::GetAtt': [fnId, 'Arn'] },
      RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [dlqId, 'Arn'] } },
    });
    dev.templates.observability.hasResourceProperties('AWS::CloudWatch::Alarm', { AlarmName: 'tollgate-dev-kill-switch-dead-letters', MetricName: 'ApproximateNumberOfMessagesVisible' });
  });
});

describe('hygiene over a year', () => {
  it('when any variant is synthesized, every custom resource has a ServiceTimeout of 5 minutes (not the hour a crash would cost)', () => {
    let custom = 0;
    for (const app of [dev, prod, variant]) {
      for (const t of allTemplates(app)) {
        for (const [id, r] of Object.entries(resources(t))) {
          if (!r.Type.startsWith('Custom::') && r.Type !== 'AWS::CloudFormation::CustomResource') continue;
          custom++;
          expect({ id, timeout: r.Properties?.ServiceTimeout }).toEqual({ id, timeout: String(CUSTOM_RESOURCE_TIMEOUT.toSeconds()) });
        }
      }
    }
    expect(CUSTOM_RESOURCE_TIMEOUT.toSeconds()).toBe(300);
    expect(custom).toBeGreaterThanOrEqual(6);
  });

  it('when the stage is deployed, its execution-log group exists first, in the stack, with the configured retention', () => {
    for (const app of [dev, prod, variant]) {
      const g = app.stacks.gateway;
      const apiId = logicalId(app, 'gateway', g.api as never);
      const groupId = logicalId(app, 'gateway', g.executionLogs);
      const group = resources(app.templates.gateway)[groupId];
      expect(group.Properties).toEqual({
        LogGroupName: { 'Fn::Join': ['', ['API-Gateway-Execution-Logs_', { Ref: apiId }, `/${app.config.stage}`]] },
        RetentionInDays: app.config.logRetentionDays,
        Tags: expect.anything(),
      });
      const stageId = logicalId(app, 'gateway', g.api.deploymentStage);
      expect(resources(app.templates.gateway)[stageId].DependsOn).toEqual(expect.arrayContaining([groupId]));
    }
    expect(variant.config.logRetentionDays).toBe(90);
  });

  it('when any variant is synthesized, every log group has a retention', () => {
    for (const app of [dev, prod, variant]) {
      for (const t of allTemplates(app)) {
        for (const [id, r] of Object.entries(resources(t, 'AWS::Logs::LogGroup'))) {
          expect({ id, retention: typeof r.Properties?.RetentionInDays }).toEqual({ id, retention: 'number' });
        }
      }
    }
  });
});

describe('least privilege', () => {
  it('when any principal is granted the audit table, the only write is PutItem on audit partitions, with no returned old item', () => {
    const auditArn = `${logicalId(dev, 'data', dev.stacks.data.tables.audit)}`;
    const onAudit = statements(dev).filter((s) => JSON.stringify(s.Resource ?? '').includes(auditArn) && actions(s).some((a) => a.startsWith('dynamodb:')));
    // The gateway, the sweeper and the kill switch each append (the latter two: a kill switch activation).
    expect([...new Set(onAudit.map(actions).flat())].sort()).toEqual(['dynamodb:PutItem', 'dynamodb:Query']);
    const puts = onAudit.filter((s) => actions(s).includes('dynamodb:PutItem'));
    expect(puts.length).toBeGreaterThan(0);
    for (const put of puts) {
      expect(actions(put)).toEqual(['dynamodb:PutItem']);
      expect(put.Condition).toEqual({
        'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['audit#*'] },
        StringEqualsIfExists: { 'dynamodb:ReturnValues': 'NONE' },
      });
    }
  });

  it('when tables are granted, each statement names one table with its own action set, and nothing grants batch writes or DescribeTable', () => {
    const tableIds = Object.values(dev.stacks.data.tables).map((t) => logicalId(dev, 'data', t));
    for (const s of statements(dev).filter((x) => actions(x).some((a) => a.startsWith('dynamodb:')))) {
      const named = tableIds.filter((id) => JSON.stringify(s.Resource ?? '').includes(id));
      expect(named.length).toBeLessThanOrEqual(1);
      expect(actions(s)).not.toEqual(expect.arrayContaining(['dynamodb:BatchWriteItem']));
      expect(actions(s)).not.toContain('dynamodb:DescribeTable');
    }
    const usageId = logicalId(dev, 'data', dev.stacks.data.tables.usage);
    const gatewayUsage = statements(dev).filter((s) => JSON.stringify(s.Resource ?? '').includes(usageId)).map(actions);
    expect(gatewayUsage).toContainEqual(['dynamodb:DeleteItem', 'dynamodb:PutItem', 'dynamodb:Query']);
  });

  it('when kms:Decrypt is granted anywhere, it is conditioned on the calling service or an encryption context', () => {
    const decrypts = statements(dev).filter((s) => actions(s).includes('kms:Decrypt'));
    expect(decrypts.length).toBeGreaterThan(5);
    for (const s of decrypts) expect(JSON.stringify(s.Condition ?? {})).toMatch(/kms:ViaService|kms:EncryptionContext/);
  });

  it('when anything reads a secret, it cannot read parameter history; only the secret generator lists parameter metadata', () => {
    for (const app of [dev, prod]) {
      for (const t of allTemplates(app)) expect(JSON.stringify(t.toJSON())).not.toMatch(/GetParameterHistory/);
      const describing = statements(app).filter((s) => actions(s).includes('ssm:DescribeParameters'));
      expect(describing).toHaveLength(1);
      expect(actions(describing[0]).filter((a) => !a.startsWith('xray:'))).toEqual(['ssm:DescribeParameters']);
    }
  });

  it('when the admin API is called, its resource policy denies /admin/* to every principal but the operator roles', () => {
    const policyOf = (app: SynthesizedApp) =>
      (Object.values(resources(app.templates.gateway, 'AWS::ApiGateway::RestApi'))[0].Properties as { Policy: { Statement: PolicyStatement[] } }).Policy.Statement;
    const deny = (app: SynthesizedApp) => policyOf(app).find((s) => s.Effect === 'Deny');
    expect(deny(prod)).toMatchObject({ Action: 'execute-api:Invoke', Resource: 'execute-api:/*/*/admin/*', Condition: { StringNotLike: { 'aws:PrincipalArn': [OPERATOR] } } });
    expect(Object.values(resources(prod.templates.gateway, 'AWS::IAM::Role')).some((r) => r.Properties?.RoleName === 'tollgate-prod-operator')).toBe(false);
    const roleId = logicalId(dev, 'gateway', dev.stacks.gateway.operatorRole!);
    expect(JSON.stringify(deny(dev)?.Condition)).toBe(JSON.stringify({ StringNotLike: { 'aws:PrincipalArn': [{ 'Fn::GetAtt': [roleId, 'Arn'] }] } }));
    expect(policyOf(dev).find((s) => s.Effect !== 'Deny')).toMatchObject({ Action: 'execute-api:Invoke', Resource: 'execute-api:/*' });
  });
});

describe('cost profiles', () => {
  const estimate = (app: SynthesizedApp) => estimateFixedCost(allTemplates(app).map((t) => t.toJSON() as CfnTemplate));

  it('when the dev profile is synthesized, it has a t4g.nano NAT instance, no NAT gateway, no Container Insights and an agent service that scales from zero on the run backlog', () => {
    dev.templates.agent.resourceCountIs('AWS::EC2::NatGateway', 0);
    dev.templates.agent.hasResourceProperties('AWS::EC2::Instance', { InstanceType: 't4g.nano', SourceDestCheck: false });
    dev.templates.agent.hasResourceProperties('AWS::ECS::Cluster', { ClusterSettings: [{ Name: 'containerInsights', Value: 'disabled' }] });
    dev.templates.agent.hasResourceProperties('AWS::ECS::Service', { DesiredCount: 0 });
    dev.templates.agent.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 0, MaxCapacity: 1, ScalableDimension: 'ecs:service:DesiredCount' });
    dev.templates.agent.hasResourceProperties('AWS::ApplicationAutoScaling::ScalingPolicy', { PolicyType: 'StepScaling' });
    const scalingAlarms = Object.values(resources(dev.templates.agent, 'AWS::CloudWatch::Alarm'));
    expect(scalingAlarms).toHaveLength(2);
    for (const a of scalingAlarms) {
      const names = JSON.stringify(a.Properties?.Metrics);
      expect(names).toContain('ApproximateNumberOfMessagesVisible');
      expect(names).toContain('ApproximateNumberOfMessagesNotVisible');
    }
  });

  it('when the dev profile is priced, its fixed monthly cost is at most $30', () => {
    expect(estimate(dev).total).toBeLessThanOrEqual(30_000_000);
  });

  it('when the prod profile is synthesized, it has 2 NAT gateways, an always-on task, Container Insights, and the estimate counts them', () => {
    prod.templates.agent.resourceCountIs('AWS::EC2::NatGateway', 2);
    prod.templates.agent.resourceCountIs('AWS::EC2::Instance', 0);
    prod.templates.agent.hasResourceProperties('AWS::ApplicationAutoScaling::ScalableTarget', { MinCapacity: 1, MaxCapacity: 2 });
    prod.templates.agent.hasResourceProperties('AWS::ECS::Cluster', { ClusterSettings: [{ Name: 'containerInsights', Value: 'enabled' }] });
    const items = estimate(prod).lines.map((l) => l.item);
    expect(items).toEqual(expect.arrayContaining(['NAT gateway hours', 'Fargate tasks (ARM64)', 'Container Insights metrics', 'KMS key rotations', 'CloudWatch log groups']));
    expect(estimate(prod).total).toBeGreaterThan(estimate(dev).total);
  });
});

describe('cfn-lint', () => {
  it('when every synthesized template of both profiles is linted, there are no findings beyond the named exceptions', () => {
    for (const app of [dev, prod]) expect(cfnLint(app)).toEqual([]);
  }, HANG);
});
