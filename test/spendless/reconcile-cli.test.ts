/**
 * `npm run admin -- reconcile` as a caller runs it: the CLI in its own process (tsx), on this run's DynamoDB
 * Local (through the running-gateway file, as `npm start` publishes it), against a fake OpenAI costs API on real
 * HTTP that refuses the admin key the way OpenAI does. With --json, stdout is exactly one JSON document (the
 * error log of the unreadable report goes to stderr); providers without an admin key are said to be skipped.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeRunning } from '../../lambda/local/state';
import { createTestTables, testDynamoDbEndpoint, type TestTables } from '../support/dynamo';

jest.setTimeout(120_000);

const ROOT = join(__dirname, '..', '..');
let tables: TestTables;
let server: Server;
let home: string;
let env: NodeJS.ProcessEnv;

beforeAll(async () => {
  tables = await createTestTables();
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(401, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: 'Invalid admin key', type: 'invalid_request_error', param: null, code: 'invalid_api_key' } }));
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  home = mkdtempSync(join(tmpdir(), 'tollgate-reconcile-cli-'));
  writeRunning(home, { pid: process.pid, url: 'http://127.0.0.1:1', dynamodbEndpoint: testDynamoDbEndpoint(), adminToken: 'unused' });
  const base = { ...process.env };
  for (const k of Object.keys(base)) if (k.startsWith('TOLLGATE_SECRET_') || k === 'TOLLGATE_BEDROCK') delete base[k];
  env = {
    ...base,
    TOLLGATE_HOME: home,
    TOLLGATE_TABLE_PREFIX: tables.tables.keys.replace(/keys$/, ''),
    TOLLGATE_SECRET_OPENAI_ADMIN_KEY: 'sk-admin-openai-CLI-SECRET',
    TOLLGATE_OPENAI_ADMIN_BASE_URL: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`,
    AWS_ACCESS_KEY_ID: 'local',
    AWS_SECRET_ACCESS_KEY: 'local',
    AWS_REGION: 'us-east-1',
  };
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
  rmSync(home, { recursive: true, force: true });
  await tables.cleanup();
});

function cli(args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(join(ROOT, 'node_modules', '.bin', 'tsx'), [join(ROOT, 'lambda', 'admin', 'cli.ts'), ...args], { env, cwd: ROOT }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

test('--json: stdout is one JSON document; the unreadable report is logged on stderr; skipped providers are named', async () => {
  const r = await cli(['reconcile', '--day', '2031-06-10', '--json']);
  const doc = JSON.parse(r.stdout) as { day: string; rows: unknown[]; failed: Array<{ provider: string }>; skipped: Array<{ provider: string; reason: string }> };
  expect(doc.day).toBe('2031-06-10');
  expect(doc.failed.map((f) => f.provider)).toEqual(['openai']);
  expect(doc.skipped.map((s) => s.provider).sort()).toEqual(['anthropic', 'bedrock']);
  expect(doc.skipped.find((s) => s.provider === 'anthropic')!.reason).toMatch(/no admin key/);
  expect(r.stderr).toContain('billing report unreadable');
  expect(r.code).toBe(2);
  for (const out of [r.stdout, r.stderr]) expect(out).not.toContain('CLI-SECRET');
});

test('text output says which providers were skipped and why', async () => {
  const r = await cli(['reconcile', '--day', '2031-06-10']);
  expect(r.stdout).toContain('billing drift for 2031-06-10');
  expect(r.stdout).toMatch(/skipped \(not compared\):\nanthropic: no admin key[^\n]*\nbedrock: /);
  expect(r.stdout).not.toContain('"level"');
});
