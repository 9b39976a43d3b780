/**
 * The admin CLI against the admin API over real HTTP: `tokens issue` prints a working service token, keys and
 * budgets work with --url, and SigV4 mode signs for execute-api with the given credentials.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { run } from '../../lambda/admin/cli';
import { AdminHttpClient, parseTtl } from '../../lambda/admin/http-client';
import { ADMIN_TOKEN, type IdentityHarness, startIdentityHarness } from './support/identity-harness';

let h: IdentityHarness;

beforeAll(async () => {
  h = await startIdentityHarness();
});

afterAll(async () => {
  await h?.close();
});

async function cli(...args: string[]): Promise<string> {
  const lines: string[] = [];
  await run(['--url', h.url, '--admin-token', ADMIN_TOKEN, ...args], (t) => lines.push(t));
  return lines.join('\n');
}

const chat = (token: string) =>
  fetch(`${h.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'mock/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
  }).then((r) => r.status);

describe('admin CLI over the admin API', () => {
  it('when an operator registers a service and issues a token for a user, the printed token is accepted for an hour', async () => {
    await cli('services', 'register', '--service', 'agent', '--scopes', 'ai:complete');
    // Bracketed by the clock before and after the command (iat is in whole seconds), however long it took.
    const before = Math.floor(Date.now() / 1000) * 1000;
    const out = await cli('tokens', 'issue', '--service', 'agent', '--scopes', 'ai:complete', '--ttl', '1h', '--on-behalf-of', 'alice', '--json');
    const issued = JSON.parse(out) as { token: string; expiresAt: string };
    expect(Date.parse(issued.expiresAt)).toBeGreaterThanOrEqual(before + 3_600_000);
    expect(Date.parse(issued.expiresAt)).toBeLessThanOrEqual(Date.now() + 3_600_000);
    expect(await chat(issued.token)).toBe(200);
  });

  it('when a token is asked for more than an hour, the CLI reports the refusal', async () => {
    await expect(cli('tokens', 'issue', '--service', 'agent', '--scopes', 'ai:complete', '--ttl', '2h')).rejects.toThrow(/3600/);
  });

  it('when keys are created and revoked with --url, the key works and then stops', async () => {
    const created = JSON.parse(await cli('keys', 'create', '--user', 'gina', '--json')) as { key: string; keyId: string };
    expect(await chat(created.key)).toBe(200);
    await cli('keys', 'revoke', created.keyId);
    expect(await chat(created.key)).toBe(401);
    const audit = await cli('audit');
    expect(audit).toContain('keys.revoke');
    expect(audit).not.toContain(created.key);
  });

  it('when keys, budgets and usage are shown over --url, they print the same tables as locally (not raw JSON)', async () => {
    const created = JSON.parse(await cli('keys', 'create', '--user', 'hal', '--budget-usd', '3', '--window', 'day', '--json')) as { keyId: string };
    const show = await cli('keys', 'show', created.keyId);
    expect(show).toMatch(/budget\/day\s+\$3\.00\n/);
    expect(show).toMatch(/budget\/month\s+\S+/);
    expect(show).not.toContain('{');
    const budgets = await cli('budgets', 'show', `key:${created.keyId}`);
    expect(budgets).toMatch(/\nday\s+\d{4}-\d{2}-\d{2}\s+\$3\.00\s+\$0\.00\s+\$0\.00\s+\$3\.00\s+0\n/);
    expect(await cli('usage', '--by', 'key')).toMatch(/^usage by key, day \d{4}-\d{2}-\d{2} \(UTC\)\nkey\s+requests\s+failed\s+inputTokens\s+outputTokens\s+cost/);
    await expect(cli('usage', '--by', 'team')).rejects.toThrow(/user, key, org, model/);
  });

  it('when a key is revoked over --url, the audit entry names the token identity, before → after and the reason', async () => {
    const created = JSON.parse(await cli('keys', 'create', '--user', 'ivy', '--json')) as { keyId: string };
    await cli('keys', 'revoke', created.keyId, '--reason', 'laptop lost');
    const entries = (JSON.parse(await cli('audit', '--key', created.keyId, '--json')) as { data: Record<string, unknown>[] }).data;
    expect(entries.map((e) => e.action)).toEqual(['keys.revoke', 'keys.create']);
    expect(entries[0]).toMatchObject({ actor: 'local-admin', via: 'api', before: { status: 'active' }, after: { status: 'revoked' }, reason: 'laptop lost' });
    expect(await cli('audit', '--key', created.keyId)).toMatch(/local-admin\s+api\s+keys\.revoke\s+\S+\s+status: active → revoked\s+laptop lost/);
  });

  it('when the admin token is wrong, the CLI fails with the 401 message', async () => {
    const lines: string[] = [];
    await expect(run(['--url', h.url, '--admin-token', 'tga-wrong', 'keys', 'list'], (t) => lines.push(t))).rejects.toThrow(/admin token/);
  });

  it('when ttl text is given, it converts to seconds', () => {
    expect([parseTtl('1h'), parseTtl('15m'), parseTtl('90s'), parseTtl('42')]).toEqual([3600, 900, 90, 42]);
    expect(() => parseTtl('1d')).toThrow(RangeError);
  });
});

describe('SigV4 mode', () => {
  it('when the client talks to a deployed gateway, it signs for execute-api in the region with the credentials', async () => {
    let seen: IncomingHttpHeaders = {};
    const server = createServer((req, res) => {
      seen = req.headers;
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"object":"list","data":[]}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/prod`;
      const client = new AdminHttpClient({
        url,
        auth: { kind: 'sigv4', region: 'eu-west-1', credentials: { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY' } },
      });
      await client.request('GET', '/admin/keys', undefined, { user: 'alice' });
      expect(seen.authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-west-1\/execute-api\/aws4_request, SignedHeaders=[^,]*host[^,]*, Signature=[0-9a-f]{64}$/);
      expect(seen['x-amz-date']).toMatch(/^\d{8}T\d{6}Z$/);
      expect(seen.authorization).not.toContain('wJalrXUtnFEMI');
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
