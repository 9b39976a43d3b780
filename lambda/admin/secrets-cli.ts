/**
 * `npm run secrets -- set <name> [--stage <stage>] [--region <region>] [--key-id <kms key>]`
 * `npm run secrets -- list [--stage <stage>] [--region <region>]`
 *
 * Stores the platform's secrets as SSM SecureString parameters under `/tollgate/<stage>/` (CloudFormation cannot
 * create SecureStrings). The value is read from stdin when it is piped, or from a prompt that does not echo;
 * never from the command line, where it would land in shell history and `ps`. `list` shows names and versions,
 * never values. The stage defaults to `$TOLLGATE_STAGE`, then `dev`.
 *
 * Every `set` is audited in the stage's audit table before the value is written (core/audit.ts): who
 * (`--actor`, else $TOLLGATE_ACTOR, else the OS user), the parameter, its version before, the new value's
 * fingerprint (never the value) and `--reason`. When the audit entry cannot be written, nothing is stored.
 */
import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { GetParameterCommand, GetParametersByPathCommand, PutParameterCommand, SSMClient } from '@aws-sdk/client-ssm';
import type { Readable, Writable } from 'node:stream';
import { audited, type AuditSink, type AuditState, cliActor, secretFingerprint } from '../core/audit';
import { systemClock } from '../core/clock';
import { dataKeyAlias, isSecretName, SECRET_NAMES, secretsPrefix } from '../core/secrets';
import { DynamoDbAuditLog } from '../store/dynamodb/audit-store';

export interface SecretsCliIo {
  readonly stdin: Readable & { readonly isTTY?: boolean; setRawMode?(mode: boolean): unknown };
  readonly stdout: Writable;
  readonly stderr: Writable;
  readonly env: Readonly<Record<string, string | undefined>>;
}

export interface SecretsCliDeps {
  /** Builds the SSM client for a region (tests pass a mocked one). */
  readonly ssm: (region: string | undefined) => Pick<SSMClient, 'send'>;
  /** The stage's audit log in a region (tests pass one over DynamoDB Local). */
  readonly audit: (region: string | undefined, stage: string) => AuditSink;
}

/** The audit entry of a change could not be written: the change is not made. */
class AuditWriteError extends Error {
  constructor(readonly causeName: string) {
    super('the audit log could not be written');
    this.name = 'AuditWriteError';
  }
}

/** The audit sink with its write failures told apart from SSM's. */
function auditSinkOf(sink: AuditSink): AuditSink {
  return {
    record: (entry) =>
      sink.record(entry).catch((err: unknown) => {
        throw new AuditWriteError((err as { name?: string })?.name ?? 'Error');
      }),
  };
}

class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const USAGE = `usage:
  npm run secrets -- set <name> [--stage <stage>] [--region <region>] [--key-id <kms key id or alias>]
                             [--reason "…"] [--actor <who>]
  npm run secrets -- list [--stage <stage>] [--region <region>]
names: ${SECRET_NAMES.join(', ')}
The value of "set" is read from stdin (pipe it) or typed at a hidden prompt; it is never an argument.
Every "set" is audited (who, which parameter, version, the value's fingerprint, the reason): npm run admin -- audit`;

interface Parsed {
  readonly command: 'set' | 'list';
  readonly name?: string;
  readonly stage: string;
  readonly region?: string;
  readonly keyId?: string;
  readonly reason?: string;
  readonly actor?: string;
}

function parseArgs(argv: readonly string[], env: SecretsCliIo['env']): Parsed {
  const positional: string[] = [];
  const flags: Record<string, string> = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (arg.startsWith('--')) {
      const [flag, inline] = arg.slice(2).split('=', 2);
      if (!['stage', 'region', 'key-id', 'reason', 'actor'].includes(flag)) {
        // A value-looking flag is the classic way to leak a secret into history: refuse loudly.
        throw new UsageError(`unknown option --${flag}${flag === 'value' ? ' (values are read from stdin, never from arguments)' : ''}`);
      }
      const value = inline ?? argv[++i];
      if (value === undefined) throw new UsageError(`--${flag} needs a value`);
      flags[flag] = value;
    } else {
      positional.push(arg);
    }
  }
  const [command, name, ...extra] = positional;
  if (command !== 'set' && command !== 'list') throw new UsageError(command ? `unknown command "${command}"` : 'no command');
  if (command === 'set') {
    if (!name) throw new UsageError('set needs a secret name');
    if (!isSecretName(name)) throw new UsageError(`"${name}" is not a tollgate secret`);
    // Anything after the name would be a value typed on the command line; do not echo it back.
    if (extra.length > 0) throw new UsageError('set takes no value argument: pipe the value on stdin or type it at the prompt');
  } else if (name !== undefined) {
    throw new UsageError('list takes no arguments');
  }
  const stage = flags.stage ?? env.TOLLGATE_STAGE ?? 'dev';
  if (!/^[a-z][a-z0-9-]{0,19}$/.test(stage)) throw new UsageError(`"${stage}" is not a stage name`);
  return { command, name, stage, region: flags.region, keyId: flags['key-id'], reason: flags.reason, actor: flags.actor };
}

async function readAll(stream: Readable): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(String(chunk)));
  return Buffer.concat(chunks).toString('utf8');
}

/** Reads one line from a terminal without echoing it. */
async function promptHidden(io: SecretsCliIo, prompt: string): Promise<string> {
  io.stderr.write(prompt);
  const stdin = io.stdin;
  stdin.setRawMode?.(true);
  stdin.resume();
  try {
    return await new Promise<string>((resolve, reject) => {
      let value = '';
      const onData = (chunk: Buffer | string) => {
        for (const ch of String(chunk)) {
          if (ch === '\r' || ch === '\n' || ch === '\u0004') {
            stdin.off('data', onData);
            io.stderr.write('\n');
            resolve(value);
            return;
          }
          if (ch === '\u0003') {
            stdin.off('data', onData);
            reject(new UsageError('cancelled'));
            return;
          }
          if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
          else value += ch;
        }
      };
      stdin.on('data', onData);
    });
  } finally {
    stdin.setRawMode?.(false);
    stdin.pause();
  }
}

/** Runs the CLI; returns the process exit code. Never writes a secret value anywhere. */
export async function runSecretsCli(argv: readonly string[], io: SecretsCliIo, deps: SecretsCliDeps): Promise<number> {
  let args: Parsed;
  try {
    args = parseArgs(argv, io.env);
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    io.stderr.write(`${err.message}\n${USAGE}\n`);
    return 2;
  }
  const prefix = secretsPrefix(args.stage);
  const ssm = deps.ssm(args.region);
  let value = '';

  try {
    if (args.command === 'list') {
      const found = new Map<string, { version?: number; modified?: Date }>();
      let next: string | undefined;
      do {
        const out = await ssm.send(
          new GetParametersByPathCommand({ Path: prefix, Recursive: false, WithDecryption: false, NextToken: next }),
        );
        for (const p of out.Parameters ?? []) {
          if (p.Name) found.set(p.Name.slice(prefix.length), { version: p.Version, modified: p.LastModifiedDate });
        }
        next = out.NextToken;
      } while (next);
      for (const name of SECRET_NAMES) {
        const p = found.get(name);
        io.stdout.write(
          p
            ? `${prefix}${name}\tset (version ${p.version ?? '?'}${p.modified ? `, ${p.modified.toISOString()}` : ''})\n`
            : `${prefix}${name}\tnot set\n`,
        );
      }
      for (const name of [...found.keys()].filter((n) => !isSecretName(n)).sort()) {
        io.stdout.write(`${prefix}${name}\tset (not used by tollgate)\n`);
      }
      return 0;
    }

    const name = args.name as string;
    const raw = io.stdin.isTTY ? await promptHidden(io, `Value for ${prefix}${name} (input hidden): `) : await readAll(io.stdin);
    // One trailing newline comes from `echo` or the terminal; anything else is part of the value.
    value = raw.replace(/\r?\n$/, '');
    if (value.length === 0) {
      io.stderr.write('no value given; nothing stored\n');
      return 2;
    }
    const parameter = `${prefix}${name}`;
    let current: { Parameter?: { Version?: number; LastModifiedDate?: Date } } | undefined;
    try {
      current = await ssm.send(new GetParameterCommand({ Name: parameter, WithDecryption: false }));
    } catch (err) {
      if ((err as { name?: string })?.name !== 'ParameterNotFound') throw err;
    }
    const before: AuditState | undefined = current?.Parameter
      ? { version: current.Parameter.Version ?? null, ...(current.Parameter.LastModifiedDate ? { modifiedAt: current.Parameter.LastModifiedDate.toISOString() } : {}) }
      : undefined;
    const change = {
      actor: cliActor(args.actor, io.env),
      via: 'cli' as const,
      action: before ? 'secrets.replace' : 'secrets.set',
      target: parameter,
      ...(before ? { before } : {}),
      // SSM numbers a parameter's versions 1, 2, 3…: the version this write makes.
      after: { fingerprint: secretFingerprint(value), version: (current?.Parameter?.Version ?? 0) + 1 },
      ...(args.reason?.trim() ? { reason: args.reason.trim() } : {}),
    };
    const out = await audited(auditSinkOf(deps.audit(args.region, args.stage)), change, systemClock, () => ssm.send(
      new PutParameterCommand({
        Name: `${prefix}${name}`,
        Value: value,
        Type: 'SecureString',
        KeyId: args.keyId ?? dataKeyAlias(args.stage),
        Overwrite: true,
        Tier: 'Standard',
        Description: `tollgate ${args.stage} ${name}`,
      }),
    ));
    io.stdout.write(`stored ${prefix}${name} (version ${out.Version ?? '?'})\n`);
    return 0;
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr.write(`${err.message}\n`);
      return 2;
    }
    if (err instanceof AuditWriteError) {
      io.stderr.write(`nothing stored: the audit log of stage ${args.stage} could not be written (${err.causeName}); changes are audited before they are made\n`);
      return 1;
    }
    // AWS validation messages can quote the rejected value: cut it out before printing anything.
    const e = err as { name?: string; message?: string };
    const message = value ? (e.message ?? '').split(value).join('[redacted]') : (e.message ?? '');
    io.stderr.write(`SSM call failed: ${e.name ?? 'Error'}: ${message}\n`);
    return 1;
  }
}

if (require.main === module) {
  runSecretsCli(
    process.argv.slice(2),
    { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr, env: process.env },
    {
      ssm: (region) => new SSMClient(region ? { region } : {}),
      audit: (region, stage) =>
        new DynamoDbAuditLog(
          new DynamoDBClient({
            ...(region ? { region } : {}),
            ...(process.env.TOLLGATE_DYNAMODB_ENDPOINT ? { endpoint: process.env.TOLLGATE_DYNAMODB_ENDPOINT } : {}),
          }),
          { table: process.env.TOLLGATE_TABLE_AUDIT || `${process.env.TOLLGATE_TABLE_PREFIX || `tollgate-${stage}-`}audit` },
        ),
    },
  ).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`${(err as Error)?.message ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
