/**
 * Tiered spend alerts and the spend circuit breaker, decided after settle (off the hot path) from the
 * counters' values:
 *
 *   spent ≥ 80 % of a window's limit          → warning   (per scope: at most one per window, ≥ 6 h apart)
 *   spent ≥ 100 % ("reached", see below)      → critical  (hour window: opens the scope's circuit until the
 *                                                          hour ends, or for the configured cooldown)
 *   spent ≥ 200 % of the day's limit          → escalation (opens the circuit until an operator acks it)
 *
 * "Reached": spend is at the limit, or past 80 % with less left than the request just served reserved (the
 * next request like it would be refused anyway; hard budgets keep spend from ever passing the limit by much).
 * Each (scope, window, tier, window key) alerts at most once: a conditional put in the guardrails store.
 */
import { randomUUID } from 'node:crypto';
import { displayUsd, type MicroUsd } from '../money';
import type { Alert, AlertSeverity, CircuitState, CounterValue, GuardrailStore } from '../stores';
import type { BudgetLimits, ScopeId } from '../types';
import { windowBounds, type Window } from '../windows';
import type { BreakerSettings } from './settings';

export type AlertTier = 'warning' | 'critical' | 'escalation';

/** Fractions of a limit at which each tier fires. */
export const TIER_FRACTION: Readonly<Record<AlertTier, number>> = { warning: 0.8, critical: 1, escalation: 2 };

/** Where alerts go as soon as they are recorded (locally: the console); in AWS the dispatcher publishes the outbox. */
export interface AlertSink {
  publish(alert: Alert): Promise<void>;
}

/**
 * The highest tier a counter is in, or undefined below 80 %. `lastReservation` is what the request that
 * just settled reserved (see "reached" in the file comment).
 */
export function tierOf(window: Window, spent: MicroUsd, limit: MicroUsd, lastReservation: MicroUsd): AlertTier | undefined {
  if (limit <= 0) return spent > 0 ? (window === 'day' ? 'escalation' : 'critical') : undefined;
  if (window === 'day' && spent >= TIER_FRACTION.escalation * limit) return 'escalation';
  const warning = spent >= TIER_FRACTION.warning * limit;
  if (spent >= limit || (warning && limit - spent < lastReservation)) return 'critical';
  return warning ? 'warning' : undefined;
}

/** A tier crossed by one counter: the alert to record and, for tripping tiers, the circuit to open. */
export interface TierCrossing {
  readonly alert: Alert;
  readonly dedupeKey: string;
  readonly dedupeUntil: number;
  readonly circuit?: CircuitState;
}

const SEVERITY: Readonly<Record<AlertTier, AlertSeverity>> = { warning: 'warning', critical: 'critical', escalation: 'critical' };

/** What crossing a tier means for one counter; pure, so the tiers are tested without a store. */
export function crossingFor(
  value: Pick<CounterValue, 'spent'> & { readonly ref: { readonly scope: ScopeId; readonly window: Window; readonly windowKey: string } },
  limit: MicroUsd,
  tier: AlertTier,
  options: { readonly now: number; readonly cooldownMs: number; readonly id?: string },
): TierCrossing {
  const { scope, window, windowKey } = value.ref;
  const end = windowBounds(window, options.now).end;
  const percent = limit > 0 ? Math.floor((value.spent * 100) / limit) : 100;
  const words = { warning: 'crossed 80 % of', critical: 'reached', escalation: 'crossed 200 % of' }[tier];
  let circuit: CircuitState | undefined;
  if (tier === 'escalation') {
    circuit = { scope, cause: 'escalation', openedAt: options.now, reason: `${window} spend at ${percent} % of its limit` };
  } else if (tier === 'critical' && window === 'hour') {
    const closesAt = options.cooldownMs > 0 ? options.now + options.cooldownMs : end;
    circuit = { scope, cause: 'breaker', openedAt: options.now, closesAt, reason: `hourly spend reached its limit` };
  }
  const then = circuit
    ? circuit.closesAt === undefined
      ? '; its circuit is open until an operator acknowledges it'
      : `; its circuit is open until ${new Date(circuit.closesAt).toISOString()}`
    : '';
  return {
    alert: {
      id: options.id ?? randomUUID(),
      at: options.now,
      type: `spend_${tier}`,
      severity: SEVERITY[tier],
      scope,
      summary: `${scope} ${words} its ${window} limit: ${displayUsd(value.spent)} of ${displayUsd(limit)} (${percent} %)${then}`,
      details: { scope, window, period: windowKey, tier, spentMicros: value.spent, limitMicros: limit, percent },
    },
    dedupeKey: `${windowKey}#${tier}`,
    dedupeUntil: end,
    ...(circuit ? { circuit } : {}),
  };
}

/** The highest crossing per counter with a limit (platform shards already summed by readCounters). */
export function crossingsOf(
  values: readonly CounterValue[],
  limits: ReadonlyMap<ScopeId, BudgetLimits>,
  options: { readonly now: number; readonly lastReservation: MicroUsd; readonly cooldownMs: number },
): TierCrossing[] {
  const out: TierCrossing[] = [];
  for (const v of values) {
    const limit = limits.get(v.ref.scope)?.[v.ref.window];
    if (limit === undefined) continue;
    const tier = tierOf(v.ref.window, v.spent, limit, options.lastReservation);
    if (tier) out.push(crossingFor(v, limit, tier, options));
  }
  return out;
}

/**
 * Records crossings: one conditional transaction each (dedupe, warning spacing, circuit), then hands new
 * alerts to the sink. Returns the alerts recorded now.
 */
export async function recordCrossings(
  crossings: readonly TierCrossing[],
  deps: { readonly store: GuardrailStore; readonly sink?: AlertSink; readonly settings: BreakerSettings },
): Promise<Alert[]> {
  const recorded: Alert[] = [];
  for (const c of crossings) {
    const fresh = await deps.store.recordAlert(c.alert, {
      dedupeKey: c.dedupeKey,
      dedupeUntil: c.dedupeUntil,
      ...(c.alert.type === 'spend_warning' ? { spacing: { key: 'warning', ms: deps.settings.warningSpacingMs } } : {}),
      ...(c.circuit ? { openCircuit: c.circuit } : {}),
    });
    if (!fresh) continue;
    recorded.push(c.alert);
    if (deps.sink) await deps.sink.publish(c.alert);
  }
  return recorded;
}

/** Prints alerts (the local server): one line each, to stderr so they stand out from the JSON log. */
export function consoleAlertSink(write: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): AlertSink {
  return {
    async publish(alert) {
      const icon = alert.severity === 'critical' ? '!!' : '!';
      write(`[tollgate alert ${icon}] ${alert.type}: ${alert.summary}`);
    },
  };
}

/** The message published to the alerts topic, in the shape the Slack notifier formats. */
export function alertMessage(alert: Alert): { source: 'tollgate'; type: string; summary: string; details: Alert['details'] } {
  return { source: 'tollgate', type: alert.type, summary: alert.summary, details: { severity: alert.severity, ...alert.details } };
}
