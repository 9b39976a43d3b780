/**
 * The admin API under `/admin/*`: keys, services, service tokens, budgets, usage reports and the audit log.
 *
 * Who may call it is explicit configuration ({@link AdminAuthMode}), never guessed:
 *   iam          API Gateway's AWS_IAM authorizer checked the SigV4 signature; the request must carry the
 *                caller's IAM ARN (HttpRequest.iamCaller), which becomes the audit actor.
 *   local-token  the local admin token printed by `npm start` (`Authorization: Bearer tga-…` or
 *                `x-tollgate-admin-token`), compared in constant time; the actor is `local-admin`.
 *   off          every admin request is refused (403).
 *
 * Every change is written to the audit log BEFORE it is made (so no change goes unrecorded); a change that
 * then fails gets a second entry with `outcome: failed`. Without an audit log, changes are refused (503).
 * Raw API keys and service tokens are returned once in the response and never written to the audit log.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { AdminAuthMode } from '../config';
import { type Authenticator, registerService, serviceKeyId } from '../core/auth';
import type { Clock } from '../core/clock';
import {
  AuthenticationError,
  InvalidRequestError,
  NotFoundError,
  PermissionDeniedError,
  StoreUnavailableError,
} from '../core/errors';
import type { TokenIssuer } from '../core/jwt';
import { audited, type AuditState, type AuditValue, type AuditWho, createKeyAudited, limitAuditValue } from '../core/audit';
import { formatUsd, usdToMicros } from '../core/money';
import type { RequestPipeline } from '../core/pipeline';
import type { KeyStore, Ledger, UsageStore } from '../core/stores';
import { type KeyRecord, type KeyStatus, parseScope, type ScopeId, UNLIMITED, type UsageRecord } from '../core/types';
import { budgetView, isUsageGrouping, keyView, USAGE_GROUPINGS, usageRange, usageView } from '../core/admin-views';
import { type DefaultLimits, NO_DEFAULT_LIMITS } from '../core/guardrails/defaults';
import { isWindow, type Window, WINDOWS } from '../core/windows';
import type { AuditLog } from '../store/dynamodb/audit-store';
import type { Route, RouteContext } from './app';
import { jsonResponse } from './dialects';
import { parseJsonBody } from './schemas';
import type { HttpRequest } from './types';

/** The audit actor of local-token requests. */
export const LOCAL_ADMIN_ACTOR = 'local-admin';

export interface AdminRoutesOptions {
  readonly mode: AdminAuthMode;
  /** Required in `local-token` mode. */
  readonly localToken?: string;
  readonly keys: KeyStore;
  readonly ledger: Ledger;
  readonly usage: UsageStore;
  /** Without one, every change is refused (reads still work). */
  readonly audit?: AuditLog;
  readonly authenticator: Authenticator;
  readonly pipeline: RequestPipeline;
  readonly tokens: TokenIssuer;
  readonly pepper: string;
  readonly clock: Clock;
  /** The default limits, shown next to a scope's own. @default none */
  readonly defaults?: DefaultLimits;
  /** Shards of the platform's counters (summed in budget views). @default 1 */
  readonly platformShards?: number;
}

function digest(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

/**
 * Decides who the admin caller is; throws 401/403 otherwise. Exported for tests of the modes.
 */
export function adminActor(req: HttpRequest, options: Pick<AdminRoutesOptions, 'mode' | 'localToken'>): string {
  if (options.mode === 'iam') {
    if (!req.iamCaller) {
      throw new PermissionDeniedError('Admin routes need an IAM-signed (SigV4) request.', { code: 'admin_iam_required' });
    }
    return req.iamCaller;
  }
  if (options.mode === 'local-token') {
    if (!options.localToken) throw new PermissionDeniedError('The admin API has no local token configured.', { code: 'admin_api_disabled' });
    const auth = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')?.[1];
    const presented = auth ?? req.headers['x-tollgate-admin-token'];
    if (!presented) {
      throw new AuthenticationError('Admin routes need the local admin token ("Authorization: Bearer tga-…").', { code: 'missing_admin_token' });
    }
    // Compare digests: constant time whatever the presented length.
    if (!timingSafeEqual(digest(presented), digest(options.localToken))) {
      throw new AuthenticationError('Incorrect admin token.', { code: 'invalid_admin_token' });
    }
    return LOCAL_ADMIN_ACTOR;
  }
  throw new PermissionDeniedError('The admin API is turned off on this gateway (TOLLGATE_ADMIN_AUTH).', { code: 'admin_api_disabled' });
}

function publicKey(k: KeyRecord): Omit<KeyRecord, 'hash'> {
  const { hash: _hash, ...rest } = k;
  return rest;
}

function str(body: Record<string, unknown>, name: string, options: { required?: boolean } = {}): string | undefined {
  const v = body[name];
  if (v === undefined || v === null) {
    if (options.required) throw new InvalidRequestError(`"${name}" is required.`, { param: name });
    return undefined;
  }
  if (typeof v !== 'string') throw new InvalidRequestError(`"${name}" must be a string.`, { param: name });
  return v;
}

/** A per-minute limit in a body: a positive number, or `"none"` (0: explicitly unlimited). */
function rate(body: Record<string, unknown>, name: string): number | undefined {
  return body[name] === UNLIMITED ? 0 : int(body, name);
}

/** The largest rate limit (`rpm`, `tpm`) an admin may set; larger numbers are typos, not limits. */
const MAX_RATE_LIMIT = 1_000_000_000;

function int(body: Record<string, unknown>, name: string): number | undefined {
  const v = body[name];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_RATE_LIMIT) {
    throw new InvalidRequestError(`"${name}" must be a whole number from 1 to ${MAX_RATE_LIMIT}.`, { param: name });
  }
  return v;
}

function scopes(body: Record<string, unknown>, name = 'scopes'): string[] | undefined {
  const v = body[name];
  if (v === undefined) return undefined;
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw new InvalidRequestError(`"${name}" must be a list of scopes.`, { param: name });
  return v as string[];
}

function windowOf(value: string | undefined | null, fallback: Window): Window {
  const w = value ?? fallback;
  if (!isWindow(w)) throw new InvalidRequestError(`window must be one of ${WINDOWS.join(', ')}.`, { param: 'window' });
  return w;
}

function scopeOf(text: string): ScopeId {
  try {
    return parseScope(text);
  } catch (err) {
    throw new InvalidRequestError(err instanceof Error ? err.message : 'invalid scope', { param: 'scope' });
  }
}

function usd(value: unknown, name: string): number {
  if (typeof value !== 'string' && typeof value !== 'number') throw new InvalidRequestError(`"${name}" must be an amount in USD.`, { param: name });
  try {
    return usdToMicros(value);
  } catch (err) {
    throw new InvalidRequestError(err instanceof Error ? err.message : `"${name}" is not an amount`, { param: name });
  }
}

/** The admin routes, for GatewayApp's `routes` option. */
export function createAdminRoutes(options: AdminRoutesOptions): Route[] {
  const { keys, ledger, clock } = options;

  /** Audits the change (who, what, before, after, why) before running it, and records a failure if it throws. */
  const change = async <T>(
    ctx: RouteContext,
    actor: string,
    what: {
      readonly action: string;
      readonly target: string;
      readonly before?: AuditState;
      readonly after?: AuditState;
      readonly reason?: string;
      readonly details?: Record<string, AuditValue>;
    },
    run: () => Promise<T>,
  ): Promise<T> => {
    if (!options.audit) throw auditMissing();
    return audited(options.audit, { ...what, ...who(ctx, actor) }, clock, run);
  };

  /** The audit identity of an admin request: its caller, the API, the request id as the change id. */
  const who = (ctx: RouteContext, actor: string): AuditWho => ({
    actor,
    via: 'api',
    changeId: ctx.requestId,
    ...(ctx.req.sourceIp ? { sourceIp: ctx.req.sourceIp } : {}),
  });

  const admin = (handler: (ctx: RouteContext, actor: string) => Promise<ReturnType<typeof jsonResponse>>) => async (ctx: RouteContext) =>
    handler(ctx, adminActor(ctx.req, options));

  const setStatus = (status: KeyStatus, action: string): Route => ({
    method: 'POST',
    path: `/admin/keys/:keyId/${action}`,
    handler: admin(async (ctx, actor) => {
      const keyId = ctx.params.keyId!;
      const body = ctx.req.body.length > 0 ? parseJsonBody(ctx.req.body) : {};
      const reason = str(body, 'reason');
      const existing = await keys.get(keyId);
      if (!existing) throw new NotFoundError(`No key ${keyId}.`, { code: 'key_not_found' });
      if (existing.status === 'revoked' && status !== 'revoked') {
        throw new InvalidRequestError(`Key ${keyId} is revoked and cannot be resumed.`, { code: 'key_revoked' });
      }
      await change(ctx, actor, { action: `keys.${action}`, target: keyId, before: { status: existing.status }, after: { status }, ...(reason ? { reason } : {}) }, () =>
        keys.setStatus(keyId, { status, actor: 'operator', ...(reason ? { reason } : {}) }),
      );
      options.authenticator.invalidate(keyId);
      return jsonResponse(200, { keyId, status });
    }),
  });

  return [
    {
      method: 'POST',
      path: '/admin/keys',
      handler: admin(async (ctx, actor) => {
        const body = parseJsonBody(ctx.req.body);
        const userId = str(body, 'userId', { required: true })!;
        const orgId = str(body, 'orgId');
        const budget = body.budget as { usd?: unknown; window?: string } | undefined;
        const input = {
          userId,
          ...(orgId ? { orgId } : {}),
          ...(str(body, 'name') ? { name: str(body, 'name') } : {}),
          ...(scopes(body) ? { scopes: scopes(body) } : {}),
          ...(rate(body, 'rpm') !== undefined ? { rpm: rate(body, 'rpm') } : {}),
          ...(rate(body, 'tpm') !== undefined ? { tpm: rate(body, 'tpm') } : {}),
          ...(str(body, 'expiresAt') ? { expiresAt: str(body, 'expiresAt') } : {}),
          ...(budget
            ? { budget: { window: windowOf(budget.window, 'month'), limit: budget.usd === UNLIMITED || budget.usd === null ? (UNLIMITED as typeof UNLIMITED) : usd(budget.usd, 'budget.usd') } }
            : {}),
        };
        if (!options.audit) throw auditMissing();
        const created = await createKeyAudited({ keys, ledger }, input, { pepper: options.pepper, clock, sink: options.audit, who: who(ctx, actor) });
        return jsonResponse(201, { key: created.raw, ...publicKey(created.record) });
      }),
    },
    {
      method: 'GET',
      path: '/admin/keys',
      handler: admin(async (ctx) => {
        const user = ctx.req.query.get('user');
        const list: KeyRecord[] = [];
        if (user) list.push(...(await keys.listByUser(user)));
        else for await (const page of keys.listAll()) list.push(...page);
        return jsonResponse(200, { object: 'list', data: list.map(publicKey) });
      }),
    },
    {
      method: 'GET',
      path: '/admin/keys/:keyId',
      handler: admin(async (ctx) => {
        const k = await keys.get(ctx.params.keyId!);
        if (!k) throw new NotFoundError(`No key ${ctx.params.keyId}.`, { code: 'key_not_found' });
        const scope: ScopeId = `key:${k.keyId}`;
        return jsonResponse(200, keyView(k, (await ledger.getLimitSettings([scope])).get(scope), options.defaults ?? NO_DEFAULT_LIMITS));
      }),
    },
    setStatus('suspended', 'suspend'),
    setStatus('active', 'resume'),
    setStatus('revoked', 'revoke'),
    {
      method: 'POST',
      path: '/admin/services',
      handler: admin(async (ctx, actor) => {
        const body = parseJsonBody(ctx.req.body);
        const service = str(body, 'service', { required: true })!;
        const input = {
          service,
          scopes: scopes(body) ?? ['ai:complete', 'ai:embed'],
          ...(str(body, 'orgId') ? { orgId: str(body, 'orgId') } : {}),
          ...(int(body, 'rpm') ? { rpm: int(body, 'rpm') } : {}),
          ...(int(body, 'tpm') ? { tpm: int(body, 'tpm') } : {}),
        };
        const record = await change(
          ctx,
          actor,
          { action: 'services.register', target: serviceKeyId(service), after: { service, scopes: input.scopes.join(','), rpm: input.rpm ?? 'default', tpm: input.tpm ?? 'default' } },
          () =>
          registerService(keys, input, { clock }),
        );
        return jsonResponse(201, publicKey(record));
      }),
    },
    {
      method: 'POST',
      path: '/admin/tokens',
      handler: admin(async (ctx, actor) => {
        const body = parseJsonBody(ctx.req.body);
        const service = str(body, 'service', { required: true })!;
        const onBehalfOf = str(body, 'onBehalfOf');
        const orgId = str(body, 'orgId');
        const ttl = body.ttlSeconds === undefined ? undefined : int(body, 'ttlSeconds');
        const tokenScopes = scopes(body) ?? [];
        const record = await keys.get(serviceKeyId(service));
        if (!record) throw new NotFoundError(`Service "${service}" is not registered; POST /admin/services first.`, { code: 'unknown_service' });
        const issued = await change(
          ctx,
          actor,
          { action: 'tokens.issue', target: serviceKeyId(service), details: { scopes: tokenScopes.join(','), onBehalfOf: onBehalfOf ?? null, ttlSeconds: ttl ?? null } },
          async () => {
            try {
              return await options.tokens.issue({ service, scopes: tokenScopes, ...(ttl ? { ttlSeconds: ttl } : {}), ...(onBehalfOf ? { onBehalfOf } : {}), ...(orgId ? { orgId } : {}) });
            } catch (err) {
              if (err instanceof RangeError) throw new InvalidRequestError(err.message, { code: 'invalid_token_request' });
              throw err;
            }
          },
        );
        return jsonResponse(201, { token: issued.token, tokenId: issued.tokenId, kid: issued.kid, expiresAt: issued.expiresAt });
      }),
    },
    {
      method: 'PUT',
      path: '/admin/budgets/:scope/:window',
      handler: admin(async (ctx, actor) => {
        const scope = scopeOf(ctx.params.scope!);
        const window = windowOf(ctx.params.window, 'day');
        const body = parseJsonBody(ctx.req.body);
        // null / "none": explicitly unlimited (no default applies); "default": back to the default.
        const limit = body.usd === null || body.usd === UNLIMITED ? UNLIMITED : body.usd === 'default' ? null : usd(body.usd, 'usd');
        const before = (await ledger.getLimitSettings([scope])).get(scope)?.[window];
        await change(
          ctx,
          actor,
          { action: 'budgets.set', target: scope, before: { [window]: limitAuditValue(before) }, after: { [window]: limitAuditValue(limit) }, ...(str(body, 'reason') ? { reason: str(body, 'reason') } : {}) },
          () => ledger.setLimit(scope, window, limit),
        );
        options.pipeline.invalidateLimits();
        return jsonResponse(200, { scope, window, limit_usd: typeof limit === 'number' ? formatUsd(limit) : limit === null ? 'default' : UNLIMITED });
      }),
    },
    {
      method: 'GET',
      path: '/admin/budgets/:scope',
      handler: admin(async (ctx) => {
        const scope = scopeOf(ctx.params.scope!);
        return jsonResponse(200, await budgetView(ledger, scope, { defaults: options.defaults ?? NO_DEFAULT_LIMITS, now: clock.now(), platformShards: options.platformShards ?? 1 }));
      }),
    },
    {
      method: 'GET',
      path: '/admin/usage',
      handler: admin(async (ctx) => {
        const by = ctx.req.query.get('by') ?? 'model';
        if (!isUsageGrouping(by)) throw new InvalidRequestError(`by must be one of ${USAGE_GROUPINGS.join(', ')} (got "${by}").`, { param: 'by' });
        const id = ctx.req.query.get('id');
        const window = windowOf(ctx.req.query.get('window'), 'day');
        const now = clock.now();
        const { from, to } = usageRange(window, now);
        const records: UsageRecord[] =
          by === 'model' || !id ? await options.usage.queryAll(from, to) : await options.usage.query({ by, id, from, to });
        return jsonResponse(200, usageView(by, window, now, records));
      }),
    },
    {
      method: 'GET',
      path: '/admin/audit',
      handler: admin(async (ctx) => {
        if (!options.audit) throw new StoreUnavailableError('The admin audit log is not configured.', { code: 'audit_unavailable' });
        const q = ctx.req.query;
        const day = q.get('day');
        if (day !== null) {
          // One UTC day, oldest first (the original form of this route).
          if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) throw new InvalidRequestError('day must be yyyy-mm-dd.', { param: 'day' });
          return jsonResponse(200, { object: 'list', day, data: await options.audit.listDay(day) });
        }
        const now = clock.now();
        const since = q.get('since') === null ? now - 7 * 86_400_000 : timeParam(q.get('since')!, 'since', now);
        const limit = q.get('limit') === null ? 200 : Number(q.get('limit'));
        if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new InvalidRequestError('limit must be a whole number from 1 to 1000.', { param: 'limit' });
        const data = await options.audit.list({
          since,
          until: now,
          limit,
          ...(q.get('actor') ? { actor: q.get('actor')! } : {}),
          ...(q.get('key') ? { target: q.get('key')! } : {}),
        });
        // Newest first.
        return jsonResponse(200, { object: 'list', since: new Date(since).toISOString(), data });
      }),
    },
  ];
}

/** A time in a query: epoch milliseconds or an ISO-8601 date/time. */
function timeParam(text: string, name: string, now: number): number {
  const ms = /^\d+$/.test(text) ? Number(text) : Date.parse(text);
  if (!Number.isFinite(ms) || ms > now + 86_400_000) throw new InvalidRequestError(`${name} must be a time (ISO-8601 or epoch milliseconds).`, { param: name });
  return ms;
}

function auditMissing(): StoreUnavailableError {
  return new StoreUnavailableError('The admin audit log is not configured; changes are refused.', { code: 'audit_unavailable' });
}
