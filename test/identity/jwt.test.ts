/** Service JWTs: key ring parsing and rotation, issuing rules, and the admin caller modes. */
import { ManualClock } from '../../lambda/core/clock';
import { JwtKeyRingSource, parseJwtKeyRing, TokenIssuer, TokenVerifier } from '../../lambda/core/jwt';
import { adminActor } from '../../lambda/http/admin-routes';
import type { HttpRequest } from '../../lambda/http/types';

const S1 = 'a'.repeat(40);
const S2 = 'b'.repeat(40);
const T0 = Date.parse('2026-03-01T12:00:00Z');

function pair(secret: string | (() => Promise<string | undefined>), clock = new ManualClock(T0)) {
  const o = { keys: new JwtKeyRingSource(secret), clock, issuer: 'tollgate', audience: 'tollgate-test' };
  return { issuer: new TokenIssuer(o), verifier: new TokenVerifier(o), clock };
}

describe('jwt-secret key ring', () => {
  it('when the value lists two kids, the first signs and both verify', () => {
    const ring = parseJwtKeyRing(`k2:${S2},k1:${S1}`);
    expect(ring.signing.kid).toBe('k2');
    expect([...ring.byKid.keys()]).toEqual(['k2', 'k1']);
  });

  it('when a value has no kid, it is the kid "default"', () => {
    expect(parseJwtKeyRing(S1).signing.kid).toBe('default');
  });

  it.each([
    ['a short secret', 'k1:short'],
    ['a repeated kid', `k1:${S1},k1:${S2}`],
    ['an empty value', ' , '],
  ])('when the value has %s, it is refused without quoting the secret', (_what, value) => {
    let message = '';
    try {
      parseJwtKeyRing(value);
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).not.toBe('');
    expect(message).not.toContain(S2);
  });

  it('when the secret source changes (rotation), a warm verifier picks up the new kid without a restart', async () => {
    let value = `k1:${S1}`;
    const { verifier, clock } = pair(async () => value);
    const newIssuer = pair(`k2:${S2},k1:${S1}`, clock).issuer;
    const token = (await newIssuer.issue({ service: 'agent', scopes: ['ai:complete'] })).token;
    await expect(verifier.verify(token)).rejects.toMatchObject({ code: 'unknown_token_kid' });
    value = `k1:${S1},k2:${S2}`;
    await expect(verifier.verify(token)).resolves.toMatchObject({ service: 'agent', kid: 'k2' });
  });
});

describe('issuing and verifying', () => {
  it('when a token is issued for a user with a ttl, it verifies with those claims until it expires', async () => {
    const { issuer, verifier, clock } = pair(`k1:${S1}`);
    const issued = await issuer.issue({ service: 'agent', scopes: ['ai:complete', 'ai:embed'], onBehalfOf: 'alice', ttlSeconds: 3600 });
    expect(issued.expiresAt).toBe('2026-03-01T13:00:00.000Z');
    await expect(verifier.verify(issued.token)).resolves.toMatchObject({
      service: 'agent',
      scopes: ['ai:complete', 'ai:embed'],
      onBehalfOf: 'alice',
      tokenId: issued.tokenId,
    });
    clock.advance(3600_000 + 31_000);
    await expect(verifier.verify(issued.token)).rejects.toMatchObject({ status: 401, code: 'token_expired' });
  });

  it.each([
    ['a ttl over an hour', { ttlSeconds: 3601 }],
    ['an unknown scope', { scopes: ['ai:everything'] }],
    ['no scope', { scopes: [] }],
    ['an upper-case service', { service: 'Agent' }],
    ['a malformed user', { onBehalfOf: 'a b' }],
  ])('when asked for a token with %s, the issuer refuses', async (_what, override) => {
    const { issuer } = pair(`k1:${S1}`);
    await expect(issuer.issue({ service: 'agent', scopes: ['ai:complete'], ...override })).rejects.toBeInstanceOf(RangeError);
  });

  it('when no secret is configured, tokens are refused as disabled', async () => {
    const o = { keys: new JwtKeyRingSource(undefined), clock: new ManualClock(T0), issuer: 'i', audience: 'a' };
    await expect(new TokenVerifier(o).verify('a.b.c')).rejects.toMatchObject({ code: 'service_tokens_disabled' });
  });
});

describe('admin caller', () => {
  const req = (extra: Partial<HttpRequest>): HttpRequest => ({
    method: 'POST',
    path: '/admin/keys',
    query: new URLSearchParams(),
    headers: {},
    body: Buffer.alloc(0),
    signal: new AbortController().signal,
    ...extra,
  });

  it('when the mode is iam and API Gateway passed the caller ARN, the ARN is the actor', () => {
    const arn = 'arn:aws:iam::111122223333:user/ops';
    expect(adminActor(req({ iamCaller: arn }), { mode: 'iam' })).toBe(arn);
  });

  it('when the mode is iam and there is no IAM caller, even the right local token is refused', () => {
    expect(() => adminActor(req({ headers: { authorization: 'Bearer tga-x' } }), { mode: 'iam', localToken: 'tga-x' })).toThrow(
      expect.objectContaining({ status: 403, code: 'admin_iam_required' }),
    );
  });

  it('when the mode is local-token, an IAM caller field alone is not enough', () => {
    expect(() => adminActor(req({ iamCaller: 'arn:aws:iam::1:user/x' }), { mode: 'local-token', localToken: 'tga-x' })).toThrow(
      expect.objectContaining({ status: 401, code: 'missing_admin_token' }),
    );
  });

  it('when the mode is off, every admin request is refused', () => {
    expect(() => adminActor(req({ iamCaller: 'arn:aws:iam::1:user/x' }), { mode: 'off' })).toThrow(
      expect.objectContaining({ status: 403, code: 'admin_api_disabled' }),
    );
  });
});
