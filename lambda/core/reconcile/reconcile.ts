/**
 * Billing reconciliation: for one UTC day, the ledger's spend per provider and model (usage records, BYOK
 * excluded: the caller's own provider account pays those) against each provider's own report. Every
 * provider/model on either side becomes one drift row (billed − ledger, micro-USD), stored and returned; a row
 * whose drift is past the threshold either way is an alarm.
 */
import type { MicroUsd } from '../money';
import type { UsageStore } from '../stores';
import { type BillingReport, dayBounds, normalizeModel } from './reports';

export interface DriftRow {
  readonly day: string;
  readonly provider: string;
  /** Normalized model name, or `*` for a provider reported only as a whole. */
  readonly model: string;
  readonly ledgerMicros: MicroUsd;
  readonly billedMicros: MicroUsd;
  /** billed − ledger: positive when the provider billed more than the gateway recorded. */
  readonly driftMicros: MicroUsd;
  readonly alarm: boolean;
}

/** Where drift rows are kept (DynamoDB: lambda/store/dynamodb/reconcile-store.ts). */
export interface DriftStore {
  put(rows: readonly DriftRow[], options: { readonly at: number }): Promise<void>;
  list(day: string): Promise<DriftRow[]>;
}

export interface ReconcileOptions {
  readonly usage: UsageStore;
  readonly reports: readonly BillingReport[];
  readonly store: DriftStore;
  readonly alarmDriftMicros: MicroUsd;
  readonly now: number;
}

export interface ReconcileResult {
  readonly day: string;
  readonly rows: readonly DriftRow[];
  /** Providers whose report could not be read (their rows are missing, not zero). */
  readonly failed: ReadonlyArray<{ readonly provider: string; readonly error: string }>;
}

/** The ledger's spend of one day by provider, then normalized model. */
export async function ledgerSpend(usage: UsageStore, day: string): Promise<Map<string, Map<string, MicroUsd>>> {
  const { start, end } = dayBounds(day);
  const out = new Map<string, Map<string, MicroUsd>>();
  for (const r of await usage.queryAll(start.toISOString(), end.toISOString())) {
    if (r.byok || r.costMicros === 0) continue;
    const byModel = out.get(r.provider) ?? new Map<string, MicroUsd>();
    const model = normalizeModel(r.model);
    byModel.set(model, (byModel.get(model) ?? 0) + r.costMicros);
    out.set(r.provider, byModel);
  }
  return out;
}

/** Reconciles one day and stores the rows. */
export async function reconcileDay(day: string, o: ReconcileOptions): Promise<ReconcileResult> {
  const ledger = await ledgerSpend(o.usage, day);
  const rows: DriftRow[] = [];
  const failed: Array<{ provider: string; error: string }> = [];
  for (const report of o.reports) {
    let billed: Map<string, MicroUsd>;
    try {
      billed = await report.dailyCost(day);
    } catch (err) {
      failed.push({ provider: report.provider, error: err instanceof Error ? err.message : String(err) });
      continue;
    }
    const ours = ledger.get(report.provider) ?? new Map<string, MicroUsd>();
    // A provider reported as one line is compared as one line.
    const side = billed.has('*') && billed.size === 1 ? new Map([['*', [...ours.values()].reduce((a, b) => a + b, 0)]]) : ours;
    for (const model of new Set([...side.keys(), ...billed.keys()])) {
      const ledgerMicros = side.get(model) ?? 0;
      const billedMicros = billed.get(model) ?? 0;
      const driftMicros = billedMicros - ledgerMicros;
      rows.push({ day, provider: report.provider, model, ledgerMicros, billedMicros, driftMicros, alarm: Math.abs(driftMicros) > o.alarmDriftMicros });
    }
  }
  rows.sort((a, b) => (a.provider + a.model < b.provider + b.model ? -1 : 1));
  if (rows.length) await o.store.put(rows, { at: o.now });
  return { day, rows, failed };
}
