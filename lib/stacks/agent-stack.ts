import { ArnFormat, Duration, RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as appscaling from 'aws-cdk-lib/aws-applicationautoscaling';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
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

/** The agent VPC's address range (literal, so security group rules can name it). */
export const AGENT_VPC_CIDR = '10.0.0.0/16';

/** The NAT instance of the `dev` profile: the smallest Graviton instance, with standard (not unlimited) CPU credits. */
export const NAT_INSTANCE_TYPE = 't4g.nano';

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
  options.data.grantTableKey(grantee, [agentNames.runsTable(options.config)]);
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
  /** The NAT instance provider (`agent.nat: instance`), absent with NAT gateways. */
  readonly natInstances?: ec2.NatInstanceProviderV2;
  /** Scales the service between minTasks and maxTasks on the run backlog (visible + in-flight messages). */
  readonly scaling: ecs.ScalableTaskCount;

  constructor(scope: Construct, id: string, props: AgentStackProps) {
    super(scope, id, props);
    const { config, data } = props;
    const retention = config.logRetentionDays as logs.RetentionDays;

    if (config.agent.nat === 'instance') {
      this.natInstances = ec2.NatProvider.instanceV2({
        instanceType: new ec2.InstanceType(NAT_INSTANCE_TYPE),
        machineImage: ec2.MachineImage.latestAmazonLinux2023({ cpuType: ec2.AmazonLinuxCpuType.ARM_64 }),
        creditSpecification: ec2.CpuCredits.STANDARD,
        associatePublicIpAddress: true,
        defaultAllowedTraffic: ec2.NatTrafficDirection.OUTBOUND_ONLY,
      });
    }
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: ec2.IpAddresses.cidr(AGENT_VPC_CIDR),
      maxAzs: 2,
      natGateways: config.agent.nat === 'instance' ? 1 : config.agent.natGateways,
      ...(this.natInstances ? { natGatewayProvider: this.natInstances } : {}),
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

    if (this.natInstances) {
      // The tasks' only egress is HTTPS, so that is all the NAT instance accepts, and only from inside the VPC.
      this.natInstances.connections.allowFrom(ec2.Peer.ipv4(AGENT_VPC_CIDR), ec2.Port.tcp(443), 'HTTPS from the agent subnets');
      for (const instance of this.natInstances.gatewayInstances) {
        // An encrypted root volume (the NAT provider has no block-device option).
        const cfnInstance = instance.node.defaultChild as ec2.CfnInstance;
        cfnInstance.blockDeviceMappings = [
          { deviceName: '/dev/xvda', ebs: { encrypted: true, volumeType: 'gp3', deleteOnTermination: true } },
        ];
        // The root volume is billed on its own: it gets the instance's tags, the cost-allocation tag among them.
        cfnInstance.propagateTagsToVolumeOnCreation = true;
        for (const rule of ['AwsSolutions-EC28', 'AwsSolutions-EC29']) {
          Validations.of(instance).acknowledge({
            id: rule,
            reason: 'The dev profile NAT instance is a disposable t4g.nano: basic monitoring is enough (detailed monitoring would cost more than the instance) and it holds no state, so termination protection or an ASG adds nothing; prod uses managed NAT gateways.',
          });
        }
      }
    }

    this.cluster = new ecs.Cluster(this, 'Cluster', {
      clusterName: resourceName(config, 'agents'),
      vpc: this.vpc,
      containerInsightsV2: config.agent.containerInsights ? ecs.ContainerInsights.ENABLED : ecs.ContainerInsights.DISABLED,
    });
    if (!config.agent.containerInsights) {
      Validations.of(this.cluster).acknowledge({
        id: 'AwsSolutions-ECS4',
        reason: 'The dev cost profile leaves Container Insights off (about $9/month of custom metrics); the dashboard still plots the free AWS/ECS CPU and memory metrics, and the prod profile turns it on.',
      });
    }

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
        // The agent reads the jwt-secret itself (cached 5 minutes, re-read when the gateway refuses a token), so a
        // rotation reaches a running task; an ECS secret would be read once, at task start. Created at deploy by
        // the data stack's generated-secret resource.
        TOLLGATE_JWT_SECRET_PARAMETER: `${secretsPrefix(config.stage)}jwt-secret`,
      },

      stopTimeout: Duration.seconds(30),
    });
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason: 'The environment holds only non-secret settings (stage, table and queue names, the gateway URL, limits, the name of the jwt-secret parameter); the task reads the JWT secret itself from its SSM SecureString, with a grant for that one parameter.',
    });
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'ecr:GetAuthorizationToken, added to the execution role to pull the image, does not support resource-level permissions.',
    });
    data.grantSecrets(this.taskDefinition.taskRole, ['jwt-secret']);
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
      desiredCount: config.agent.minTasks,
      assignPublicIp: false,
      vpcSubnets: { subnetType: ec2.SubnetType.PRIVATE_WITH_EGRESS },
      securityGroups: [this.securityGroup],
      minHealthyPercent: 100,
      maxHealthyPercent: 200,
      circuitBreaker: { rollback: true },
      // Tasks carry the service's tags (the cost-allocation tag among them): Fargate is billed per task, and the
      // budget filters on that tag. ECS-managed tags add the cluster and service names.
      propagateTags: ecs.PropagatedTagSource.SERVICE,
      enableECSManagedTags: true,
    });

    // Scale on the backlog, in-flight runs included, so a task is never scaled in while it works on a run.
    this.scaling = this.service.autoScaleTaskCount({ minCapacity: config.agent.minTasks, maxCapacity: config.agent.maxTasks });
    const minute = Duration.minutes(1);
    this.scaling.scaleOnMetric('ScaleOnRunBacklog', {
      metric: new cloudwatch.MathExpression({
        expression: 'FILL(visible, 0) + FILL(inFlight, 0)',
        label: 'agent runs waiting or running',
        usingMetrics: {
          visible: this.queue.metricApproximateNumberOfMessagesVisible({ statistic: 'Maximum', period: minute }),
          inFlight: this.queue.metricApproximateNumberOfMessagesNotVisible({ statistic: 'Maximum', period: minute }),
        },
        period: minute,
      }),
      scalingSteps: [
        { upper: 0, change: -config.agent.maxTasks },
        { lower: 1, change: +1 },
      ],
      adjustmentType: appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
      cooldown: minute,
      evaluationPeriods: 1,
    });
  }
}
