/**
 * What the admin API answers and what the admin CLI prints locally, built once: a key with its effective
 * limits, a scope's budgets with their spend, usage grouped by user/key/org/model. The API returns these as
 * JSON; the CLI renders the same objects as tables (lambda/admin/render.ts) whether it read the tables itself
 * or asked the API with --url, so both show the same thing. Money is exact here (6-decimal USD strings and
 * integer micro-USD); formatting for people happens only when printing.
 */
import { type DefaultLimits, describeLimits, keyRateLimits } from './guardrails/defaults';
import { formatUsd } from './money';
import type { Ledger } from './stores';
import type { KeyRecord, ScopeId, StoredLimits, UsageRecord } from './types';
import { type Window, WINDOWS, windowBounds, windowKey } from './windows';

/** The ways usage can be grouped. */
export const USAGE_GROUPINGS = ['user', 'key', 'org', 'model'] as const;
export type UsageGrouping = (typeof USAGE_GROUPINGS)[number];

export function isUsageGrouping(text: string): text is UsageGrouping {
  return (USAGE_GROUPINGS as readonly string[]).includes(text);
}

export type PublicKey = Omit<KeyRecord, 'hash'>;

export function publicKey(k: KeyRecord): PublicKey {
  const { hash: _hash, ...rest } = k;
  return rest;
}

/** Where a limit comes from: set on the scope, the default, or none at all. */
export type LimitSourceView = 'set' | 'default' | 'none';

export interface KeyView extends PublicKey {
  readonly limits: {
    readonly rpm: { readonly value: number | null; readonly source: LimitSourceView };
    readonly tpm: { readonly value: number | null; readonly source: LimitSourceView };
    readonly budgets: Record<Window, { readonly usd: string | null; readonly source: string }>;
  };
}

export function keyView(k: KeyRecord, stored: StoredLimits | undefined, defaults: DefaultLimits): KeyView {
  const rates = keyRateLimits(k, defaults, { service: k.keyId.startsWith('svc:') });
  const rows = describeLimits(`key:${k.keyId}`, stored, defaults);
  const source = (own: number | undefined): LimitSourceView => (own === undefined ? 'default' : own === 0 ? 'none' : 'set');
  return {
    ...publicKey(k),
    limits: {
      rpm: { value: rates.rpm ?? null, source: source(k.rpm) },
      tpm: { value: rates.tpm ?? null, source: source(k.tpm) },
      budgets: Object.fromEntries(WINDOWS.map((w) => [w, { usd: rows[w].limit === undefined ? null : formatUsd(rows[w].limit!), source: rows[w].source }])) as KeyView['limits']['budgets'],
    },
  };
}

export interface BudgetWindowView {
  readonly window: Window;
  /** e.g. `2026-12-06` (the window key's period, UTC). */
  readonly period: string;
  /** Null: no limit. */
  readonly limit_usd: string | null;
  readonly source: string;
  readonly spent_usd: string;
  readonly held_usd: string;
  /** Null without a limit. */
  readonly remaining_usd: string | null;
  readonly requests: number;
}

export interface BudgetView {
  readonly scope: ScopeId;
  /** The limit that applies per window (null: none), as before. */
  readonly limits: Record<Window, string | null>;
  readonly sources: Record<Window, string>;
  readonly windows: readonly BudgetWindowView[];
}

/** A scope's limits (own or default) and its spend in the current window of each. */
export async function budgetView(
  ledger: Pick<Ledger, 'getLimitSettings' | 'readCounters'>,
  scope: ScopeId,
  options: { readonly defaults: DefaultLimits; readonly now: number; readonly platformShards: number },
): Promise<BudgetView> {
  const limits = describeLimits(scope, (await ledger.getLimitSettings([scope])).get(scope), options.defaults);
  const now = options.now;
  const shards = scope === 'platform' ? Array.from({ length: Math.max(1, options.platformShards) }, (_, i) => i) : [undefined];
  const refs = WINDOWS.flatMap((w) =>
    shards.map((shard) => ({ scope, window: w, windowKey: windowKey(w, now), windowEnd: windowBounds(w, now).end, ...(shard === undefined ? {} : { shard }) })),
  );
  const counters = await ledger.readCounters(refs);
  const windows = WINDOWS.map((w) => {
    const mine = counters.filter((c) => c.ref.window === w);
    const sum = (f: 'spent' | 'reserved' | 'committed' | 'requests') => mine.reduce((a, c) => a + c[f], 0);
    const limit = limits[w].limit;
    return {
      window: w,
      period: windowKey(w, now).split('#')[1]!,
      limit_usd: limit === undefined ? null : formatUsd(limit),
      source: limits[w].source,
      spent_usd: formatUsd(sum('spent')),
      held_usd: formatUsd(sum('reserved')),
      remaining_usd: limit === undefined ? null : formatUsd(Math.max(0, limit - sum('committed'))),
      requests: sum('requests'),
    };
  });
  return {
    scope,
    limits: Object.fromEntries(WINDOWS.map((w) => [w, limits[w].limit === undefined ? null : formatUsd(limits[w].limit!)])) as BudgetView['limits'],
    sources: Object.fromEntries(WINDOWS.map((w) => [w, limits[w].source])) as BudgetView['sources'],
    windows,
  };
}

export interface UsageRowView {
  /** The group's name (a user, key, org or model id; `(none)` for usage without an org). */
  readonly name: string;
  readonly requests: number;
  readonly failed: number;
  readonly input_tokens: number;
  readonly output_tokens: number;
  /** Platform-paid cost (exact). */
  readonly cost_usd: string;
  readonly cost_micros: number;
  /** Cost on the users' own provider keys (not the platform's money). */
  readonly byok_cost_usd: string;
}

export interface UsageView {
  readonly by: UsageGrouping;
  readonly window: Window;
  /** e.g. `2026-12-06`. */
  readonly period: string;
  readonly from: string;
  readonly to: string;
  readonly rows: readonly (UsageRowView & Record<string, string | number>)[];
}

/** The window's bounds as ISO times. */
export function usageRange(window: Window, now: number): { readonly from: string; readonly to: string } {
  const b = windowBounds(window, now);
  return { from: new Date(b.start).toISOString(), to: new Date(b.end).toISOString() };
}

/** Usage records grouped, most expensive first. */
export function usageView(by: UsageGrouping, window: Window, now: number, records: readonly UsageRecord[]): UsageView {
  const keyOf = (r: UsageRecord) => (by === 'user' ? r.userId : by === 'key' ? r.keyId : by === 'org' ? (r.orgId ?? '(none)') : r.model);
  const groups = new Map<string, { requests: number; failed: number; input: number; output: number; cost: number; byok: number }>();
  for (const r of records) {
    const g = groups.get(keyOf(r)) ?? { requests: 0, failed: 0, input: 0, output: 0, cost: 0, byok: 0 };
    g.requests += 1;
    if (r.outcome !== 'ok') g.failed += 1;
    g.input += r.usage.inputTokens;
    g.output += r.usage.outputTokens;
    if (r.byok) g.byok += r.costMicros;
    else g.cost += r.costMicros;
    groups.set(keyOf(r), g);
  }
  const rows = [...groups.entries()]
    .sort((a, b) => b[1].cost + b[1].byok - (a[1].cost + a[1].byok) || a[0].localeCompare(b[0]))
    .map(([name, g]) => ({
      [by]: name,
      name,
      requests: g.requests,
      failed: g.failed,
      input_tokens: g.input,
      output_tokens: g.output,
      cost_usd: formatUsd(g.cost),
      cost_micros: g.cost,
      byok_cost_usd: formatUsd(g.byok),
    }));
  return { by, window, period: windowKey(window, now).split('#')[1]!, ...usageRange(window, now), rows };
}
