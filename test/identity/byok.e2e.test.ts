/**
 * BYOK end to end against DynamoDB Local and a fake upstream on real HTTP: store (validated with the provider),
 * show, use (the provider receives the user's key, the spend is byok and off the platform counters), a blob
 * copied to another user's row fails, delete; then a scan of every log line and table item for the secrets.
 */
import { PutItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall } from '@aws-sdk/util-dynamodb';
import { auditText } from '../../lambda/admin/render';
import { secretFingerprint } from '../../lambda/core/audit';
import { windowKey } from '../../lambda/core/windows';
import type { AuditEntry } from '../../lambda/store/dynamodb/audit-store';
import { findSecrets } from './secret-scan';
import {
  ADMIN_TOKEN,
  BYOK_MASTER_KEY,
  ID_PEPPER,
  ID_UPSTREAM_OPENAI_KEY,
  JWT_SECRET_K1,
  JWT_SECRET_K2,
  type IdentityHarness,
  startIdentityHarness,
} from './support/identity-harness';
import { recentRange } from '../support/usage-records';

const ALICE_OPENAI_KEY = 'sk-alice-own-openai-KEY-0123456789abcdef';
const ALICE_ANTHROPIC_KEY = 'sk-ant-alice-own-KEY-fedcba9876543210';
const REFUSED_KEY = 'sk-refused-by-provider-KEY-55555555';

let h: IdentityHarness;
let alice: { raw: string; keyId: string };
let bob: { raw: string; keyId: string };
let plain: { raw: string; keyId: string };
const issuedTokens: string[] = [];

beforeAll(async () => {
  h = await startIdentityHarness();
  alice = await h.createKey({ userId: 'alice', scopes: ['ai:complete', 'ai:byok'] });
  bob = await h.createKey({ userId: 'bob', scopes: ['ai:complete', 'ai:byok'] });
  plain = await h.createKey({ userId: 'pat', scopes: ['ai:complete'] });
});

afterAll(async () => {
  await h?.close();
});

async function call(method: string, path: string, key: string, body?: unknown) {
  const res = await fetch(`${h.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: text ? (JSON.parse(text) as Record<string, unknown>) : {}, text };
}

const chat = (key: string) =>
  call('POST', '/v1/chat/completions', key, { model: 'openai/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }], max_tokens: 20 });

const errorCode = (json: Record<string, unknown>) => (json.error as { code?: string } | undefined)?.code;

describe('BYOK round trip', () => {
  it('when a user stores an OpenAI key, the provider is asked with that key first and GET shows only its prefix', async () => {
    h.upstream.reset();
    const put = await call('PUT', '/v1/byok/openai', alice.raw, { apiKey: ALICE_OPENAI_KEY });
    expect(put.status).toBe(200);
    expect(put.json).toMatchObject({ object: 'byok_key', provider: 'openai', status: 'active', prefix: 'sk-alic…' });
    expect(put.text).not.toContain(ALICE_OPENAI_KEY);
    const validation = h.upstream.requests.filter((r) => r.method === 'GET' && r.path === '/v1/models');
    expect(validation).toHaveLength(1);
    expect(validation[0]!.headers.authorization).toBe(`Bearer ${ALICE_OPENAI_KEY}`);

    const got = await call('GET', '/v1/byok/openai', alice.raw);
    expect(got.status).toBe(200);
    expect(got.json.prefix).toBe('sk-alic…');
    expect(typeof got.json.last_validated_at).toBe('string');
    expect(got.text).not.toContain(ALICE_OPENAI_KEY);

    const [item] = (await h.scanAll()).filter((i) => i.table === h.tables.tables.byok && i.userId === 'alice');
    expect(item).toBeDefined();
    expect(String(item!.blob)).toMatch(/^v1\.local\./);
    expect(JSON.stringify(item)).not.toContain(ALICE_OPENAI_KEY);
  });

  it('when an Anthropic key is stored, validation uses x-api-key against the Anthropic endpoint', async () => {
    h.upstream.reset();
    const put = await call('PUT', '/v1/byok/anthropic', alice.raw, { apiKey: ALICE_ANTHROPIC_KEY });
    expect(put.status).toBe(200);
    const [validation] = h.upstream.requests;
    expect(validation).toMatchObject({ method: 'GET', path: '/v1/models' });
    expect(validation!.headers['x-api-key']).toBe(ALICE_ANTHROPIC_KEY);
    const list = await call('GET', '/v1/byok', alice.raw);
    expect((list.json.data as { provider: string }[]).map((d) => d.provider).sort()).toEqual(['anthropic', 'openai']);
  });

  it('when the user calls an OpenAI model, the upstream receives the user key and the spend is byok, off the platform counters', async () => {
    h.upstream.reset();
    const res = await chat(alice.raw);
    expect(res.status).toBe(200);
    await h.settled();
    const upstreamCall = h.upstream.requests.find((r) => r.path === '/v1/chat/completions');
    expect(upstreamCall!.headers.authorization).toBe(`Bearer ${ALICE_OPENAI_KEY}`);
    const [record] = await h.gateway.usage.query({ by: 'user', id: 'alice', ...recentRange() });
    expect(record).toMatchObject({ byok: true, provider: 'openai', userId: 'alice' });
    expect(record!.costMicros).toBeGreaterThan(0);

    const items = await h.scanAll();
    const counters = items.filter((i) => i.table === h.tables.tables.budgets && String(i.pk).startsWith('ctr#'));
    const day = windowKey('day', Date.parse(record!.timestamp));
    expect(counters.find((c) => c.pk === 'ctr#user:alice#byok' && c.sk === day)?.spent).toBe(record!.costMicros);
    expect(counters.some((c) => String(c.pk).startsWith('ctr#platform'))).toBe(false);
    expect(counters.some((c) => c.pk === 'ctr#user:alice')).toBe(false);
  });

  it('when a user without a stored key calls, the platform key is used and the spend counts toward the platform', async () => {
    h.upstream.reset();
    expect((await chat(bob.raw)).status).toBe(200);
    await h.settled();
    expect(h.upstream.requests.find((r) => r.path === '/v1/chat/completions')!.headers.authorization).toBe(`Bearer ${ID_UPSTREAM_OPENAI_KEY}`);
    const counters = (await h.scanAll()).filter((i) => i.table === h.tables.tables.budgets && String(i.pk).startsWith('ctr#platform'));
    expect(counters.length).toBeGreaterThan(0);
  });

  it('when the user has a BYOK budget, BYOK spend is stopped by it', async () => {
    await h.gateway.ledger.setLimit('user:alice#byok', 'day', 1);
    h.gateway.pipeline.invalidateLimits();
    const res = await chat(alice.raw);
    expect(res.status).toBe(429);
    expect(res.text).toContain('user:alice#byok');
    await h.gateway.ledger.setLimit('user:alice#byok', 'day', null);
    h.gateway.pipeline.invalidateLimits();
  });

  it("when alice's blob is copied into bob's row, bob's call fails to decrypt and nothing reaches the provider", async () => {
    const items = await h.scanAll();
    const aliceItem = items.find((i) => i.table === h.tables.tables.byok && i.userId === 'alice' && i.provider === 'openai')!;
    const { table: _t, ...stolen } = aliceItem;
    await h.tables.client.send(new PutItemCommand({ TableName: h.tables.tables.byok, Item: marshall({ ...stolen, userId: 'bob' }) }));
    h.upstream.reset();
    const res = await chat(bob.raw);
    expect(res.status).toBe(500);
    expect(errorCode(res.json)).toBe('byok_key_unusable');
    expect(h.upstream.requests).toHaveLength(0);
    expect(res.text).not.toContain(ALICE_OPENAI_KEY);
    // Alice's own row still opens.
    expect((await chat(alice.raw)).status).toBe(200);
  });

  it('when the provider refuses the key, it is not stored and the answer is 400', async () => {
    h.upstream.script({ status: 401 });
    const put = await call('PUT', '/v1/byok/openai', bob.raw, { apiKey: REFUSED_KEY });
    h.upstream.reset();
    expect(put.status).toBe(400);
    expect(errorCode(put.json)).toBe('invalid_byok_key');
    expect(put.text).not.toContain(REFUSED_KEY);
    // bob's row is still the (stolen) copy, not the refused key.
    const bobItem = (await h.scanAll()).find((i) => i.table === h.tables.tables.byok && i.userId === 'bob');
    expect(JSON.stringify(bobItem)).not.toContain('sk-refu');
  });

  it('when a key lacks the ai:byok scope, the BYOK routes answer 403', async () => {
    const res = await call('PUT', '/v1/byok/openai', plain.raw, { apiKey: ALICE_OPENAI_KEY });
    expect(res.status).toBe(403);
    expect(errorCode(res.json)).toBe('missing_scope');
  });

  it('when the provider is not one that takes keys, the answer is 400', async () => {
    const res = await call('PUT', '/v1/byok/mock', alice.raw, { apiKey: ALICE_OPENAI_KEY });
    expect(res.status).toBe(400);
    expect(errorCode(res.json)).toBe('unsupported_byok_provider');
  });

  it('when the key is deleted, GET answers 404 and calls go back to the platform key', async () => {
    expect((await call('DELETE', '/v1/byok/openai', alice.raw)).status).toBe(200);
    expect((await call('GET', '/v1/byok/openai', alice.raw)).status).toBe(404);
    expect((await call('DELETE', '/v1/byok/openai', alice.raw)).status).toBe(404);
    h.upstream.reset();
    expect((await chat(alice.raw)).status).toBe(200);
    expect(h.upstream.requests.find((r) => r.path === '/v1/chat/completions')!.headers.authorization).toBe(`Bearer ${ID_UPSTREAM_OPENAI_KEY}`);
  });

  it('when a service token acts for a user with a stored key, the user key is used', async () => {
    await h.registerService('agent', ['ai:complete']);
    const { token } = await h.gateway.tokens.issue({ service: 'agent', scopes: ['ai:complete'], onBehalfOf: 'alice' });
    issuedTokens.push(token);
    await call('PUT', '/v1/byok/openai', alice.raw, { apiKey: ALICE_OPENAI_KEY });
    h.upstream.reset();
    expect((await chat(token)).status).toBe(200);
    expect(h.upstream.requests.find((r) => r.path === '/v1/chat/completions')!.headers.authorization).toBe(`Bearer ${ALICE_OPENAI_KEY}`);
  });
});

describe('admin API (local-token mode)', () => {
  const admin = (method: string, path: string, token: string | undefined, body?: unknown) =>
    fetch(`${h.url}${path}`, {
      method,
      headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    }).then(async (r) => ({ status: r.status, json: (await r.json()) as Record<string, unknown> }));

  it('when no admin token or a wrong one is sent, admin routes answer 401 and change nothing', async () => {
    expect((await admin('POST', '/admin/keys', undefined, { userId: 'mallory' })).status).toBe(401);
    expect((await admin('POST', '/admin/keys', alice.raw, { userId: 'mallory' })).status).toBe(401);
    expect((await admin('POST', '/admin/keys', `${ADMIN_TOKEN}x`, { userId: 'mallory' })).status).toBe(401);
    expect(await h.gateway.keys.listByUser('mallory')).toHaveLength(0);
  });

  it('when the admin creates and suspends a key, both changes are in the audit log with the actor, and the raw key is not', async () => {
    const created = await admin('POST', '/admin/keys', ADMIN_TOKEN, { userId: 'dave', scopes: ['ai:complete'], budget: { usd: '2', window: 'day' } });
    expect(created.status).toBe(201);
    const raw = created.json.key as string;
    issuedTokens.push(raw);
    expect(created.json.hash).toBeUndefined();
    expect((await chat(raw)).status).toBe(200);
    const keyId = created.json.keyId as string;
    expect((await admin('POST', `/admin/keys/${keyId}/suspend`, ADMIN_TOKEN, { reason: 'test' })).status).toBe(200);
    expect((await chat(raw)).status).toBe(403);
    const audit = await admin('GET', '/admin/audit', ADMIN_TOKEN);
    const entries = audit.json.data as { action: string; actor: string; target: string }[];
    expect(entries.map((e) => e.action)).toEqual(expect.arrayContaining(['keys.create', 'keys.suspend']));
    expect(entries.filter((e) => e.action.startsWith('keys.')).every((e) => e.actor === 'local-admin')).toBe(true);
    expect(entries.find((e) => e.action === 'keys.suspend')!.target).toBe(keyId);
    expect(JSON.stringify(audit.json)).not.toContain(raw);
  });

  it('when the admin registers a service and issues a token, the token works and is audited by id only', async () => {
    expect((await admin('POST', '/admin/services', ADMIN_TOKEN, { service: 'reporter', scopes: ['ai:complete'] })).status).toBe(201);
    const issued = await admin('POST', '/admin/tokens', ADMIN_TOKEN, { service: 'reporter', scopes: ['ai:complete'], onBehalfOf: 'erin', ttlSeconds: 300 });
    expect(issued.status).toBe(201);
    const token = issued.json.token as string;
    issuedTokens.push(token);
    expect((await chat(token)).status).toBe(200);
    const audit = await admin('GET', '/admin/audit', ADMIN_TOKEN);
    expect(JSON.stringify(audit.json)).toContain('tokens.issue');
    expect(JSON.stringify(audit.json)).not.toContain(token);
  });

  it('when users store, replace and remove BYOK keys, each change is audited with who, before → after by prefix and fingerprint, and the reason, never the key', async () => {
    // A replacement and a removal with reasons, on top of the round trip's stores and removal.
    expect((await call('PUT', '/v1/byok/openai', alice.raw, { apiKey: ALICE_OPENAI_KEY, reason: 'rotated with the provider' })).status).toBe(200);
    const removed = await fetch(`${h.url}/v1/byok/anthropic`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${alice.raw}`, 'x-tollgate-reason': 'leaving the Anthropic trial' },
    });
    expect(removed.status).toBe(200);
    const audit = await admin('GET', '/admin/audit', ADMIN_TOKEN);
    const entries = (audit.json.data as AuditEntry[]).filter((e) => e.action.startsWith('byok.'));
    const fp = secretFingerprint(ALICE_OPENAI_KEY);
    const openai = entries.filter((e) => e.target === 'user:alice#byok/openai');
    // Newest first: replace, store (after the removal), remove, store.
    expect(openai.map((e) => e.action)).toEqual(['byok.replace', 'byok.store', 'byok.remove', 'byok.store']);
    expect(openai[0]).toMatchObject({
      actor: 'user:alice',
      via: 'api',
      before: { provider: 'openai', prefix: 'sk-alic…', fingerprint: fp, status: 'active' },
      after: { provider: 'openai', prefix: 'sk-alic…', fingerprint: fp, status: 'active' },
      reason: 'rotated with the provider',
      details: { keyId: alice.keyId },
    });
    expect(openai[2]).toMatchObject({ before: { fingerprint: fp } });
    expect(openai[2]!.after).toBeUndefined();
    expect(entries.find((e) => e.target === 'user:alice#byok/anthropic' && e.action === 'byok.remove')).toMatchObject({
      reason: 'leaving the Anthropic trial',
      before: { fingerprint: secretFingerprint(ALICE_ANTHROPIC_KEY) },
    });
    // A key the provider refused was never stored, so never audited; no entry carries a key.
    expect(JSON.stringify(audit.json)).not.toContain(REFUSED_KEY);
    expect(JSON.stringify(audit.json)).not.toContain(ALICE_OPENAI_KEY);
    expect(JSON.stringify(audit.json)).not.toContain(ALICE_ANTHROPIC_KEY);
    // `npm run admin -- audit` renders them as one line each: the change and the reason.
    const text = auditText(openai.slice(0, 1));
    expect(text).toContain('byok.replace');
    expect(text).toContain('rotated with the provider');
    expect(auditText(openai.slice(3))).toContain(`fingerprint=${fp}`);
  });

  it('when the admin sets a budget over HTTP, it applies at once', async () => {
    const set = await admin('PUT', '/admin/budgets/user:frank/day', ADMIN_TOKEN, { usd: '0.000001' });
    expect(set.status).toBe(200);
    const frank = await h.createKey({ userId: 'frank' });
    expect((await chat(frank.raw)).status).toBe(429);
  });
});

describe('secret scan', () => {
  it('when the run is over, no raw API key, BYOK key, JWT secret, token or admin token appears in any log line or table item', async () => {
    await h.settled();
    const secrets = [
      alice.raw,
      bob.raw,
      plain.raw,
      ALICE_OPENAI_KEY,
      ALICE_ANTHROPIC_KEY,
      REFUSED_KEY,
      ID_UPSTREAM_OPENAI_KEY,
      JWT_SECRET_K1,
      JWT_SECRET_K2,
      ADMIN_TOKEN,
      BYOK_MASTER_KEY,
      ID_PEPPER,
      ...issuedTokens,
    ];
    expect(h.logs.length).toBeGreaterThan(10);
    const items = await h.scanAll();
    expect(items.length).toBeGreaterThan(10);
    expect(findSecrets(secrets, { logs: h.logs, items })).toEqual([]);
    // The scan can fail: a planted secret is found.
    expect(findSecrets([ALICE_OPENAI_KEY], { logs: [`x${ALICE_OPENAI_KEY}`], items: [] })).toHaveLength(1);
  });
});
