/**
 * The admin CLI's tables, from the same objects the admin API returns (lambda/core/admin-views.ts), so the
 * local CLI and `--url` print the same thing.
 */
import type { BudgetView, KeyView, PublicKey, UsageView } from '../core/admin-views';
import type { AuditEntry } from '../core/audit';
import { usdToMicros } from '../core/money';
import { humanUsd, localTime, relativeTime, table } from './format';

/** An exact USD string (`"5.000000"`) for people. */
export const usd = (text: string | null | undefined): string => (text === null || text === undefined ? 'none' : humanUsd(usdToMicros(text)));

const sourced = (text: string, source: string) => `${text}${source === 'default' ? ' (default)' : ''}`;

export function keysTable(keys: readonly PublicKey[], now: number): string {
  return table(
    keys.map((k) => ({
      keyId: k.keyId,
      prefix: k.prefix,
      user: k.userId,
      org: k.orgId ?? '',
      name: k.name,
      status: k.status + (k.statusChangedBy === 'kill-switch' ? ' (kill switch)' : ''),
      scopes: k.scopes.join(','),
      created: localTime(k.createdAt),
      lastUsed: k.lastUsedAt ? relativeTime(k.lastUsedAt, now) : 'never',
    })),
  );
}

export function keyText(k: KeyView, now: number): string {
  const rate = (r: KeyView['limits']['rpm']) => (r.value === null ? 'none' : sourced(r.value.toLocaleString('en-US'), r.source));
  const rows: [string, string][] = [
    ['keyId', k.keyId],
    ['prefix', k.prefix],
    ['user', k.userId],
    ['org', k.orgId ?? ''],
    ['name', k.name],
    ['status', `${k.status}${k.statusChangedBy === 'kill-switch' ? ' (kill switch)' : ''}${k.statusReason ? ` — ${k.statusReason}` : ''}`],
    ['scopes', k.scopes.join(',')],
    ['rpm', rate(k.limits.rpm)],
    ['tpm', rate(k.limits.tpm)],
    ...(Object.entries(k.limits.budgets).map(([w, b]) => [`budget/${w}`, b.usd === null ? 'none' : sourced(usd(b.usd), b.source)]) as [string, string][]),
    ['created', localTime(k.createdAt)],
    ['lastUsed', k.lastUsedAt ? `${localTime(k.lastUsedAt)} (${relativeTime(k.lastUsedAt, now)})` : 'never'],
    ...(k.expiresAt ? ([['expires', localTime(k.expiresAt)]] as [string, string][]) : []),
  ];
  return rows.map(([f, v]) => `${f.padEnd(13)} ${v}`).join('\n');
}

export function budgetText(b: BudgetView): string {
  return `${b.scope}\n${table(
    b.windows.map((w) => ({
      window: w.window,
      period: w.period,
      limit: w.limit_usd === null ? 'none' : sourced(usd(w.limit_usd), w.source),
      spent: usd(w.spent_usd),
      held: usd(w.held_usd),
      remaining: w.remaining_usd === null ? '' : usd(w.remaining_usd),
      requests: w.requests,
    })),
  )}`;
}

export function usageText(u: UsageView): string {
  const rows = u.rows.map((r) => ({
    [u.by]: r.name,
    requests: r.requests,
    failed: r.failed,
    inputTokens: r.input_tokens,
    outputTokens: r.output_tokens,
    cost: usd(r.cost_usd),
    ...(u.rows.some((x) => x.byok_cost_usd !== '0.000000') ? { byokCost: usd(r.byok_cost_usd) } : {}),
  }));
  return `usage by ${u.by}, ${u.window} ${u.period} (UTC)\n${table(rows)}`;
}

/** Fields a creation shows, in this order (the rest of its state stays in --json). */
const CREATION_FIELDS = ['userId', 'orgId', 'service', 'scopes', 'rpm', 'tpm', 'expiresAt', 'provider', 'fingerprint', 'version'];

/** `status: active → revoked`, from an entry's before and after (exact dollar strings shown as money). */
export function changeText(e: Pick<AuditEntry, 'before' | 'after'>): string {
  const before = e.before ?? {};
  const after = e.after ?? {};
  const show = (v: unknown) => (v === undefined ? '—' : v === null ? 'none' : typeof v === 'string' && /^\d+\.\d{6}$/.test(v) ? usd(v) : String(v));
  const order = (f: string) => {
    const i = CREATION_FIELDS.indexOf(f);
    return i >= 0 ? i : CREATION_FIELDS.length;
  };
  if (!e.before) {
    const fields = Object.keys(after)
      .filter((f) => (CREATION_FIELDS.includes(f) || f.startsWith('budget.')) && after[f] !== null && after[f] !== 'default')
      .sort((x, y) => order(x) - order(y) || x.localeCompare(y));
    return fields.map((f) => `${f.replace(/^userId$/, 'user').replace(/^orgId$/, 'org')}=${show(after[f])}`).join(' ');
  }
  const fields = [...new Set([...Object.keys(before), ...Object.keys(after)])].sort((x, y) => order(x) - order(y) || x.localeCompare(y));
  return fields
    .filter((f) => before[f] !== after[f])
    .map((f) => `${f}: ${show(before[f])} → ${show(after[f])}`)
    .join(', ');
}

export function auditText(entries: readonly AuditEntry[]): string {
  return table(
    entries.map((e) => ({
      when: localTime(e.at),
      actor: e.actor,
      via: e.via ?? 'api',
      action: e.action,
      target: e.target,
      change: `${changeText(e)}${e.details?.outcome === 'failed' ? ' [FAILED]' : ''}`,
      reason: e.reason ?? (typeof e.details?.reason === 'string' ? e.details.reason : ''),
    })),
  );
}
