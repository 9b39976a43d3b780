/**
 * The operator's summary of one time range (the current hour, today, yesterday, the last 7 days or this month,
 * UTC), optionally of one org (team), read from the same tables the gateway writes: spend over time, cost by
 * model, the top users and keys, refusals by reason and the most refused keys, the utilisation of every budget
 * in force (defaults included) in its current window, open circuits and recent alerts and acknowledgements.
 * The local dashboard draws it, `summary.json` and the CSV export serve it, and `npm run admin -- report`
 * prints it, so all show the same figures. All money is integer micro-USD; formatting happens where it is shown.
 */
import type { CacheStore } from '../core/cache/store';
import { type DefaultLimits, effectiveLimits } from '../core/guardrails/defaults';
import type { DriftRow, DriftStore } from '../core/reconcile/reconcile';
import type { MicroUsd } from '../core/money';
import type { CounterValue, KeyStore, Ledger, UsageStore } from '../core/stores';
import { type BudgetLimits, type KeyStatus, type ScopeId, scopeKind, type UsageRecord } from '../core/types';
import { type Window, WINDOWS, windowBounds, windowKey } from '../core/windows';
import { REFUSAL_LABELS, type RefusalCount, type RefusalReason, type RefusalStore, UNKNOWN } from './refusals';

/** Requests, tokens and cost of one group (a model, a user, a key, a time bucket). */
export interface SpendFigures {
  /** Requests that reached the reservation step (each has a usage record). */
  readonly requests: number;
  /** Of those, requests whose outcome was not `ok` (upstream errors, cancelled, rejected after reserving). */
  readonly failed: number;
  /** Of those, requests the provider failed (upstream error, timeout, stream broken off): not refusals. */
  readonly upstreamErrors: number;
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
  /** For keys and users: the org (team). */
  readonly orgId?: string;
  /** For keys: the key's name and status, when the key store was given. */
  readonly keyName?: string;
  readonly keyStatus?: KeyStatus;
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
  /** For people: `platform`, `team acme`, `user alice (acme)`, `key alice-laptop · alice (acme)`. */
  readonly label: string;
  /** `set` by an operator, or the gateway's `default` for this kind of scope. */
  readonly source: 'set' | 'default';
  /**
   * `refusing`: spent + held ≥ limit, the scope's circuit is open, its key is suspended, or this budget (scope
   * and window) refused a request within {@link RECENT_REFUSAL_MS} (too little left for what callers ask);
   * `near`: ≥ 80 % of the limit; `ok` otherwise.
   */
  readonly state: 'ok' | 'near' | 'refusing';
  /** Why it is refusing, when it is. */
  readonly refusingBecause?: 'limit reached' | 'circuit open' | 'key suspended' | 'refused recently';
  /** For key scopes: the key's status. */
  readonly keyStatus?: KeyStatus;
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
  /**
   * `acknowledgement`: an operator reset a circuit (type `circuit_reset`), which is a record, not a warning.
   * Set by the summary; a source need not give it.
   */
  readonly kind?: 'alert' | 'acknowledgement';
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

/** The time ranges a summary covers (UTC). */
export const SUMMARY_RANGES = ['hour', 'today', 'yesterday', '7d', 'month'] as const;
export type SummaryRange = (typeof SUMMARY_RANGES)[number];

export const RANGE_LABELS: Readonly<Record<SummaryRange, string>> = {
  hour: 'this hour',
  today: 'today',
  yesterday: 'yesterday',
  '7d': 'last 7 days',
  month: 'this month',
};

/** Refused requests of the range (whole UTC days: the counters are daily). */
export interface RefusalsView {
  /** The UTC days counted (for the `hour` range: today). */
  readonly days: readonly string[];
  readonly total: number;
  /** Every reason with a refusal, most first. */
  readonly byReason: readonly { readonly reason: RefusalReason; readonly label: string; readonly count: number }[];
  /** The scopes that refused (budget and circuit scopes, `key:…` for per-key limits, `gateway`), most first. */
  readonly byScope: readonly { readonly scope: string; readonly count: number }[];
  /** The most refused keys (an unknown caller is key `-`), with their reasons. */
  readonly topKeys: readonly {
    readonly keyId: string;
    readonly label: string;
    readonly userId?: string;
    readonly orgId?: string;
    readonly count: number;
    readonly reasons: Readonly<Partial<Record<RefusalReason, number>>>;
  }[];
}

export interface SpendSummary {
  readonly range: SummaryRange;
  /** The bucket window of `overTime` and the window of `windowKey` (kept for callers of the window-only summary). */
  readonly window: Window;
  /** e.g. `day#2026-11-23`: the window holding the range's start. */
  readonly windowKey: string;
  /** For people: `today 2026-11-23`, `last 7 days 2026-11-17 – 2026-11-23`. */
  readonly period: string;
  /** The org (team) the summary is restricted to, if any. */
  readonly org?: string;
  /** Every org seen (keys and usage), for the org filter. */
  readonly orgs: readonly string[];
  readonly from: string;
  readonly to: string;
  readonly generatedAt: string;
  readonly totals: SpendFigures;
  readonly overTime: readonly SpendBucket[];
  /** Every model used in the range, most expensive first. */
  readonly byModel: readonly SpendGroup[];
  /** Cost by org (team) and model, most expensive first (requests without an org are under `-`). */
  readonly byOrgModel: readonly (SpendGroup & { readonly model: string })[];
  readonly topUsers: readonly SpendGroup[];
  readonly topKeys: readonly SpendGroup[];
  /**
   * Every budget in force in its current window (each window a scope has a limit in, set or default): the
   * platform's, every org's, user's and non-revoked key's known from the keys and the range's usage; refusing
   * first, then fullest. Revoked keys' budgets are left out and counted in {@link revokedKeysHidden}.
   */
  readonly budgets: readonly BudgetUse[];
  readonly revokedKeysHidden: number;
  /** Undefined when no refusal source was given. */
  readonly refusals?: RefusalsView;
  /** Undefined when no guardrails source was given. */
  readonly circuits?: readonly CircuitView[];
  /** Alerts and acknowledgements of the last {@link SummaryOptions.alertsSinceMs}, newest first; undefined without a guardrails source. */
  readonly alerts?: readonly AlertView[];
  /** Cache hits, savings and fallbacks over the range's days; undefined without a savings source. */
  readonly savings?: SavingsView;
  /** Billing drift rows of the range's days (reconciled days only), largest first; undefined without a drift source. */
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
  readonly ledger: Pick<Ledger, 'getLimits' | 'readCounters'> & Partial<Pick<Ledger, 'getLimitSettings'>>;
  /**
   * The gateway's default limits: with them (and `ledger.getLimitSettings`), budgets include every default in
   * force; without, only limits set explicitly.
   */
  readonly defaults?: DefaultLimits;
  /** Every key: names, users, orgs and status for the budgets and the top keys. */
  readonly keys?: Pick<KeyStore, 'listAll'>;
  /** The daily refusal counters. */
  readonly refusals?: Pick<RefusalStore, 'read'>;
  readonly guardrails?: GuardrailsView;
  /** The response cache's daily counters (core/cache). */
  readonly savings?: Pick<CacheStore, 'readSavings'>;
  /** Billing reconciliation's drift rows (core/reconcile). */
  readonly drift?: Pick<DriftStore, 'list'>;
}

export interface SummaryOptions {
  /** The range; `window` alone means hour → `hour`, day → `today`, month → `month`. */
  readonly range?: SummaryRange;
  /** @deprecated use `range` */
  readonly window?: Window;
  /** Only this org's (team's) usage, refusals and budgets. */
  readonly org?: string;
  /** ms epoch: the instant the summary is of (the range is relative to it). */
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
  /**
   * Most budget scopes read (the fullest are kept when there are more).
   * @default 2_000
   */
  readonly maxBudgetScopes?: number;
}

const ZERO: SpendFigures = { requests: 0, failed: 0, upstreamErrors: 0, inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, costMicros: 0 };

const UPSTREAM_OUTCOMES: ReadonlySet<string> = new Set(['upstream_error', 'timeout', 'stream_incomplete']);

function add(f: SpendFigures, r: UsageRecord): SpendFigures {
  return {
    requests: f.requests + 1,
    failed: f.failed + (r.outcome === 'ok' ? 0 : 1),
    upstreamErrors: f.upstreamErrors + (UPSTREAM_OUTCOMES.has(r.outcome) ? 1 : 0),
    inputTokens: f.inputTokens + r.usage.inputTokens,
    outputTokens: f.outputTokens + r.usage.outputTokens,
    cachedInputTokens: f.cachedInputTokens + r.usage.cachedInputTokens,
    costMicros: f.costMicros + r.costMicros,
  };
}

function groupBy(records: readonly UsageRecord[], keyOf: (r: UsageRecord) => string): SpendGroup[] {
  const groups = new Map<string, { figures: SpendFigures; userId: string; orgId?: string }>();
  for (const r of records) {
    const k = keyOf(r);
    const g = groups.get(k);
    groups.set(k, { figures: add(g?.figures ?? ZERO, r), userId: r.userId, ...(r.orgId ? { orgId: r.orgId } : g?.orgId ? { orgId: g.orgId } : {}) });
  }
  return [...groups.entries()]
    .map(([name, g]) => ({ name, ...g.figures, userId: g.userId, ...(g.orgId ? { orgId: g.orgId } : {}) }))
    .sort((a, b) => b.costMicros - a.costMicros || a.name.localeCompare(b.name));
}

const DAY_MS = 86_400_000;

/** The bounds, bucket window and label of a range at `now`. */
export function rangeBounds(range: SummaryRange, now: number): { start: number; end: number; window: Window; period: string } {
  const day = windowBounds('day', now);
  const d = (ms: number) => new Date(ms).toISOString().slice(0, 10);
  switch (range) {
    case 'hour': {
      const b = windowBounds('hour', now);
      return { ...b, window: 'hour', period: `this hour ${new Date(b.start).toISOString().slice(0, 13).replace('T', ' ')}h` };
    }
    case 'today':
      return { ...day, window: 'day', period: `today ${d(day.start)}` };
    case 'yesterday':
      return { start: day.start - DAY_MS, end: day.start, window: 'day', period: `yesterday ${d(day.start - DAY_MS)}` };
    case '7d':
      return { start: day.start - 6 * DAY_MS, end: day.end, window: 'month', period: `last 7 days ${d(day.start - 6 * DAY_MS)} – ${d(day.start)}` };
    case 'month': {
      const b = windowBounds('month', now);
      return { ...b, window: 'month', period: `this month ${d(b.start).slice(0, 7)}` };
    }
  }
}

/** The time buckets a range is drawn in: 5 minutes of an hour, hours of a day, days of longer ranges. */
function bucketsOf(window: Window, start: number, end: number): { start: number; label: string }[] {
  const step = window === 'hour' ? 300_000 : window === 'day' ? 3_600_000 : DAY_MS;
  const out: { start: number; label: string }[] = [];
  for (let t = start; t < end; t += step) {
    const iso = new Date(t).toISOString();
    out.push({ start: t, label: window === 'hour' ? iso.slice(11, 16) : window === 'day' ? `${iso.slice(11, 13)}h` : iso.slice(8, 10) });
  }
  return out;
}

function rangeOf(options: SummaryOptions): SummaryRange {
  if (options.range) return options.range;
  return options.window === 'hour' ? 'hour' : options.window === 'month' ? 'month' : 'today';
}

interface KeyInfo {
  readonly keyId: string;
  readonly name: string;
  readonly userId: string;
  readonly orgId?: string;
  readonly status: KeyStatus;
}

async function listKeys(keys: SummarySources['keys']): Promise<KeyInfo[] | undefined> {
  if (!keys) return undefined;
  const out: KeyInfo[] = [];
  for await (const page of keys.listAll()) {
    for (const k of page) out.push({ keyId: k.keyId, name: k.name, userId: k.userId, ...(k.orgId ? { orgId: k.orgId } : {}), status: k.status });
  }
  return out;
}

/** `alice (acme)` or `alice`. */
function withOrg(name: string, orgId: string | undefined): string {
  return orgId ? `${name} (${orgId})` : name;
}

/** Builds the summary of the range containing `options.now`. */
export async function buildSpendSummary(sources: SummarySources, options: SummaryOptions): Promise<SpendSummary> {
  const { now } = options;
  const range = rangeOf(options);
  const org = options.org || undefined;
  const top = options.top ?? 10;
  const bounds = rangeBounds(range, now);
  const window = bounds.window;
  const from = new Date(bounds.start).toISOString();
  const to = new Date(bounds.end).toISOString();

  // The range's UTC days up to now (savings, drift and refusals are kept per day).
  const days: string[] = [];
  for (let t = Date.parse(from.slice(0, 10)); t < bounds.end && t <= now; t += DAY_MS) days.push(new Date(t).toISOString().slice(0, 10));

  const today = new Date(now).toISOString().slice(0, 10);
  const [allRecords, keyList, refusalCounts] = await Promise.all([
    sources.usage.queryAll(from, to),
    listKeys(sources.keys),
    // Today's counters too: a budget refused within the last minutes is shown as refusing, whatever the range.
    sources.refusals ? sources.refusals.read([...new Set([...days, today])]) : undefined,
  ]);
  const recentlyRefused = new Set(
    (refusalCounts ?? []).filter((c) => c.reason === 'budget' && c.lastAt >= now - RECENT_REFUSAL_MS).map((c) => `${c.scope} ${c.window ?? ''}`),
  );
  const keyInfo = new Map((keyList ?? []).map((k) => [k.keyId, k]));
  const orgs = [...new Set([...(keyList ?? []).map((k) => k.orgId), ...allRecords.map((r) => r.orgId)].filter((o): o is string => !!o))].sort();
  const records = org ? allRecords.filter((r) => r.orgId === org) : allRecords;
  const totals = records.reduce(add, ZERO);

  const buckets = bucketsOf(window, bounds.start, bounds.end);
  const step = buckets.length > 1 ? buckets[1]!.start - buckets[0]!.start : bounds.end - bounds.start;
  const perBucket = buckets.map(() => ZERO);
  for (const r of records) {
    const i = Math.floor((Date.parse(r.timestamp) - bounds.start) / step);
    if (i >= 0 && i < perBucket.length) perBucket[i] = add(perBucket[i]!, r);
  }
  const overTime = buckets.map((b, i) => ({ start: new Date(b.start).toISOString(), label: b.label, ...perBucket[i]! }));

  const byModel = groupBy(records, (r) => r.model).map(({ userId: _u, orgId: _o, ...g }) => g);
  const byOrgModel = groupBy(records, (r) => `${r.orgId ?? UNKNOWN}\u0000${r.model}`).map(({ userId: _u, name, ...g }) => {
    const [o, model] = name.split('\u0000') as [string, string];
    return { ...g, name: o, orgId: o, model };
  });
  const topUsers = groupBy(records, (r) => r.userId).slice(0, top).map(({ userId: _u, ...g }) => g);
  const topKeys = groupBy(records, (r) => r.keyId)
    .slice(0, top)
    .map((g) => {
      const k = keyInfo.get(g.name);
      return k ? { ...g, keyName: k.name, keyStatus: k.status, ...(k.orgId ? { orgId: k.orgId } : {}) } : g;
    });

  const [budgetResult, circuits, alerts] = await Promise.all([
    budgetUse(sources, { records, keyList, org, now, max: options.maxBudgetScopes ?? 2_000 }),
    sources.guardrails ? sources.guardrails.listCircuits(now) : undefined,
    sources.guardrails ? sources.guardrails.listAlerts(now - (options.alertsSinceMs ?? 86_400_000)) : undefined,
  ]);
  const openScopes = new Set((circuits ?? []).map((c) => c.scope));
  const budgets = budgetResult.rows
    .map((b): BudgetUse => {
      if (b.keyStatus === 'suspended') return { ...b, state: 'refusing', refusingBecause: 'key suspended' };
      if (openScopes.has(b.scope)) return { ...b, state: 'refusing', refusingBecause: 'circuit open' };
      if (recentlyRefused.has(`${b.scope} ${b.window}`)) return { ...b, state: 'refusing', refusingBecause: 'refused recently' };
      return b;
    })
    .sort(
      (a, b) =>
        STATE_ORDER[a.state] - STATE_ORDER[b.state] ||
        b.utilisation - a.utilisation ||
        KIND_ORDER[scopeKind(a.scope)] - KIND_ORDER[scopeKind(b.scope)] ||
        a.scope.localeCompare(b.scope) ||
        WINDOWS.indexOf(a.window) - WINDOWS.indexOf(b.window),
    );

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
  const inDays = new Set(days);
  const refusals = refusalCounts
    ? refusalsView(refusalCounts.filter((c) => inDays.has(c.day) && (!org || c.orgId === org)), days, keyInfo, top)
    : undefined;
  const inOrg = (scope: string) => !org || scope === `org:${org}` || budgets.some((b) => b.scope === scope);

  return {
    range,
    window,
    windowKey: windowKey(window, bounds.start),
    period: bounds.period,
    ...(org ? { org } : {}),
    orgs,
    from,
    to,
    generatedAt: new Date(now).toISOString(),
    totals,
    overTime,
    byModel,
    byOrgModel,
    topUsers,
    topKeys,
    budgets,
    revokedKeysHidden: budgetResult.revokedHidden,
    ...(refusals ? { refusals } : {}),
    ...(circuits ? { circuits: [...circuits].filter((c) => inOrg(c.scope)).sort((a, b) => b.openedAt - a.openedAt) } : {}),
    ...(alerts
      ? {
          alerts: [...alerts]
            .filter((a) => inOrg(a.scope))
            .sort((a, b) => b.at - a.at)
            .slice(0, 50)
            .map((a) => ({ ...a, kind: a.type === 'circuit_reset' ? ('acknowledgement' as const) : ('alert' as const) })),
        }
      : {}),
    ...(savings ? { savings } : {}),
    ...(drift ? { drift } : {}),
  };
}

function refusalsView(counts: readonly RefusalCount[], days: readonly string[], keyInfo: ReadonlyMap<string, KeyInfo>, top: number): RefusalsView {
  const byReason = new Map<RefusalReason, number>();
  const byScope = new Map<string, number>();
  const byKey = new Map<string, { count: number; userId?: string; orgId?: string; reasons: Partial<Record<RefusalReason, number>> }>();
  let total = 0;
  for (const c of counts) {
    total += c.count;
    byReason.set(c.reason, (byReason.get(c.reason) ?? 0) + c.count);
    byScope.set(c.scope, (byScope.get(c.scope) ?? 0) + c.count);
    const k = byKey.get(c.keyId) ?? { count: 0, ...(c.userId ? { userId: c.userId } : {}), ...(c.orgId ? { orgId: c.orgId } : {}), reasons: {} };
    k.count += c.count;
    k.reasons[c.reason] = (k.reasons[c.reason] ?? 0) + c.count;
    byKey.set(c.keyId, k);
  }
  const desc = <T extends { count: number }>(a: T, b: T) => b.count - a.count;
  return {
    days,
    total,
    byReason: [...byReason].map(([reason, count]) => ({ reason, label: REFUSAL_LABELS[reason] ?? reason, count })).sort((a, b) => desc(a, b) || a.reason.localeCompare(b.reason)),
    byScope: [...byScope].map(([scope, count]) => ({ scope, count })).sort((a, b) => desc(a, b) || a.scope.localeCompare(b.scope)),
    topKeys: [...byKey]
      .map(([keyId, k]) => {
        const info = keyInfo.get(keyId);
        const label =
          keyId === UNKNOWN ? 'unknown key' : `${info?.name ?? keyId} · ${withOrg(k.userId ?? info?.userId ?? '?', k.orgId ?? info?.orgId)}${info?.status && info.status !== 'active' ? ` [${info.status}]` : ''}`;
        return { keyId, label, ...(k.userId ? { userId: k.userId } : {}), ...(k.orgId ? { orgId: k.orgId } : {}), count: k.count, reasons: k.reasons };
      })
      .sort((a, b) => desc(a, b) || a.keyId.localeCompare(b.keyId))
      .slice(0, top),
  };
}

const KIND_ORDER = { platform: 0, org: 1, user: 2, key: 3 } as const;
const STATE_ORDER = { refusing: 0, near: 1, ok: 2 } as const;

/** A budget refusal this recent marks a budget that is near its limit as refusing. */
export const RECENT_REFUSAL_MS = 15 * 60_000;

/** Utilisation at which a budget is shown as near its limit. */
export const NEAR_LIMIT = 0.8;

/**
 * Every budget in force on the scopes known from the keys and the range's usage (and the platform), in each
 * window's current key: limits set explicitly and, with `defaults`, the defaults of scopes without their own.
 */
async function budgetUse(
  sources: SummarySources,
  input: { records: readonly UsageRecord[]; keyList: readonly KeyInfo[] | undefined; org: string | undefined; now: number; max: number },
): Promise<{ rows: BudgetUse[]; revokedHidden: number }> {
  const { records, keyList, org, now } = input;
  const keys = new Map<string, KeyInfo>();
  const users = new Map<string, string | undefined>();
  const orgs = new Set<string>();
  let revokedHidden = 0;
  for (const k of keyList ?? []) {
    if (org && k.orgId !== org) continue;
    if (k.status === 'revoked') {
      revokedHidden += 1;
      continue;
    }
    keys.set(k.keyId, k);
    if (!users.has(k.userId) || k.orgId) users.set(k.userId, k.orgId);
    if (k.orgId) orgs.add(k.orgId);
  }
  const revokedIds = new Set((keyList ?? []).filter((k) => k.status === 'revoked').map((k) => k.keyId));
  for (const r of records) {
    if (!revokedIds.has(r.keyId) && !keys.has(r.keyId)) keys.set(r.keyId, { keyId: r.keyId, name: r.keyId, userId: r.userId, ...(r.orgId ? { orgId: r.orgId } : {}), status: 'active' });
    if (!users.has(r.userId) || r.orgId) users.set(r.userId, r.orgId ?? users.get(r.userId));
    if (r.orgId) orgs.add(r.orgId);
  }
  if (org) orgs.add(org);
  const labels = new Map<ScopeId, { label: string; keyStatus?: KeyStatus }>();
  if (!org) labels.set('platform', { label: 'platform' });
  for (const o of orgs) labels.set(`org:${o}`, { label: `team ${o}` });
  for (const [u, o] of users) labels.set(`user:${u}`, { label: `user ${withOrg(u, o)}` });
  for (const k of keys.values()) {
    const name = k.name === k.keyId ? k.keyId : `${k.name}`;
    labels.set(`key:${k.keyId}`, { label: `key ${name} · ${withOrg(k.userId, k.orgId)}`, keyStatus: k.status });
  }
  const scopes = [...labels.keys()];

  // Limits in force: set ones (the explicit `none` removes a default) and, given the defaults, the defaults.
  const withDefaults = sources.defaults !== undefined && sources.ledger.getLimitSettings !== undefined;
  const settings = withDefaults ? await sources.ledger.getLimitSettings!(scopes) : undefined;
  const explicit = withDefaults ? undefined : await sources.ledger.getLimits(scopes);
  const limitsOf = (scope: ScopeId): { limits: BudgetLimits; set: BudgetLimits } => {
    if (!withDefaults) return { limits: explicit!.get(scope) ?? {}, set: explicit!.get(scope) ?? {} };
    const stored = settings!.get(scope);
    const set: Partial<Record<Window, MicroUsd>> = {};
    for (const w of WINDOWS) if (typeof stored?.[w] === 'number') set[w] = stored[w] as MicroUsd;
    return { limits: effectiveLimits(scope, stored, sources.defaults!), set };
  };
  const wanted: { scope: ScopeId; window: Window; limit: MicroUsd; source: 'set' | 'default' }[] = [];
  for (const scope of scopes) {
    const { limits, set } = limitsOf(scope);
    for (const w of WINDOWS) {
      const limit = limits[w];
      if (limit !== undefined) wanted.push({ scope, window: w, limit, source: set[w] !== undefined ? 'set' : 'default' });
    }
  }
  if (wanted.length === 0) return { rows: [], revokedHidden };
  const refs = wanted.map((x) => ({ scope: x.scope, window: x.window, windowKey: windowKey(x.window, now), windowEnd: windowBounds(x.window, now).end }));
  const values = new Map<string, CounterValue>();
  for (let i = 0; i < refs.length; i += 100) {
    for (const c of await sources.ledger.readCounters(refs.slice(i, i + 100))) values.set(`${c.ref.scope} ${c.ref.window}`, c);
  }
  const rows = wanted.map((x, i): BudgetUse => {
    const v = values.get(`${x.scope} ${x.window}`);
    const spent = v?.spent ?? 0;
    const utilisation = x.limit > 0 ? spent / x.limit : spent > 0 ? 1 : 0;
    const info = labels.get(x.scope)!;
    // Refusing at the limit: a request needs more than the room left, and the committed (spent + held) counts.
    const committed = v?.committed ?? spent;
    const full = committed >= x.limit;
    return {
      scope: x.scope,
      label: info.label,
      source: x.source,
      state: full ? 'refusing' : utilisation >= NEAR_LIMIT ? 'near' : 'ok',
      ...(full ? { refusingBecause: 'limit reached' as const } : {}),
      ...(info.keyStatus ? { keyStatus: info.keyStatus } : {}),
      window: x.window,
      windowKey: refs[i]!.windowKey,
      limitMicros: x.limit,
      spentMicros: spent,
      reservedMicros: v?.reserved ?? 0,
      utilisation,
    };
  });
  const kept = rows.length > input.max ? [...rows].sort((a, b) => b.utilisation - a.utilisation).slice(0, input.max) : rows;
  return { rows: kept, revokedHidden };
}

/** Parses a `?range=` value (or the older `?window=`), defaulting to today. */
export function summaryRange(range: string | null | undefined, window?: string | null): SummaryRange {
  if (range && (SUMMARY_RANGES as readonly string[]).includes(range)) return range as SummaryRange;
  if (window === 'hour') return 'hour';
  if (window === 'month') return 'month';
  return 'today';
}

/** Parses a `?window=` value, defaulting to the day. */
export function summaryWindow(value: string | null | undefined): Window {
  return value && (WINDOWS as readonly string[]).includes(value) ? (value as Window) : 'day';
}
