/**
 * The count_tokens route's own limit (lambda/http/client-routes.ts): free calls, but at most N a minute per key
 * on one instance, refused with a retryable 429 that says when; the minute is the route's clock's, not the
 * machine's.
 */
import type { Authenticator, Principal } from '../../lambda/core/auth';
import { ManualClock } from '../../lambda/core/clock';
import { RateLimitError } from '../../lambda/core/errors';
import { PriceBook } from '../../lambda/core/pricing';
import type { RouteContext } from '../../lambda/http/app';
import { createClientRoutes } from '../../lambda/http/client-routes';
import { TEST_NOW } from '../support/clock';

const principal = (keyId: string) => ({ keyId, userId: 'u', scopes: ['ai:complete'], key: {} }) as unknown as Principal;

function call(route: (ctx: RouteContext) => Promise<unknown>, keyId: string): Promise<unknown> {
  const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hello there' }] };
  const ctx = {
    req: { method: 'POST', path: '/v1/messages/count_tokens', query: new URLSearchParams(), headers: {}, body: Buffer.from(JSON.stringify(body)), signal: new AbortController().signal },
    requestId: 'req_1',
    startedAt: 0,
    dialect: 'anthropic',
    params: {},
    authenticate: async () => principal(keyId),
  } as unknown as RouteContext;
  return route(ctx);
}

describe('count_tokens limit', () => {
  it('when a key calls more than its count_tokens limit in a minute, the next call is a retryable 429 until the minute turns', async () => {
    const clock = new ManualClock(Math.floor(TEST_NOW / 60_000) * 60_000 + 15_000);
    const routes = createClientRoutes({
      authenticator: { authorize: () => undefined } as unknown as Authenticator,
      prices: new PriceBook({ providers: ['openai'] }),
      clock,
      countTokensPerMinute: 3,
    });
    const count = routes.find((r) => r.path === '/v1/messages/count_tokens')!.handler;
    for (let i = 0; i < 3; i++) await expect(call(count, 'k1')).resolves.toMatchObject({ status: 200 });
    const refused = await call(count, 'k1').catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RateLimitError);
    expect((refused as RateLimitError).message).toBe('Rate limit reached for key k1: 3 count_tokens calls per minute; try again in 45s.');
    expect((refused as RateLimitError).headers['Retry-After']).toBe('45');
    // Another key is not affected; the next minute admits again.
    await expect(call(count, 'k2')).resolves.toMatchObject({ status: 200 });
    clock.advance(45_000);
    await expect(call(count, 'k1')).resolves.toMatchObject({ status: 200 });
  });
});
