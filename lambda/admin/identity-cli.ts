/**
 * The admin CLI's identity commands and its HTTP mode:
 *
 *   tokens issue --service S --scopes a,b [--ttl 1h] [--on-behalf-of U] [--org O]   prints a service JWT
 *   services register --service S --scopes a,b [--rpm N] [--tpm N]
 *   audit [--since 2h|7d|DATE] [--key ID] [--actor NAME]   (over --url; locally cli.ts reads the table)
 *   --url URL … (keys, budgets, usage too)   talk to /admin/* over HTTP: SigV4 (default AWS credential chain)
 *                                            for a deployed gateway, or --admin-token for a local one
 *
 * Without --url these go to the running local gateway (`npm start`) with its admin token; with --aws,
 * `tokens issue` signs with the stage's jwt-secret from SSM directly.
 */
import { SSMClient } from '@aws-sdk/client-ssm';
import { loadConfig } from '../config';
import { systemClock } from '../core/clock';
import { JwtKeyRingSource, TokenIssuer } from '../core/jwt';
import { SsmSecretSource } from '../core/secrets';
import { readRunning, stateDir } from '../local/state';
import type { BudgetView, KeyView, PublicKey, UsageView } from '../core/admin-views';
import type { AuditEntry } from '../core/audit';
import { parseSince } from './format';
import { AdminHttpClient, parseTtl } from './http-client';
import { auditText, budgetText, keysTable, keyText, usageText, usd } from './render';

/** The parsed command line, as cli.ts read it. */
export interface IdentityCommand {
  readonly group: string;
  readonly action?: string;
  readonly rest: readonly string[];
  readonly values: Readonly<Record<string, string | boolean | undefined>>;
}

/** A mistake in the command line (printed without a stack). */
export class IdentityUsageError extends Error {}

/** Groups handled here even without --url. */
export const IDENTITY_GROUPS = ['tokens', 'services'] as const;

function s(values: IdentityCommand['values'], name: string): string | undefined {
  const v = values[name];
  return typeof v === 'string' ? v : undefined;
}

function list(text: string | undefined): string[] | undefined {
  return text === undefined ? undefined : text.split(',').map((x) => x.trim()).filter(Boolean);
}

function num(text: string | undefined, name: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new IdentityUsageError(`--${name} must be a positive whole number`);
  return n;
}

/** The admin API client for this invocation, or undefined when there is none to talk to. */
function clientFor(values: IdentityCommand['values']): AdminHttpClient | undefined {
  const url = s(values, 'url');
  const token = s(values, 'admin-token');
  if (url) {
    // The local gateway's own URL without --admin-token: its token is in .tollgate/ (running.json).
    const local = token ? undefined : readRunning(stateDir());
    const localToken = local && sameOrigin(local.url, url) ? local.adminToken : undefined;
    const useToken = token ?? localToken;
    return new AdminHttpClient({
      url,
      auth: useToken ? { kind: 'token', token: useToken } : { kind: 'sigv4', region: s(values, 'region') ?? loadConfig().region },
    });
  }
  if (values.aws) return undefined;
  const running = readRunning(stateDir());
  return running ? new AdminHttpClient({ url: running.url, auth: { kind: 'token', token: running.adminToken } }) : undefined;
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

/** Runs an identity command or any command in HTTP mode; prints with `out`. */
export async function runIdentityCommand(cmd: IdentityCommand, out: (text: string) => void): Promise<void> {
  const { group, action, rest, values } = cmd;
  const json = values.json === true;
  const print = (human: string, body: unknown) => out(json ? JSON.stringify(body, null, 2) : human);
  const client = clientFor(values);

  if (group === 'tokens' && action === 'issue') {
    const service = s(values, 'service');
    const scopes = list(s(values, 'scopes'));
    if (!service || !scopes) throw new IdentityUsageError('tokens issue needs --service and --scopes');
    const ttlSeconds = parseTtl(s(values, 'ttl') ?? '15m');
    const onBehalfOf = s(values, 'on-behalf-of');
    const orgId = s(values, 'org');
    let issued: { token: string; expiresAt: string; tokenId: string };
    if (client) {
      const res = await client.request('POST', '/admin/tokens', { service, scopes, ttlSeconds, ...(onBehalfOf ? { onBehalfOf } : {}), ...(orgId ? { orgId } : {}) });
      issued = { token: String(res.token), expiresAt: String(res.expiresAt), tokenId: String(res.tokenId) };
    } else if (values.aws) {
      const config = loadConfig();
      const prefix = config.ssmPrefix ?? `/tollgate/${config.stage}/`;
      const source = new SsmSecretSource({ client: new SSMClient({ region: config.region }), prefix, names: ['jwt-secret'] });
      const issuer = new TokenIssuer({ keys: new JwtKeyRingSource(() => source.get('jwt-secret')), clock: systemClock, ...config.jwt });
      issued = await issuer.issue({ service, scopes, ttlSeconds, ...(onBehalfOf ? { onBehalfOf } : {}), ...(orgId ? { orgId } : {}) });
      out(`note: the gateway accepts it only once the service is registered (services register --service ${service} --url …)`);
    } else {
      throw new IdentityUsageError('no gateway to ask: start it (npm start), or pass --url URL, or --aws to sign with the stage secret');
    }
    // The token alone on stdout, so `$(npm run -s admin -- tokens issue …)` captures it.
    print(issued.token, issued);
    return;
  }

  if (!client) throw new IdentityUsageError(`"${group}" needs the admin API: start the gateway (npm start) or pass --url URL`);

  if (group === 'services' && action === 'register') {
    const service = s(values, 'service') ?? rest[0];
    if (!service) throw new IdentityUsageError('services register needs --service');
    const res = await client.request('POST', '/admin/services', {
      service,
      scopes: list(s(values, 'scopes')) ?? ['ai:complete', 'ai:embed'],
      ...(num(s(values, 'rpm'), 'rpm') ? { rpm: num(s(values, 'rpm'), 'rpm') } : {}),
      ...(num(s(values, 'tpm'), 'tpm') ? { tpm: num(s(values, 'tpm'), 'tpm') } : {}),
    });
    print(`service ${service} registered as ${String(res.keyId)} (scopes ${String((res.scopes as string[]).join(','))})`, res);
    return;
  }
  if (group === 'audit') {
    const day = s(values, 'day') ?? s(values, 'id') ?? action;
    const since = s(values, 'since');
    const res = await client.request('GET', '/admin/audit', undefined, {
      ...(day ? { day } : {}),
      ...(since && !day ? { since: new Date(parseSince(since, Date.now())).toISOString() } : {}),
      actor: s(values, 'actor'),
      key: s(values, 'key'),
      limit: s(values, 'limit'),
    });
    const entries = res.data as AuditEntry[];
    // A day's listing comes oldest first: newest first, as everywhere.
    print(auditText(day ? [...entries].reverse() : entries), res);
    return;
  }
  if (group === 'keys') {
    if (action === 'create') {
      const user = s(values, 'user');
      if (!user) throw new IdentityUsageError('keys create needs --user');
      const budget = s(values, 'budget-usd');
      const window = s(values, 'window') ?? 'month';
      const res = await client.request('POST', '/admin/keys', {
        userId: user,
        ...(s(values, 'org') ? { orgId: s(values, 'org') } : {}),
        ...(s(values, 'name') ? { name: s(values, 'name') } : {}),
        ...(list(s(values, 'scopes')) ? { scopes: list(s(values, 'scopes')) } : {}),
        ...(rate(s(values, 'rpm'), 'rpm') !== undefined ? { rpm: rate(s(values, 'rpm'), 'rpm') } : {}),
        ...(rate(s(values, 'tpm'), 'tpm') !== undefined ? { tpm: rate(s(values, 'tpm'), 'tpm') } : {}),
        ...(s(values, 'expires') ? { expiresAt: s(values, 'expires') } : {}),
        ...(budget ? { budget: { usd: budget, window } } : {}),
      });
      const budgetLine = budget
        ? `budget: ${budget === 'none' ? 'no limit' : `${usd(String(Number(budget).toFixed(6)))} per ${window}`}${s(values, 'window') ? '' : ' (--window not given: defaulted to month; use --window hour|day|month)'}`
        : 'budget: the defaults (see keys show)';
      print(`Created key ${String(res.keyId)} (${String(res.prefix)}) for user ${user}${res.orgId ? `, org ${String(res.orgId)}` : ''}. ${budgetLine}\nThe key is shown only this once:\n${String(res.key)}`, res);
      return;
    }
    if (action === 'list') {
      const res = await client.request('GET', '/admin/keys', undefined, { user: s(values, 'user') });
      print(keysTable(res.data as PublicKey[], Date.now()), res.data);
      return;
    }
    const keyId = rest[0] ?? s(values, 'id');
    if (!keyId) throw new IdentityUsageError(`keys ${action ?? ''} needs a key id`);
    if (action === 'show') {
      const res = await client.request('GET', `/admin/keys/${encodeURIComponent(keyId)}`);
      print(keyText(res as unknown as KeyView, Date.now()), res);
      return;
    }
    if (action === 'suspend' || action === 'resume' || action === 'revoke') {
      const reason = s(values, 'reason');
      const res = await client.request('POST', `/admin/keys/${encodeURIComponent(keyId)}/${action}`, reason ? { reason } : undefined);
      print(`${keyId}: → ${String(res.status)}${reason ? ` — ${reason}` : ''}`, res);
      return;
    }
  }
  if (group === 'budgets') {
    const scope = rest[0];
    if (!scope) throw new IdentityUsageError('budgets needs a scope');
    if (action === 'set') {
      const [, window, amount] = rest;
      if (!window || !amount) throw new IdentityUsageError('budgets set SCOPE WINDOW USD|none|default');
      const reason = s(values, 'reason');
      const res = await client.request('PUT', `/admin/budgets/${encodeURIComponent(scope)}/${window}`, { usd: amount === 'none' ? null : amount, ...(reason ? { reason } : {}) });
      const limit = res.limit_usd;
      print(`${scope} ${window} limit: ${limit === 'none' || limit === null ? 'none' : limit === 'default' ? 'default' : usd(String(limit))}`, res);
      return;
    }
    if (action === 'show') {
      const res = await client.request('GET', `/admin/budgets/${encodeURIComponent(scope)}`);
      print(budgetText(res as unknown as BudgetView), res);
      return;
    }
  }
  if (group === 'usage') {
    const res = await client.request('GET', '/admin/usage', undefined, { by: s(values, 'by') ?? action, id: s(values, 'id'), window: s(values, 'window') });
    print(usageText(res as unknown as UsageView), res);
    return;
  }
  throw new IdentityUsageError(`"${group} ${action ?? ''}" is not available over the admin API`);
}

/** A per-minute limit: a positive number, or `none` (no limit). */
function rate(text: string | undefined, name: string): number | 'none' | undefined {
  if (text === 'none') return 'none';
  return num(text, name);
}
