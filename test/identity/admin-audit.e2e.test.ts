/**
 * Every administrative change is audited whatever the path, on DynamoDB Local: `npm run admin` against the
 * tables (keys, budgets, breaker acknowledgement, loop guard), and the kill switch. Each change is one entry
 * naming who (`--actor`, the OS user, `kill-switch`), what, before → after and the reason; `admin audit` lists
 * them newest first and filters by time, key and actor. A retried write of the same change stays one entry.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { GetParameterCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { PassThrough, Readable } from 'node:stream';
import { run } from '../../lambda/admin/cli';
import { runSecretsCli } from '../../lambda/admin/secrets-cli';
import { secretFingerprint } from '../../lambda/core/audit';
import { systemClock } from '../../lambda/core/clock';
import { KillSwitch } from '../../lambda/core/guardrails/kill-switch';
import { silentLogger } from '../../lambda/core/log';
import { writeRunning } from '../../lambda/local/state';
import { type AuditEntry, DynamoDbAuditLog } from '../../lambda/store/dynamodb/audit-store';
import { DynamoDbGuardrailStore } from '../../lambda/store/dynamodb/guardrails-store';
import { DynamoDbKeyStatusBatch } from '../../lambda/store/dynamodb/key-status-batch';
import { DynamoDbKeyStore } from '../../lambda/store/dynamodb/key-store';
import { createTestTables, testDynamoDbEndpoint, type TestTables } from '../support/dynamo';

jest.setTimeout(120_000);

let tables: TestTables;
let home: string;
let audit: DynamoDbAuditLog;
const saved: Record<string, string | undefined> = {};
const ENV = ['TOLLGATE_HOME', 'TOLLGATE_TABLE_PREFIX', 'TOLLGATE_ACTOR', 'TOLLGATE_TARGET', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION'];

beforeAll(async () => {
  tables = await createTestTables();
  home = mkdtempSync(join(tmpdir(), 'tollgate-audit-cli-'));
  // The CLI finds the tables as it finds a running `npm start`: through the running-gateway file.
  writeRunning(home, { pid: process.pid, url: 'http://127.0.0.1:1', dynamodbEndpoint: testDynamoDbEndpoint(), adminToken: 'unused' });
  for (const k of ENV) saved[k] = process.env[k];
  Object.assign(process.env, {
    TOLLGATE_HOME: home,
    TOLLGATE_TABLE_PREFIX: tables.tables.keys.replace(/keys$/, ''),
    AWS_ACCESS_KEY_ID: 'local',
    AWS_SECRET_ACCESS_KEY: 'local',
    AWS_REGION: 'us-east-1',
  });
  delete process.env.TOLLGATE_ACTOR;
  delete process.env.TOLLGATE_TARGET;
  audit = new DynamoDbAuditLog(tables.client, { table: tables.tables.audit });
});

afterAll(async () => {
  for (const k of ENV) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  rmSync(home, { recursive: true, force: true });
  await tables?.cleanup();
});

async function admin(...args: string[]): Promise<string> {
  const lines: string[] = [];
  await run(args, (t) => lines.push(t));
  return lines.join('\n');
}

const entriesOf = async (...filters: string[]) => JSON.parse(await admin('audit', '--json', ...filters)) as AuditEntry[];

describe('changes made with npm run admin against the tables', () => {
  let keyId: string;
  let rawKey: string;

  it('when an operator creates a key with a budget, one entry names them, the new key and its budget, never the key itself', async () => {
    const created = JSON.parse(
      await admin('keys', 'create', '--user', 'ana', '--org', 'research', '--budget-usd', '5', '--window', 'day', '--actor', 'ops-alice', '--reason', 'pilot starts', '--json'),
    ) as { key: string; keyId: string };
    keyId = created.keyId;
    rawKey = created.key;
    const entries = await entriesOf('--key', keyId);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({
      actor: 'ops-alice',
      via: 'cli',
      action: 'keys.create',
      target: keyId,
      reason: 'pilot starts',
      after: { keyId, userId: 'ana', orgId: 'research', status: 'active', 'budget.day': '5.000000' },
    });
    expect(JSON.stringify(entries)).not.toContain(rawKey);
  });

  it('when the budget, the loop guard and the key status change, each is one entry with before → after and the reason', async () => {
    await admin('budgets', 'set', `key:${keyId}`, 'day', '2.50', '--actor', 'ops-bob', '--reason', 'tighter after review');
    await admin('loopguard', 'set', keyId, '--max-repeats', '3', '--actor', 'ops-bob');
    await admin('keys', 'revoke', keyId, '--actor', 'ops-alice', '--reason', 'left the team');
    const entries = await entriesOf('--key', keyId);
    expect(entries.map((e) => e.action)).toEqual(['keys.revoke', 'loopguard.set', 'budgets.set', 'keys.create']);
    expect(entries[0]).toMatchObject({ actor: 'ops-alice', before: { status: 'active' }, after: { status: 'revoked' }, reason: 'left the team' });
    expect(entries[1]).toMatchObject({ actor: 'ops-bob', before: { maxRepeats: 'default' }, after: { maxRepeats: 3 } });
    expect(entries[2]).toMatchObject({ actor: 'ops-bob', target: `key:${keyId}`, before: { day: '5.000000' }, after: { day: '2.500000' }, reason: 'tighter after review' });
  });

  it('when a breaker is acknowledged, the acknowledgement is audited with who gave it and why', async () => {
    const guardrails = new DynamoDbGuardrailStore(tables.client, { tables: tables.tables, platformShards: 1 });
    await guardrails.openCircuit({ scope: 'org:research', cause: 'velocity', openedAt: Date.now(), reason: 'spend velocity' });
    await admin('circuits', 'reset', 'org:research', '--ack', 'runaway job killed', '--actor', 'ops-carol');
    const [entry] = await entriesOf('--actor', 'ops-carol');
    expect(entry).toMatchObject({ action: 'circuits.reset', target: 'org:research', before: { circuit: 'open', cause: 'velocity' }, after: { circuit: 'closed' }, reason: 'runaway job killed' });
  });

  it('when no --actor is given, the OS user (or TOLLGATE_ACTOR) is the actor', async () => {
    process.env.TOLLGATE_ACTOR = 'night-shift';
    try {
      await admin('budgets', 'set', 'user:ana', 'month', '40');
    } finally {
      delete process.env.TOLLGATE_ACTOR;
    }
    const [entry] = await entriesOf('--actor', 'night-shift');
    expect(entry).toMatchObject({ action: 'budgets.set', target: 'user:ana', before: { month: 'default' }, after: { month: '40.000000' } });
  });

  it('when a provider key is set with npm run secrets, admin audit shows who, which parameter, the version and fingerprint, never the value', async () => {
    const ssm = mockClient(SSMClient);
    try {
      ssm.on(GetParameterCommand).resolves({ Parameter: { Name: '/tollgate/prod/openai-api-key', Version: 7 } });
      ssm.on(PutParameterCommand).resolves({ Version: 8 });
      const value = 'sk-platform-openai-rotated-4242';
      const code = await runSecretsCli(
        ['set', 'openai-api-key', '--stage', 'prod', '--actor', 'ops-dora', '--reason', 'quarterly rotation'],
        { stdin: Readable.from([value]), stdout: new PassThrough(), stderr: new PassThrough(), env: {} },
        { ssm: () => new SSMClient({ region: 'us-east-1' }), audit: () => audit },
      );
      expect(code).toBe(0);
      const text = await admin('audit', '--actor', 'ops-dora');
      expect(text).toMatch(/ops-dora\s+cli\s+secrets\.replace\s+\/tollgate\/prod\/openai-api-key\s+fingerprint: — → sha256:[0-9a-f]{8}, version: 7 → 8\s+quarterly rotation/);
      expect(text).toContain(secretFingerprint(value));
      expect(JSON.stringify(await entriesOf('--actor', 'ops-dora'))).not.toContain(value);
    } finally {
      ssm.restore();
    }
  });

  it('audit lists newest first, filters by actor and time, and its table shows the reason and the change', async () => {
    const all = await entriesOf();
    const times = all.map((e) => e.at);
    expect([...times].sort().reverse()).toEqual(times);
    expect((await entriesOf('--actor', 'ops-bob')).every((e) => e.actor === 'ops-bob')).toBe(true);
    // Entries are all from the last minutes: a window starting in the future holds none, a week holds all.
    expect(await entriesOf('--since', new Date(Date.now() + 3_600_000).toISOString())).toEqual([]);
    expect((await entriesOf('--since', '7d')).length).toBe(all.length);
    const text = await admin('audit', '--key', keyId);
    expect(text).toMatch(/keys\.revoke\s+\S+\s+status: active → revoked\s+left the team/);
    expect(text).toMatch(/budgets\.set\s+key:\S+\s+day: \$5\.00 → \$2\.50\s+tighter after review/);
    expect(text).not.toMatch(/\d{2}:\d{2}:\d{2}\.\d{3}Z/);
  });

  it('when a change is refused (a bad amount), nothing is audited and nothing changes', async () => {
    const before = (await entriesOf()).length;
    await expect(admin('budgets', 'set', 'user:ana', 'day', '5.1234567')).rejects.toThrow(/dollars/);
    await expect(admin('budgets', 'set', 'user:ana', 'week', '5')).rejects.toThrow(/hour, day, month/);
    expect((await entriesOf()).length).toBe(before);
  });
});

describe('the audit log', () => {
  it('when the same change is written twice (a retry), it stays one entry', async () => {
    const entry: AuditEntry = { requestId: 'change-retry-1', at: new Date().toISOString(), actor: 'ops-dan', via: 'cli', action: 'budgets.set', target: 'org:x', after: { day: '1.000000' } };
    await audit.record(entry);
    await audit.record(entry);
    expect((await audit.list({ since: Date.parse(entry.at) - 1000, actor: 'ops-dan' })).length).toBe(1);
  });

  it('when the kill switch stops the platform, the activation is audited once with actor kill-switch', async () => {
    const keys = new DynamoDbKeyStore(tables.client, tables.tables);
    const store = new DynamoDbGuardrailStore(tables.client, { tables: tables.tables, platformShards: 1 });
    const killSwitch = new KillSwitch({
      keys,
      bulk: new DynamoDbKeyStatusBatch(tables.client, tables.tables),
      store,
      budgets: { describe: async () => undefined },
      reporter: { report: async () => undefined },
      audit,
      clock: systemClock,
      log: silentLogger,
      budgetName: '',
    });
    const trigger = { source: 'ledger', what: 'platform month', actualMicros: 1_200_000_000, thresholdMicros: 1_000_000_000 };
    expect((await killSwitch.stopPlatform(trigger)).action).toBe('activated');
    expect((await killSwitch.stopPlatform(trigger)).action).toBe('unchanged');
    const entries = await audit.list({ since: Date.now() - 3_600_000, actor: 'kill-switch' });
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ via: 'kill-switch', action: 'killswitch.activate', target: 'platform', before: { killSwitch: 'off' }, after: { killSwitch: 'on' } });
    expect(entries[0]!.reason).toContain('$1,200.00 ≥ $1,000.00');
    // And its resume through the CLI is the operator's change.
    await admin('killswitch', 'resume', '--ack', 'budget raised', '--actor', 'ops-erin');
    const [resume] = await entriesOf('--actor', 'ops-erin');
    expect(resume).toMatchObject({ action: 'killswitch.resume', before: { killSwitch: 'on' }, after: { killSwitch: 'off' }, reason: 'budget raised' });
  });
});
