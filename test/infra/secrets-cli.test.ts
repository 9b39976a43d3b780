import { GetParameterCommand, GetParametersByPathCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import { mockClient } from 'aws-sdk-client-mock';
import { PassThrough, Readable } from 'node:stream';
import { runSecretsCli, type SecretsCliIo } from '../../lambda/admin/secrets-cli';
import { secretFingerprint } from '../../lambda/core/audit';
import { DynamoDbAuditLog } from '../../lambda/store/dynamodb/audit-store';
import { createTestTables, type TestTables } from '../support/dynamo';

// SSM cannot run here (mocked); the audit log is a real table in DynamoDB Local.
const ssm = mockClient(SSMClient);
let tables: TestTables;
let audit: DynamoDbAuditLog;
let auditTable: string;
beforeAll(async () => {
  tables = await createTestTables();
  audit = new DynamoDbAuditLog(tables.client, { table: tables.tables.audit });
});
afterAll(async () => {
  await tables.cleanup();
});
beforeEach(() => {
  ssm.reset();
  auditTable = tables.tables.audit;
});

/** The audit entries of the last hour (the CLI stamps them with the real clock), newest first. */
async function auditEntries() {
  return audit.list({ since: Date.now() - 3_600_000, until: Date.now() + 60_000 });
}

function sink(): PassThrough & { text(): string } {
  const s = new PassThrough() as PassThrough & { text(): string };
  const chunks: Buffer[] = [];
  s.on('data', (c: Buffer) => chunks.push(c));
  s.text = () => Buffer.concat(chunks).toString('utf8');
  return s;
}

async function run(argv: string[], options: { stdin?: SecretsCliIo['stdin']; env?: Record<string, string> } = {}) {
  const stdout = sink();
  const stderr = sink();
  const regions: Array<string | undefined> = [];
  const code = await runSecretsCli(
    argv,
    { stdin: options.stdin ?? Readable.from([]), stdout, stderr, env: options.env ?? {} },
    {
      ssm: (region) => {
        regions.push(region);
        return new SSMClient({ region: region ?? 'us-east-1' });
      },
      audit: () => new DynamoDbAuditLog(tables.client, { table: auditTable }),
    },
  );
  return { code, out: stdout.text(), err: stderr.text(), regions };
}

describe('secrets CLI', () => {
  it('when a value is piped to "set", it stores it as a SecureString under the stage prefix with the data key', async () => {
    ssm.on(PutParameterCommand).resolves({ Version: 3 });
    const { code, out, regions } = await run(['set', 'openai-api-key', '--stage', 'prod', '--region', 'eu-west-1'], {
      stdin: Readable.from(['sk-live-123\n']),
    });
    expect(code).toBe(0);
    expect(regions).toEqual(['eu-west-1']);
    expect(ssm.commandCalls(PutParameterCommand)[0].args[0].input).toEqual({
      Name: '/tollgate/prod/openai-api-key',
      Value: 'sk-live-123',
      Type: 'SecureString',
      KeyId: 'alias/tollgate-prod-data',
      Overwrite: true,
      Tier: 'Standard',
      Description: 'tollgate prod openai-api-key',
    });
    expect(out).toBe('stored /tollgate/prod/openai-api-key (version 3)\n');
    expect(out).not.toContain('sk-live-123');
  });

  it('when no stage is given, it uses TOLLGATE_STAGE, and --key-id overrides the key', async () => {
    ssm.on(PutParameterCommand).resolves({ Version: 1 });
    await run(['set', 'key-pepper', '--key-id=alias/mine'], { stdin: Readable.from(['p']), env: { TOLLGATE_STAGE: 'qa' } });
    expect(ssm.commandCalls(PutParameterCommand)[0].args[0].input).toMatchObject({ Name: '/tollgate/qa/key-pepper', KeyId: 'alias/mine' });
  });

  it('when the value is typed on a terminal, it is read without echo', async () => {
    ssm.on(PutParameterCommand).resolves({ Version: 1 });
    const tty = new PassThrough() as PassThrough & { isTTY: boolean; setRawMode(mode: boolean): void };
    const rawModes: boolean[] = [];
    tty.isTTY = true;
    tty.setRawMode = (mode) => void rawModes.push(mode);
    const pending = run(['set', 'jwt-secret'], { stdin: tty });
    setImmediate(() => tty.write('s3cr\u007fret\r'));
    const { code, err } = await pending;
    expect(code).toBe(0);
    expect(rawModes).toEqual([true, false]);
    expect(ssm.commandCalls(PutParameterCommand)[0].args[0].input.Value).toBe('s3cret');
    expect(err).toContain('input hidden');
    expect(err).not.toContain('s3cret');
  });

  it('when a value is passed as an argument, it refuses without calling SSM or echoing the value', async () => {
    const { code, err } = await run(['set', 'openai-api-key', 'sk-in-argv']);
    expect(code).toBe(2);
    expect(err).not.toContain('sk-in-argv');
    const flag = await run(['set', 'openai-api-key', '--value', 'sk-in-flag']);
    expect(flag.code).toBe(2);
    expect(flag.err).toContain('never from arguments');
    expect(flag.err).not.toContain('sk-in-flag');
    expect(ssm.commandCalls(PutParameterCommand)).toHaveLength(0);
  });

  it('when the name is not a tollgate secret or the value is empty, nothing is stored', async () => {
    expect((await run(['set', 'aws-root-password'], { stdin: Readable.from(['x']) })).code).toBe(2);
    const empty = await run(['set', 'jwt-secret'], { stdin: Readable.from(['\n']) });
    expect(empty.code).toBe(2);
    expect(ssm.commandCalls(PutParameterCommand)).toHaveLength(0);
  });

  it('when SSM rejects the value, the error is printed with the value cut out', async () => {
    const value = 'sk-very-secret-value';
    ssm.on(PutParameterCommand).rejects(Object.assign(new Error(`Value '${value}' at 'value' failed to satisfy constraint`), { name: 'ValidationException' }));
    const { code, err } = await run(['set', 'openai-api-key'], { stdin: Readable.from([value]) });
    expect(code).toBe(1);
    expect(err).toContain('ValidationException');
    expect(err).not.toContain(value);
  });

  it('when listing, it shows which secrets are set with their versions and never asks for values', async () => {
    ssm
      .on(GetParametersByPathCommand)
      .resolvesOnce({ Parameters: [{ Name: '/tollgate/dev/openai-api-key', Version: 2 }], NextToken: 't' })
      .resolvesOnce({ Parameters: [{ Name: '/tollgate/dev/legacy', Version: 1 }] });
    const { code, out } = await run(['list']);
    expect(code).toBe(0);
    expect(out).toContain('/tollgate/dev/openai-api-key\tset (version 2)');
    expect(out).toContain('/tollgate/dev/jwt-secret\tnot set');
    expect(out).toContain('/tollgate/dev/legacy\tset (not used by tollgate)');
    const calls = ssm.commandCalls(GetParametersByPathCommand);
    expect(calls).toHaveLength(2);
    expect(calls.every((c) => c.args[0].input.WithDecryption === false)).toBe(true);
  });

  it('when a secret is set, the change is audited first: who, which parameter, the version before, the new value\'s fingerprint and the reason, never the value', async () => {
    const value = 'sk-audited-provider-key-0001';
    ssm.on(GetParameterCommand).resolves({ Parameter: { Name: '/tollgate/prod/anthropic-api-key', Version: 4, LastModifiedDate: new Date(Date.UTC(2026, 0, 2)) } });
    ssm.on(PutParameterCommand).resolves({ Version: 5 });
    const { code } = await run(['set', 'anthropic-api-key', '--stage', 'prod', '--reason', 'rotated after the March incident', '--actor', 'ops-ana'], {
      stdin: Readable.from([value]),
    });
    expect(code).toBe(0);
    expect(ssm.commandCalls(GetParameterCommand)[0].args[0].input).toEqual({ Name: '/tollgate/prod/anthropic-api-key', WithDecryption: false });
    const entry = (await auditEntries()).find((e) => e.target === '/tollgate/prod/anthropic-api-key');
    expect(entry).toMatchObject({
      actor: 'ops-ana',
      via: 'cli',
      action: 'secrets.replace',
      before: { version: 4, modifiedAt: '2026-01-02T00:00:00.000Z' },
      after: { fingerprint: secretFingerprint(value), version: 5 },
      reason: 'rotated after the March incident',
    });
    expect(JSON.stringify(await auditEntries())).not.toContain(value);
    expect(secretFingerprint(value)).toMatch(/^sha256:[0-9a-f]{8}$/);
  });

  it('when the audit log cannot be written, nothing is stored', async () => {
    auditTable = 'no-such-audit-table';
    ssm.on(PutParameterCommand).resolves({ Version: 1 });
    const { code, err } = await run(['set', 'openai-api-key', '--stage', 'qa'], { stdin: Readable.from(['sk-not-stored-000']) });
    expect(code).toBe(1);
    expect(err).toContain('nothing stored');
    expect(err).not.toContain('sk-not-stored-000');
    expect(ssm.commandCalls(PutParameterCommand)).toHaveLength(0);
  });

  it('when SSM refuses the write after the entry was recorded, a failed entry follows it', async () => {
    ssm.on(PutParameterCommand).rejects(Object.assign(new Error('denied'), { name: 'AccessDeniedException' }));
    const { code } = await run(['set', 'openai-admin-key', '--stage', 'failing'], { stdin: Readable.from(['sk-admin-failing-1']) });
    expect(code).toBe(1);
    const entries = (await auditEntries()).filter((e) => e.target === '/tollgate/failing/openai-admin-key');
    expect(entries.map((e) => e.action)).toEqual(['secrets.set', 'secrets.set']);
    expect(entries.find((e) => e.details?.outcome === 'failed')?.details).toMatchObject({ outcome: 'failed', error: 'AccessDeniedException' });
  });
});
