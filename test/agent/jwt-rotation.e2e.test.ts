/**
 * Issue 23, finding 8: the agent re-reads a rotated `jwt-secret` without a restart. A real local gateway (DynamoDB
 * Local, the fake upstream) verifies service tokens against the ring it reads on every check; the agent's gateway
 * client signs with the ring it reads from SSM (aws-sdk-client-mock: SSM cannot run here) through
 * {@link RefreshingSecret}. After a rotation that drops the old key, the agent's next call is refused once (401,
 * nothing spent), re-reads the secret and succeeds; no restart, no lost run.
 */
import { GetParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { GatewayCallError, GatewayClient } from '../../agent/src/gateway-client';
import { JWT_SECRET_TTL_MS, RefreshingSecret, ssmParameterReader } from '../../agent/src/jwt-secret';
import { serviceTokens } from '../../agent/src/service';
import { registerService } from '../../lambda/core/auth';
import { ManualClock, systemClock } from '../../lambda/core/clock';
import { generateJwtSecretEntry, JwtKeyRingSource, TokenIssuer } from '../../lambda/core/jwt';
import { type Harness, startHarness } from '../support/gateway-harness';

const PARAMETER = '/tollgate/test/jwt-secret';
const OLD = generateJwtSecretEntry('k1');
const NEW = generateJwtSecretEntry('k2');
const ssm = mockClient(SSMClient);
let stored = OLD;
let gatewayRing = OLD;
let h: Harness;
const secretClock = new ManualClock(1_000_000);

beforeAll(async () => {
  h = await startHarness({ secrets: { jwtSecret: async () => gatewayRing } });
  await registerService(h.gateway.keys, { service: 'agent', scopes: ['ai:complete'] }, { clock: systemClock });
});
afterAll(() => h.close());
beforeEach(() => {
  ssm.reset();
  ssm.on(GetParameterCommand).callsFake(async (input: GetParameterCommand['input']) => {
    expect(input).toEqual({ Name: PARAMETER, WithDecryption: true });
    return { Parameter: { Name: PARAMETER, Type: 'SecureString', Value: stored } };
  });
  stored = OLD;
  gatewayRing = OLD;
  h.upstream.reset();
  h.upstream.script({ replyText: 'done', usage: { inputTokens: 10, outputTokens: 5 } });
});

function agentClient(options: { readonly refresh: boolean }) {
  const secret = new RefreshingSecret(ssmParameterReader(new SSMClient({ region: 'eu-west-1' }), PARAMETER), { clock: secretClock });
  const issuer = new TokenIssuer({ keys: new JwtKeyRingSource(() => secret.get()), clock: systemClock, ...h.config.jwt });
  const client = new GatewayClient({ baseUrl: h.url, token: serviceTokens(issuer), ...(options.refresh ? { onUnauthorized: () => secret.invalidate() } : {}) });
  const call = () => client.chat({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'next step' }], maxTokens: 50 }, { userId: 'alice', signal: AbortSignal.timeout(30_000) });
  return { secret, call };
}

it('when the jwt-secret is rotated and the old key dropped, the running agent is refused once, re-reads the secret and carries on', async () => {
  const agent = agentClient({ refresh: true });
  expect((await agent.call()).content).toBe('done');
  expect(ssm.commandCalls(GetParameterCommand)).toHaveLength(1);

  // The operator rotates: `npm run secrets -- set jwt-secret` with a ring that no longer holds k1.
  stored = NEW;
  gatewayRing = NEW;
  const reached = h.upstream.requests.length;
  expect((await agent.call()).content).toBe('done');
  // One re-read, and the refused attempt never reached the provider.
  expect(ssm.commandCalls(GetParameterCommand)).toHaveLength(2);
  expect(h.upstream.requests.length).toBe(reached + 1);
});

it('without the re-read (a secret read once at start, as the ECS secret was), the same rotation fails every call with 401', async () => {
  const agent = agentClient({ refresh: false });
  await agent.call();
  stored = NEW;
  gatewayRing = NEW;
  const err = await agent.call().catch((e: unknown) => e);
  expect(err).toBeInstanceOf(GatewayCallError);
  expect((err as GatewayCallError).status).toBe(401);
});

it('the secret is cached for its TTL, re-read after it, and an SSM failure keeps the last good value', async () => {
  const { secret } = agentClient({ refresh: true });
  expect(await secret.get()).toBe(OLD);
  stored = NEW;
  expect(await secret.get()).toBe(OLD);
  expect(ssm.commandCalls(GetParameterCommand)).toHaveLength(1);
  secretClock.advance(JWT_SECRET_TTL_MS);
  expect(await secret.get()).toBe(NEW);
  ssm.on(GetParameterCommand).rejects(Object.assign(new Error('throttled'), { name: 'ThrottlingException' }));
  secret.invalidate();
  expect(await secret.get()).toBe(NEW);
  expect(ssm.commandCalls(GetParameterCommand)).toHaveLength(3);
});
