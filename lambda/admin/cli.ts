/**
 * `npm run admin -- <command>`: keys, budgets, usage, guardrails and the audit log, against the local gateway's
 * DynamoDB Local (the running `npm start`, or a DynamoDB Local of its own on the same data), with `--aws`
 * against the deployed tables (names from TOLLGATE_TABLE_* / TOLLGATE_STAGE, pepper from SSM), or with
 * `--url` through a gateway's /admin API (identity-cli.ts). The commands, their options and their help are
 * in commands.ts; `npm run admin -- --help` lists them.
 *
 * Every change (keys, budgets, breaker acknowledgements, the kill switch, loop guard limits) is written to the
 * audit log first, naming who made it (`--actor`, else $TOLLGATE_ACTOR, else the OS user) and `--reason`.
 * Mistakes in the command line print one line and the usage, and exit 2; other failures exit 1.
 */
import { SSMClient } from '@aws-sdk/client-ssm';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadGatewaySecrets } from '../compose';
import { loadConfig } from '../config';
import { systemClock } from '../core/clock';
import { TollgateError } from '../core/errors';
import { budgetView, isUsageGrouping, keyView, publicKey, USAGE_GROUPINGS, type UsageGrouping, usageRange, usageView } from '../core/admin-views';
import { audited, AuditUnavailableError, type AuditWho, cliActor, createKeyAudited, limitAuditValue } from '../core/audit';
import { formatUsd, usdToMicros } from '../core/money';
import { EnvSecretSource, RECONCILE_SECRET_NAMES, type SecretSource, SsmSecretSource } from '../core/secrets';
import { jsonLogger } from '../core/log';
import { runReconcile, yesterdayOf } from '../handlers/reconcile';
import type { KeyStore, Ledger, UsageStore } from '../core/stores';
import { type KeyRecord, parseScope, type ScopeId, UNLIMITED, type UsageRecord } from '../core/types';
import type { DefaultLimits } from '../core/guardrails/defaults';
import { isWindow, type Window, WINDOWS } from '../core/windows';
import { type AuditEntry, DynamoDbAuditLog } from '../store/dynamodb/audit-store';
import { createDynamoDbClient } from '../store/dynamodb/client';
import { runReport } from './report';
import { SUMMARY_RANGES, type SummaryRange } from '../observability/spend-summary';
import { DynamoDbRefusalStore } from '../store/dynamodb/refusal-store';
import { ensureTables } from '../store/dynamodb/create-tables';
import { DynamoDbKeyStore } from '../store/dynamodb/key-store';
import { DynamoDbLedger } from '../store/dynamodb/ledger';
import { GUARDRAIL_GROUPS, runGuardrailCommand } from '../core/guardrails/admin-commands';
import { DynamoDbGuardrailStore } from '../store/dynamodb/guardrails-store';
import { DynamoDbKeyStatusBatch } from '../store/dynamodb/key-status-batch';
import { DynamoDbUsageStore } from '../store/dynamodb/usage-store';
import { startDynamoDbLocal } from '../local/dynamodb-local';
import { loadOrCreatePepper, readRunning, stateDir } from '../local/state';
import { AdminHttpError } from './http-client';
import { actionsOf, type CommandSpec, commandHelp, findCommand, GLOBAL_OPTIONS, GROUPS, groupHelp, OPTIONS, overview, shortUsage } from './commands';
import { humanUsd, parseSince, table } from './format';
import { IdentityUsageError, runIdentityCommand } from './identity-cli';
import { auditText, budgetText, keysTable, keyText, usageText, usd } from './render';

/** A mistake in the command line: printed as one line and the command's usage; exit 2. */
export class UsageError extends Error {
  readonly usage: string;
  constructor(message: string, spec?: CommandSpec, group?: string) {
    super(message);
    this.name = 'UsageError';
    this.usage = shortUsage(spec, group);
  }
}

/** Something named on the command line does not exist (a key id): exit 1. */
class NotFound extends Error {}

interface Stores {
  /** The limits keys, users and the platform get when they set none (from the same environment as the gateway). */
  readonly defaults: DefaultLimits;
  readonly keys: KeyStore;
  readonly ledger: Ledger;
  readonly usage: UsageStore;
  readonly guardrails: DynamoDbGuardrailStore;
  readonly bulk: DynamoDbKeyStatusBatch;
  /** Where every change is recorded before it is made. */
  readonly audit: DynamoDbAuditLog;
  readonly pepper: string;
  /** For billing reconciliation: the client, the config and where the admin keys come from. */
  readonly dynamodb: ReturnType<typeof createDynamoDbClient>;
  readonly config: ReturnType<typeof loadConfig>;
  readonly reconcileSecrets: SecretSource;
  close(): Promise<void>;
}

async function connect(aws: boolean): Promise<Stores> {
  const config = loadConfig();
  if (aws) {
    const dynamodb = createDynamoDbClient({ region: config.region });
    const prefix = config.ssmPrefix ?? `/tollgate/${config.stage}/`;
    const secrets = await loadGatewaySecrets(new SsmSecretSource({ client: new SSMClient({ region: config.region }), prefix }));
    const reconcileSecrets = new SsmSecretSource({ client: new SSMClient({ region: config.region }), prefix, names: RECONCILE_SECRET_NAMES });
    return storesFor(dynamodb, config, secrets.keyPepper, async () => undefined, reconcileSecrets);
  }
  const dir = stateDir();
  const running = readRunning(dir);
  let endpoint = running?.dynamodbEndpoint;
  let stop = async (): Promise<void> => undefined;
  if (!endpoint) {
    const own = await startDynamoDbLocal({ port: 0, inMemory: false, dataDir: join(dir, 'dynamodb') });
    endpoint = own.endpoint;
    stop = () => own.stop();
  }
  const dynamodb = createDynamoDbClient({ region: config.region, endpoint });
  await ensureTables(dynamodb, config.tables);
  return storesFor(dynamodb, config, loadOrCreatePepper(dir), stop, new EnvSecretSource(process.env));
}

function storesFor(
  dynamodb: ReturnType<typeof createDynamoDbClient>,
  config: ReturnType<typeof loadConfig>,
  pepper: string,
  close: () => Promise<void>,
  reconcileSecrets: SecretSource,
): Stores {
  return {
    defaults: config.defaults,
    dynamodb,
    config,
    reconcileSecrets,
    keys: new DynamoDbKeyStore(dynamodb, config.tables),
    ledger: new DynamoDbLedger(dynamodb, {
      tables: config.tables,
      platformShards: config.platformShards,
      usageRetentionDays: config.usageRetentionDays,
    }),
    usage: new DynamoDbUsageStore(dynamodb, config.tables, { retentionDays: config.usageRetentionDays }),
    guardrails: new DynamoDbGuardrailStore(dynamodb, { tables: config.tables, platformShards: config.platformShards }),
    bulk: new DynamoDbKeyStatusBatch(dynamodb, config.tables),
    audit: new DynamoDbAuditLog(dynamodb, { table: config.tables.audit, retentionDays: config.usageRetentionDays }),
    pepper,
    close,
  };
}

/** The options of node's parseArgs, from commands.ts. */
const PARSE_OPTIONS = Object.fromEntries(
  Object.entries(OPTIONS).map(([name, o]) => [name, { type: o.type, ...(o.short ? { short: o.short } : {}) }]),
) as Record<string, { type: 'string' | 'boolean'; short?: string }>;

/** Options some commands accept without listing them in their help (older spellings). */
const QUIET_OPTIONS: Readonly<Record<string, readonly string[]>> = { 'circuits reset': ['by'], 'killswitch resume': ['by'] };

function windowArg(value: string | undefined, fallback: Window, spec?: CommandSpec): Window {
  const w = value ?? fallback;
  if (!isWindow(w)) throw new UsageError(`--window must be one of ${WINDOWS.join(', ')} (got "${w}")`, spec);
  return w;
}

function summaryRangeArg(value: string, spec?: CommandSpec): SummaryRange {
  if ((SUMMARY_RANGES as readonly string[]).includes(value)) return value as SummaryRange;
  throw new UsageError(`--range must be one of ${SUMMARY_RANGES.join(', ')} (got "${value}")`, spec);
}

/** A per-minute limit: a positive number, or `none` (stored as 0: explicitly unlimited, no default). */
function rateArg(name: string, value: string | undefined, spec: CommandSpec): number | undefined {
  if (value === 'none') return 0;
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive whole number or "none" (got "${value}")`, spec);
  return n;
}

/** The command line, checked against commands.ts. */
interface Parsed {
  readonly spec?: CommandSpec;
  readonly group?: string;
  readonly action?: string;
  readonly rest: readonly string[];
  readonly values: Record<string, string | boolean | undefined>;
  /** Text to print instead of running anything (help). */
  readonly help?: string;
}

function parse(argv: readonly string[]): Parsed {
  const words = argv.filter((a) => !a.startsWith('-'));
  const guess = findCommand(words[0], words[1]);
  let parsed: ReturnType<typeof parseArgs<{ args: string[]; allowPositionals: true; strict: true; options: typeof PARSE_OPTIONS }>>;
  try {
    parsed = parseArgs({ args: [...argv], allowPositionals: true, strict: true, options: PARSE_OPTIONS });
  } catch (err) {
    const message = err instanceof Error ? err.message : String(err);
    const unknown = /Unknown option '([^']+)'/.exec(message)?.[1];
    if (unknown) throw new UsageError(`unknown option ${unknown}${guess ? ` for "${guess.name}"` : ''}`, guess, words[0]);
    const missing = /Option '(-\w, )?(--[\w-]+)[^']*' argument missing/.exec(message)?.[2];
    if (missing) throw new UsageError(`${missing} needs a value`, guess, words[0]);
    const noValue = /Option '(-\w, )?(--[\w-]+)' does not take an argument/.exec(message)?.[2];
    if (noValue) throw new UsageError(`${noValue} takes no value`, guess, words[0]);
    throw new UsageError(message.split('\n')[0]!, guess, words[0]);
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  let positionals = [...parsed.positionals];
  let help = values.help === true;
  if (positionals[0] === 'help') {
    help = true;
    positionals = positionals.slice(1);
  }
  const [group, action, ...rest] = positionals;
  if (!group) return { rest: [], values, help: overview() };
  if (!GROUPS.includes(group)) throw new UsageError(`unknown command "${group}"; commands: ${GROUPS.join(', ')}`);
  const actions = actionsOf(group);
  if (actions.length > 0) {
    if (action === undefined || action === 'help') {
      if (help || action === 'help') return { group, rest: [], values, help: groupHelp(group) };
      // `circuits` and `killswitch` alone show the state; other groups need a command.
      const implied = { circuits: 'list', killswitch: 'status' }[group];
      if (!implied) throw new UsageError(`"${group}" needs a command: ${actions.join(', ')}`, undefined, group);
      return checked(findCommand(group, implied)!, group, implied, [], values);
    }
    if (!actions.includes(action)) throw new UsageError(`unknown command "${group} ${action}"; "${group}" takes ${actions.join(', ')}`, undefined, group);
    const spec = findCommand(group, action)!;
    if (help) return { spec, group, action, rest, values, help: commandHelp(spec) };
    return checked(spec, group, action, rest, values);
  }
  const spec = findCommand(group, undefined)!;
  if (help) return { spec, group, rest: [], values, help: commandHelp(spec) };
  // Single-word commands take their value as a word too (`usage user`, `audit 2026-12-06`).
  return checked(spec, group, action, rest, values);
}

function checked(spec: CommandSpec, group: string, action: string | undefined, rest: readonly string[], values: Parsed['values']): Parsed {
  const allowed = new Set<string>([...GLOBAL_OPTIONS, ...spec.options, ...(QUIET_OPTIONS[spec.name] ?? [])]);
  for (const [name, value] of Object.entries(values)) {
    if (value === undefined || value === false) continue;
    if (!allowed.has(name)) throw new UsageError(`"${spec.name}" does not take --${name}`, spec);
  }
  for (const name of spec.required ?? []) {
    if (typeof values[name] !== 'string' || !(values[name] as string).trim()) throw new UsageError(`"${spec.name}" needs --${name}`, spec);
  }
  const wanted = spec.args ? spec.args.split(' ').length : 0;
  const given = spec.name.includes(' ') ? rest : [action, ...rest].filter((x): x is string => x !== undefined);
  // The one-word commands accept one optional word (usage BY, audit DAY).
  const max = spec.name.includes(' ') ? wanted : 1;
  if (spec.args && given.length < wanted) throw new UsageError(`"${spec.name}" needs ${spec.args}`, spec);
  if (given.length > max) throw new UsageError(`unexpected "${given[max]}" after "${spec.name}"`, spec);
  if (values.url !== undefined && spec.overHttp === false) throw new UsageError(`"${spec.name}" works on the tables, not over --url (run it where the tables are, or with --aws)`, spec);
  if (typeof values.by === 'string' && spec.name === 'usage' && !isUsageGrouping(values.by)) {
    throw new UsageError(`--by must be one of ${USAGE_GROUPINGS.join(', ')} (got "${values.by}")`, spec);
  }
  if (spec.name === 'usage' && action !== undefined && !isUsageGrouping(action)) {
    throw new UsageError(`usage groups by ${USAGE_GROUPINGS.join(', ')} (got "${action}")`, spec);
  }
  if (typeof values.window === 'string') windowArg(values.window, 'day', spec);
  if (spec.name === 'keys create' && values.window !== undefined && values['budget-usd'] === undefined) {
    throw new UsageError('--window applies to --budget-usd: give both, e.g. --budget-usd 5 --window day', spec);
  }
  return { spec, group, ...(action !== undefined ? { action } : {}), rest, values };
}

export async function run(argv: readonly string[], out: (text: string) => void): Promise<void> {
  const cmd = parse(argv);
  if (cmd.help !== undefined) {
    out(cmd.help);
    return;
  }
  const spec = cmd.spec!;
  const group = cmd.group!;
  const { action, rest } = cmd;
  const values = cmd.values as Record<string, string | undefined> & { json?: boolean; aws?: boolean; cache?: boolean };
  const str = (name: string) => (typeof cmd.values[name] === 'string' ? (cmd.values[name] as string) : undefined);
  if (str('url') !== undefined || group === 'tokens' || group === 'services') {
    await runIdentityCommand({ group, ...(action ? { action } : {}), rest, values: cmd.values }, out);
    return;
  }
  const stores = await connect(values.aws === true || process.env.TOLLGATE_TARGET === 'aws');
  const print = (human: string, json: unknown) => out(values.json ? JSON.stringify(json, null, 2) : human);
  const now = Date.now();
  const who: AuditWho = { actor: cliActor(str('actor')), via: 'cli' };
  const reason = str('reason')?.trim() || undefined;
  try {
    if (group === 'keys') {
      if (action === 'create') {
        const budgetUsd = str('budget-usd');
        const window = windowArg(str('window'), 'month', spec);
        let limit: number | typeof UNLIMITED | undefined;
        if (budgetUsd !== undefined) {
          try {
            limit = budgetUsd === UNLIMITED ? UNLIMITED : usdToMicros(budgetUsd);
          } catch (err) {
            throw new UsageError(`--budget-usd: ${err instanceof Error ? err.message : String(err)}`, spec);
          }
        }
        const rpm = rateArg('rpm', str('rpm'), spec);
        const tpm = rateArg('tpm', str('tpm'), spec);
        const created = await createKeyAudited(
          stores,
          {
            userId: str('user')!,
            ...(str('org') ? { orgId: str('org') } : {}),
            ...(str('name') ? { name: str('name') } : {}),
            ...(str('scopes') ? { scopes: str('scopes')!.split(',').map((x) => x.trim()).filter(Boolean) } : {}),
            ...(rpm !== undefined ? { rpm } : {}),
            ...(tpm !== undefined ? { tpm } : {}),
            ...(values.cache ? { responseCache: true } : {}),
            ...(str('expires') ? { expiresAt: str('expires') } : {}),
            ...(limit !== undefined ? { budget: { window, limit } } : {}),
          },
          { pepper: stores.pepper, clock: systemClock, sink: stores.audit, who: { ...who, ...(reason ? { reason } : {}) } },
        );
        const r = created.record;
        const budgetLine =
          limit === undefined
            ? 'budget: the defaults (see keys show)'
            : `budget: ${limit === UNLIMITED ? 'no limit' : `${humanUsd(limit)} per ${window}`}${str('window') === undefined ? ' (--window not given: defaulted to month; use --window hour|day|month)' : ''}`;
        print(
          [
            `Created key ${r.keyId} (${r.prefix}) for user ${r.userId}${r.orgId ? `, org ${r.orgId}` : ''}. ${budgetLine}`,
            'The key is shown only this once:',
            created.raw,
          ].join('\n'),
          { key: created.raw, ...publicKey(r), ...(limit !== undefined ? { budget: { window, limit_usd: limit === UNLIMITED ? UNLIMITED : formatUsd(limit), window_defaulted: str('window') === undefined } } : {}) },
        );
        return;
      }
      if (action === 'list') {
        const keys: KeyRecord[] = [];
        if (str('user')) keys.push(...(await stores.keys.listByUser(str('user')!)));
        else for await (const page of stores.keys.listAll()) keys.push(...page);
        print(keysTable(keys.map(publicKey), now), keys.map(publicKey));
        return;
      }
      const keyId = rest[0]!;
      const existing = await stores.keys.get(keyId);
      if (!existing) throw new NotFound(`no key ${keyId}`);
      if (action === 'show') {
        const view = keyView(existing, (await stores.ledger.getLimitSettings([`key:${keyId}`])).get(`key:${keyId}`), stores.defaults);
        print(keyText(view, now), view);
        return;
      }
      const status: KeyRecord['status'] = ({ suspend: 'suspended', resume: 'active', revoke: 'revoked' } as const)[action as 'suspend' | 'resume' | 'revoke'];
      if (existing.status === 'revoked' && status !== 'revoked') throw new UsageError(`key ${keyId} is revoked and cannot be resumed`, spec);
      await audited(
        stores.audit,
        { ...who, action: `keys.${action!}`, target: keyId, before: { status: existing.status }, after: { status }, ...(reason ? { reason } : {}) },
        systemClock,
        () => stores.keys.setStatus(keyId, { status, actor: 'operator', ...(reason ? { reason } : {}) }),
      );
      print(`${keyId} (${existing.prefix}): ${existing.status} → ${status}${reason ? ` — ${reason}` : ''}`, { keyId, status, previous: existing.status, ...(reason ? { reason } : {}) });
      return;
    }
    if ((GUARDRAIL_GROUPS as readonly string[]).includes(group)) {
      await runGuardrailCommand(
        { group, ...(action ? { action } : {}), rest, ack: str('ack'), by: str('by'), json: values.json === true, sinceHours: str('since-hours'), maxRepeats: str('max-repeats'), maxFailures: str('max-failures') },
        { keys: stores.keys, ledger: stores.ledger, guardrails: stores.guardrails, bulk: stores.bulk, clock: systemClock, audit: stores.audit, actor: who.actor },
        print,
        (rows) => table(rows),
      );
      return;
    }
    if (group === 'budgets') {
      const scope = scopeArg(rest[0]!, spec);
      if (action === 'set') {
        const window = windowArg(rest[1], 'day', spec);
        const amount = rest[2]!;
        // `none` is stored as the explicit "no limit"; `default` forgets the scope's own limit (the default applies).
        let limit: number | typeof UNLIMITED | null;
        try {
          limit = amount === UNLIMITED ? UNLIMITED : amount === 'default' ? null : usdToMicros(amount);
        } catch (err) {
          throw new UsageError(`the amount must be dollars (e.g. 5 or 12.50), none or default: ${err instanceof Error ? err.message : String(err)}`, spec);
        }
        const before = (await stores.ledger.getLimitSettings([scope])).get(scope)?.[window];
        await audited(
          stores.audit,
          { ...who, action: 'budgets.set', target: scope, before: { [window]: limitAuditValue(before) }, after: { [window]: limitAuditValue(limit) }, ...(reason ? { reason } : {}) },
          systemClock,
          () => stores.ledger.setLimit(scope, window, limit),
        );
        const view = await budgetView(stores.ledger, scope, { defaults: stores.defaults, now, platformShards: stores.config.platformShards });
        const w = view.windows.find((x) => x.window === window)!;
        print(`${scope} ${window} limit: ${w.limit_usd === null ? 'none' : `${usd(w.limit_usd)}${w.source === 'default' ? ' (default)' : ''}`}`, {
          scope,
          window,
          limit_usd: typeof limit === 'number' ? formatUsd(limit) : limit === null ? 'default' : UNLIMITED,
        });
        return;
      }
      const view = await budgetView(stores.ledger, scope, { defaults: stores.defaults, now, platformShards: stores.config.platformShards });
      print(budgetText(view), view);
      return;
    }
    if (group === 'audit') {
      const day = str('day') ?? str('id') ?? action;
      let entries: AuditEntry[];
      if (day !== undefined) {
        if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) throw new UsageError(`the day must be YYYY-MM-DD (got "${day}")`, spec);
        entries = (await stores.audit.listDay(day)).reverse();
      } else {
        let since: number;
        try {
          since = parseSince(str('since') ?? '7d', now);
        } catch (err) {
          throw new UsageError(err instanceof Error ? err.message : String(err), spec);
        }
        const limit = str('limit') === undefined ? 200 : Number(str('limit'));
        if (!Number.isInteger(limit) || limit < 1) throw new UsageError(`--limit must be a positive whole number (got "${str('limit')}")`, spec);
        entries = await stores.audit.list({ since, until: now, limit, ...(str('actor') ? { actor: str('actor') } : {}), ...(str('key') ? { target: str('key') } : {}) });
      }
      print(auditText(entries), entries);
      return;
    }
    if (group === 'reconcile') {
      const day = str('day') ?? yesterdayOf(now);
      const result = await runReconcile(day, {
        config: stores.config,
        dynamodb: stores.dynamodb,
        secrets: stores.reconcileSecrets,
        now,
        // Logs go to stderr: stdout carries only the report (one JSON document with --json).
        log: jsonLogger({ level: 'warn', sink: (line) => process.stderr.write(`${line}\n`) }),
      });
      const rows = result.rows.map((r) => ({
        provider: r.provider,
        model: r.model,
        ledger: humanUsd(r.ledgerMicros),
        billed: humanUsd(r.billedMicros),
        drift: humanUsd(r.driftMicros),
        alarm: r.alarm ? 'ALARM' : '',
      }));
      const failed = result.failed.map((f) => `${f.provider}: ${f.error}`).join('\n');
      const skipped = result.skipped.map((x) => `${x.provider}: ${x.reason}`).join('\n');
      print(
        `billing drift for ${day}\n${table(rows)}${failed ? `\nunreadable reports:\n${failed}` : ''}${skipped ? `\nskipped (not compared):\n${skipped}` : ''}`,
        result,
      );
      if (result.rows.some((r) => r.alarm) || result.failed.length) process.exitCode = 2;
      return;
    }
    if (group === 'report') {
      const refusals = new DynamoDbRefusalStore(stores.dynamodb, { usage: stores.config.tables.usage });
      const rangeValue = str('range');
      const range = rangeValue === undefined ? undefined : summaryRangeArg(rangeValue, spec);
      const org = str('org');
      await runReport(
        { ...stores, refusals },
        { ...(range ? { range } : { window: windowArg(str('window'), 'day', spec) }), ...(org ? { org } : {}), json: values.json === true, now },
        out,
      );
      return;
    }
    if (group === 'usage') {
      const by = (str('by') ?? action ?? 'model') as UsageGrouping;
      const window = windowArg(str('window'), 'day', spec);
      const { from, to } = usageRange(window, now);
      const id = str('id');
      const records: UsageRecord[] = by === 'model' || !id ? await stores.usage.queryAll(from, to) : await stores.usage.query({ by, id, from, to });
      const view = usageView(by, window, now, records);
      print(usageText(view), view);
      return;
    }
    throw new UsageError(`"${spec.name}" is not available here`, spec);
  } finally {
    await stores.close();
  }
}

function scopeArg(text: string, spec: CommandSpec): ScopeId {
  try {
    return parseScope(text);
  } catch (err) {
    throw new UsageError(`${err instanceof Error ? err.message : String(err)} (scopes: key:ID, user:ID, org:ID, platform)`, spec);
  }
}

/** Whether a failure is the caller's to fix (a one-line message) rather than a crash. */
function isExpected(err: unknown): boolean {
  return (
    err instanceof UsageError ||
    err instanceof NotFound ||
    err instanceof TollgateError ||
    err instanceof RangeError ||
    err instanceof IdentityUsageError ||
    err instanceof AdminHttpError ||
    err instanceof AuditUnavailableError
  );
}

/** Runs the CLI as a program: output on stdout, one-line errors on stderr, exit 2 for a wrong command line. */
export async function main(argv: readonly string[]): Promise<number> {
  try {
    await run(argv, (text) => process.stdout.write(`${text}\n`));
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (err) {
    if (err instanceof UsageError || err instanceof IdentityUsageError) {
      const usageText = err instanceof UsageError ? err.usage : shortUsage(undefined);
      process.stderr.write(`admin: ${err.message}\n${usageText}\n`);
      return 2;
    }
    process.stderr.write(`admin: ${isExpected(err) ? (err as Error).message : err instanceof Error ? `${err.name}: ${err.message}` : String(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
