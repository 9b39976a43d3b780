/**
 * The fault test of issue 11: DynamoDB Local (the test's own, on a data dir) is killed while requests are at
 * the provider and restarted on the same data. Every answer the provider delivered is recorded at no less
 * than it cost, spend never passes the budget, and no hold outlives the sweeper.
 */
import { type FaultFigures, type OwnStoreGateway, runFaultScenario, startOwnStoreGateway } from '../support/money-scenarios';

let g: OwnStoreGateway;
let figures: FaultFigures;

beforeAll(async () => {
  g = await startOwnStoreGateway({
    env: {
      // Short settle retries, so the in-flight settles give up while the store is still down.
      TOLLGATE_SETTLE_ATTEMPTS: '2',
      TOLLGATE_SETTLE_RETRY_BASE_MS: '50',
      // Shedding is the burst test's subject; here a slow machine must not shed the in-flight wave.
      TOLLGATE_ADMISSION_MAX_WAIT_MS: '0',
      TOLLGATE_ADMISSION_PER_KEY_IN_FLIGHT: '16',
    },
  });
  figures = await runFaultScenario(g, { inFlight: 12, duringOutage: 6, afterRestart: 40, fits: 30 });
}, 600_000);
afterAll(() => g?.close());

it('when DynamoDB Local dies with requests at the provider, their answers are still delivered', () => {
  expect(figures.phases.inFlightAtKill).toEqual({ '200': 12 });
});

it('when the store is down, new requests get 503 and nothing reaches the provider', () => {
  expect(Object.keys(figures.phases.duringOutage)).toEqual(['503 store_unavailable']);
  expect(figures.upstreamCalls).toBe(figures.delivered.answers);
});

it('when the store is back, traffic runs into the budget with only 200s and 429s', () => {
  expect(Object.keys(figures.phases.afterRestart).every((k) => k === '200' || k.startsWith('429 '))).toBe(true);
  expect(figures.phases.afterRestart['429 insufficient_quota']).toBeGreaterThan(0);
});

it('when the sweeper has run, recorded spend is at least what the provider delivered and every answer has a record', () => {
  expect(figures.unrecordedAnswers).toBe(0);
  expect(figures.recorded.micros).toBeGreaterThanOrEqual(figures.delivered.micros);
  // Each settle that failed for good was charged its reservation by the sweeper (and so was any hold whose
  // reserve committed as the store died, though its caller saw 503).
  expect(figures.settlesLeftForSweeper).toBeGreaterThan(0);
  expect(figures.recorded.abandoned).toBeGreaterThanOrEqual(figures.settlesLeftForSweeper);
  expect(figures.recorded.counterSpent).toBe(figures.recorded.micros);
  expect(figures.holdsLeft).toBe(0);
});

it('when it is all over, spend never passed the budget', () => {
  expect(figures.overspend).toBe(0);
  expect(figures.recorded.counterCommitted).toBeLessThanOrEqual(figures.limit);
});
