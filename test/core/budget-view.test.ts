/**
 * The remaining-budget figure's arithmetic (lambda/core/pipeline/budget-view.ts), on counter values as the
 * ledger reads them: what is credited back (a plain hold's refund, a lease's unused room) and what is not (a
 * pool's grant, an allowance pool's part), the wait for this instance's earlier settles, and no header when
 * the read fails. The store itself is exercised end to end in test/e2e/budget-header.e2e.test.ts.
 */
import { ManualClock } from '../../lambda/core/clock';
import { budgetHeaders, BudgetView } from '../../lambda/core/pipeline/budget-view';
import type { CounterRef, CounterValue, Ledger, Reservation } from '../../lambda/core/stores';
import type { BudgetLimits, ScopeId } from '../../lambda/core/types';
import { TEST_NOW } from '../support/clock';

const day = (scope: ScopeId, limit?: number): CounterRef => ({ scope, window: 'day', windowKey: 'day#2099-11-23', windowEnd: TEST_NOW + 86_400_000, ...(limit !== undefined ? { limit } : {}) });
const KEY = day('key:k1', 1_000_000);
const ORG = day('org:acme', 5_000_000);
const limits = new Map<ScopeId, BudgetLimits>([
  ['key:k1', { day: 1_000_000 }],
  ['org:acme', { day: 5_000_000 }],
]);

function reservation(over: Partial<Reservation> = {}): Reservation {
  return { requestId: `r${Math.random()}`, amount: 100_000, counters: [KEY, ORG], rateCharges: [], rateStates: [], expiresAt: TEST_NOW + 60_000, holdShard: 0, ...over };
}

/** A ledger whose counters hold `committed` per scope; reads can be held back and counted. */
function ledgerWith(committed: Record<string, number>, lease?: { slice: number; committed: number }) {
  const reads: string[][] = [];
  const ledger: Pick<Ledger, 'readCounters' | 'leaseUseOf'> = {
    async readCounters(refs) {
      reads.push(refs.map((r) => r.scope));
      return refs.map((ref): CounterValue => ({ ref, committed: committed[ref.scope] ?? 0, spent: 0, reserved: 0, requests: 0 }));
    },
    leaseUseOf: () => lease,
  };
  return { ledger, reads };
}

describe('the remaining-budget figure', () => {
  it('when a plain hold is read back, the tightest counter is told, with this answer’s unused hold credited', async () => {
    const { ledger } = ledgerWith({ 'key:k1': 400_000, 'org:acme': 4_700_000 });
    const view = new BudgetView(ledger, new ManualClock(TEST_NOW), 8);
    const r = view.readBack(reservation(), limits);
    // key: 1,000,000 − 400,000 + 70,000 = 670,000; org: 5,000,000 − 4,700,000 + 70,000 = 370,000 (tightest)
    expect(await r.remaining(70_000)).toEqual({ scope: 'org:acme/day', remaining: 370_000 });
    expect(budgetHeaders(await r.remaining(0))).toEqual({ 'x-tollgate-budget-remaining-usd': '0.300000', 'x-tollgate-budget-scope': 'org:acme/day' });
  });

  it('when the request was taken from a scope pool, nothing is credited: the grant counts as spent', async () => {
    const { ledger } = ledgerWith({ 'key:k1': 900_000, 'org:acme': 0 });
    const view = new BudgetView(ledger, new ManualClock(TEST_NOW), 8);
    const r = view.readBack(reservation({ pool: { pk: 'pool#k1#0', sk: 'e1' } }), limits);
    expect(await r.remaining(70_000)).toEqual({ scope: 'key:k1/day', remaining: 100_000 });
  });

  it('when the org part came from its allowance pool, only the key’s own counter gets the refund', async () => {
    const { ledger } = ledgerWith({ 'key:k1': 200_000, 'org:acme': 4_500_000 });
    const view = new BudgetView(ledger, new ManualClock(TEST_NOW), 8);
    const r = view.readBack(reservation({ shared: [{ scope: 'org:acme', pool: { pk: 'pool#org', sk: 'e1' }, counters: [ORG] }] }), limits);
    // org: 500,000 left, no credit; key: 800,000 + 60,000.
    expect(await r.remaining(60_000)).toEqual({ scope: 'org:acme/day', remaining: 500_000 });
  });

  it('when the request was admitted against a lease, the lease’s unused room is credited and the read is shared', async () => {
    // The read includes the lease's 200,000 slice; its requests hold or spent 50,000 of it (this one's 30,000 hold included).
    const { ledger, reads } = ledgerWith({ 'key:k1': 700_000, 'org:acme': 700_000 }, { slice: 200_000, committed: 50_000 });
    const view = new BudgetView(ledger, new ManualClock(TEST_NOW), 8);
    const first = view.readBack(reservation({ leaseId: 'lease-1', amount: 30_000 }), limits);
    const second = view.readBack(reservation({ leaseId: 'lease-1', amount: 30_000 }), limits);
    // key: 1,000,000 − 700,000 + (200,000 − 50,000) + 10,000 = 460,000
    expect(await first.remaining(10_000)).toEqual({ scope: 'key:k1/day', remaining: 460_000 });
    expect(await second.remaining(10_000)).toEqual({ scope: 'key:k1/day', remaining: 460_000 });
    expect(reads).toHaveLength(1);
  });

  it('when an earlier settle of this instance on the same counters is under way, the read waits for it', async () => {
    const { ledger, reads } = ledgerWith({ 'key:k1': 0, 'org:acme': 0 });
    const view = new BudgetView(ledger, new ManualClock(TEST_NOW), 8);
    let finish!: () => void;
    view.noteSettle(reservation(), new Promise<void>((resolve) => (finish = resolve)));
    const r = view.readBack(reservation(), limits);
    await new Promise((resolve) => setImmediate(resolve));
    expect(reads).toHaveLength(0);
    finish();
    expect(await r.remaining(0)).toEqual({ scope: 'key:k1/day', remaining: 1_000_000 });
    expect(reads).toHaveLength(1);
  });

  it('when the read fails, no figure is told rather than a guess', async () => {
    const view = new BudgetView(
      { readCounters: () => Promise.reject(new Error('store down')) },
      new ManualClock(TEST_NOW),
      8,
    );
    const r = view.readBack(reservation(), limits);
    expect(await r.remaining(0)).toBeUndefined();
    expect(budgetHeaders(undefined)).toEqual({});
  });
});
