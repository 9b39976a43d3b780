/**
 * Assertions on the agent service's infrastructure (issue 6): the run queue and its dead-letter queue, the task
 * definition's settings, and grants as narrow as the worker and the gateway routes need.
 */
import { Match } from 'aws-cdk-lib/assertions';
import { AGENT_MAX_RECEIVES, AGENT_RUN_TIMEOUT } from '../../lib/stacks/agent-stack';
import { synthApp, type SynthesizedApp } from './app-fixture';

let synth: SynthesizedApp;

beforeAll(() => {
  synth = synthApp();
});

afterAll(() => synth.dispose());

type Resource = { Type: string; Properties: Record<string, unknown> };

function resources(name: 'agent' | 'gateway', type: string): Record<string, Resource> {
  return synth.templates[name].findResources(type) as Record<string, Resource>;
}

/** Every IAM statement attached to a role whose logical id starts with `rolePrefix`. */
function statementsOf(name: 'agent' | 'gateway', rolePrefix: string): Array<{ Action: string | string[]; Resource: unknown }> {
  return Object.values(resources(name, 'AWS::IAM::Policy'))
    .filter((p) => JSON.stringify(p.Properties.Roles).includes(rolePrefix))
    .flatMap((p) => (p.Properties.PolicyDocument as { Statement: Array<{ Action: string | string[]; Resource: unknown }> }).Statement);
}

const actionsOf = (s: { Action: string | string[] }) => (Array.isArray(s.Action) ? s.Action : [s.Action]);

describe('agent stack: run queue', () => {
  it('when synthesized, the run queue is encrypted (SQS-managed), TLS-only, and redrives to an encrypted dead-letter queue', () => {
    const queues = resources('agent', 'AWS::SQS::Queue');
    const main = Object.values(queues).find((q) => q.Properties.QueueName === 'tollgate-dev-agent-runs')!;
    const dlq = Object.values(queues).find((q) => q.Properties.QueueName === 'tollgate-dev-agent-runs-dlq')!;
    expect(main.Properties).toMatchObject({ SqsManagedSseEnabled: true, RedrivePolicy: { maxReceiveCount: AGENT_MAX_RECEIVES } });
    expect(dlq.Properties).toMatchObject({ SqsManagedSseEnabled: true, MessageRetentionPeriod: 14 * 86_400 });
    // A run is invisible to other workers for longer than it may run.
    expect(main.Properties.VisibilityTimeout).toBeGreaterThan(AGENT_RUN_TIMEOUT.toSeconds());
    const policies = Object.values(resources('agent', 'AWS::SQS::QueuePolicy'));
    expect(policies).toHaveLength(2);
    for (const p of policies) {
      expect(JSON.stringify(p.Properties)).toContain('"aws:SecureTransport":"false"');
    }
  });
});

describe('agent stack: task definition', () => {
  it('when synthesized, the worker gets the queue URL, the runs table, the gateway URL from SSM and its limits', () => {
    const task = Object.values(resources('agent', 'AWS::ECS::TaskDefinition'))[0]!;
    const [container] = task.Properties.ContainerDefinitions as Array<{ Environment: Array<{ Name: string; Value: unknown }>; StopTimeout: number }>;
    const env = Object.fromEntries(container!.Environment.map((e) => [e.Name, e.Value]));
    expect(env.TOLLGATE_TABLE_RUNS).toBe('tollgate-dev-runs');
    expect(env.TOLLGATE_AGENT_QUEUE_URL).toEqual({ Ref: expect.stringMatching(/^RunQueue/) });
    expect(env.TOLLGATE_AGENT_RUN_TIMEOUT_MS).toBe(String(AGENT_RUN_TIMEOUT.toMilliseconds()));
    expect(Number(env.TOLLGATE_AGENT_SHUTDOWN_GRACE_MS)).toBeLessThan(container!.StopTimeout * 1000);
    const gatewayUrl = env.TOLLGATE_GATEWAY_URL as { Ref: string };
    expect(synth.templates.agent.toJSON().Parameters[gatewayUrl.Ref]).toEqual({
      Type: 'AWS::SSM::Parameter::Value<String>',
      Default: '/tollgate/dev/config/gateway-url',
    });
  });

  it('when synthesized, the task role may only work the run queue and read and write runs: no ledger table', () => {
    const statements = statementsOf('agent', 'TaskTaskRole');
    const actions = statements.flatMap(actionsOf).sort();
    expect(actions).toEqual(
      [
        'dynamodb:GetItem',
        'dynamodb:PutItem',
        'kms:Decrypt',
        'kms:DescribeKey',
        'kms:Encrypt',
        'kms:GenerateDataKey',
        'sqs:ChangeMessageVisibility',
        'sqs:DeleteMessage',
        'sqs:ReceiveMessage',
        // The jwt-secret, read (and re-read after a rotation) by the task itself, decrypted only through SSM.
        'kms:Decrypt',
        'ssm:GetParameter',
        'ssm:GetParameters',
      ].sort(),
    );
    const ssmRead = statements.find((s) => actionsOf(s).includes('ssm:GetParameter'))!;
    expect(JSON.stringify(ssmRead.Resource)).toContain('parameter/tollgate/dev/jwt-secret');
    expect(JSON.stringify(ssmRead.Resource)).not.toMatch(/key-pepper|api-key/);
    const sqs = statements.find((s) => actionsOf(s).includes('sqs:ReceiveMessage'))!;
    expect(sqs.Resource).toEqual({ 'Fn::GetAtt': [expect.stringMatching(/^RunQueue/), 'Arn'] });
    const table = statements.find((s) => actionsOf(s).includes('dynamodb:GetItem'))!;
    expect(JSON.stringify(table.Resource)).toContain(':table/tollgate-dev-runs');
    expect(JSON.stringify(statements)).not.toMatch(/keys|budgets|usage/);
  });
});

describe('gateway stack: agent routes', () => {
  it('when synthesized, the gateway may send to the run queue and read and write runs, and knows both by name', () => {
    const statements = statementsOf('gateway', 'GatewayFunctionServiceRole');
    const send = statements.filter((s) => actionsOf(s).some((a) => a.startsWith('sqs:')));
    expect(send).toHaveLength(1);
    expect(actionsOf(send[0]!)).toEqual(['sqs:SendMessage']);
    expect(JSON.stringify(send[0]!.Resource)).toContain(':tollgate-dev-agent-runs');
    const runs = statements.find((s) => JSON.stringify(s.Resource).includes(':table/tollgate-dev-runs'))!;
    expect(actionsOf(runs).sort()).toEqual(['dynamodb:GetItem', 'dynamodb:PutItem']);
    synth.templates.gateway.hasResourceProperties('AWS::Lambda::Function', {
      Environment: { Variables: Match.objectLike({ TOLLGATE_TABLE_RUNS: 'tollgate-dev-runs', TOLLGATE_AGENT_QUEUE_URL: Match.anyValue() }) },
    });
  });

  it('when synthesized, the gateway publishes its URL for the agent in an SSM String parameter', () => {
    synth.templates.gateway.hasResourceProperties('AWS::SSM::Parameter', {
      Name: '/tollgate/dev/config/gateway-url',
      Type: 'String',
    });
  });
});
