import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { DeleteParameterCommand, ParameterAlreadyExists, ParameterNotFound, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { parseJwtKeyRing } from '../../lambda/core/jwt';
import {
  applyGeneratedSecret,
  generateSecretValue,
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
    expect(put).toMatchObject({ Name: '/tollgate/dev/key-pepper', Type: 'SecureString', KeyId: 'arn:aws:kms:eu-west-1:123456789012:key/k', Overwrite: false });
    expect(put.Value).toMatch(/^[0-9a-f]{64}$/);
    expect(res).toEqual({
      Status: 'SUCCESS',
      PhysicalResourceId: '/tollgate/dev/key-pepper',
      StackId: event().StackId,
      RequestId: 'req-1',
      LogicalResourceId: 'KeyPepperSecret',
      NoEcho: true,
    });
    expect(JSON.stringify(res)).not.toContain(put.Value!);
    expect(logs.join('\n')).not.toContain(put.Value!);
  });

  it('when the parameter already exists (an update, a redeploy, or set by hand), it is kept as it is', async () => {
    ssm.on(PutParameterCommand).rejects(new ParameterAlreadyExists({ message: 'exists', $metadata: {} }));
    const res = await applyGeneratedSecret(event({ RequestType: 'Update', PhysicalResourceId: '/tollgate/dev/key-pepper' }), { ssm: ssm as unknown as SSMClient, log });
    expect(res.Status).toBe('SUCCESS');
    expect(ssm.commandCalls(PutParameterCommand)[0].args[0].input.Overwrite).toBe(false);
  });

  it('when the JWT secret is generated, it is a key-ring entry the gateway parses (kid and 256 bits)', () => {
    const ring = parseJwtKeyRing(generateSecretValue('jwt-secret'));
    expect(ring.signing.kid).toBe('generated-1');
    expect(ring.signing.secret.length).toBeGreaterThanOrEqual(32);
    expect(generateSecretValue('key-pepper')).not.toBe(generateSecretValue('key-pepper'));
  });

  it('when deleted by default, the parameter is kept; with RemoveOnDelete it is deleted, and a missing one is fine', async () => {
    const kept = await applyGeneratedSecret(event({ RequestType: 'Delete', PhysicalResourceId: '/tollgate/dev/key-pepper' }), { ssm: ssm as unknown as SSMClient, log });
    expect(kept.Status).toBe('SUCCESS');
    expect(ssm.commandCalls(DeleteParameterCommand)).toHaveLength(0);
    ssm.on(DeleteParameterCommand).rejects(new ParameterNotFound({ message: 'gone', $metadata: {} }));
    const removed = await applyGeneratedSecret(
      event({ RequestType: 'Delete', PhysicalResourceId: '/tollgate/dev/key-pepper', props: { RemoveOnDelete: 'true' } }),
      { ssm: ssm as unknown as SSMClient, log },
    );
    expect(removed.Status).toBe('SUCCESS');
    expect(ssm.commandCalls(DeleteParameterCommand)[0].args[0].input).toEqual({ Name: '/tollgate/dev/key-pepper' });
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
      expect(JSON.parse(received[0].body)).toMatchObject({ Status: 'SUCCESS', PhysicalResourceId: '/tollgate/dev/key-pepper', NoEcho: true });
      expect(JSON.parse(received[0].body).Data).toBeUndefined();
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
