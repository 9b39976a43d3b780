import { RemovalPolicy, Stack, Validations, type StackProps } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import { Platform } from 'aws-cdk-lib/aws-ecr-assets';
import * as ecs from 'aws-cdk-lib/aws-ecs';
import * as logs from 'aws-cdk-lib/aws-logs';
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
        ...data.tableEnvironment,
        TOLLGATE_SSM_PREFIX: secretsPrefix(config.stage),
      },
      secrets: { TOLLGATE_JWT_SECRET: ecs.Secret.fromSsmParameter(jwtSecret) },
    });
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-ECS2',
      reason: 'The environment holds only non-secret settings (stage, table names, SSM prefix); the JWT secret is injected from an SSM SecureString through `secrets`.',
    });
    Validations.of(this.taskDefinition).acknowledge({
      id: 'AwsSolutions-IAM5[Resource::*]',
      reason: 'ecr:GetAuthorizationToken, added to the execution role to pull the image, does not support resource-level permissions.',
    });
    // The agent works the same ledger as the gateway: it reads keys and reserves/settles budget and usage.
    data.grantTables(this.taskDefinition.taskRole, { keys: 'read', budgets: 'readWrite', usage: 'readWrite' });

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
