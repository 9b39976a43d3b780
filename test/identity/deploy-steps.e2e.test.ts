/**
 * Issue 23, finding 8: on AWS, `svc:agent` must be registered or every agent run gets 401 `unknown_service`. The
 * deploy in docs/deploy.md carries it as one line; this runs that exact line (its $BASE_URL pointed at a real local
 * gateway, the local admin token standing in for SigV4) and checks that the agent's tokens are then accepted.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { AGENT_SERVICE, AGENT_TOKEN_SCOPES, serviceTokens } from '../../agent/src/service';
import { run } from '../../lambda/admin/cli';
import { systemClock } from '../../lambda/core/clock';
import { JwtKeyRingSource, TokenIssuer } from '../../lambda/core/jwt';
import { ADMIN_TOKEN, JWT_SECRET_VALUE, type IdentityHarness, startIdentityHarness } from './support/identity-harness';

let h: IdentityHarness;
beforeAll(async () => {
  h = await startIdentityHarness();
});
afterAll(() => h?.close());

/** The deploy block's line that registers the agent service, as argv for `npm run admin --`. */
function documentedRegistration(): string[] {
  const doc = fs.readFileSync(path.join(__dirname, '..', '..', 'docs', 'deploy.md'), 'utf8');
  const block = /## Deploy \(fresh account[^\n]*\n```bash\n([\s\S]*?)```/.exec(doc)?.[1] ?? '';
  const line = block.split('\n').find((l) => l.includes('services register'));
  if (!line) throw new Error('docs/deploy.md: the deploy block has no `services register` line');
  const command = line.replace(/\s+#.*$/, '').trim();
  expect(command.startsWith('npm run admin -- ')).toBe(true);
  return [...command.slice('npm run admin -- '.length).matchAll(/"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2]!);
}

it('when the documented deploy step runs, svc:agent is registered with the scopes the agent asks for, and its tokens are accepted', async () => {
  const argv = documentedRegistration();
  expect(argv).toEqual(['services', 'register', '--service', AGENT_SERVICE, '--scopes', AGENT_TOKEN_SCOPES.join(','), '--url', '$BASE_URL']);
  const issuer = new TokenIssuer({ keys: new JwtKeyRingSource(JWT_SECRET_VALUE), clock: systemClock, ...h.config.jwt });
  const token = () => serviceTokens(issuer)({ userId: 'alice' });
  const chat = async () => {
    const res = await fetch(`${h.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await token()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'mock/gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
    });
    return { status: res.status, code: ((await res.json()) as { error?: { code?: string } }).error?.code };
  };
  expect(await chat()).toEqual({ status: 401, code: 'unknown_service' });

  const lines: string[] = [];
  await run([...argv.map((a) => (a === '$BASE_URL' ? h.url : a)), '--admin-token', ADMIN_TOKEN], (t) => lines.push(t));
  expect(lines.join('\n')).toContain('service agent registered as svc:agent');
  expect((await chat()).status).toBe(200);
});
