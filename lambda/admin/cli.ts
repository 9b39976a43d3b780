/**
 * `npm run admin -- <command>`: keys, budgets and usage reports, against the local gateway's DynamoDB Local
 * (the running `npm start`, or a DynamoDB Local of its own on the same data) or, with `--aws`, against the
 * deployed tables (names from TOLLGATE_TABLE_* / TOLLGATE_STAGE, pepper from SSM).
 *
 *   keys create --user U [--org O] [--name N] [--scopes a,b] [--rpm N] [--tpm N] [--cache] [--budget-usd X --window W]
 *               [--expires ISO] [--json]
 *   keys list [--user U] [--json] | keys show ID | keys suspend|resume|revoke ID [--reason "…"]
 *   budgets set SCOPE WINDOW USD|none      (SCOPE: key:ID user:ID org:ID platform; WINDOW: hour|day|month)
 *   budgets show SCOPE [--json]
 *   usage --by user|key|org|model [--id ID] [--window hour|day|month] [--json]
 *   tokens issue --service S --scopes a,b [--ttl 1h] [--on-behalf-of U]   services register --service S --scopes a,b
 *   audit [--id yyyy-mm-dd]     --url URL [--admin-token T | SigV4]: keys/budgets/usage over /admin/* (identity-cli.ts)
 *   circuits list | circuits reset SCOPE --ack "…" | alerts | killswitch status|resume --ack "…" | loopguard …
 *                                          (guardrails: see lambda/core/guardrails/admin-commands.ts)
 *   report [--range hour|today|yesterday|7d|month] [--org TEAM] [--json]   the dashboard's summary (refusals, budgets…)
 *   reconcile [--day YYYY-MM-DD] [--json]     ledger vs the providers' cost reports (admin keys from
 *                                            TOLLGATE_SECRET_OPENAI_ADMIN_KEY / _ANTHROPIC_ADMIN_KEY or SSM)
 */
import { SSMClient } from '@aws-sdk/client-ssm';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { loadGatewaySecrets } from '../compose';
import { loadConfig } from '../config';
import { systemClock } from '../core/clock';
import { TollgateError } from '../core/errors';
import { createApiKey } from '../core/key-admin';
import { displayUsd, formatUsd, usdToMicros } from '../core/money';
import { EnvSecretSource, RECONCILE_SECRET_NAMES, type SecretSource, SsmSecretSource } from '../core/secrets';
import { jsonLogger } from '../core/log';
import { runReconcile, yesterdayOf } from '../handlers/reconcile';
import type { KeyStore, Ledger, UsageStore } from '../core/stores';
import { type KeyRecord, parseScope, type ScopeId, UNLIMITED, type UsageRecord } from '../core/types';
import { type DefaultLimits, describeLimits, keyRateLimits } from '../core/guardrails/defaults';
import { isWindow, type Window, WINDOWS, windowBounds, windowKey } from '../core/windows';
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
import { IDENTITY_GROUPS, IdentityUsageError, runIdentityCommand } from './identity-cli';

class UsageError extends Error {}

interface Stores {
  /** The limits keys, users and the platform get when they set none (from the same environment as the gateway). */
  readonly defaults: DefaultLimits;
  readonly keys: KeyStore;
  readonly ledger: Ledger;
  readonly usage: UsageStore;
  readonly guardrails: DynamoDbGuardrailStore;
  readonly bulk: DynamoDbKeyStatusBatch;
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
    usage: new DynamoDbUsageStore(dynamodb, config.tables),
    guardrails: new DynamoDbGuardrailStore(dynamodb, { tables: config.tables, platformShards: config.platformShards }),
    bulk: new DynamoDbKeyStatusBatch(dynamodb, config.tables),
    pepper,
    close,
  };
}

function table(rows: readonly Record<string, string | number>[]): string {
  if (rows.length === 0) return '(none)';
  const cols = Object.keys(rows[0]!);
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '').length)));
  const line = (cells: readonly string[]) => cells.map((c, i) => c.padEnd(width[i]!)).join('  ').trimEnd();
  return [line(cols), line(width.map((w) => '-'.repeat(w))), ...rows.map((r) => line(cols.map((c) => String(r[c] ?? ''))))].join('\n');
}

function keyRow(k: KeyRecord): Record<string, string> {
  return {
    keyId: k.keyId,
    prefix: k.prefix,
    user: k.userId,
    org: k.orgId ?? '',
    name: k.name,
    status: k.status + (k.statusChangedBy === 'kill-switch' ? ' (kill switch)' : ''),
    scopes: k.scopes.join(','),
    rpm: k.rpm === undefined ? '' : String(k.rpm),
    tpm: k.tpm === undefined ? '' : String(k.tpm),
    lastUsed: k.lastUsedAt ?? '',
  };
}

function publicKey(k: KeyRecord): Omit<KeyRecord, 'hash'> {
  const { hash: _hash, ...rest } = k;
  return rest;
}

function summaryRangeArg(value: string): SummaryRange {
  if ((SUMMARY_RANGES as readonly string[]).includes(value)) return value as SummaryRange;
  throw new Error(`--range must be one of ${SUMMARY_RANGES.join(', ')} (got "${value}")`);
}

function windowArg(value: string | undefined, fallback: Window): Window {
  const w = value ?? fallback;
  if (!isWindow(w)) throw new UsageError(`window must be one of ${WINDOWS.join(', ')}, got "${w}"`);
  return w;
}

/** A per-minute limit: a positive number, or `none` (stored as 0: explicitly unlimited, no default). */
function rateArg(name: string, value: string | undefined): number | undefined {
  if (value === 'none') return 0;
  return intArg(name, value);
}

/** Budget limits of a scope with where each comes from: `$100.00 (default)`, `$20.00`, `none`. */
async function limitRows(stores: Stores, scope: ScopeId): Promise<Record<string, string>> {
  const rows = describeLimits(scope, (await stores.ledger.getLimitSettings([scope])).get(scope), stores.defaults);
  return Object.fromEntries(
    Object.entries(rows).map(([w, r]) => [w, r.limit === undefined ? 'none' : `${displayUsd(r.limit)}${r.source === 'default' ? ' (default)' : ''}`]),
  );
}

function intArg(name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`--${name} must be a positive whole number`);
  return n;
}

export async function run(argv: readonly string[], out: (text: string) => void): Promise<void> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      user: { type: 'string' },
      org: { type: 'string' },
      name: { type: 'string' },
      scopes: { type: 'string' },
      rpm: { type: 'string' },
      tpm: { type: 'string' },
      cache: { type: 'boolean', default: false },
      day: { type: 'string' },
      'budget-usd': { type: 'string' },
      window: { type: 'string' },
      range: { type: 'string' },
      expires: { type: 'string' },
      reason: { type: 'string' },
      by: { type: 'string' },
      id: { type: 'string' },
      json: { type: 'boolean', default: false },
      aws: { type: 'boolean', default: false },
      // Identity (issue 5): tokens, services, audit, and the HTTP/SigV4 mode (lambda/admin/identity-cli.ts).
      url: { type: 'string' },
      'admin-token': { type: 'string' },
      region: { type: 'string' },
      service: { type: 'string' },
      ttl: { type: 'string' },
      'on-behalf-of': { type: 'string' },
      ack: { type: 'string' },
      'since-hours': { type: 'string' },
      'max-repeats': { type: 'string' },
      'max-failures': { type: 'string' },
    },
  });
  const [group, action, ...rest] = positionals;
  if (!group) throw new UsageError('usage: admin keys|budgets|usage …  (see lambda/admin/cli.ts header)');
  if (values.url || (IDENTITY_GROUPS as readonly string[]).includes(group)) {
    await runIdentityCommand({ group, ...(action ? { action } : {}), rest, values }, out);
    return;
  }
  const stores = await connect(values.aws || process.env.TOLLGATE_TARGET === 'aws');
  const print = (human: string, json: unknown) => out(values.json ? JSON.stringify(json, null, 2) : human);
  try {
    if (group === 'keys') {
      if (action === 'create') {
        if (!values.user) throw new UsageError('keys create needs --user');
        const budgetUsd = values['budget-usd'];
        const created = await createApiKey(
          stores,
          {
            userId: values.user,
            ...(values.org ? { orgId: values.org } : {}),
            ...(values.name ? { name: values.name } : {}),
            ...(values.scopes ? { scopes: values.scopes.split(',').map((s) => s.trim()).filter(Boolean) } : {}),
            ...(values.rpm ? { rpm: rateArg('rpm', values.rpm) } : {}),
            ...(values.tpm ? { tpm: rateArg('tpm', values.tpm) } : {}),
            ...(values.cache ? { responseCache: true } : {}),
            ...(values.expires ? { expiresAt: values.expires } : {}),
            ...(budgetUsd ? { budget: { window: windowArg(values.window, 'month'), limit: budgetUsd === UNLIMITED ? (UNLIMITED as typeof UNLIMITED) : usdToMicros(budgetUsd) } } : {}),
          },
          { pepper: stores.pepper, clock: systemClock },
        );
        print(
          `Created ${created.record.prefix} for user ${created.record.userId}. The key is shown only this once:\n${created.raw}`,
          { key: created.raw, ...publicKey(created.record) },
        );
        return;
      }
      if (action === 'list') {
        const keys: KeyRecord[] = [];
        if (values.user) keys.push(...(await stores.keys.listByUser(values.user)));
        else for await (const page of stores.keys.listAll()) keys.push(...page);
        print(table(keys.map(keyRow)), keys.map(publicKey));
        return;
      }
      const keyId = rest[0] ?? values.id;
      if (!keyId) throw new UsageError(`keys ${action ?? ''} needs a key id`);
      if (action === 'show') {
        const k = await stores.keys.get(keyId);
        if (!k) throw new UsageError(`no key ${keyId}`);
        const rates = keyRateLimits(k, stores.defaults, { service: k.keyId.startsWith('svc:') });
        const rate = (own: number | undefined, effective: number | undefined) =>
          effective === undefined ? 'none' : `${effective}${own === undefined ? ' (default)' : ''}`;
        const budgets = await limitRows(stores, `key:${k.keyId}`);
        const row = { ...keyRow(k), rpm: rate(k.rpm, rates.rpm), tpm: rate(k.tpm, rates.tpm), ...Object.fromEntries(Object.entries(budgets).map(([w, v]) => [`budget/${w}`, v])) };
        print(Object.entries(row).map(([f, v]) => `${f.padEnd(12)} ${v}`).join('\n'), {
          ...publicKey(k),
          limits: { rpm: rates.rpm ?? null, tpm: rates.tpm ?? null, rpmSource: k.rpm === undefined ? 'default' : 'set', tpmSource: k.tpm === undefined ? 'default' : 'set' },
          budgets: describeLimits(`key:${k.keyId}`, (await stores.ledger.getLimitSettings([`key:${k.keyId}`])).get(`key:${k.keyId}`), stores.defaults),
        });
        return;
      }
      const status = { suspend: 'suspended', resume: 'active', revoke: 'revoked' }[action ?? ''] as KeyRecord['status'] | undefined;
      if (!status) throw new UsageError(`unknown keys command "${action ?? ''}"`);
      const existing = await stores.keys.get(keyId);
      if (!existing) throw new UsageError(`no key ${keyId}`);
      if (existing.status === 'revoked' && status !== 'revoked') throw new UsageError(`key ${keyId} is revoked and cannot be resumed`);
      await stores.keys.setStatus(keyId, { status, actor: 'operator', ...(values.reason ? { reason: values.reason } : {}) });
      print(`${existing.prefix}: ${existing.status} → ${status}`, { keyId, status });
      return;
    }
    if ((GUARDRAIL_GROUPS as readonly string[]).includes(group)) {
      await runGuardrailCommand(
        { group, ...(action ? { action } : {}), rest, ack: values.ack, by: values.by, json: values.json, sinceHours: values['since-hours'], maxRepeats: values['max-repeats'], maxFailures: values['max-failures'] },
        { keys: stores.keys, ledger: stores.ledger, guardrails: stores.guardrails, bulk: stores.bulk, clock: systemClock },
        print,
        table,
      );
      return;
    }
    if (group === 'budgets') {
      const scope = parseScope(rest[0] ?? '');
      if (action === 'set') {
        const window = windowArg(rest[1], 'day');
        const amount = rest[2];
        if (!amount) throw new UsageError('budgets set SCOPE WINDOW USD|none|default');
        // `none` is stored as the explicit "no limit"; `default` forgets the scope's own limit (the default applies).
        const limit = amount === UNLIMITED ? UNLIMITED : amount === 'default' ? null : usdToMicros(amount);
        await stores.ledger.setLimit(scope, window, limit);
        const now = (await limitRows(stores, scope))[window];
        print(`${scope} ${window} limit: ${now}`, {
          scope,
          window,
          limit_usd: typeof limit === 'number' ? formatUsd(limit) : limit,
        });
        return;
      }
      if (action === 'show') {
        const limits = describeLimits(scope, (await stores.ledger.getLimitSettings([scope])).get(scope), stores.defaults);
        const now = Date.now();
        const refs = WINDOWS.map((w) => ({ scope, window: w, windowKey: windowKey(w, now), windowEnd: windowBounds(w, now).end, ...(scope === 'platform' ? { shard: 0 } : {}) }));
        const values2 = await stores.ledger.readCounters(refs);
        const rows = WINDOWS.map((w) => {
          const v = values2.find((x) => x.ref.window === w);
          const limit = limits[w].limit;
          return {
            window: w,
            period: windowKey(w, now).split('#')[1]!,
            limit: limit === undefined ? 'none' : `${displayUsd(limit)}${limits[w].source === 'default' ? ' (default)' : ''}`,
            spent: displayUsd(v?.spent ?? 0),
            held: displayUsd(v?.reserved ?? 0),
            remaining: limit === undefined ? '' : displayUsd(Math.max(0, limit - (v?.committed ?? 0))),
            requests: v?.requests ?? 0,
          };
        });
        print(`${scope}\n${table(rows)}`, { scope, windows: rows });
        return;
      }
      throw new UsageError(`unknown budgets command "${action ?? ''}"`);
    }
    if (group === 'reconcile') {
      const day = values.day ?? yesterdayOf(Date.now());
      const result = await runReconcile(day, {
        config: stores.config,
        dynamodb: stores.dynamodb,
        secrets: stores.reconcileSecrets,
        now: Date.now(),
        // Logs go to stderr: stdout carries only the report (one JSON document with --json).
        log: jsonLogger({ level: 'warn', sink: (line) => process.stderr.write(`${line}\n`) }),
      });
      const rows = result.rows.map((r) => ({
        provider: r.provider,
        model: r.model,
        ledger: displayUsd(r.ledgerMicros),
        billed: displayUsd(r.billedMicros),
        drift: `${r.driftMicros < 0 ? '-' : ''}${displayUsd(Math.abs(r.driftMicros))}`,
        alarm: r.alarm ? 'ALARM' : '',
      }));
      const failed = result.failed.map((f) => `${f.provider}: ${f.error}`).join('\n');
      const skipped = result.skipped.map((s) => `${s.provider}: ${s.reason}`).join('\n');
      print(
        `billing drift for ${day}\n${table(rows)}${failed ? `\nunreadable reports:\n${failed}` : ''}${skipped ? `\nskipped (not compared):\n${skipped}` : ''}`,
        result,
      );
      if (result.rows.some((r) => r.alarm) || result.failed.length) process.exitCode = 2;
      return;
    }
    if (group === 'report') {
      const refusals = new DynamoDbRefusalStore(stores.dynamodb, { usage: stores.config.tables.usage });
      const range = values.range === undefined ? undefined : summaryRangeArg(values.range);
      await runReport(
        { ...stores, refusals },
        { ...(range ? { range } : { window: windowArg(values.window, 'day') }), ...(values.org ? { org: values.org } : {}), json: values.json, now: Date.now() },
        out,
      );
      return;
    }
    if (group === 'usage') {
      const by = values.by ?? action ?? 'model';
      const window = windowArg(values.window, 'day');
      const bounds = windowBounds(window, Date.now());
      const from = new Date(bounds.start).toISOString();
      const to = new Date(bounds.end).toISOString();
      let records: UsageRecord[];
      if (by === 'model' || !values.id) records = await stores.usage.queryAll(from, to);
      else if (by === 'user' || by === 'key' || by === 'org') records = await stores.usage.query({ by, id: values.id, from, to });
      else throw new UsageError('--by must be user, key, org or model');
      const groupKey = (r: UsageRecord) => (by === 'user' ? r.userId : by === 'key' ? r.keyId : by === 'org' ? (r.orgId ?? '') : r.model);
      const groups = new Map<string, { requests: number; input: number; output: number; cost: number; failed: number }>();
      for (const r of records) {
        const g = groups.get(groupKey(r)) ?? { requests: 0, input: 0, output: 0, cost: 0, failed: 0 };
        g.requests += 1;
        g.input += r.usage.inputTokens;
        g.output += r.usage.outputTokens;
        g.cost += r.costMicros;
        if (r.outcome !== 'ok') g.failed += 1;
        groups.set(groupKey(r), g);
      }
      const rows = [...groups.entries()]
        .sort((a, b) => b[1].cost - a[1].cost)
        .map(([name, g]) => ({ [by]: name, requests: g.requests, failed: g.failed, inputTokens: g.input, outputTokens: g.output, cost: displayUsd(g.cost), costMicros: g.cost }));
      print(`usage by ${by}, ${window} ${windowKey(window, Date.now()).split('#')[1]}\n${table(rows.map(({ costMicros: _c, ...r }) => r))}`, {
        by,
        window,
        from,
        to,
        rows: rows.map((r) => ({ ...r, cost_usd: formatUsd(r.costMicros) })),
      });
      return;
    }
    throw new UsageError(`unknown command group "${group}"`);
  } finally {
    await stores.close();
  }
}

if (require.main === module) {
  run(process.argv.slice(2), (text) => process.stdout.write(`${text}\n`)).catch((err: unknown) => {
    const message =
      err instanceof UsageError || err instanceof TollgateError || err instanceof RangeError || err instanceof IdentityUsageError || err instanceof AdminHttpError
        ? err.message
        : String(err);
    process.stderr.write(`admin: ${message}\n`);
    process.exitCode = 2;
  });
}
