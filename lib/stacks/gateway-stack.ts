import { CfnOutput, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as events from 'aws-cdk-lib/aws-events';
import * as targets from 'aws-cdk-lib/aws-events-targets';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import * as wafv2 from 'aws-cdk-lib/aws-wafv2';
import type { Construct } from 'constructs';
import { GATEWAY_SECRET_NAMES, secretsPrefix } from '../../lambda/core/secrets';
import { resourceName, type DeploymentConfig } from '../config';
import { GatewayWaf } from '../constructs/gateway-waf';
import { tokenizerLayer } from '../constructs/tokenizer-layer';
import { TollgateFunction } from '../constructs/tollgate-function';
import type { DataStack } from './data-stack';
import { agentNames, agentQueueRefs, grantRunsTable } from './agent-stack';

export interface GatewayStackProps extends StackProps {
  readonly config: DeploymentConfig;
  readonly data: DataStack;
}

/** The CloudWatch namespace the gateway's Powertools metrics (EMF) are written to. */
export const METRICS_NAMESPACE = 'Tollgate';

/** Longest a streamed response may run: API Gateway's streaming limit and the Lambda maximum. */
const STREAM_TIMEOUT = Duration.minutes(15);

/**
 * The public edge: a REGIONAL REST API (edge-optimised endpoints cut streams after 30 s idle) whose `/v1/*` and
 * `/admin/*` routes stream from one gateway Lambda, a WAF web ACL on its stage, and the sweeper that reclaims
 * holds left by crashed invocations.
 *
 *   client ─▶ WAF ─▶ API Gateway stage ─┬─ /v1/{proxy+}    (no authorizer: the Lambda checks API keys)
 *                                       └─ /admin/{proxy+} (AWS_IAM: SigV4 checked by API Gateway)
 *                                           ▼ STREAM
 *                                        gateway Lambda
 */
export class GatewayStack extends Stack {
  readonly api: apigw.RestApi;
  readonly gateway: TollgateFunction;
  readonly sweeper: TollgateFunction;
  readonly webAcl: wafv2.CfnWebACL;
  readonly waf: GatewayWaf;
  readonly accessLogs: logs.LogGroup;
  /** The group API Gateway writes execution logs (errors) to, created by the stack so it has a retention. */
  readonly executionLogs: logs.LogGroup;
  /** The role operators assume to call `/admin/*`, when the config names none of its own. */
  readonly operatorRole?: iam.Role;
  /** The principals the admin API's resource policy lets call `/admin/*`. */
  readonly operatorRoleArns: readonly string[];

  constructor(scope: Construct, id: string, props: GatewayStackProps) {
    super(scope, id, props);
    const { config, data } = props;

    this.gateway = new TollgateFunction(this, 'Gateway', {
      entry: 'lambda/handlers/gateway.ts',
      description: 'tollgate AI gateway: /v1 and /admin routes, streamed',
      memoryMb: config.gateway.memoryMb,
      timeout: STREAM_TIMEOUT,
      logRetentionDays: config.logRetentionDays,
      tokenizerLayer: tokenizerLayer(this, 'TokenizerLayer'),
      environment: {
        TOLLGATE_STAGE: config.stage,
        ...data.tableEnvironment,
        TOLLGATE_MAX_BODY_BYTES: String(config.gateway.maxBodyBytes),
        TOLLGATE_PLATFORM_SHARDS: String(config.gateway.platformShards),
        TOLLGATE_MOCK_PROVIDER: 'false',
        TOLLGATE_BEDROCK: String(config.gateway.bedrock),
        TOLLGATE_SSM_PREFIX: secretsPrefix(config.stage),
        TOLLGATE_UPSTREAM_TIMEOUT_MS: String(config.gateway.upstreamTimeoutMs),
        ...limitsEnvironment(config),
        TOLLGATE_DATA_KEY_ARN: data.key.keyArn,
        // /admin/* is AWS_IAM-authorized by API Gateway; the Lambda also requires the caller's IAM ARN.
        TOLLGATE_ADMIN_AUTH: 'iam',
        ...(config.gateway.routes?.rules.length ? { TOLLGATE_ROUTES: JSON.stringify(config.gateway.routes) } : {}),
        // Agent runs: stored here and queued for the agent stack's worker (names, not references: no cycle).
        TOLLGATE_TABLE_RUNS: agentNames.runsTable(config),
        TOLLGATE_AGENT_QUEUE_URL: agentQueueRefs(this, config).url,
        POWERTOOLS_SERVICE_NAME: 'tollgate-gateway',
        POWERTOOLS_METRICS_NAMESPACE: METRICS_NAMESPACE,
        ...(config.gateway.openaiBaseUrl ? { OPENAI_BASE_URL: config.gateway.openaiBaseUrl } : {}),
        ...(config.gateway.anthropicBaseUrl ? { ANTHROPIC_BASE_URL: config.gateway.anthropicBaseUrl } : {}),
      },
    });
    data.grantTables(this.gateway.fn, {
      // Authentication, key admin (create, list by user or all, status changes) and last-used stamps.
      keys: ['GetItem', 'Query', 'Scan', 'PutItem', 'UpdateItem', 'ConditionCheckItem'],
      // The ledger: counters, holds, rate buckets, circuits, loop guard and alerts, in transactions.
      budgets: ['GetItem', 'BatchGetItem', 'Query', 'PutItem', 'UpdateItem', 'DeleteItem', 'ConditionCheckItem'],
      // Usage records are written by settle (or, for a leased request, on their own) and read by reports. The
      // one delete: a lease returned after the sweeper reclaimed it removes the sweeper's 'abandoned' estimate of
      // it (conditioned on being exactly that record), since its requests have records of their own.
      usage: ['Query', 'PutItem', 'DeleteItem'],
      byok: ['GetItem', 'Query', 'PutItem', 'DeleteItem'],
      // The response cache: answers (get, put), the daily hit and savings counters (update, read by reports), and
      // request-collapsing claims (put conditionally, deleted by their holder).
      cache: ['GetItem', 'BatchGetItem', 'PutItem', 'UpdateItem', 'DeleteItem'],
    });
    data.grantAuditAppend(this.gateway.fn);
    data.grantSecrets(this.gateway.fn, GATEWAY_SECRET_NAMES);
    data.grantByokCrypto(this.gateway.fn);
    grantRunsTable(this, this.gateway.fn, { config, data, actions: ['dynamodb:GetItem', 'dynamodb:PutItem'] });
    this.gateway.fn.addToRolePolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [agentQueueRefs(this, config).arn] }));
    if (config.gateway.bedrock) this.grantBedrock();

    this.sweeper = new TollgateFunction(this, 'Sweeper', {
      entry: 'lambda/handlers/sweeper.ts',
      description: 'Reclaims expired budget holds every minute',
      timeout: Duration.seconds(55),
      logRetentionDays: config.logRetentionDays,
      environment: { TOLLGATE_STAGE: config.stage, ...data.tableEnvironment, TOLLGATE_PLATFORM_SHARDS: String(config.gateway.platformShards), ...limitsEnvironment(config) },
    });
    // budgets and usage: the holds (an expired one is charged in full); keys and budgets: the ledger kill switch
    // reads platform spend and suspends every key when it passes its limit.
    data.grantTables(this.sweeper.fn, {
      budgets: ['GetItem', 'BatchGetItem', 'Query', 'PutItem', 'UpdateItem', 'DeleteItem', 'ConditionCheckItem'],
      usage: ['PutItem'],
      keys: ['GetItem', 'Query', 'UpdateItem', 'ConditionCheckItem'],
    });
    // A ledger kill switch activation is recorded in the audit log (append-only).
    data.grantAuditAppend(this.sweeper.fn);
    new events.Rule(this, 'SweepEveryMinute', {
      description: 'Runs the tollgate hold sweeper',
      schedule: events.Schedule.rate(Duration.minutes(1)),
      targets: [new targets.LambdaFunction(this.sweeper.fn, { retryAttempts: 0 })],
    });

    this.accessLogs = new logs.LogGroup(this, 'AccessLogs', {
      retention: config.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    if (config.admin.operatorRoleArns.length === 0) {
      this.operatorRole = new iam.Role(this, 'OperatorRole', {
        roleName: resourceName(config, 'operator'),
        description: `tollgate ${config.stage}: operators assume this role to call /admin/* (the API's resource policy names it)`,
        assumedBy: new iam.AccountRootPrincipal(),
        maxSessionDuration: Duration.hours(1),
      });
    }
    this.operatorRoleArns = this.operatorRole ? [this.operatorRole.roleArn] : [...config.admin.operatorRoleArns];
    this.api = new apigw.RestApi(this, 'Api', {
      restApiName: resourceName(config, 'api'),
      description: `tollgate ${config.stage}: OpenAI- and Anthropic-compatible AI gateway`,
      endpointConfiguration: { types: [apigw.EndpointType.REGIONAL] },
      // /v1 is public (the Lambda checks tollgate keys); /admin is for the operator roles only. With a resource
      // policy, an IAM policy alone no longer makes a principal an admin: the Deny names everyone else.
      policy: new iam.PolicyDocument({
        statements: [
          new iam.PolicyStatement({
            sid: 'AllowInvoke',
            principals: [new iam.AnyPrincipal()],
            actions: ['execute-api:Invoke'],
            resources: ['execute-api:/*'],
          }),
          new iam.PolicyStatement({
            sid: 'DenyAdminToAllButOperators',
            effect: iam.Effect.DENY,
            principals: [new iam.AnyPrincipal()],
            actions: ['execute-api:Invoke'],
            resources: ['execute-api:/*/*/admin/*'],
            conditions: { StringNotLike: { 'aws:PrincipalArn': [...this.operatorRoleArns] } },
          }),
        ],
      }),
      // The account-level role API Gateway needs to write execution logs (APIG6); retained on delete.
      cloudWatchRole: true,
      deployOptions: {
        stageName: config.stage,
        accessLogDestination: new apigw.LogGroupLogDestination(this.accessLogs),
        accessLogFormat: apigw.AccessLogFormat.jsonWithStandardFields({
          caller: true,
          httpMethod: true,
          ip: true,
          protocol: true,
          requestTime: true,
          resourcePath: true,
          responseLength: true,
          status: true,
          user: true,
        }),
        tracingEnabled: true,
        loggingLevel: apigw.MethodLoggingLevel.ERROR,
        dataTraceEnabled: false,
        metricsEnabled: true,
        throttlingRateLimit: config.api.throttleRatePerSecond,
        throttlingBurstLimit: config.api.throttleBurst,
      },
    });
    Validations.of(this.api).acknowledge({
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
      reason: 'The account-level API Gateway logging role uses the AWS-documented managed policy, which only writes CloudWatch Logs.',
    });

    // Bodies: API Gateway rejects anything over 10 MB itself; the Lambda enforces TOLLGATE_MAX_BODY_BYTES (413).
    const validator = this.api.addRequestValidator('Validator', { validateRequestParameters: true });
    Validations.of(this.api).acknowledge({
      id: 'AwsSolutions-APIG2',
      reason: 'Request parameters are validated by API Gateway; bodies are validated by the gateway Lambda against the OpenAI/Anthropic schemas so errors come back in the caller\'s dialect, which API Gateway models cannot express.',
    });
    const integration = new apigw.LambdaIntegration(this.gateway.fn, {
      proxy: true,
      responseTransferMode: apigw.ResponseTransferMode.STREAM,
      timeout: STREAM_TIMEOUT,
    });
    const v1Proxy = this.api.root.addResource('v1').addProxy({ anyMethod: false });
    const v1Method = v1Proxy.addMethod('ANY', integration, {
      authorizationType: apigw.AuthorizationType.NONE,
      requestValidator: validator,
    });
    for (const rule of ['AwsSolutions-APIG4', 'AwsSolutions-COG4']) {
      Validations.of(v1Method).acknowledge({
        id: rule,
        reason: 'The /v1 routes are called with tollgate API keys (Authorization / x-api-key), which the gateway Lambda checks as its first step (HMAC lookup, status, scopes); an API Gateway authorizer would add a second invocation and latency per request.',
      });
    }
    const adminProxy = this.api.root.addResource('admin').addProxy({ anyMethod: false });
    const adminMethod = adminProxy.addMethod('ANY', integration, {
      authorizationType: apigw.AuthorizationType.IAM,
      requestValidator: validator,
    });
    Validations.of(adminMethod).acknowledge({
      id: 'AwsSolutions-COG4',
      reason: 'Admin routes use AWS_IAM (SigV4) authorization by API Gateway; operators are IAM principals, not Cognito users.',
    });
    if (this.operatorRole) {
      this.operatorRole.addToPolicy(
        new iam.PolicyStatement({ actions: ['execute-api:Invoke'], resources: [this.api.arnForExecuteApi('*', '/admin/*', config.stage)] }),
      );
      Validations.of(this.operatorRole).acknowledge({
        id: 'AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:execute-api:<AWS::Region>:<AWS::AccountId>:<ApiF70053CD>/' + config.stage + '/*/admin/*]',
        reason: 'The operator role may call every method under /admin/* of this API and stage only; the admin routes are one proxy resource, so a path wildcard is the exact set.',
      });
      new CfnOutput(this, 'OperatorRoleArn', {
        description: 'Assume this role to call /admin/* (npm run admin -- --url <BaseUrl> …)',
        value: this.operatorRole.roleArn,
      });
    }

    // The agent worker calls this API; it reads the URL from here when its stack deploys.
    new ssm.StringParameter(this, 'GatewayUrlParameter', {
      parameterName: agentNames.gatewayUrlParameter(config),
      stringValue: this.api.url,
      description: `tollgate ${config.stage}: the gateway base URL the agent worker calls`,
    });

    this.waf = new GatewayWaf(this, 'Waf', {
      name: resourceName(config, 'web-acl'),
      stageName: config.stage,
      ratePerIpPer5Min: config.waf.ratePerIpPer5Min,
      rateScope: config.waf.rateScope,
      blockedCountries: config.waf.blockedCountries,
      commonRuleSetCountOnly: config.waf.commonRuleSetCountOnly,
      logRetentionDays: config.logRetentionDays,
    });
    this.webAcl = this.waf.webAcl;
    // API Gateway writes execution logs to API-Gateway-Execution-Logs_<api id>/<stage>, creating the group itself
    // (no retention, outside the stack) unless it exists: create it first, with the configured retention.
    this.executionLogs = new logs.LogGroup(this, 'ExecutionLogs', {
      logGroupName: `API-Gateway-Execution-Logs_${this.api.restApiId}/${config.stage}`,
      retention: config.logRetentionDays as logs.RetentionDays,
      removalPolicy: RemovalPolicy.DESTROY,
    });
    this.api.deploymentStage.node.addDependency(this.executionLogs);

    new wafv2.CfnWebACLAssociation(this, 'WebAclAssociation', {
      resourceArn: this.api.deploymentStage.stageArn,
      webAclArn: this.webAcl.attrArn,
    });
  }

  /** The invoke URL clients use as their base URL (append `v1`). */
  get url(): string {
    return this.api.url;
  }

  private grantBedrock(): void {
    this.gateway.fn.addToRolePolicy(
      new iam.PolicyStatement({
        actions: ['bedrock:InvokeModel', 'bedrock:InvokeModelWithResponseStream'],
        resources: [
          `arn:${this.partition}:bedrock:*::foundation-model/*`,
          `arn:${this.partition}:bedrock:*:${this.account}:inference-profile/*`,
        ],
      }),
    );
    for (const finding of [
      'Resource::arn:<AWS::Partition>:bedrock:*::foundation-model/*',
      'Resource::arn:<AWS::Partition>:bedrock:*:<AWS::AccountId>:inference-profile/*',
    ]) {
      Validations.of(this.gateway.fn).acknowledge({
        id: `AwsSolutions-IAM5[${finding}]`,
        reason: 'Callers choose the model per request (bedrock/<model>), and cross-region inference profiles route to foundation models in other regions, so the set of models is not known at deploy time; the actions are limited to invocation.',
      });
    }
  }
}

/** The default limits (lib/config.ts `limits`) as the gateway's and the sweeper's environment. */
function limitsEnvironment(config: DeploymentConfig): Record<string, string> {
  return {
    TOLLGATE_DEFAULT_KEY_BUDGETS: config.limits.keyBudgets,
    TOLLGATE_DEFAULT_USER_BUDGETS: config.limits.userBudgets,
    TOLLGATE_DEFAULT_PLATFORM_BUDGETS: config.limits.platformBudgets,
    TOLLGATE_DEFAULT_KEY_RPM: config.limits.keyRpm,
    TOLLGATE_DEFAULT_KEY_TPM: config.limits.keyTpm,
  };
}
