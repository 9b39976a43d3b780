/**
 * The credential matrix against a real local gateway: forged, expired, revoked, suspended, wrong-audience,
 * wrong-issuer, alg-none, unknown-kid, malformed and oversized API keys and service JWTs. None is accepted, each
 * gets the right status and code, none is echoed back, and nothing reaches the usage ledger.
 */
import { createHmac } from 'node:crypto';
import { JWT_SECRET_K1, JWT_SECRET_K2, ADMIN_TOKEN, type IdentityHarness, startIdentityHarness } from './support/identity-harness';
import { forgeToken, goodClaims } from './forge';
import { recentRange } from '../support/usage-records';

let h: IdentityHarness;
let alice: { raw: string; keyId: string };
let suspended: { raw: string; keyId: string };
let revoked: { raw: string; keyId: string };
let expired: { raw: string; keyId: string };

beforeAll(async () => {
  h = await startIdentityHarness();
  alice = await h.createKey({ userId: 'alice' });
  suspended = await h.createKey({ userId: 'sam' });
  revoked = await h.createKey({ userId: 'rita' });
  expired = await h.createKey({ userId: 'ed', expiresAt: '2020-01-01T00:00:00Z' });
  await h.gateway.keys.setStatus(suspended.keyId, { status: 'suspended', actor: 'operator' });
  await h.gateway.keys.setStatus(revoked.keyId, { status: 'revoked', actor: 'operator' });
  await h.registerService('agent', ['ai:complete']);
  await h.registerService('embedder', ['ai:embed']);
  await h.registerService('paused', ['ai:complete']);
  await h.registerService('retired', ['ai:complete']);
  await h.gateway.keys.setStatus('svc:paused', { status: 'suspended', actor: 'operator' });
  await h.gateway.keys.setStatus('svc:retired', { status: 'revoked', actor: 'operator' });
});

afterAll(async () => {
  await h?.close();
});

const chatBody = JSON.stringify({ model: 'mock/gpt-4o-mini', messages: [{ role: 'user', content: 'hello' }] });

async function chat(headers: Record<string, string>): Promise<{ status: number; code: string | null; text: string }> {
  const res = await fetch(`${h.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: chatBody });
  const text = await res.text();
  let code: string | null = null;
  try {
    code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? null;
  } catch {
    code = null;
  }
  return { status: res.status, code, text };
}

const now = () => Math.floor(Date.now() / 1000);
const bearer = (token: string) => ({ authorization: `Bearer ${token}` });
const signed = (claims: Record<string, unknown>, header: Record<string, unknown> = { alg: 'HS256', typ: 'JWT', kid: 'k2' }, secret = JWT_SECRET_K2) =>
  forgeToken({ header, claims, secret });

interface Case {
  readonly name: string;
  readonly headers: () => Record<string, string>;
  readonly status: number;
  readonly code: string;
  /** The credential, to check it is not echoed. */
  readonly secretPart?: () => string;
}

const cases: Case[] = [
  { name: 'no credential at all', headers: () => ({}), status: 401, code: 'missing_api_key' },
  { name: 'an empty bearer', headers: () => ({ authorization: 'Bearer ' }), status: 401, code: 'missing_api_key' },
  { name: 'a random word as bearer', headers: () => bearer('hello'), status: 401, code: 'invalid_api_key' },
  {
    name: 'a well-shaped key with a real key id and a forged secret',
    headers: () => bearer(`sk-tg-${alice.keyId}${'A'.repeat(43)}`),
    status: 401,
    code: 'invalid_api_key',
  },
  { name: 'a well-shaped key with an unknown key id', headers: () => bearer(`sk-tg-${'Z'.repeat(12)}${'B'.repeat(43)}`), status: 401, code: 'invalid_api_key' },
  { name: 'a truncated real key', headers: () => bearer(alice.raw.slice(0, -1)), status: 401, code: 'invalid_api_key' },
  { name: 'a real key with extra characters', headers: () => bearer(`${alice.raw}x`), status: 401, code: 'invalid_api_key' },
  { name: 'a revoked key', headers: () => bearer(revoked.raw), status: 401, code: 'invalid_api_key', secretPart: () => revoked.raw },
  { name: 'an expired key', headers: () => bearer(expired.raw), status: 401, code: 'expired_api_key', secretPart: () => expired.raw },
  { name: 'a suspended key', headers: () => bearer(suspended.raw), status: 403, code: 'key_suspended', secretPart: () => suspended.raw },
  { name: 'the local admin token on a /v1 route', headers: () => bearer(ADMIN_TOKEN), status: 401, code: 'invalid_api_key' },
  {
    name: 'a JWT with alg none and no signature',
    headers: () => bearer(forgeToken({ header: { alg: 'none', typ: 'JWT' }, claims: goodClaims(now()) })),
    status: 401,
    code: 'invalid_token_algorithm',
  },
  {
    name: 'a JWT with alg none, a known kid and a copied signature',
    headers: () => bearer(forgeToken({ header: { alg: 'none', kid: 'k2' }, claims: goodClaims(now()), signature: 'c2lnbmF0dXJl' })),
    status: 401,
    code: 'invalid_token_algorithm',
  },
  { name: 'a JWT with alg "None"', headers: () => bearer(forgeToken({ header: { alg: 'None', kid: 'k2' }, claims: goodClaims(now()) })), status: 401, code: 'invalid_token_algorithm' },
  { name: 'a JWT signed HS512 with the real secret', headers: () => bearer(signed(goodClaims(now()), { alg: 'HS512', kid: 'k2' })), status: 401, code: 'invalid_token_algorithm' },
  { name: 'a JWT signed HS384 with the real secret', headers: () => bearer(signed(goodClaims(now()), { alg: 'HS384', kid: 'k2' })), status: 401, code: 'invalid_token_algorithm' },
  { name: 'a JWT claiming RS256', headers: () => bearer(forgeToken({ header: { alg: 'RS256', kid: 'k2' }, claims: goodClaims(now()), signature: 'AAAA' })), status: 401, code: 'invalid_token_algorithm' },
  { name: 'a JWT with an unknown kid', headers: () => bearer(signed(goodClaims(now()), { alg: 'HS256', kid: 'k9' })), status: 401, code: 'unknown_token_kid' },
  { name: 'a JWT without a kid', headers: () => bearer(signed(goodClaims(now()), { alg: 'HS256' })), status: 401, code: 'unknown_token_kid' },
  { name: 'a JWT signed with a guessed secret', headers: () => bearer(signed(goodClaims(now()), undefined, 'x'.repeat(48))), status: 401, code: 'invalid_token_signature' },
  {
    name: 'a JWT signed with the k1 secret but labelled k2',
    headers: () => bearer(signed(goodClaims(now()), { alg: 'HS256', kid: 'k2' }, JWT_SECRET_K1)),
    status: 401,
    code: 'invalid_token_signature',
  },
  {
    name: 'a JWT whose scopes were widened after signing',
    headers: () => {
      const [hdr, , sig] = signed(goodClaims(now(), { scopes: ['ai:complete'] })).split('.');
      const widened = Buffer.from(JSON.stringify(goodClaims(now(), { scopes: ['ai:complete', 'ai:byok'] }))).toString('base64url');
      return bearer(`${hdr}.${widened}.${sig}`);
    },
    status: 401,
    code: 'invalid_token_signature',
  },
  { name: 'a JWT for another audience', headers: () => bearer(signed(goodClaims(now(), { aud: 'tollgate-prod' }))), status: 401, code: 'invalid_token_audience' },
  { name: 'a JWT without an audience', headers: () => bearer(signed(goodClaims(now(), { aud: undefined }))), status: 401, code: 'invalid_token_audience' },
  { name: 'a JWT from another issuer', headers: () => bearer(signed(goodClaims(now(), { iss: 'evil-corp' }))), status: 401, code: 'invalid_token_issuer' },
  {
    name: 'an expired JWT',
    headers: () => bearer(signed(goodClaims(now() - 7200, { exp: now() - 3600 }))),
    status: 401,
    code: 'token_expired',
  },
  {
    name: 'an expired JWT sent in x-api-key',
    headers: () => ({ 'x-api-key': signed(goodClaims(now() - 7200, { exp: now() - 3600 })) }),
    status: 401,
    code: 'token_expired',
  },
  { name: 'a JWT not valid yet (nbf in an hour)', headers: () => bearer(signed(goodClaims(now(), { nbf: now() + 3600, exp: now() + 3600 }))), status: 401, code: 'token_not_yet_valid' },
  {
    name: 'a JWT issued in the future',
    headers: () => bearer(signed(goodClaims(now() + 600, { exp: now() + 1200 }))),
    status: 401,
    code: 'token_not_yet_valid',
  },
  { name: 'a JWT that lives two hours', headers: () => bearer(signed(goodClaims(now(), { exp: now() + 7200 }))), status: 401, code: 'token_lifetime_too_long' },
  { name: 'a JWT without exp', headers: () => bearer(signed(goodClaims(now(), { exp: undefined }))), status: 401, code: 'invalid_token_claims' },
  { name: 'a JWT without sub', headers: () => bearer(signed(goodClaims(now(), { sub: undefined }))), status: 401, code: 'invalid_token_claims' },
  { name: 'a JWT whose scopes are a string', headers: () => bearer(signed(goodClaims(now(), { scopes: 'ai:complete' }))), status: 401, code: 'invalid_token_claims' },
  { name: 'a JWT with an unknown scope', headers: () => bearer(signed(goodClaims(now(), { scopes: ['ai:root'] }))), status: 401, code: 'invalid_token_claims' },
  { name: 'a JWT acting for a malformed user', headers: () => bearer(signed(goodClaims(now(), { onBehalfOf: 'bob; drop' }))), status: 401, code: 'invalid_token_claims' },
  { name: 'a JWT of an unregistered service', headers: () => bearer(signed(goodClaims(now(), { sub: 'ghost' }))), status: 401, code: 'unknown_service' },
  { name: 'a JWT of a revoked service', headers: () => bearer(signed(goodClaims(now(), { sub: 'retired' }))), status: 401, code: 'service_revoked' },
  { name: 'a JWT of a suspended service', headers: () => bearer(signed(goodClaims(now(), { sub: 'paused' }))), status: 403, code: 'service_suspended' },
  { name: 'a JWT without the route scope', headers: () => bearer(signed(goodClaims(now(), { scopes: ['ai:embed'] }))), status: 403, code: 'missing_scope' },
  {
    name: 'a JWT asking for a scope its service is not registered for',
    headers: () => bearer(signed(goodClaims(now(), { sub: 'embedder', scopes: ['ai:complete'] }))),
    status: 403,
    code: 'missing_scope',
  },
  { name: 'a three-part token of junk', headers: () => bearer('abc.def.ghi'), status: 401, code: 'invalid_token' },
  { name: 'a token whose header is not JSON', headers: () => bearer(`${Buffer.from('nope').toString('base64url')}.e30.sig`), status: 401, code: 'invalid_token' },
  { name: 'a two-part token', headers: () => bearer('eyJhbGciOiJIUzI1NiJ9.e30'), status: 401, code: 'invalid_token' },
  { name: 'a token with characters outside base64url', headers: () => bearer('eyJh*.e30.sig'), status: 401, code: 'invalid_token' },
  {
    name: 'an oversized JWT (5 KB of claims)',
    headers: () => bearer(signed(goodClaims(now(), { pad: 'p'.repeat(5000) }))),
    status: 401,
    code: 'token_too_large',
  },
  { name: 'an oversized opaque bearer (6 KB)', headers: () => bearer('q'.repeat(6000)), status: 401, code: 'invalid_api_key' },
];

describe('credential matrix against the local gateway', () => {
  it('when the matrix is counted, it holds at least 30 bad credentials', () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
  });

  it.each(cases.map((c) => [c.name, c] as const))('when the caller presents %s, it is refused with the right status and code', async (_name, c) => {
    const headers = c.headers();
    const res = await chat(headers);
    expect({ status: res.status, code: res.code }).toEqual({ status: c.status, code: c.code });
    // The presented credential is never echoed back.
    const presented = (headers.authorization ?? '').replace(/^Bearer /, '') || headers['x-api-key'] || '';
    if (presented.length > 8) expect(res.text).not.toContain(presented);
  });

  it('when every bad credential has been tried, nothing was reserved or billed', async () => {
    await h.settled();
    // Usage records only: the table's refusal counters (every bad credential counted by reason) are not money.
    expect(await h.scan('usage')).toHaveLength(0);
  });
});

describe('good credentials (controls)', () => {
  it('when a live API key calls, it is served', async () => {
    expect((await chat(bearer(alice.raw))).status).toBe(200);
  });

  it('when a token from the issuer calls for a user, it is served and the spend lands on that user under the service key', async () => {
    const issued = await h.gateway.tokens.issue({ service: 'agent', scopes: ['ai:complete'], onBehalfOf: 'bob', orgId: 'acme', ttlSeconds: 600 });
    expect(issued.kid).toBe('k2');
    const res = await chat(bearer(issued.token));
    expect(res.status).toBe(200);
    await h.settled();
    const records = await h.gateway.usage.query({ by: 'user', id: 'bob', ...recentRange() });
    expect(records).toHaveLength(1);
    expect(records[0]).toMatchObject({ userId: 'bob', keyId: 'svc:agent', orgId: 'acme', byok: false });
    expect(records[0]!.costMicros).toBeGreaterThan(0);
  });

  it('when a token is signed with the previous secret (k1) during a rotation, it is still accepted', async () => {
    const token = signed(goodClaims(now()), { alg: 'HS256', typ: 'JWT', kid: 'k1' }, JWT_SECRET_K1);
    expect((await chat(bearer(token))).status).toBe(200);
  });

  it('when a service token spends on behalf of a user with a budget, that user budget stops it', async () => {
    await h.gateway.ledger.setLimit('user:carol', 'day', 1);
    h.gateway.pipeline.invalidateLimits();
    const issued = await h.gateway.tokens.issue({ service: 'agent', scopes: ['ai:complete'], onBehalfOf: 'carol' });
    const res = await chat(bearer(issued.token));
    expect({ status: res.status, code: res.code }).toEqual({ status: 429, code: 'insufficient_quota' });
    expect(res.text).toContain('user:carol');
  });

  it('when a JWT is signed with HMAC by hand exactly like the issuer, it verifies (the forge helper is faithful)', async () => {
    const claims = goodClaims(now());
    const token = forgeToken({ header: { alg: 'HS256', typ: 'JWT', kid: 'k2' }, claims, secret: JWT_SECRET_K2 });
    const [h64, p64, sig] = token.split('.');
    expect(sig).toBe(createHmac('sha256', JWT_SECRET_K2).update(`${h64}.${p64}`).digest('base64url'));
    expect((await chat(bearer(token))).status).toBe(200);
  });
});
