/**
 * The pipeline's cache of budget limits on DynamoDB Local: fresh for the cache time, then served once more
 * while a background read refreshes it (so a key-cache miss on a busy instance does not wait for limits), and
 * never served stale when caching is off.
 */
import { ManualClock } from '../../lambda/core/clock';
import { STALE_LIMITS_MS } from '../../lambda/core/pipeline';
import { type Harness, startHarness } from '../support/gateway-harness';
import { TEST_NOW } from '../support/clock';

const harnesses: Harness[] = [];
afterAll(async () => {
  for (const h of harnesses) await h.close();
});

async function harness(cacheMs: string, clock: ManualClock): Promise<Harness> {
  const h = await startHarness({ clock, env: { TOLLGATE_AUTH_CACHE_MS: cacheMs } });
  harnesses.push(h);
  return h;
}

describe('limits cache', () => {
  it('when the cache time has passed, a request uses the limits read a moment ago while they are read again, and the next one sees the change', async () => {
    const clock = new ManualClock(TEST_NOW);
    const h = await harness('1000', clock);
    await h.gateway.ledger.setLimit('user:stale-1', 'day', 5_000_000);
    expect((await h.gateway.pipeline.limitsOf(['user:stale-1'])).get('user:stale-1')?.day).toBe(5_000_000);

    // Changed in the store by another instance (this one's cache is not told).
    await h.gateway.ledger.setLimit('user:stale-1', 'day', 7_000_000);
    clock.advance(1_500);
    expect((await h.gateway.pipeline.limitsOf(['user:stale-1'])).get('user:stale-1')?.day).toBe(5_000_000);
    expect((await h.gateway.pipeline.limitsOf(['user:stale-1'])).get('user:stale-1')?.day).toBe(7_000_000);
  });

  it('when limits are older than the cache time plus the stale allowance, the request waits for a fresh read', async () => {
    const clock = new ManualClock(TEST_NOW);
    const h = await harness('1000', clock);
    await h.gateway.ledger.setLimit('user:stale-2', 'day', 5_000_000);
    await h.gateway.pipeline.limitsOf(['user:stale-2']);
    await h.gateway.ledger.setLimit('user:stale-2', 'day', 7_000_000);
    clock.advance(1_000 + STALE_LIMITS_MS);
    expect((await h.gateway.pipeline.limitsOf(['user:stale-2'])).get('user:stale-2')?.day).toBe(7_000_000);
  });

  it('when caching is off, every request reads the limits as they are', async () => {
    const clock = new ManualClock(TEST_NOW);
    const h = await harness('0', clock);
    await h.gateway.ledger.setLimit('user:stale-3', 'day', 5_000_000);
    await h.gateway.pipeline.limitsOf(['user:stale-3']);
    await h.gateway.ledger.setLimit('user:stale-3', 'day', 7_000_000);
    expect((await h.gateway.pipeline.limitsOf(['user:stale-3'])).get('user:stale-3')?.day).toBe(7_000_000);
  });
});
