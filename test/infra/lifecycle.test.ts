/**
 * Issue 23 on the synthesized templates of the variant with every option the config offers on (Bedrock, Slack,
 * `secrets.removeOnDelete`; dev and prod are covered by deploy.test.ts): what a failed deploy, a re-create and a
 * tear-down keep or delete, the import mapping that re-adopts retained data, and cfn-lint. One synth for the file.
 * The runbook these back is docs/deploy-lifecycle.md.
 */
import { importMapping, RETAINING_POLICIES } from '../../lib/import-mapping';
import { TABLES } from '../../lambda/store/dynamodb/schema';
import { synthApp, type SynthesizedApp } from './app-fixture';
import { cfnLint } from './cfn-lint';

/** A synth and cfn-lint on a loaded 2-core box: a bound that only catches a hang. */
const HANG = 900_000;
type Resource = { Type: string; DeletionPolicy?: string; UpdateReplacePolicy?: string; Properties?: Record<string, unknown> };

let all: SynthesizedApp;
beforeAll(() => {
  all = synthApp({ gateway: { bedrock: true }, alerts: { slack: true, email: 'ops@example.com' }, secrets: { removeOnDelete: true } });
}, HANG);
afterAll(() => all.dispose());

function resourcesOf(app: SynthesizedApp): Array<[stack: string, id: string, r: Resource]> {
  return Object.entries(app.templates).flatMap(([stack, t]) =>
    Object.entries(t.toJSON().Resources as Record<string, Resource>).map(([id, r]) => [stack, id, r] as [string, string, Resource]),
  );
}

/** The physical name a resource fixes in the template, if any (a second create under it fails "already exists"). */
function fixedName(r: Resource): string | undefined {
  const p = r.Properties ?? {};
  const keys = ['TableName', 'QueueName', 'TopicName', 'LogGroupName', 'FunctionName', 'RoleName', 'AliasName', 'ClusterName', 'ServiceName', 'AlarmName', 'DashboardName', 'Name'];
  for (const k of keys) if (typeof p[k] === 'string') return p[k] as string;
  const budget = (p.Budget as { BudgetName?: unknown } | undefined)?.BudgetName;
  return typeof budget === 'string' ? budget : undefined;
}

describe('a failed first deploy can be retried with the same command', () => {
  it('when a create rolls back, every resource with a fixed name is deleted with it (Delete or RetainExceptOnCreate), so the retry does not collide', () => {
    const named = resourcesOf(all).filter(([, , r]) => fixedName(r) !== undefined);
    expect(named.length).toBeGreaterThan(20);
    for (const [stack, id, r] of named) {
      expect({ stack, id, name: fixedName(r), deletion: r.DeletionPolicy ?? 'Delete' }).toEqual({
        stack,
        id,
        name: fixedName(r),
        deletion: expect.stringMatching(/^(Delete|RetainExceptOnCreate)$/),
      });
    }
  });
});

describe('re-creating a stack or tearing it down never strands data', () => {
  it('when the Data stack is deleted or replaced, its 8 tables and the data key are kept (and protected); with removeOnDelete the secrets resources go and their handler decides', () => {
    const data = Object.entries(all.templates.data.toJSON().Resources as Record<string, Resource>);
    const kept = data.filter(([, r]) => r.Type === 'AWS::DynamoDB::Table' || r.Type === 'AWS::KMS::Key');
    expect(kept).toHaveLength(TABLES.length + 1);
    for (const [id, r] of kept) {
      expect({ id, deletion: r.DeletionPolicy, replace: r.UpdateReplacePolicy }).toEqual({ id, deletion: 'RetainExceptOnCreate', replace: 'Retain' });
      if (r.Type === 'AWS::DynamoDB::Table') expect({ id, protection: r.Properties?.DeletionProtectionEnabled, pitr: r.Properties?.PointInTimeRecoverySpecification }).toEqual({ id, protection: true, pitr: { PointInTimeRecoveryEnabled: true } });
    }
    const secrets = data.filter(([, r]) => r.Type === 'Custom::TollgateGeneratedSecret');
    expect(secrets).toHaveLength(2);
    for (const [id, r] of secrets) expect({ id, deletion: r.DeletionPolicy, remove: r.Properties?.RemoveOnDelete }).toEqual({ id, deletion: 'Delete', remove: 'true' });
    // Only with removeOnDelete may the generator delete, and then only what its tags allow (generated-secret.test.ts).
    const generator = data.filter(([, r]) => r.Type === 'AWS::IAM::Policy').map(([, r]) => JSON.stringify(r.Properties)).find((p) => p.includes('ssm:PutParameter'));
    expect(generator).toContain('ssm:DeleteParameter');
    expect(generator).toContain('ssm:RemoveTagsFromResource');
  });

  it('when a stack other than Data is deleted, nothing it retains holds data: only API Gateway\'s account-wide logging role and setting', () => {
    const retained = resourcesOf(all).filter(([stack, , r]) => stack !== 'data' && r.DeletionPolicy !== undefined && RETAINING_POLICIES.includes(r.DeletionPolicy));
    expect(retained.map(([stack, , r]) => `${stack} ${r.Type}`).sort()).toEqual(['gateway AWS::ApiGateway::Account', 'gateway AWS::IAM::Role']);
    for (const [, , r] of retained) expect(fixedName(r)).toBeUndefined();
  });

  it('when a deleted Data stack is re-created, the import mapping adopts every retained resource by its identifier (tables by name, the key by id)', () => {
    const template = all.templates.data.toJSON() as { Resources: Record<string, Resource> };
    const keyArn = 'arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    const mapping = importMapping(template, { keyId: keyArn });
    const retained = Object.entries(template.Resources).filter(([, r]) => r.DeletionPolicy !== undefined && RETAINING_POLICIES.includes(r.DeletionPolicy));
    expect(Object.keys(mapping).sort()).toEqual(retained.map(([id]) => id).sort());
    const tables = Object.values(mapping).filter((m) => 'TableName' in m).map((m) => m.TableName).sort();
    expect(tables).toEqual(TABLES.map((t) => `tollgate-${all.config.stage}-${t.id}`).sort());
    expect(Object.values(mapping).filter((m) => 'KeyId' in m)).toEqual([{ KeyId: '1234abcd-12ab-34cd-56ef-1234567890ab' }]);
    // Without the retained key's id the mapping cannot be made, and says where to find it.
    expect(() => importMapping(template, {})).toThrow(/KMSMasterKeyArn/);
    // A retained resource nobody can import would be stranded: the mapping refuses it.
    expect(() => importMapping({ Resources: { Q: { Type: 'AWS::SQS::Queue', DeletionPolicy: 'Retain' } } }, { keyId: keyArn })).toThrow(/Q \(AWS::SQS::Queue\) is retained/);
  });
});

describe('cfn-lint over the variant with every option on (Bedrock, Slack, removeOnDelete)', () => {
  it('when every template is linted, there are no findings beyond the named exceptions', () => {
    expect(all.config.gateway.bedrock && all.config.alerts.slack && all.config.secrets.removeOnDelete).toBe(true);
    expect(cfnLint(all)).toEqual([]);
  }, HANG);
});
