/**
 * The operator's summary of one budget window (the current hour, day or month, UTC), read from the same
 * tables the gateway writes: spend over time, cost by model, the top users and keys, budget utilisation, open
 * circuits and recent alerts. The local dashboard draws it and `npm run admin -- report` prints it, so both
 * always show the same figures. All money is integer micro-USD; formatting happens where it is shown.
 */
import type { CacheStore } from '../core/cache/store';
import type { DriftRow, DriftStore } from '../core/reconcile/reconcile';
import type { MicroUsd } from '../core/money';
import type { Ledger, UsageStore } from '../core/stores';
import { type ScopeId, scopeKind, type UsageRecord } from '../core/types';
import { type Window, WINDOWS, windowBounds, windowKey } from '../core/windows';

/** Requests, tokens and cost of one group (a model, a user, a key, a time bucket). */
export interface SpendFigures {
  readonly requests: number;
  /** Requests whose outcome was not `ok`. */
  readonly failed: number;
  readonly inputTokens: number;
  readonly outputTokens: number;
  readonly cachedInputTokens: number;
  readonly costMicros: MicroUsd;
}

export interface SpendGroup extends SpendFigures {
  /** The model id, user id or key id. */
  readonly name: string;
  /** For keys: the key's user. */
  readonly userId?: string;
}

export interface SpendBucket extends SpendFigures {
  /** ISO start of the bucket. */
  readonly start: string;
  /** Short label for a chart axis (`14:05`, `14h`, `23`). */
  readonly label: string;
}

/** One budget's use in the current window. */
export interface BudgetUse {
  readonly scope: ScopeId;
  readonly window: Window;
  readonly windowKey: string;
  readonly limitMicros: MicroUsd;
  readonly spentMicros: MicroUsd;
  /** Held by requests in flight. */
  readonly reservedMicros: MicroUsd;
  /** spent ÷ limit (may pass 1 when a request cost more than it reserved); 1 for a zero limit with spend. */
  readonly utilisation: number;
}

/** An open circuit as the dashboard shows it (structurally a subset of the guardrails' CircuitState). */
export interface CircuitView {
  readonly scope: string;
  readonly cause: string;
  readonly reason: string;
  /** ms epoch */
  readonly openedAt: number;
  /** ms epoch; absent = open until acknowledged. */
  readonly closesAt?: number;
}

/** An alert as the dashboard shows it (structurally a subset of the guardrails' Alert). */
export interface AlertView {
  readonly id: string;
  /** ms epoch */
  readonly at: number;
  readonly type: string;
  readonly severity: string;
  readonly scope: string;
  readonly summary: string;
}

/** Where open circuits and recent alerts come from (the guardrails store satisfies it). */
export interface GuardrailsView {
  listCircuits(now: number): Promise<readonly CircuitView[]>;
  listAlerts(since: number): Promise<readonly AlertView[]>;
}

export interface SpendSummary {
  readonly window: Window;
  /** e.g. `day#2026-11-23` */
  readonly windowKey: string;
  readonly from: string;
  readonly to: string;
  readonly generatedAt: string;
  readonly totals: SpendFigures;
  readonly overTime: readonly SpendBucket[];
  /** Every model used in the window, most expensive first. */
  readonly byModel: readonly SpendGroup[];
  readonly topUsers: readonly SpendGroup[];
  readonly topKeys: readonly SpendGroup[];
  /** Budgets with a limit in this window: the platform's and those of the top users, keys and orgs; fullest first. */
  readonly budgets: readonly BudgetUse[];
  /** Undefined when no guardrails source was given. */
  readonly circuits?: readonly CircuitView[];
  /** Alerts of the last {@link SummaryOptions.alertsSinceMs}, newest first; undefined without a guardrails source. */
  readonly alerts?: readonly AlertView[];
  /** Cache hits, savings and fallbacks over the window's days; undefined without a savings source. */
  readonly savings?: SavingsView;
  /** Billing drift rows of the window's days (reconciled days only), largest first; undefined without a drift source. */
  readonly drift?: readonly DriftRow[];
}

/** The response cache's and fallback's figures over a window (whole UTC days). */
export interface SavingsView {
  readonly cacheHits: number;
  readonly cacheMisses: number;
  readonly savedMicros: MicroUsd;
  readonly fallbacks: number;
  readonly downgrades: number;
  readonly fallbackCostMicros: MicroUsd;
}

export interface SummarySources {
  readonly usage: Pick<UsageStore, 'queryAll'>;
  readonly ledger: Pick<Ledger, 'getLimits' | 'readCounters'>;
  readonly guardrails?: GuardrailsView;
  /** The response cache's daily counters (core/cache). */
  readonly savings?: Pick<CacheStore, 'readSavings'>;
  /** Billing reconciliation's drift rows (core/reconcile). */
  readonly drift?: Pick<DriftStore, 'list'>;
}

export interface SummaryOptions {
  readonly window: Window;
  /** ms epoch inside the window to summarise. */
  readonly now: number;
  /**
   * How many users and keys to rank.
   * @default 10
   */
  readonly top?: number;
  /**
   * How far back recent alerts go.
   * @default 24 hours
   */
  readonly alertsSinceMs?: number;
}

const ZERO: SpendFigures = { requests: 0, failed: 0, inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, costMicros: 0 };

function add(f: SpendFigures, r: UsageRecord): SpendFigures {
  return {
    requests: f.requests + 1,
    failed: f.failed + (r.outcome === 'ok' ? 0 : 1),
    inputTokens: f.inputTokens + r.usage.inputTokens,
    outputTokens: f.outputTokens + r.usage.outputTokens,
    cachedInputTokens: f.cachedInputTokens + r.usage.cachedInputTokens,
    costMicros: f.costMicros + r.costMicros,
  };
}

function groupBy(records: readonly UsageRecord[], keyOf: (r: UsageRecord) => string): SpendGroup[] {
  const groups = new Map<string, { figures: SpendFigures; userId: string }>();
  for (const r of records) {
    const k = keyOf(r);
    const g = groups.get(k);
    groups.set(k, { figures: add(g?.figures ?? ZERO, r), userId: r.userId });
  }
  return [...groups.entries()]
    .map(([name, g]) => ({ name, ...g.figures, userId: g.userId }))
    .sort((a, b) => b.costMicros - a.costMicros || a.name.localeCompare(b.name));
}

/** The time buckets a window is drawn in: 5 minutes of an hour, hours of a day, days of a month. */
function bucketsOf(window: Window, start: number, end: number): { start: number; label: string }[] {
  const step = window === 'hour' ? 300_000 : window === 'day' ? 3_600_000 : 86_400_000;
  const out: { start: number; label: string }[] = [];
  for (let t = start; t < end; t += step) {
    const iso = new Date(t).toISOString();
    out.push({ start: t, label: window === 'hour' ? iso.slice(11, 16) : window === 'day' ? `${iso.slice(11, 13)}h` : iso.slice(8, 10) });
  }
  return out;
}

/** Builds the summary of the window containing `options.now`. */
export async function buildSpendSummary(sources: SummarySources, options: SummaryOptions): Promise<SpendSummary> {
  const { window, now } = options;
  const top = options.top ?? 10;
  const bounds = windowBounds(window, now);
  const from = new Date(bounds.start).toISOString();
  const to = new Date(bounds.end).toISOString();

  const records = await sources.usage.queryAll(from, to);
  const totals = records.reduce(add, ZERO);

  const buckets = bucketsOf(window, bounds.start, bounds.end);
  const step = buckets.length > 1 ? buckets[1]!.start - buckets[0]!.start : bounds.end - bounds.start;
  const perBucket = buckets.map(() => ZERO);
  for (const r of records) {
    const i = Math.floor((Date.parse(r.timestamp) - bounds.start) / step);
    if (i >= 0 && i < perBucket.length) perBucket[i] = add(perBucket[i]!, r);
  }
  const overTime = buckets.map((b, i) => ({ start: new Date(b.start).toISOString(), label: b.label, ...perBucket[i]! }));

  const byModel = groupBy(records, (r) => r.model).map(({ userId: _u, ...g }) => g);
  const topUsers = groupBy(records, (r) => r.userId).slice(0, top).map(({ userId: _u, ...g }) => g);
  const topKeys = groupBy(records, (r) => r.keyId).slice(0, top);
  const topOrgs = groupBy(records.filter((r) => r.orgId), (r) => r.orgId!).slice(0, top);

  const scopes: ScopeId[] = [
    'platform',
    ...topUsers.map((u): ScopeId => `user:${u.name}`),
    ...topKeys.map((k): ScopeId => `key:${k.name}`),
    ...topOrgs.map((o): ScopeId => `org:${o.name}`),
  ];
  const budgets = await budgetUse(sources.ledger, scopes, window, now);

  const [circuits, alerts] = sources.guardrails
    ? await Promise.all([
        sources.guardrails.listCircuits(now),
        sources.guardrails.listAlerts(now - (options.alertsSinceMs ?? 86_400_000)),
      ])
    : [undefined, undefined];

  // Savings and drift are kept per UTC day: the window's days up to now.
  const days: string[] = [];
  for (let t = Date.parse(from.slice(0, 10)); t <= Math.min(now, bounds.end - 1); t += 86_400_000) days.push(new Date(t).toISOString().slice(0, 10));
  const [savingDays, driftDays] = await Promise.all([
    sources.savings ? sources.savings.readSavings(days) : undefined,
    sources.drift ? Promise.all(days.map((d) => sources.drift!.list(d))) : undefined,
  ]);
  const savings = savingDays?.reduce<SavingsView>(
    (a, d) => ({
      cacheHits: a.cacheHits + d.cacheHits,
      cacheMisses: a.cacheMisses + d.cacheMisses,
      savedMicros: a.savedMicros + d.savedMicros,
      fallbacks: a.fallbacks + d.fallbacks,
      downgrades: a.downgrades + d.downgrades,
      fallbackCostMicros: a.fallbackCostMicros + d.fallbackCostMicros,
    }),
    { cacheHits: 0, cacheMisses: 0, savedMicros: 0, fallbacks: 0, downgrades: 0, fallbackCostMicros: 0 },
  );
  const drift = driftDays?.flat().sort((a, b) => Math.abs(b.driftMicros) - Math.abs(a.driftMicros));

  return {
    window,
    windowKey: windowKey(window, now),
    from,
    to,
    generatedAt: new Date(now).toISOString(),
    totals,
    overTime,
    byModel,
    topUsers,
    topKeys,
    budgets,
    ...(circuits ? { circuits: [...circuits].sort((a, b) => b.openedAt - a.openedAt) } : {}),
    ...(alerts ? { alerts: [...alerts].sort((a, b) => b.at - a.at).slice(0, 50) } : {}),
    ...(savings ? { savings } : {}),
    ...(drift ? { drift } : {}),
  };
}

const KIND_ORDER = { platform: 0, org: 1, user: 2, key: 3 } as const;

/** Budget use of each scope that has a limit in `window` (the current window's counters). */
async function budgetUse(ledger: SummarySources['ledger'], scopes: readonly ScopeId[], window: Window, now: number): Promise<BudgetUse[]> {
  const limits = await ledger.getLimits(scopes);
  const key = windowKey(window, now);
  const end = windowBounds(window, now).end;
  const limited = scopes.filter((s) => limits.get(s)?.[window] !== undefined);
  if (limited.length === 0) return [];
  const values = await ledger.readCounters(limited.map((scope) => ({ scope, window, windowKey: key, windowEnd: end })));
  return limited
    .map((scope): BudgetUse => {
      const limit = limits.get(scope)![window]!;
      const v = values.find((x) => x.ref.scope === scope);
      const spent = v?.spent ?? 0;
      return {
        scope,
        window,
        windowKey: key,
        limitMicros: limit,
        spentMicros: spent,
        reservedMicros: v?.reserved ?? 0,
        utilisation: limit > 0 ? spent / limit : spent > 0 ? 1 : 0,
      };
    })
    .sort((a, b) => b.utilisation - a.utilisation || KIND_ORDER[scopeKind(a.scope)] - KIND_ORDER[scopeKind(b.scope)]);
}

/** Parses a `?window=` value, defaulting to the day. */
export function summaryWindow(value: string | null | undefined): Window {
  return value && (WINDOWS as readonly string[]).includes(value) ? (value as Window) : 'day';
}
