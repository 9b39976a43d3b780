import { ArnFormat, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import type { Construct } from 'constructs';
import { secretsPrefix } from '../../lambda/core/secrets';
import { resourceName, type DeploymentConfig } from '../config';
import { REPO_ROOT } from '../constructs/tollgate-function';
import type { DataStack } from './data-stack';

export interface AgentStackProps extends StackProps {
  readonly config: DeploymentConfig;
  readonly data: DataStack;
}

/** Wall-clock limit of one agent run (TOLLGATE_AGENT_RUN_TIMEOUT_MS); the queue's visibility timeout exceeds it. */
export const AGENT_RUN_TIMEOUT = Duration.minutes(10);
/** How long a stopping task lets its run finish (inside ECS's 30-second stop timeout). */
export const AGENT_SHUTDOWN_GRACE = Duration.seconds(25);
/** Deliveries of one run message before SQS moves it to the dead-letter queue. */
export const AGENT_MAX_RECEIVES = 3;

/**
 * Names the gateway and the agent agree on without a cross-stack reference (the gateway deploys before the
 * agent, and the agent needs the gateway's URL): the run queue, the runs table and the SSM String parameter
 * the gateway stack publishes its URL in.
 */
export const agentNames = {
  queue: (config: Pick<DeploymentConfig, 'stage'>) => resourceName(config, 'agent-runs'),
  runsTable: (config: Pick<DeploymentConfig, 'stage'>) => resourceName(config, 'runs'),
  gatewayUrlParameter: (config: Pick<DeploymentConfig, 'stage'>) => `/tollgate/${config.stage}/config/gateway-url`,
};

/** The run queue's URL and ARN, as seen from `stack`. */
export function agentQueueRefs(stack: Stack, config: Pick<DeploymentConfig, 'stage'>): { readonly url: string; readonly arn: string } {
  const name = agentNames.queue(config);
  return {
    url: `https://sqs.${stack.region}.${stack.urlSuffix}/${stack.account}/${name}`,
    arn: stack.formatArn({ service: 'sqs', resource: name, arnFormat: ArnFormat.NO_RESOURCE_NAME }),
  };
}

/**
 * Grants exactly `actions` on the runs table (by name: the data stack declares it) and use of the data key
 * only through DynamoDB, which encrypts the table.
 */
export function grantRunsTable(
  stack: Stack,
  grantee: iam.IGrantable,
  options: { readonly config: Pick<DeploymentConfig, 'stage'>; readonly data: DataStack; readonly actions: readonly string[] },
): void {
  grantee.grantPrincipal.addToPrincipalPolicy(
    new iam.PolicyStatement({
      actions: [...options.actions],
      resources: [stack.formatArn({ service: 'dynamodb', resource: 'table', resourceName: agentNames.runsTable(options.config) })],
    }),
  );
  grantee.grantPrincipal.addToPrincipalPolicy(
    new iam.PolicyStatement({
      actions: ['kms:Decrypt', 'kms:Encrypt', 'kms:GenerateDataKey'],
      resources: [options.data.key.keyArn],
      conditions: { StringEquals: { 'kms:ViaService': `dynamodb.${stack.region}.amazonaws.com` } },
    }),
  );
}

/**
 * The agent service: a Fargate service in the private subnets of its own VPC (2 AZs, NAT gateways from config,
 * DynamoDB and S3 gateway endpoints so table and image-layer traffic skips the NAT), with no public IP and a
 * security group whose only egress is TCP 443. The image is built from agent/Dockerfile with the repository
 * root as context (the agent imports lambda/core); `cdk synth` only stages it, Docker runs at deploy time.
 */
export class AgentStack extends Stack {
  readonly vpc: ec2.Vpc;
  readonly cluster: ecs.Cluster;
  readonly service: ecs.FargateService;
  readonly securityGroup: ec2.SecurityGroup;
  readonly taskDefinition: ecs.FargateTaskDefinition;
  /** The run queue (the gateway sends, the agent receives) and its dead-letter queue. */
  readonly queue: sqs.Queue;
  readonly deadLetterQueue: sqs.Queue;

  constructor(scope: Construct, id: string, props: AgentStackProps) {
    super(scope, id, props);
    const { config, data } = props;
    const retention = config.logRetentionDays as logs.RetentionDays;

    this.vpc = new ec2.Vpc(this, 'Vpc', {
      maxAzs: 2,
      natGateways: config.agent.natGateways,
      subnetConfiguration: [
        { name: 'public', subnetType: ec2.SubnetType.PUBLIC, cidrMask: 24 },
        { name: 'private', subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS, cidrMask: 22 },
      ],
      gatewayEndpoints: {
        DynamoDb: { service: ec2.GatewayVpcEndpointAwsService.DYNAMODB },
        S3: { service: ec2.GatewayVpcEndpointAwsService.S3 },
      },
    });
    this.vpc.addFlowLog('RejectedFlows', {
      destination: ec2.FlowLogDestination.toCloudWatchLogs(
        new logs.LogGroup(this, 'FlowLogs', { retention, removalPolicy: RemovalPolicy.DESTROY }),
      ),
      trafficType: ec2.FlowLogTrafficType.REJECT,
    });

    this.cluster = new ecs.Cluster(this, 'Cluster', {
      clusterName: resourceName(config, 'agents'),
      vpc: this.vpc,
      containerInsightsV2: ecs.ContainerInsights.ENABLED,
    });

    this.securityGroup = new ec2.SecurityGroup(this, 'AgentSecurityGroup', {
      vpc: this.vpc,
      description: 'tollgate agent tasks: no inbound, outbound HTTPS only',
      allowAllOutbound: false,
    });
    this.securityGroup.addEgressRule(ec2.Peer.anyIpv4(), ec2.Port.tcp(443), 'HTTPS to AWS APIs and model providers');

    // Runs the worker could not record after AGENT_MAX_RECEIVES deliveries land here for an operator.
    this.deadLetterQueue = new sqs.Queue(this, 'RunDeadLetterQueue', {
      queueName: `${agentNames.queue(config)}-dlq`,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(this.deadLetterQueue).acknowledge({
      id: 'AwsSolutions-SQS3',
      reason: 'This is itself the dead-letter queue of the agent run queue; messages that land here are kept 14 days for an operator.',
    });
    this.queue = new sqs.Queue(this, 'RunQueue', {
      queueName: agentNames.queue(config),
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // A received run is invisible while it runs: longer than the run's limit plus the shutdown grace.
      visibilityTimeout: AGENT_RUN_TIMEOUT.plus(AGENT_SHUTDOWN_GRACE).plus(Duration.minutes(5)),
      retentionPeriod: Duration.days(4),
      deadLetterQueue: { queue: this.deadLetterQueue, maxReceiveCount: AGENT_MAX_RECEIVES },
    });

    this.taskDefinition = new ecs.FargateTaskDefinition(this, 'Task', {
      cpu: config.agent.cpu,
      memoryLimitMiB: config.agent.memoryMb,
      runtimePlatform: { cpuArchitecture: ecs.CpuArchitecture.ARM64, operatingSystemFamily: ecs.OperatingSystemFamily.LINUX },
    });
    const jwtSecret = ssm.StringParameter.fromSecureStringParameterAttributes(this, 'JwtSecret', {
      parameterName: `${secretsPrefix(config.stage)}jwt-secret`,
      encryptionKey: data.key,
    });
    this.taskDefinition.addContainer('agent', {
      image: ecs.ContainerImage.fromAsset(REPO_ROOT, {
        file: 'agent/Dockerfile',
        platform: Platform.LINUX_ARM64,
      }),
      logging: ecs.LogDrivers.awsLogs({
        streamPrefix: 'agent',
        logGroup: new logs.LogGroup(this, 'AgentLogs', { retention, removalPolicy: RemovalPolicy.DESTROY }),
      }),
      readonlyRootFilesystem: true,
      environment: {
        TOLLGATE_STAGE: config.stage,
        TOLLGATE_TABLE_RUNS: agentNames.runsTable(config),
        TOLLGATE_AGENT_QUEUE_URL: this.queue.queueUrl,
        // Resolved from the gateway stack's SSM parameter when this stack deploys (the gateway deploys first).
        TOLLGATE_GATEWAY_URL: ssm.StringParameter.valueForStringParameter(this, agentNames.gatewayUrlParameter(config)),
        TOLLGATE_AGENT_RUN_TIMEOUT_MS: String(AGENT_RUN_TIMEOUT.toMilliseconds()),
        TOLLGATE_AGENT_SHUTDOWN_GRACE_MS: String(AGENT_SHUTDOWN_GRACE.toMilliseconds()),
      },
      secrets: { TOLLGATE_JWT_SECRET: ecs.Secret.fromSsmParameter(jwtSecret) },
      stopTimeout: Duration.seconds(30),
    });
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason: 'The environment holds only non-secret settings (stage, table and queue names, the gateway URL, limits); the JWT secret is injected from an SSM SecureString through `secrets`.',
    });
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'ecr:GetAuthorizationToken, added to the execution role to pull the image, does not support resource-level permissions.',
    });
    // The agent calls the gateway over HTTP (the gateway keeps the ledger); it only records runs and works the queue.
    grantRunsTable(this, this.taskDefinition.taskRole, { config, data, actions: ['dynamodb:GetItem', 'dynamodb:PutItem'] });
    this.taskDefinition.taskRole.addToPrincipalPolicy(
      new iam.PolicyStatement({
        actions: ['sqs:ReceiveMessage', 'sqs:DeleteMessage', 'sqs:ChangeMessageVisibility'],
        resources: [this.queue.queueArn],
      }),
    );

    this.service = new ecs.FargateService(this, 'Service', {
      serviceName: resourceName(config, 'agent'),
      cluster: this.cluster,
      taskDefinition: this.taskDefinition,
      desiredCount: config.agent.desiredCount,
      assignPublicIp: false,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [this.securityGroup],
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { rollback: true },
    });
  }
}
