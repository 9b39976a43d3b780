/**
 * The admin CLI's identity commands and its HTTP mode:
 *
 *   tokens issue --service S --scopes a,b [--ttl 1h] [--on-behalf-of U] [--org O]   prints a service JWT
 *   services register --service S --scopes a,b [--rpm N] [--tpm N]
 *   audit [--id yyyy-mm-dd]
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
import { AdminHttpClient, parseTtl } from './http-client';

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
export const IDENTITY_GROUPS = ['tokens', 'services', 'audit'] as const;

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
    return new AdminHttpClient({
      url,
      auth: token ? { kind: 'token', token } : { kind: 'sigv4', region: s(values, 'region') ?? loadConfig().region },
    });
  }
  if (values.aws) return undefined;
  const running = readRunning(stateDir());
  return running ? new AdminHttpClient({ url: running.url, auth: { kind: 'token', token: running.adminToken } }) : undefined;
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
    const res = await client.request('GET', '/admin/audit', undefined, { day: s(values, 'id') ?? action });
    const rows = (res.data as { at: string; actor: string; action: string; target: string }[]).map((e) => `${e.at}  ${e.actor}  ${e.action}  ${e.target}`);
    print(rows.join('\n') || '(none)', res);
    return;
  }
  if (group === 'keys') {
    if (action === 'create') {
      const user = s(values, 'user');
      if (!user) throw new IdentityUsageError('keys create needs --user');
      const budget = s(values, 'budget-usd');
      const res = await client.request('POST', '/admin/keys', {
        userId: user,
        ...(s(values, 'org') ? { orgId: s(values, 'org') } : {}),
        ...(s(values, 'name') ? { name: s(values, 'name') } : {}),
        ...(list(s(values, 'scopes')) ? { scopes: list(s(values, 'scopes')) } : {}),
        ...(num(s(values, 'rpm'), 'rpm') ? { rpm: num(s(values, 'rpm'), 'rpm') } : {}),
        ...(num(s(values, 'tpm'), 'tpm') ? { tpm: num(s(values, 'tpm'), 'tpm') } : {}),
        ...(s(values, 'expires') ? { expiresAt: s(values, 'expires') } : {}),
        ...(budget ? { budget: { usd: budget, window: s(values, 'window') ?? 'month' } } : {}),
      });
      print(`Created ${String(res.prefix)} for user ${user}. The key is shown only this once:\n${String(res.key)}`, res);
      return;
    }
    if (action === 'list') {
      const res = await client.request('GET', '/admin/keys', undefined, { user: s(values, 'user') });
      const rows = (res.data as { keyId: string; prefix: string; userId: string; status: string }[]).map((k) => `${k.keyId}  ${k.prefix}  ${k.userId}  ${k.status}`);
      print(rows.join('\n') || '(none)', res.data);
      return;
    }
    const keyId = rest[0] ?? s(values, 'id');
    if (!keyId) throw new IdentityUsageError(`keys ${action ?? ''} needs a key id`);
    if (action === 'show') {
      const res = await client.request('GET', `/admin/keys/${encodeURIComponent(keyId)}`);
      print(JSON.stringify(res, null, 2), res);
      return;
    }
    if (action === 'suspend' || action === 'resume' || action === 'revoke') {
      const res = await client.request('POST', `/admin/keys/${encodeURIComponent(keyId)}/${action}`, s(values, 'reason') ? { reason: s(values, 'reason') } : undefined);
      print(`${keyId}: ${String(res.status)}`, res);
      return;
    }
  }
  if (group === 'budgets') {
    const scope = rest[0];
    if (!scope) throw new IdentityUsageError('budgets needs a scope');
    if (action === 'set') {
      const [, window, amount] = rest;
      if (!window || !amount) throw new IdentityUsageError('budgets set SCOPE WINDOW USD|none');
      const res = await client.request('PUT', `/admin/budgets/${encodeURIComponent(scope)}/${window}`, { usd: amount === 'none' ? null : amount });
      print(`${scope} ${window} limit: ${res.limit_usd === null ? 'none' : `$${String(res.limit_usd)}`}`, res);
      return;
    }
    if (action === 'show') {
      const res = await client.request('GET', `/admin/budgets/${encodeURIComponent(scope)}`);
      print(JSON.stringify(res, null, 2), res);
      return;
    }
  }
  if (group === 'usage') {
    const res = await client.request('GET', '/admin/usage', undefined, { by: s(values, 'by') ?? action, id: s(values, 'id'), window: s(values, 'window') });
    print(JSON.stringify(res.rows, null, 2), res);
    return;
  }
  throw new IdentityUsageError(`"${group} ${action ?? ''}" is not available over the admin API`);
}
