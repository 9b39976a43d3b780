import { CfnElement, Stack, Validations } from 'aws-cdk-lib';
import { Match, type Template } from 'aws-cdk-lib/assertions';
import * as cxapi from 'aws-cdk-lib/cx-api';
import { AwsSolutionsChecks } from 'cdk-nag';
import type { IConstruct } from 'constructs';
import { TABLES } from '../../lambda/store/dynamodb/schema';
import { assetHashSerializer, synthApp, type SynthesizedApp } from './app-fixture';

expect.addSnapshotSerializer(assetHashSerializer);

let synth: SynthesizedApp;
let t: SynthesizedApp['templates'];

beforeAll(() => {
  synth = synthApp();
  t = synth.templates;
});
afterAll(() => synth.dispose());

type Resources = Record<string, { Type: string; Properties?: Record<string, unknown>; [k: string]: unknown }>;

function resourcesOf(template: Template, type: string): Resources {
  return template.findResources(type) as Resources;
}

function only<T>(values: Record<string, T>): T {
  const all = Object.values(values);
  expect(all).toHaveLength(1);
  return all[0];
}

/** The logical id of a construct's CloudFormation resource. */
function logicalIdOf(stack: Stack, construct: IConstruct): string {
  const element = construct instanceof CfnElement ? construct : construct.node.defaultChild;
  if (!(element instanceof CfnElement)) throw new Error(`${construct.node.path} has no CloudFormation resource`);
  return stack.getLogicalId(element);
}

describe('snapshots', () => {
  it.each(['data', 'guardrails', 'gateway', 'agent', 'observability'] as const)(
    'when the %s stack is synthesized with the default config, it matches its snapshot',
    (name) => {
      expect(t[name].toJSON()).toMatchSnapshot();
    },
  );
});

describe('data stack', () => {
  it('when the tables are built, each matches lambda/store/dynamodb/schema.ts (keys, indexes, TTL)', () => {
    for (const def of TABLES) {
      const keySchema = [{ AttributeName: def.partitionKey.name, KeyType: 'HASH' }];
      if (def.sortKey) keySchema.push({ AttributeName: def.sortKey.name, KeyType: 'RANGE' });
      t.data.hasResourceProperties('AWS::DynamoDB::Table', {
        TableName: `tollgate-dev-${def.id}`,
        KeySchema: keySchema,
        // Retired indexes stay declared until a later deploy drops them (one per deploy; schema.ts).
        GlobalSecondaryIndexes: def.globalIndexes.length
          ? [...(def.retiredIndexes ?? []), ...def.globalIndexes].map((ix) => Match.objectLike({ IndexName: ix.indexName }))
          : Match.absent(),
        TimeToLiveSpecification: def.ttlAttribute
          ? { AttributeName: def.ttlAttribute, Enabled: true }
          : Match.absent(),
      });
    }
    expect(Object.keys(resourcesOf(t.data, 'AWS::DynamoDB::Table'))).toHaveLength(TABLES.length);
  });

  it('when the tables are built, every one is on-demand, has PITR and deletion protection, is retained (except by a failed create) and uses the data key', () => {
    const keyId = logicalIdOf(synth.stacks.data, synth.stacks.data.key);
    for (const table of Object.values(resourcesOf(t.data, 'AWS::DynamoDB::Table'))) {
      // A create that rolls back deletes the table, so the retry does not fail "already exists" (issue 23).
      expect(table.DeletionPolicy).toBe('RetainExceptOnCreate');
      expect(table.UpdateReplacePolicy).toBe('Retain');
      expect(table.Properties).toMatchObject({
        BillingMode: 'PAY_PER_REQUEST',
        PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
        DeletionProtectionEnabled: true,
        SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: { 'Fn::GetAtt': [keyId, 'Arn'] } },
      });
    }
  });

  it('when the data key is created, it rotates, is retained (except by a failed create) and has the stage alias the secrets CLI uses', () => {
    t.data.hasResource('AWS::KMS::Key', {
      Properties: Match.objectLike({ EnableKeyRotation: true }),
      DeletionPolicy: 'RetainExceptOnCreate',
      UpdateReplacePolicy: 'Retain',
    });
    t.data.hasResourceProperties('AWS::KMS::Alias', { AliasName: 'alias/tollgate-dev-data' });
  });
});

describe('gateway stack', () => {
  it('when the API is created, it is a REGIONAL endpoint', () => {
    t.gateway.hasResourceProperties('AWS::ApiGateway::RestApi', { EndpointConfiguration: { Types: ['REGIONAL'] } });
  });

  it('when the routes are created, /v1 and /admin stream from the gateway Lambda with a 15-minute timeout', () => {
    const fnId = logicalIdOf(synth.stacks.gateway, synth.stacks.gateway.gateway.fn);
    const methods = Object.values(resourcesOf(t.gateway, 'AWS::ApiGateway::Method'));
    expect(methods).toHaveLength(2);
    for (const m of methods) {
      expect(m.Properties).toMatchObject({
        HttpMethod: 'ANY',
        Integration: { Type: 'AWS_PROXY', ResponseTransferMode: 'STREAM', TimeoutInMillis: 900_000 },
      });
      const uri = JSON.stringify((m.Properties as { Integration: { Uri: unknown } }).Integration.Uri);
      expect(uri).toContain('/response-streaming-invocations');
      expect(uri).toContain(fnId);
    }
  });

  it('when the routes are created, /admin requires AWS_IAM and /v1 has no API Gateway authorizer', () => {
    const byPath = new Map<string, string>();
    const resources = resourcesOf(t.gateway, 'AWS::ApiGateway::Resource');
    for (const m of Object.values(resourcesOf(t.gateway, 'AWS::ApiGateway::Method'))) {
      const proxyId = (m.Properties as { ResourceId: { Ref: string } }).ResourceId.Ref;
      const parentId = (resources[proxyId].Properties as { ParentId: { Ref: string } }).ParentId.Ref;
      const parentPath = (resources[parentId].Properties as { PathPart: string }).PathPart;
      byPath.set(parentPath, (m.Properties as { AuthorizationType: string }).AuthorizationType);
    }
    expect(Object.fromEntries(byPath)).toEqual({ v1: 'NONE', admin: 'AWS_IAM' });
  });

  it('when the stage is created, it has JSON access logs, X-Ray tracing and the configured throttling', () => {
    t.gateway.hasResourceProperties('AWS::ApiGateway::Stage', {
      StageName: 'dev',
      TracingEnabled: true,
      AccessLogSetting: { DestinationArn: Match.anyValue(), Format: Match.stringLikeRegexp('"requestId":"\\$context.requestId"') },
      MethodSettings: [
        Match.objectLike({
          ThrottlingRateLimit: synth.config.api.throttleRatePerSecond,
          ThrottlingBurstLimit: synth.config.api.throttleBurst,
          DataTraceEnabled: false,
        }),
      ],
    });
  });

  it('when the web ACL is created, it has the geo block, the per-IP rate rule, three managed groups with their body rules counted, and the label rule that blocks body findings off /v1', () => {
    const counted = (rules: string[]) => Match.arrayWith(rules.map((name) => ({ Name: name, ActionToUse: { Count: {} } })));
    t.gateway.hasResourceProperties('AWS::WAFv2::WebACL', {
      Scope: 'REGIONAL',
      DefaultAction: { Allow: {} },
      Rules: [
        Match.objectLike({ Name: 'GeoBlock', Action: { Block: {} }, Statement: { GeoMatchStatement: { CountryCodes: ['CN', 'RU'] } } }),
        Match.objectLike({
          Name: 'RatePerIp',
          Action: { Block: {} },
          Statement: { RateBasedStatement: { Limit: 1000, AggregateKeyType: 'IP', EvaluationWindowSec: 300 } },
        }),
        Match.objectLike({
          Name: 'AWSManagedRulesCommonRuleSet',
          OverrideAction: { None: {} },
          Statement: {
            ManagedRuleGroupStatement: Match.objectLike({
              VendorName: 'AWS',
              Name: 'AWSManagedRulesCommonRuleSet',
              RuleActionOverrides: counted(['SizeRestrictions_BODY', 'EC2MetaDataSSRF_BODY', 'GenericLFI_BODY', 'GenericRFI_BODY', 'CrossSiteScripting_BODY']),
            }),
          },
        }),
        Match.objectLike({
          Name: 'AWSManagedRulesKnownBadInputsRuleSet',
          Statement: { ManagedRuleGroupStatement: Match.objectLike({ VendorName: 'AWS', Name: 'AWSManagedRulesKnownBadInputsRuleSet', RuleActionOverrides: counted(['JavaDeserializationRCE_BODY', 'Log4JRCE_BODY']) }) },
        }),
        Match.objectLike({
          Name: 'AWSManagedRulesSQLiRuleSet',
          Statement: { ManagedRuleGroupStatement: Match.objectLike({ VendorName: 'AWS', Name: 'AWSManagedRulesSQLiRuleSet', RuleActionOverrides: counted(['SQLi_BODY', 'SQLiExtendedPatterns_BODY']) }) },
        }),
        Match.objectLike({ Name: 'BlockBodyFindingsOutsideV1', Action: { Block: {} } }),
      ],
    });
  });

  it('when the web ACL is created, it is associated with the API stage by its ARN', () => {
    const stageId = logicalIdOf(synth.stacks.gateway, synth.stacks.gateway.api.deploymentStage);
    const aclId = logicalIdOf(synth.stacks.gateway, synth.stacks.gateway.webAcl);
    const assoc = only(resourcesOf(t.gateway, 'AWS::WAFv2::WebACLAssociation'));
    expect(assoc.Properties?.WebACLArn).toEqual({ 'Fn::GetAtt': [aclId, 'Arn'] });
    const arn = JSON.stringify(assoc.Properties?.ResourceArn);
    expect(arn).toContain(':apigateway:');
    expect(arn).toContain('/stages/');
    expect(arn).toContain(stageId);
  });

  it('when the functions are built, every one runs Node 22 on arm64 with active tracing', () => {
    for (const template of [t.gateway, t.guardrails]) {
      const fns = Object.values(resourcesOf(template, 'AWS::Lambda::Function'));
      expect(fns.length).toBeGreaterThanOrEqual(2);
      for (const fn of fns) {
        expect(fn.Properties).toMatchObject({ Runtime: 'nodejs22.x', Architectures: ['arm64'], TracingConfig: { Mode: 'Active' } });
      }
    }
  });

  it('when the gateway function is built, the tokenizer comes from a layer of its own for Node 22 on arm64, and no other function has it', () => {
    const layers = Object.entries(resourcesOf(t.gateway, 'AWS::Lambda::LayerVersion'));
    expect(layers).toHaveLength(1);
    const [layerId, layer] = layers[0]!;
    expect(layer.Properties).toMatchObject({ CompatibleRuntimes: ['nodejs22.x'], CompatibleArchitectures: ['arm64'], Description: expect.stringContaining('o200k tokenizer') });
    const withLayers = Object.entries(resourcesOf(t.gateway, 'AWS::Lambda::Function')).filter(([, fn]) => fn.Properties?.Layers !== undefined);
    expect(withLayers.map(([id, fn]) => [id.replace(/[0-9A-F]{8}$/, ''), fn.Properties?.Layers])).toEqual([['GatewayFunction', [{ Ref: layerId }]]]);
    for (const template of [t.guardrails, t.data]) expect(Object.keys(resourcesOf(template, 'AWS::Lambda::LayerVersion'))).toEqual([]);
  });

  it('when the gateway function is configured, it gets the config env vars the gateway reads and no secret values', () => {
    t.gateway.hasResourceProperties('AWS::Lambda::Function', {
      Timeout: 900,
      Environment: {
        Variables: Match.objectLike({
          TOLLGATE_STAGE: 'dev',
          TOLLGATE_TABLE_KEYS: Match.anyValue(),
          TOLLGATE_TABLE_BUDGETS: Match.anyValue(),
          TOLLGATE_TABLE_USAGE: Match.anyValue(),
          TOLLGATE_TABLE_BYOK: Match.anyValue(),
          TOLLGATE_MAX_BODY_BYTES: String(synth.config.gateway.maxBodyBytes),
          TOLLGATE_PLATFORM_SHARDS: '8',
          TOLLGATE_MOCK_PROVIDER: 'false',
          TOLLGATE_BEDROCK: 'false',
          TOLLGATE_SSM_PREFIX: '/tollgate/dev/',
          TOLLGATE_UPSTREAM_TIMEOUT_MS: '600000',
        }),
      },
    });
    for (const template of [t.gateway, t.guardrails]) {
      for (const fn of Object.values(resourcesOf(template, 'AWS::Lambda::Function'))) {
        const vars = Object.keys((fn.Properties?.Environment as { Variables?: object } | undefined)?.Variables ?? {});
        expect(vars.filter((v) => /API_KEY|SECRET|PEPPER|WEBHOOK|PASSWORD|TOKEN/i.test(v))).toEqual([]);
      }
    }
  });

  it('when the gateway function is granted SSM access, it is exactly the four secrets it reads, decryptable only through SSM', () => {
    const statements = gatewayStatements();
    const ssm = statements.filter((s) => JSON.stringify(s.Action).includes('ssm:'));
    expect(ssm).toHaveLength(1);
    const names = (ssm[0].Resource as unknown[]).map((r) => JSON.stringify(r).match(/parameter\/tollgate\/dev\/([a-z-]+)/)?.[1]);
    expect(names.sort()).toEqual(['anthropic-api-key', 'jwt-secret', 'key-pepper', 'openai-api-key']);
    expect(ssm[0].Action).toEqual(['ssm:GetParameter', 'ssm:GetParameters']);
    const decrypt = statements.find((s) => JSON.stringify(s.Condition ?? {}).includes('ssm.'));
    expect(decrypt?.Action).toBe('kms:Decrypt');
    expect(JSON.stringify(decrypt?.Condition)).toContain('kms:EncryptionContext:PARAMETER_ARN');
  });

  it('when the gateway is granted the data key for BYOK, the grant requires the BYOK encryption context', () => {
    const byok = gatewayStatements().find((s) => JSON.stringify(s.Action).includes('kms:Encrypt') && !JSON.stringify(s.Condition).includes('ViaService'));
    expect(byok?.Condition).toEqual({ StringEquals: { 'kms:EncryptionContext:purpose': 'tollgate-byok' } });
  });

  it('when no statement of any stack grants a wildcard action, IAM stays least-privilege', () => {
    for (const template of Object.values(t)) {
      for (const policy of Object.values(resourcesOf(template, 'AWS::IAM::Policy'))) {
        const doc = (policy.Properties as { PolicyDocument: { Statement: Array<{ Action: string | string[] }> } }).PolicyDocument;
        for (const s of doc.Statement) {
          for (const action of ([] as string[]).concat(s.Action)) expect(action).not.toMatch(/\*/);
        }
      }
    }
  });

  it('when the sweeper is scheduled, it runs every minute', () => {
    t.gateway.hasResourceProperties('AWS::Events::Rule', { ScheduleExpression: 'rate(1 minute)', State: 'ENABLED' });
  });

  function gatewayStatements(): Array<{ Action: string | string[]; Resource: unknown; Condition?: unknown }> {
    const fnRole = logicalIdOf(synth.stacks.gateway, synth.stacks.gateway.gateway.fn.role as unknown as IConstruct);
    const policy = Object.values(resourcesOf(t.gateway, 'AWS::IAM::Policy')).find((p) =>
      JSON.stringify((p.Properties as { Roles: unknown }).Roles).includes(fnRole),
    );
    return (policy?.Properties as { PolicyDocument: { Statement: [] } }).PolicyDocument.Statement;
  }
});

describe('agent stack', () => {
  it('when the VPC is built, it spans 2 AZs with a NAT instance (dev profile) and DynamoDB and S3 gateway endpoints', () => {
    t.agent.resourceCountIs('AWS::EC2::NatGateway', 0);
    t.agent.resourceCountIs('AWS::EC2::Instance', 1);
    t.agent.resourceCountIs('AWS::EC2::Subnet', 4);
    const endpoints = Object.values(resourcesOf(t.agent, 'AWS::EC2::VPCEndpoint'));
    expect(endpoints.map((e) => e.Properties?.VpcEndpointType)).toEqual(['Gateway', 'Gateway']);
    const services = endpoints.map((e) => JSON.stringify(e.Properties?.ServiceName));
    expect(services.some((s) => s.includes('.dynamodb'))).toBe(true);
    expect(services.some((s) => s.includes('.s3'))).toBe(true);
  });

  it('when the service runs, it is in the private subnets with no public IP', () => {
    const privateSubnets = synth.stacks.agent.vpc.privateSubnets.map((s) => logicalIdOf(synth.stacks.agent, s));
    const service = only(resourcesOf(t.agent, 'AWS::ECS::Service'));
    const net = (service.Properties as { NetworkConfiguration: { AwsvpcConfiguration: { AssignPublicIp: string; Subnets: Array<{ Ref: string }> } } })
      .NetworkConfiguration.AwsvpcConfiguration;
    expect(net.AssignPublicIp).toBe('DISABLED');
    expect(net.Subnets.map((s) => s.Ref).sort()).toEqual(privateSubnets.sort());
    expect(service.Properties?.LaunchType).toBe('FARGATE');
  });

  it('when the security group is created, its only egress is TCP 443 and it allows no ingress', () => {
    t.agent.hasResourceProperties('AWS::EC2::SecurityGroup', {
      GroupDescription: Match.stringLikeRegexp('outbound HTTPS only'),
      SecurityGroupEgress: [{ CidrIp: '0.0.0.0/0', IpProtocol: 'tcp', FromPort: 443, ToPort: 443, Description: Match.anyValue() }],
      SecurityGroupIngress: Match.absent(),
    });
    t.agent.resourceCountIs('AWS::EC2::SecurityGroupIngress', 0);
  });

  it('when the cluster is created with the dev profile, container insights are off (prod turns them on: see deploy.test.ts)', () => {
    t.agent.hasResourceProperties('AWS::ECS::Cluster', {
      ClusterSettings: [{ Name: 'containerInsights', Value: 'disabled' }],
    });
  });

  it('when the task is defined, it names the JWT secret\'s SSM SecureString (read by the task, never a value) and the image comes from agent/Dockerfile', () => {
    const task = only(resourcesOf(t.agent, 'AWS::ECS::TaskDefinition'));
    const [container] = (task.Properties as { ContainerDefinitions: Array<Record<string, unknown>> }).ContainerDefinitions;
    expect(container.Secrets).toBeUndefined();
    const environment = container.Environment as Array<{ Name: string; Value: unknown }>;
    expect(environment.find((e) => e.Name === 'TOLLGATE_JWT_SECRET_PARAMETER')?.Value).toBe('/tollgate/dev/jwt-secret');
    const env = environment.map((e) => e.Name).filter((n) => !n.endsWith('_PARAMETER'));
    expect(env.filter((n) => /SECRET|KEY$|PEPPER|WEBHOOK/.test(n))).toEqual([]);
    const manifest = synth.app
      .synth()
      .artifacts.find((a): a is cxapi.AssetManifestArtifact => a instanceof cxapi.AssetManifestArtifact && a.id.startsWith(synth.stacks.agent.artifactId));
    const images = Object.values(manifest?.contents.dockerImages ?? {});
    expect(images.map((i) => i.source.dockerFile)).toEqual(['agent/Dockerfile']);
  });
});

describe('guardrails stack', () => {
  it('when the budget is created, it notifies the budget topic at 50, 80 and 100 % of actual cost and at 100 % forecast', () => {
    const topicId = logicalIdOf(synth.stacks.guardrails, synth.stacks.guardrails.budgetTopic);
    t.guardrails.hasResourceProperties('AWS::Budgets::Budget', {
      Budget: Match.objectLike({ BudgetType: 'COST', TimeUnit: 'MONTHLY', BudgetLimit: { Amount: 100, Unit: 'USD' } }),
      NotificationsWithSubscribers: [
        ...[50, 80, 100].map((threshold) => ['ACTUAL', threshold] as const),
        ['FORECASTED', 100] as const,
      ].map(([type, threshold]) => ({
        Notification: { NotificationType: type, ComparisonOperator: 'GREATER_THAN', Threshold: threshold, ThresholdType: 'PERCENTAGE' },
        Subscribers: [{ SubscriptionType: 'SNS', Address: { Ref: topicId } }],
      })),
    });
  });

  it('when the budget topic policy is written, only budgets.amazonaws.com from this account may publish', () => {
    const topicId = logicalIdOf(synth.stacks.guardrails, synth.stacks.guardrails.budgetTopic);
    t.guardrails.hasResourceProperties('AWS::SNS::TopicPolicy', {
      Topics: [{ Ref: topicId }],
      PolicyDocument: {
        Statement: Match.arrayWith([
          Match.objectLike({
            Effect: 'Allow',
            Principal: { Service: 'budgets.amazonaws.com' },
            Action: 'sns:Publish',
            Resource: { Ref: topicId },
            Condition: Match.objectLike({ StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } }),
          }),
        ]),
      },
    });
  });

  it('when the topics are encrypted, the key lets Budgets and CloudWatch publish, scoped to the account', () => {
    for (const service of ['budgets.amazonaws.com', 'cloudwatch.amazonaws.com']) {
      t.guardrails.hasResourceProperties('AWS::KMS::Key', {
        EnableKeyRotation: true,
        KeyPolicy: {
          Statement: Match.arrayWith([
            Match.objectLike({
              Principal: { Service: service },
              Action: ['kms:Decrypt', 'kms:GenerateDataKey*'],
              Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } },
            }),
          ]),
        },
      });
    }
    const topics = Object.values(resourcesOf(t.guardrails, 'AWS::SNS::Topic'));
    expect(topics).toHaveLength(2);
    for (const topic of topics) expect(topic.Properties?.KmsMasterKeyId).toBeDefined();
  });

  it('when the budget topic fires, it invokes the kill-switch Lambda', () => {
    const topicId = logicalIdOf(synth.stacks.guardrails, synth.stacks.guardrails.budgetTopic);
    const fnId = logicalIdOf(synth.stacks.guardrails, synth.stacks.guardrails.killSwitch.fn);
    t.guardrails.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'lambda',
      TopicArn: { Ref: topicId },
      Endpoint: { 'Fn::GetAtt': [fnId, 'Arn'] },
    });
    t.guardrails.hasResourceProperties('AWS::Lambda::Permission', {
      Action: 'lambda:InvokeFunction',
      Principal: 'sns.amazonaws.com',
      SourceArn: { Ref: topicId },
      FunctionName: { 'Fn::GetAtt': [fnId, 'Arn'] },
    });
  });

  it('when functions are granted SSM access, the alert notifier reads only the Slack webhook and reconciliation only the admin keys', () => {
    const policies = Object.values(resourcesOf(t.guardrails, 'AWS::IAM::Policy'));
    const ssmResources = policies.flatMap((p) =>
      (p.Properties as { PolicyDocument: { Statement: Array<{ Action: unknown; Resource: unknown }> } }).PolicyDocument.Statement.filter((s) =>
        JSON.stringify(s.Action).includes('ssm:'),
      ).map((s) => JSON.stringify(s.Resource)),
    );
    expect(ssmResources).toHaveLength(2);
    const slack = ssmResources.find((r) => r.includes('slack-webhook-url'))!;
    expect(slack).not.toMatch(/openai|anthropic|pepper|jwt/);
    const admin = ssmResources.find((r) => r.includes('admin-key'))!;
    expect(admin).toContain('parameter/tollgate/dev/openai-admin-key');
    expect(admin).toContain('parameter/tollgate/dev/anthropic-admin-key');
    expect(admin).not.toMatch(/api-key|pepper|jwt|slack/);
  });

  it('when no alert email is configured, there is no email subscription; when one is, it subscribes to the alerts topic', () => {
    t.guardrails.resourcePropertiesCountIs('AWS::SNS::Subscription', { Protocol: 'email' }, 0);
    const withEmail = synthApp({ alerts: { email: 'ops@example.com' } });
    try {
      const topicId = logicalIdOf(withEmail.stacks.guardrails, withEmail.stacks.guardrails.alertsTopic);
      withEmail.templates.guardrails.hasResourceProperties('AWS::SNS::Subscription', {
        Protocol: 'email',
        Endpoint: 'ops@example.com',
        TopicArn: { Ref: topicId },
      });
    } finally {
      withEmail.dispose();
    }
  });
});

describe('observability stack', () => {
  it('when the alarms are created, the required ones exist and every alarm notifies the alerts topic', () => {
    const alarms = Object.values(resourcesOf(t.observability, 'AWS::CloudWatch::Alarm'));
    const names = alarms.map((a) => a.Properties?.AlarmName as string);
    for (const required of [
      'tollgate-dev-api-5xx',
      'tollgate-dev-gateway-errors',
      'tollgate-dev-gateway-throttles',
      'tollgate-dev-sweeper-errors',
      'tollgate-dev-kill-switch-errors',
      'tollgate-dev-alert-notifier-errors',
      'tollgate-dev-keys-table-throttles',
      'tollgate-dev-budgets-table-throttles',
      'tollgate-dev-usage-table-throttles',
      'tollgate-dev-byok-table-throttles',
      'tollgate-dev-waf-blocked',
    ]) {
      expect(names).toContain(required);
    }
    for (const alarm of alarms) {
      const actions = JSON.stringify(alarm.Properties?.AlarmActions);
      expect(actions).toContain('AlertsTopic');
    }
  });

  it('when the API 5xx alarm is defined, it sums 5xx errors of this API and stage over 5 minutes', () => {
    t.observability.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'tollgate-dev-api-5xx',
      Namespace: 'AWS/ApiGateway',
      MetricName: '5XXError',
      Statistic: 'Sum',
      Period: 300,
      Threshold: 5,
      ComparisonOperator: 'GreaterThanOrEqualToThreshold',
      Dimensions: Match.arrayWith([Match.objectLike({ Name: 'ApiName' })]),
    });
  });

  it('when the WAF alarm is defined, it watches BlockedRequests of the web ACL for all rules', () => {
    t.observability.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: 'tollgate-dev-waf-blocked',
      Namespace: 'AWS/WAFV2',
      MetricName: 'BlockedRequests',
      Dimensions: Match.arrayWith([{ Name: 'Rule', Value: 'ALL' }, { Name: 'WebACL', Value: 'tollgate-dev-web-acl' }]),
    });
  });

  it('when the dashboard is created, it is named for the stage and shows every alarm in a status widget', () => {
    const dashboard = only(resourcesOf(t.observability, 'AWS::CloudWatch::Dashboard'));
    expect(dashboard.Properties?.DashboardName).toBe('tollgate-dev-dashboard');
    const body = JSON.stringify(dashboard.Properties?.DashboardBody);
    expect(body).toContain('alarm');
    const alarmCount = Object.keys(resourcesOf(t.observability, 'AWS::CloudWatch::Alarm')).length;
    const statusWidget = body.match(/\\"type\\":\\"alarm\\"/g) ?? [];
    expect(statusWidget).toHaveLength(1);
    expect(alarmCount).toBeGreaterThanOrEqual(11);
  });
});

describe('cdk-nag (AwsSolutions)', () => {
  it('when the default app is checked, there are zero unacknowledged findings', () => {
    const report = new AwsSolutionsChecks(synth.app).validateScope(synth.app);
    expect(report.violations.map((v) => `${v.ruleName} @ ${v.violatingResources.map((r) => r.constructPath).join(', ')}`)).toEqual([]);
  });

  it('when Bedrock is enabled, the gateway gets InvokeModel on models and inference profiles and there are still zero findings', () => {
    const bedrock = synthApp({ gateway: { bedrock: true } });
    try {
      bedrock.templates.gateway.hasResourceProperties('AWS::IAM::Policy', {
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Action: ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream'] }),
          ]),
        },
      });
      const report = new AwsSolutionsChecks(bedrock.app).validateScope(bedrock.app);
      expect(report.violations.map((v) => v.ruleName)).toEqual([]);
    } finally {
      bedrock.dispose();
    }
  });

  it('when a finding is acknowledged, the acknowledgement names a rule and carries a real reason', () => {
    const acks: Array<{ id: string; reason: string }> = [];
    for (const c of synth.app.node.findAll()) {
      for (const entry of c.node.metadata) {
        if (entry.type !== Validations.ACKNOWLEDGED_RULES_METADATA_KEY) continue;
        for (const [id, reason] of Object.entries(entry.data as Record<string, string>)) acks.push({ id, reason });
      }
    }
    const nagAcks = acks.filter((a) => /AwsSolutions-/.test(a.id));
    expect(nagAcks.length).toBeGreaterThan(0);
    for (const a of nagAcks) {
      expect(a.reason.length).toBeGreaterThanOrEqual(60);
      expect(a.reason).not.toMatch(/^(todo|n\/a|none|ignore|suppress)/i);
    }
  });
});

it('when the stacks are listed, their names say stage and concern, and only the data stack has termination protection', () => {
  const names = Object.values(synth.stacks).map((s: Stack) => s.stackName);
  expect(names).toEqual(['Tollgate-dev-Data', 'Tollgate-dev-Guardrails', 'Tollgate-dev-Gateway', 'Tollgate-dev-Agent', 'Tollgate-dev-Observability']);
  expect(Object.values(synth.stacks).map((s: Stack) => s.terminationProtection)).toEqual([true, false, false, false, false]);
});
