import { GetParametersCommand, SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { ManualClock } from '../../lambda/core/clock';
import { StoreUnavailableError } from '../../lambda/core/errors';
import { EnvSecretSource, GATEWAY_SECRET_NAMES, SsmSecretSource } from '../../lambda/core/secrets';

const ssm = mockClient(SSMClient);

function answer(values: Record<string, string>) {
  ssm.on(GetParametersCommand).callsFake((input: { Names: string[] }) => ({
    Parameters: input.Names.filter((n) => n in values).map((n) => ({ Name: n, Value: values[n], Type: 'SecureString' })),
    InvalidParameters: input.Names.filter((n) => !(n in values)),
  }));
}

beforeEach(() => ssm.reset());

describe('SsmSecretSource', () => {
  it('when several secrets are read, it fetches the gateway\'s names in one decrypted GetParameters call under the prefix', async () => {
    answer({ '/tollgate/dev/openai-api-key': 'sk-openai', '/tollgate/dev/key-pepper': 'pepper' });
    const source = new SsmSecretSource({ client: new SSMClient({}), prefix: '/tollgate/dev/' });
    expect(await source.get('openai-api-key')).toBe('sk-openai');
    expect(await source.get('key-pepper')).toBe('pepper');
    expect(await source.get('anthropic-api-key')).toBeUndefined();
    const calls = ssm.commandCalls(GetParametersCommand);
    expect(calls).toHaveLength(1);
    expect(calls[0].args[0].input).toEqual({ Names: GATEWAY_SECRET_NAMES.map((n) => `/tollgate/dev/${n}`), WithDecryption: true });
  });

  it('when concurrent callers ask before the first fetch returns, they share one call', async () => {
    answer({ '/tollgate/dev/jwt-secret': 'j' });
    const source = new SsmSecretSource({ client: new SSMClient({}), prefix: '/tollgate/dev/' });
    const values = await Promise.all([source.get('jwt-secret'), source.get('jwt-secret'), source.get('key-pepper')]);
    expect(values).toEqual(['j', 'j', undefined]);
    expect(ssm.commandCalls(GetParametersCommand)).toHaveLength(1);
  });

  it('when the cache time passes, it fetches again and picks up a rotated value', async () => {
    const clock = new ManualClock(0);
    answer({ '/tollgate/dev/key-pepper': 'old' });
    const source = new SsmSecretSource({ client: new SSMClient({}), prefix: '/tollgate/dev/', ttlMs: 60_000, clock });
    expect(await source.get('key-pepper')).toBe('old');
    answer({ '/tollgate/dev/key-pepper': 'new' });
    clock.advance(59_999);
    expect(await source.get('key-pepper')).toBe('old');
    clock.advance(1);
    expect(await source.get('key-pepper')).toBe('new');
    expect(ssm.commandCalls(GetParametersCommand)).toHaveLength(2);
  });

  it('when more than 10 names are configured, it asks SSM in batches of 10', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `s${i}`);
    answer({ '/p/s11': 'last' });
    const source = new SsmSecretSource({ client: new SSMClient({}), prefix: '/p/', names });
    expect(await source.get('s11')).toBe('last');
    expect(ssm.commandCalls(GetParametersCommand).map((c) => c.args[0].input.Names?.length)).toEqual([10, 2]);
  });

  it('when SSM fails before anything was cached, it fails closed with StoreUnavailableError', async () => {
    ssm.on(GetParametersCommand).rejects(new Error('AccessDeniedException'));
    const source = new SsmSecretSource({ client: new SSMClient({}), prefix: '/tollgate/dev/' });
    await expect(source.get('key-pepper')).rejects.toBeInstanceOf(StoreUnavailableError);
  });

  it('when a refresh fails after a success, it keeps serving the cached values and retries later', async () => {
    const clock = new ManualClock(0);
    answer({ '/tollgate/dev/key-pepper': 'v1' });
    const source = new SsmSecretSource({ client: new SSMClient({}), prefix: '/tollgate/dev/', ttlMs: 1_000, retryAfterMs: 500, clock });
    await source.get('key-pepper');
    ssm.reset();
    ssm.on(GetParametersCommand).rejects(new Error('Throttled'));
    clock.advance(1_000);
    expect(await source.get('key-pepper')).toBe('v1');
    clock.advance(100);
    expect(await source.get('key-pepper')).toBe('v1');
    expect(ssm.commandCalls(GetParametersCommand)).toHaveLength(1);
    answer({ '/tollgate/dev/key-pepper': 'v2' });
    clock.advance(400);
    expect(await source.get('key-pepper')).toBe('v2');
  });

  it('when asked for a name it was not configured with, it throws instead of reading an ungranted parameter', async () => {
    const source = new SsmSecretSource({ client: new SSMClient({}), prefix: '/tollgate/dev/', names: ['slack-webhook-url'] });
    await expect(source.get('openai-api-key')).rejects.toThrow(RangeError);
    expect(ssm.commandCalls(GetParametersCommand)).toHaveLength(0);
  });

  it('when the prefix does not start and end with "/", it refuses to build', () => {
    expect(() => new SsmSecretSource({ client: new SSMClient({}), prefix: 'tollgate/dev' })).toThrow('prefix');
  });
});

describe('EnvSecretSource', () => {
  it('when the TOLLGATE_SECRET_ variable is set, it wins over the provider SDK variable', async () => {
    const source = new EnvSecretSource({ TOLLGATE_SECRET_OPENAI_API_KEY: 'mine', OPENAI_API_KEY: 'sdk' });
    expect(await source.get('openai-api-key')).toBe('mine');
  });

  it('when only the provider SDK variable is set, it is used for the provider keys', async () => {
    const source = new EnvSecretSource({ ANTHROPIC_API_KEY: 'sk-ant' });
    expect(await source.get('anthropic-api-key')).toBe('sk-ant');
    expect(await source.get('key-pepper')).toBeUndefined();
  });

  it('when a variable is empty, the secret counts as unset', async () => {
    expect(await new EnvSecretSource({ TOLLGATE_SECRET_KEY_PEPPER: '' }).get('key-pepper')).toBeUndefined();
    expect(EnvSecretSource.variableFor('slack-webhook-url')).toBe('TOLLGATE_SECRET_SLACK_WEBHOOK_URL');
  });
});
