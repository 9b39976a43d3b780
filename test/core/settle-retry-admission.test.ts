import { AdmissionLane } from '../../lambda/core/admission';
import { RateLimitError, StoreUnavailableError, UpstreamError } from '../../lambda/core/errors';
import { requestedCapFor } from '../../lambda/core/output-cap';
import { settleWithRetries } from '../../lambda/core/settle-retry';

const noSleep = () => Promise.resolve();

describe('settleWithRetries', () => {
  it('when the store is unreachable twice and then answers, the settle succeeds on the third attempt', async () => {
    let calls = 0;
    const result = await settleWithRetries(
      async () => {
        calls++;
        if (calls < 3) throw new StoreUnavailableError('down');
        return 'settled';
      },
      { attempts: 4, sleep: noSleep },
    );
    expect(result).toBe('settled');
    expect(calls).toBe(3);
  });

  it('when the store stays unreachable, it gives up after the bounded attempts with the last error', async () => {
    let calls = 0;
    const attempt = async () => {
      calls++;
      throw new StoreUnavailableError(`down ${calls}`);
    };
    await expect(settleWithRetries(attempt, { attempts: 3, sleep: noSleep })).rejects.toThrow('down 3');
    expect(calls).toBe(3);
  });

  it('when the failure is not the store being unreachable, it is not retried', async () => {
    let calls = 0;
    const attempt = async () => {
      calls++;
      throw new UpstreamError('bug');
    };
    await expect(settleWithRetries(attempt, { attempts: 5, sleep: noSleep })).rejects.toBeInstanceOf(UpstreamError);
    expect(calls).toBe(1);
  });
});

describe('AdmissionLane', () => {
  it('when more calls arrive than run and queue, the extra ones get 429 gateway_busy with Retry-After and x-should-retry', async () => {
    const lane = new AdmissionLane({ inFlight: 2, queued: 3, maxWaitMs: 0 }, 'tests');
    const gates: Array<() => void> = [];
    let running = 0;
    let peak = 0;
    const work = () =>
      lane.run(async () => {
        running++;
        peak = Math.max(peak, running);
        await new Promise<void>((resolve) => gates.push(resolve));
        running--;
      });
    const results = Array.from({ length: 8 }, () => work().then(() => 'ok', (e: unknown) => e));
    // Let the rejections of the 3 that fit nowhere arrive, then release everything in turn.
    for (let i = 0; i < 20 && gates.length < 2; i++) await Promise.resolve();
    for (let released = 0; released < 5; released++) {
      for (let i = 0; i < 20 && gates.length === 0; i++) await new Promise((r) => setImmediate(r));
      gates.shift()?.();
    }
    const settled = await Promise.all(results);
    expect(settled.filter((r) => r === 'ok')).toHaveLength(5);
    const shed = settled.filter((r): r is RateLimitError => r instanceof RateLimitError);
    expect(shed).toHaveLength(3);
    expect(shed[0]?.code).toBe('gateway_busy');
    expect(shed[0]?.headers).toMatchObject({ 'Retry-After': '1', 'x-should-retry': 'true' });
    expect(peak).toBe(2);
    expect(lane.load).toBe(0);
  });
});

describe('requestedCapFor', () => {
  it("when the caller gives a cap, it is the caller's and nothing is added upstream", () => {
    expect(requestedCapFor({ requested: 64, modelMax: 16_384, defaultMax: 4_096 })).toEqual({ tokens: 64, fromCaller: true });
  });

  it("when the caller gives none, the model's maximum is reserved and sent, else the gateway default", () => {
    expect(requestedCapFor({ modelMax: 16_384, defaultMax: 4_096 })).toEqual({ tokens: 16_384, fromCaller: false });
    expect(requestedCapFor({ defaultMax: 4_096 })).toEqual({ tokens: 4_096, fromCaller: false });
  });
});
