/**
 * Bring-your-own provider keys over HTTP (scope `ai:byok`), for the caller's own user:
 *
 *   PUT    /v1/byok/{provider}   body {"apiKey": "…"}   validate with the provider, encrypt, store
 *   GET    /v1/byok/{provider}   provider, prefix, status, last validation (never the key)
 *   GET    /v1/byok              every provider the caller has a key for
 *   DELETE /v1/byok/{provider}
 */
import type { Authenticator } from '../core/auth';
import { type ByokService, type ByokView, requireByokProvider } from '../core/byok/service';
import { InvalidRequestError, NotFoundError } from '../core/errors';
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
        const view = await byok.save(principal.userId, provider, body.apiKey);
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
        if (!(await byok.remove(principal.userId, provider))) throw notFound(provider);
        return jsonResponse(200, { object: 'byok_key', provider, deleted: true });
      },
    },
  ];
}
