/**
 * Bring-your-own provider keys over HTTP (scope `ai:byok`), for the caller's own user:
 *
 *   PUT    /v1/byok/{provider}   body {"apiKey": "…"}   validate with the provider, encrypt, store
 *   GET    /v1/byok/{provider}   provider, prefix, status, last validation (never the key)
 *   GET    /v1/byok              every provider the caller has a key for
 *   DELETE /v1/byok/{provider}
 *
 * Stores, replacements and removals are audited like administrative changes (core/audit.ts): actor
 * `user:<id>`, the key used in `details`, before/after with the key's prefix and fingerprint, never the key;
 * an optional `reason` in the PUT body or the `x-tollgate-reason` header (DELETE). No audit log: refused.
 */
import { AuditUnavailableError, type AuditWho } from '../core/audit';
import type { Authenticator, Principal } from '../core/auth';
import { type ByokService, type ByokView, requireByokProvider } from '../core/byok/service';
import { InvalidRequestError, NotFoundError, StoreUnavailableError } from '../core/errors';
import type { Route, RouteContext } from './app';
import { jsonResponse } from './dialects';
import { parseJsonBody } from './schemas';

export interface ByokRoutesOptions {
  readonly byok: ByokService;
  readonly authenticator: Authenticator;
}

function render(view: ByokView): Record<string, unknown> {
  return {
    object: 'byok_key',
    provider: view.provider,
    prefix: view.prefix,
    status: view.status,
    created_at: view.createdAt,
    updated_at: view.updatedAt,
    last_validated_at: view.lastValidatedAt,
  };
}

/** The BYOK routes, for GatewayApp's `routes` option. */
export function createByokRoutes(options: ByokRoutesOptions): Route[] {
  const { byok, authenticator } = options;
  const caller = async (ctx: RouteContext) => {
    const principal = await ctx.authenticate();
    authenticator.authorize(principal, 'ai:byok');
    return principal;
  };
  /** Who changes a BYOK key: the caller's user, through the key it used, with the request id as the change id. */
  const who = (ctx: RouteContext, principal: Principal, reason: unknown): AuditWho => ({
    actor: `user:${principal.userId}`,
    via: 'api',
    changeId: ctx.requestId,
    details: { keyId: principal.keyId },
    ...(typeof reason === 'string' && reason.trim() ? { reason: reason.trim().slice(0, 500) } : {}),
    ...(ctx.req.sourceIp ? { sourceIp: ctx.req.sourceIp } : {}),
  });
  const auditedOr503 = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run();
    } catch (err) {
      if (err instanceof AuditUnavailableError) {
        throw new StoreUnavailableError('The audit log is not configured; BYOK changes are refused.', { code: 'audit_unavailable' });
      }
      throw err;
    }
  };
  const notFound = (provider: string) =>
    new NotFoundError(`You have no ${provider} key stored.`, { code: 'byok_key_not_found', param: 'provider' });
  return [
    {
      method: 'PUT',
      path: '/v1/byok/:provider',
      handler: async (ctx) => {
        const principal = await caller(ctx);
        const provider = requireByokProvider(ctx.params.provider ?? '');
        const body = parseJsonBody(ctx.req.body);
        if (typeof body.apiKey !== 'string') {
          throw new InvalidRequestError('Send {"apiKey": "…"} with your own provider key.', { code: 'invalid_byok_key', param: 'apiKey' });
        }
        const view = await auditedOr503(() => byok.save(principal.userId, provider, body.apiKey as string, who(ctx, principal, body.reason)));
        return jsonResponse(200, render(view));
      },
    },
    {
      method: 'GET',
      path: '/v1/byok/:provider',
      handler: async (ctx) => {
        const principal = await caller(ctx);
        const provider = requireByokProvider(ctx.params.provider ?? '');
        const view = await byok.show(principal.userId, provider);
        if (!view) throw notFound(provider);
        return jsonResponse(200, render(view));
      },
    },
    {
      method: 'GET',
      path: '/v1/byok',
      handler: async (ctx) => {
        const principal = await caller(ctx);
        return jsonResponse(200, { object: 'list', data: (await byok.list(principal.userId)).map(render) });
      },
    },
    {
      method: 'DELETE',
      path: '/v1/byok/:provider',
      handler: async (ctx) => {
        const principal = await caller(ctx);
        const provider = requireByokProvider(ctx.params.provider ?? '');
        const reason = ctx.req.headers['x-tollgate-reason'];
        if (!(await auditedOr503(() => byok.remove(principal.userId, provider, who(ctx, principal, reason))))) throw notFound(provider);
        return jsonResponse(200, { object: 'byok_key', provider, deleted: true });
      },
    },
  ];
}
