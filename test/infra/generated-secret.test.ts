import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  AddTagsToResourceCommand,
  DeleteParameterCommand,
  DescribeParametersCommand,
  GetParameterCommand,
  ListTagsForResourceCommand,
  ParameterAlreadyExists,
  ParameterNotFound,
  PutParameterCommand,
  RemoveTagsFromResourceCommand,
  SSMClient,
} from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { parseJwtKeyRing } from '../../lambda/core/jwt';
import {
  ADOPTED_BY_TAG,
  applyGeneratedSecret,
  CREATED_BY_TAG,
  generateSecretValue,
  sameKey,
  handler,
  type CustomResourceEvent,
} from '../../lambda/handlers/generated-secret';

const ssm = mockClient(SSMClient);
const logs: string[] = [];
const log = (message: string, fields: Readonly<Record<string, string>>) => logs.push(JSON.stringify({ message, ...fields }));

function event(overrides: Partial<CustomResourceEvent> & { props?: Partial<CustomResourceEvent['ResourceProperties']> } = {}): CustomResourceEvent {
  const { props, ...rest } = overrides;
  return {
    RequestType: 'Create',
    ResponseURL: 'http://127.0.0.1:1/unused',
    StackId: 'arn:aws:cloudformation:eu-west-1:123456789012:stack/Tollgate-dev-Data/x',
    RequestId: 'req-1',
    LogicalResourceId: 'KeyPepperSecret',
    ResourceProperties: { ParameterName: '/tollgate/dev/key-pepper', Kind: 'key-pepper', KeyId: 'arn:aws:kms:eu-west-1:123456789012:key/k', RemoveOnDelete: 'false', ...props },
    ...rest,
  };
}

beforeEach(() => {
  ssm.reset();
  logs.length = 0;
});

describe('generated secrets (deploy-time custom resource)', () => {
  it('when created, it writes a SecureString with the data key without overwriting, and neither the response nor the log holds the value', async () => {
    ssm.on(PutParameterCommand).resolves({ Version: 1 });
    const res = await applyGeneratedSecret(event(), { ssm: ssm as unknown as SSMClient, log });
    const put = ssm.commandCalls(PutParameterCommand)[0].args[0].input;
    expect(put).toMatchObject({
      Name: '/tollgate/dev/key-pepper',
      Type: 'SecureString',
      KeyId: 'arn:aws:kms:eu-west-1:123456789012:key/k',
      Overwrite: false,
      Tags: [{ Key: CREATED_BY_TAG, Value: '/tollgate/dev/key-pepper@req-1' }],
    });
    expect(put.Value).toMatch(/^[0-9a-f]{64}$/);
    expect(res).toEqual({
      Status: 'SUCCESS',
      PhysicalResourceId: '/tollgate/dev/key-pepper@req-1',
      StackId: event().StackId,
      RequestId: 'req-1',
      LogicalResourceId: 'KeyPepperSecret',
      NoEcho: true,
    });
    expect(JSON.stringify(res)).not.toContain(put.Value!);
    expect(logs.join('\n')).not.toContain(put.Value!);
  });

  it('when the JWT secret is generated, it is a key-ring entry the gateway parses (kid and 256 bits)', () => {
    const ring = parseJwtKeyRing(generateSecretValue('jwt-secret'));
    expect(ring.signing.kid).toBe('generated-1');
    expect(ring.signing.secret.length).toBeGreaterThanOrEqual(32);
    expect(generateSecretValue('key-pepper')).not.toBe(generateSecretValue('key-pepper'));
  });

  it('when SSM refuses, the response is FAILED with the error name and parameter, never a value', async () => {
    ssm.on(PutParameterCommand).rejects(Object.assign(new Error('denied'), { name: 'AccessDeniedException' }));
    const res = await applyGeneratedSecret(event(), { ssm: ssm as unknown as SSMClient, log });
    expect(res).toMatchObject({ Status: 'FAILED', Reason: 'AccessDeniedException writing /tollgate/dev/key-pepper' });
  });

  it('when a kind or name is not one it generates, it fails without writing', async () => {
    expect((await applyGeneratedSecret(event({ props: { Kind: 'openai-api-key' } }), { ssm: ssm as unknown as SSMClient, log })).Status).toBe('FAILED');
    expect((await applyGeneratedSecret(event({ props: { ParameterName: 'key-pepper' } }), { ssm: ssm as unknown as SSMClient, log })).Status).toBe('FAILED');
    expect(ssm.commandCalls(PutParameterCommand)).toHaveLength(0);
  });

  it('when the Lambda runs, it PUTs the response to the pre-signed URL over HTTP', async () => {
    ssm.on(PutParameterCommand).resolves({ Version: 1 });
    const received: Array<{ method?: string; body: string }> = [];
    const server = http.createServer((req, res) => {
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => {
        received.push({ method: req.method, body });
        res.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      await handler(event({ ResponseURL: `http://127.0.0.1:${port}/cfn-response?sig=x` }));
      expect(received).toHaveLength(1);
      expect(received[0].method).toBe('PUT');
      expect(JSON.parse(received[0].body)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: '/tollgate/dev/key-pepper@req-1', NoEcho: true });
      expect(JSON.parse(received[0].body).Data).toBeUndefined();
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});

/**
 * A stateful stand-in for SSM Parameter Store behind aws-sdk-client-mock: parameters with type, value, key and
 * tags, the errors SSM answers with, and KMS keys that can be made undecryptable (deleted or disabled).
 */
class FakeParameterStore {
  readonly params = new Map<string, { type: string; value: string; keyId: string; tags: Record<string, string>; version: number }>();
  readonly unusableKeys = new Set<string>();

  install(): void {
    ssm.on(PutParameterCommand).callsFake((input: PutParameterCommand['input']) => {
      const name = input.Name!;
      const existing = this.params.get(name);
      if (existing && !input.Overwrite) throw new ParameterAlreadyExists({ message: 'exists', $metadata: {} });
      if (this.unusableKeys.has(input.KeyId!)) throw Object.assign(new Error('key disabled'), { name: 'KMSInvalidStateException' });
      const tags = existing?.tags ?? Object.fromEntries((input.Tags ?? []).map((t) => [t.Key!, t.Value!]));
      this.params.set(name, { type: input.Type!, value: input.Value!, keyId: input.KeyId!, tags, version: (existing?.version ?? 0) + 1 });
      return { Version: this.params.get(name)!.version };
    });
    ssm.on(DescribeParametersCommand).callsFake((input: DescribeParametersCommand['input']) => {
      const name = input.ParameterFilters?.[0]?.Values?.[0] ?? '';
      const p = this.params.get(name);
      // SSM reports the key as it was given (an ARN here) for SecureStrings only.
      return { Parameters: p ? [{ Name: name, Type: p.type, ...(p.type === 'SecureString' ? { KeyId: p.keyId } : {}) }] : [] };
    });
    ssm.on(GetParameterCommand).callsFake((input: GetParameterCommand['input']) => {
      const p = this.params.get(input.Name!);
      if (!p) throw new ParameterNotFound({ message: 'missing', $metadata: {} });
      if (p.type === 'SecureString' && this.unusableKeys.has(p.keyId)) throw Object.assign(new Error('key pending deletion'), { name: 'KMSInvalidStateException' });
      return { Parameter: { Name: input.Name, Type: p.type, Value: p.value, Version: p.version } };
    });
    ssm.on(ListTagsForResourceCommand).callsFake((input: ListTagsForResourceCommand['input']) => {
      const p = this.params.get(input.ResourceId!);
      if (!p) throw Object.assign(new Error('no such parameter'), { name: 'InvalidResourceId' });
      return { TagList: Object.entries(p.tags).map(([Key, Value]) => ({ Key, Value })) };
    });
    ssm.on(AddTagsToResourceCommand).callsFake((input: AddTagsToResourceCommand['input']) => {
      const p = this.params.get(input.ResourceId!)!;
      for (const t of input.Tags ?? []) p.tags[t.Key!] = t.Value!;
      return {};
    });
    ssm.on(RemoveTagsFromResourceCommand).callsFake((input: RemoveTagsFromResourceCommand['input']) => {
      const p = this.params.get(input.ResourceId!)!;
      for (const k of input.TagKeys ?? []) delete p.tags[k];
      return {};
    });
    ssm.on(DeleteParameterCommand).callsFake((input: DeleteParameterCommand['input']) => {
      if (!this.params.delete(input.Name!)) throw new ParameterNotFound({ message: 'missing', $metadata: {} });
      return {};
    });
  }
}

const OLD_KEY = 'arn:aws:kms:eu-west-1:123456789012:key/11111111-1111-1111-1111-111111111111';
const NEW_KEY = 'arn:aws:kms:eu-west-1:123456789012:key/22222222-2222-2222-2222-222222222222';
const NAME = '/tollgate/dev/key-pepper';

describe('generated secrets across their lifecycle (CloudFormation events against a stateful SSM)', () => {
  let store: FakeParameterStore;
  const deps = () => ({ ssm: ssm as unknown as SSMClient, log });
  const cfn = (type: 'Create' | 'Update' | 'Delete', requestId: string, physicalId?: string, props: Partial<CustomResourceEvent['ResourceProperties']> = {}) =>
    event({ RequestType: type, RequestId: requestId, ...(physicalId ? { PhysicalResourceId: physicalId } : {}), props: { KeyId: NEW_KEY, ...props } });
  beforeEach(() => {
    store = new FakeParameterStore();
    store.install();
  });

  it('Create: a new SecureString under the data key, tagged with the resource that created it', async () => {
    const res = await applyGeneratedSecret(cfn('Create', 'c1'), deps());
    expect(res).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: `${NAME}@c1` });
    expect(store.params.get(NAME)).toMatchObject({ type: 'SecureString', keyId: NEW_KEY, tags: { [CREATED_BY_TAG]: `${NAME}@c1` }, version: 1 });
  });

  it('Update without a change: the value, its version and its key stay as they are', async () => {
    await applyGeneratedSecret(cfn('Create', 'c1'), deps());
    const before = { ...store.params.get(NAME)! };
    const res = await applyGeneratedSecret(cfn('Update', 'u1', `${NAME}@c1`), deps());
    expect(res).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: `${NAME}@c1` });
    expect(store.params.get(NAME)).toEqual(before);
    expect(ssm.commandCalls(GetParameterCommand)).toHaveLength(0);
    expect(ssm.commandCalls(AddTagsToResourceCommand)).toHaveLength(0);
  });

  it('Update with a KMS key change: the same value is re-encrypted under the new key (never regenerated), and no log line holds it', async () => {
    await applyGeneratedSecret(cfn('Create', 'c1', undefined, { KeyId: OLD_KEY }), deps());
    const value = store.params.get(NAME)!.value;
    const res = await applyGeneratedSecret(cfn('Update', 'u1', `${NAME}@c1`, { KeyId: NEW_KEY }), deps());
    expect(res).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: `${NAME}@c1` });
    expect(store.params.get(NAME)).toMatchObject({ value, keyId: NEW_KEY, version: 2, tags: { [CREATED_BY_TAG]: `${NAME}@c1` } });
    expect(logs.join('\n')).toContain('re-encrypted');
    expect(logs.join('\n')).not.toContain(value);
    expect(JSON.stringify(res)).not.toContain(value);
  });

  it('Create after the Data stack was re-created: a value under the retained old key is re-encrypted under the new stack\'s key and adopted', async () => {
    store.params.set(NAME, { type: 'SecureString', value: 'a'.repeat(64), keyId: OLD_KEY, tags: { [CREATED_BY_TAG]: `${NAME}@old-stack` }, version: 3 });
    const res = await applyGeneratedSecret(cfn('Create', 'c2'), deps());
    expect(res).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: `${NAME}@c2` });
    expect(store.params.get(NAME)).toMatchObject({ value: 'a'.repeat(64), keyId: NEW_KEY, tags: { [CREATED_BY_TAG]: `${NAME}@old-stack`, [ADOPTED_BY_TAG]: `${NAME}@c2` } });
  });

  it('Update with a key change when the old key cannot decrypt (deleted, disabled): FAILED, naming the old key and what to do; nothing is written', async () => {
    await applyGeneratedSecret(cfn('Create', 'c1', undefined, { KeyId: OLD_KEY }), deps());
    store.unusableKeys.add(OLD_KEY);
    const before = { ...store.params.get(NAME)! };
    const res = await applyGeneratedSecret(cfn('Update', 'u1', `${NAME}@c1`), deps());
    expect(res.Status).toBe('FAILED');
    expect(res.Reason).toContain(OLD_KEY);
    expect(res.Reason).toContain('KMSInvalidStateException');
    expect(res.Reason).toContain('npm run secrets -- set');
    expect(res.Reason).not.toContain(before.value);
    expect(store.params.get(NAME)).toEqual(before);
  });

  it('a value set by hand as a plain String is kept, stored as a SecureString under the data key, and never deleted by the resource', async () => {
    store.params.set(NAME, { type: 'String', value: 'b'.repeat(64), keyId: '', tags: {}, version: 1 });
    const created = await applyGeneratedSecret(cfn('Create', 'c1', undefined, { RemoveOnDelete: 'true' }), deps());
    expect(store.params.get(NAME)).toMatchObject({ type: 'SecureString', keyId: NEW_KEY, value: 'b'.repeat(64), tags: { [ADOPTED_BY_TAG]: `${NAME}@c1` } });
    const deleted = await applyGeneratedSecret(cfn('Delete', 'd1', created.PhysicalResourceId, { RemoveOnDelete: 'true' }), deps());
    expect(deleted.Status).toBe('SUCCESS');
    expect(store.params.get(NAME)).toMatchObject({ value: 'b'.repeat(64), tags: {} });
  });

  it('Delete without removeOnDelete: the parameter is kept, nothing is called', async () => {
    const created = await applyGeneratedSecret(cfn('Create', 'c1'), deps());
    ssm.resetHistory();
    const res = await applyGeneratedSecret(cfn('Delete', 'd1', created.PhysicalResourceId), deps());
    expect(res).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: `${NAME}@c1` });
    expect(store.params.has(NAME)).toBe(true);
    expect(ssm.calls()).toHaveLength(0);
  });

  it('Delete with removeOnDelete: the parameter this resource created is deleted; one already gone is fine', async () => {
    const created = await applyGeneratedSecret(cfn('Create', 'c1', undefined, { RemoveOnDelete: 'true' }), deps());
    const res = await applyGeneratedSecret(cfn('Delete', 'd1', created.PhysicalResourceId, { RemoveOnDelete: 'true' }), deps());
    expect(res.Status).toBe('SUCCESS');
    expect(store.params.has(NAME)).toBe(false);
    expect((await applyGeneratedSecret(cfn('Delete', 'd2', created.PhysicalResourceId, { RemoveOnDelete: 'true' }), deps())).Status).toBe('SUCCESS');
  });

  it('replacement with removeOnDelete: the new resource adopts the live value, the old one\'s Delete keeps it, and the new one deletes it when it goes', async () => {
    const old = await applyGeneratedSecret(cfn('Create', 'c1', undefined, { RemoveOnDelete: 'true' }), deps());
    const value = store.params.get(NAME)!.value;
    const replacement = await applyGeneratedSecret(cfn('Create', 'c2', undefined, { RemoveOnDelete: 'true' }), deps());
    expect(replacement.PhysicalResourceId).not.toBe(old.PhysicalResourceId);
    // CloudFormation deletes the old resource once the update succeeded.
    await applyGeneratedSecret(cfn('Delete', 'd1', old.PhysicalResourceId, { RemoveOnDelete: 'true' }), deps());
    expect(store.params.get(NAME)).toMatchObject({ value, tags: { [CREATED_BY_TAG]: replacement.PhysicalResourceId } });
    await applyGeneratedSecret(cfn('Delete', 'd2', replacement.PhysicalResourceId, { RemoveOnDelete: 'true' }), deps());
    expect(store.params.has(NAME)).toBe(false);
  });

  it('a replacement that rolls back with removeOnDelete: the new resource\'s Delete leaves the live value to the old one', async () => {
    const old = await applyGeneratedSecret(cfn('Create', 'c1', undefined, { RemoveOnDelete: 'true' }), deps());
    const value = store.params.get(NAME)!.value;
    const replacement = await applyGeneratedSecret(cfn('Create', 'c2', undefined, { RemoveOnDelete: 'true' }), deps());
    await applyGeneratedSecret(cfn('Delete', 'r1', replacement.PhysicalResourceId, { RemoveOnDelete: 'true' }), deps());
    expect(store.params.get(NAME)).toMatchObject({ value, tags: { [CREATED_BY_TAG]: old.PhysicalResourceId } });
    await applyGeneratedSecret(cfn('Delete', 'd1', old.PhysicalResourceId, { RemoveOnDelete: 'true' }), deps());
    expect(store.params.has(NAME)).toBe(false);
  });

  it('a failed first deploy retried: the rolled-back Create (answered FAILED) deletes nothing, and the retried Create adopts the existing value', async () => {
    // First attempt: the Create succeeded, another resource failed, CloudFormation rolled back (removeOnDelete off).
    const first = await applyGeneratedSecret(cfn('Create', 'c1'), deps());
    await applyGeneratedSecret(cfn('Delete', 'r1', first.PhysicalResourceId), deps());
    const value = store.params.get(NAME)!.value;
    // Or the Create itself failed: its Delete carries the logical id as physical id.
    const failed = await applyGeneratedSecret(cfn('Delete', 'r2', 'KeyPepperSecret', { RemoveOnDelete: 'true' }), deps());
    expect(failed.Status).toBe('SUCCESS');
    // The retry: same command, the parameter exists, a Create is idempotent.
    const retry = await applyGeneratedSecret(cfn('Create', 'c3'), deps());
    expect(retry).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: `${NAME}@c3` });
    expect(store.params.get(NAME)).toMatchObject({ value, version: 1, tags: { [ADOPTED_BY_TAG]: `${NAME}@c3` } });
    const again = await applyGeneratedSecret(cfn('Create', 'c3'), deps());
    expect(again).toEqual(retry);
  });

  it('a resource deployed before physical ids carried the request id keeps its id on update and, not having tagged its value, never deletes it', async () => {
    store.params.set(NAME, { type: 'SecureString', value: 'c'.repeat(64), keyId: NEW_KEY, tags: {}, version: 1 });
    const res = await applyGeneratedSecret(cfn('Update', 'u1', NAME, { RemoveOnDelete: 'true' }), deps());
    expect(res).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: NAME });
    await applyGeneratedSecret(cfn('Delete', 'd1', NAME, { RemoveOnDelete: 'true' }), deps());
    expect(store.params.get(NAME)?.value).toBe('c'.repeat(64));
  });

  it('the key SSM reports matches by ARN, bare key id or alias; any other key counts as another', () => {
    expect(sameKey(NEW_KEY, NEW_KEY)).toBe(true);
    expect(sameKey('22222222-2222-2222-2222-222222222222', NEW_KEY)).toBe(true);
    expect(sameKey('alias/tollgate-dev-data', NEW_KEY, 'alias/tollgate-dev-data')).toBe(true);
    expect(sameKey(OLD_KEY, NEW_KEY, 'alias/tollgate-dev-data')).toBe(false);
    expect(sameKey('alias/aws/ssm', NEW_KEY, 'alias/tollgate-dev-data')).toBe(false);
    expect(sameKey(undefined, NEW_KEY)).toBe(false);
  });
});
