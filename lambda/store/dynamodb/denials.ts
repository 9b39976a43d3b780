/**
 * The caller-facing denials the ledger throws, built from the item a failed condition returned (its old
 * values): what was refused, why, and whether retrying can help (`Retry-After`, `x-should-retry`).
 */
import type { CancellationReason } from '@aws-sdk/client-dynamodb';
import { BudgetExceededError, CircuitOpenError, LoopDetectedError, RateLimitError, SpendVelocityError } from '../../core/errors';
import type { CircuitRef, CounterRef, RateCharge } from '../../core/stores';
import { failureBlockMs, type LoopCheck } from '../../core/guardrails/loop-guard';
import type { VelocityCharge } from '../../core/guardrails/velocity';
import { displayUsd, type MicroUsd } from '../../core/money';
import { formatResetDuration, gcraRemaining, gcraResetMs, gcraRetryAfterMs } from '../../core/ratelimit';
import { counterPk, num, UNTIL_ACKNOWLEDGED } from './items';

export function unexpectedCancellation(reasons: readonly CancellationReason[]): Error {
  const codes = reasons.map((r) => r.Code ?? 'None').join(',');
  return new Error(`DynamoDB cancelled a ledger transaction unexpectedly (reasons: ${codes})`);
}

const WINDOW_ADJECTIVE: Readonly<Record<string, string>> = { hour: 'hourly', day: 'daily', month: 'monthly' };

/** `key:kp_1` → `key kp_1`, `user:alice` → `user alice`: the scope as a sentence names it. */
function scopeName(scope: string): string {
  const colon = scope.indexOf(':');
  return colon > 0 ? `${scope.slice(0, colon)} ${scope.slice(colon + 1)}` : scope;
}

/** `2026-12-07 00:00 UTC`. */
function utcTime(ms: number): string {
  const iso = new Date(ms).toISOString();
  return `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** What a budget refusal saw: the counter and its values when the condition failed (room-wait.ts reads it). */
export interface BudgetRefusal {
  readonly ref: CounterRef;
  readonly amount: MicroUsd;
  readonly old?: Record<string, unknown>;
}

const REFUSALS = new WeakMap<BudgetExceededError, BudgetRefusal>();

/** The counter values a refusal of {@link budgetExceeded} was decided on (undefined for other refusals). */
export function budgetRefusalOf(err: unknown): BudgetRefusal | undefined {
  return err instanceof BudgetExceededError ? REFUSALS.get(err) : undefined;
}

/** The caller-facing denial for a counter whose limit this request would cross. */
export function budgetExceeded(
  ref: CounterRef,
  detail: { readonly amount: MicroUsd; readonly old?: Record<string, unknown> },
): BudgetExceededError {
  const err = budgetExceededError(ref, detail);
  REFUSALS.set(err, { ref, amount: detail.amount, ...(detail.old ? { old: detail.old } : {}) });
  return err;
}

/** How long a counter seen spent out here refuses this instance's requests without a store call (ms). */
export const SPENT_OUT_MS = 2_000;
/** Counters remembered as spent out (a bounded memory: forgotten ones are asked again). */
const MAX_SPENT_OUT = 10_000;

/**
 * Counters this instance saw spent out: a budget refusal whose spend alone left the request no room (`spent + n
 * > limit`, the refusal that waiting cannot change). For {@link SPENT_OUT_MS} a request of the same counter and
 * window that its spend as seen cannot admit either is refused at once with the same denial, with no store call:
 * a client hammering a spent budget (an agent retrying its refusals, thousands of users of a spent org) then
 * costs a refused take or transaction per instance and 2 s, not one a request. Spend grows but for corrections
 * (a late settle's refund after a sweep or a pool's release): those reach this instance's requests at most 2 s
 * late, as a shared scope's counter reads do (limits.ts). The request's own limit decides, so a raised limit
 * admits at once.
 */
export class SpentOutRefusals {
  private readonly seen = new Map<string, { readonly until: number; readonly old: Record<string, unknown> }>();

  /** Remembers the counter of a refusal decided on spend alone (anything else is ignored). */
  remember(err: unknown, now: number): void {
    const refusal = budgetRefusalOf(err);
    const limit = refusal?.ref.limit;
    if (!refusal?.old || limit === undefined || num(refusal.old.spent) + refusal.amount <= limit) return;
    if (this.seen.size >= MAX_SPENT_OUT) this.seen.clear();
    this.seen.set(`${counterPk(refusal.ref)}|${refusal.ref.windowKey}`, { until: now + SPENT_OUT_MS, old: refusal.old });
  }

  /** Throws the refusal of a counter remembered spent out whose spend, as seen, leaves `amount` no room. */
  refuse(counters: readonly CounterRef[], amount: MicroUsd, now: number): void {
    if (this.seen.size === 0) return;
    for (const ref of counters) {
      if (ref.limit === undefined) continue;
      const seen = this.seen.get(`${counterPk(ref)}|${ref.windowKey}`);
      if (seen && seen.until > now && num(seen.old.spent) + amount > ref.limit) throw budgetExceeded(ref, { amount, old: seen.old });
    }
  }
}

/**
 * The denial after a request waited for room that requests in flight held (room-wait.ts): spend alone leaves
 * room for it, so a retry in a moment can pass (`Retry-After`, `x-should-retry: true`).
 */
export function budgetHeld(refusal: BudgetRefusal, waitedMs: number): BudgetExceededError {
  const { ref, amount, old } = refusal;
  const headers = {
    'Retry-After': '2',
    'x-should-retry': 'true',
    'x-tollgate-budget-scope': ref.scope,
    'x-tollgate-budget-window': ref.window,
    'x-tollgate-budget-reset': new Date(ref.windowEnd).toISOString(),
  };
  const needs = `this request needs up to ${displayUsd(amount)}`;
  const budget = `${WINDOW_ADJECTIVE[ref.window] ?? ref.window} budget`;
  const waited = `${(waitedMs / 1000).toFixed(1)} s`;
  const message =
    ref.scope === 'platform'
      ? `The platform's ${budget} is held by requests in flight and ${needs}; waited ${waited} for them to finish. ` +
        'Retry in a few seconds: what they do not spend comes back.'
      : `Budget busy: ${scopeName(ref.scope)} has spent ${displayUsd(num(old?.spent))} of its ${displayUsd(ref.limit ?? 0)} ${budget}, ` +
        `${displayUsd(num(old?.reserved))} more is held by requests in flight, and ${needs}; waited ${waited} for them to finish. ` +
        'Retry in a few seconds: what they do not spend comes back.';
  const err = new BudgetExceededError(message, { code: 'insufficient_quota', headers });
  REFUSALS.set(err, refusal);
  return err;
}

function budgetExceededError(
  ref: CounterRef,
  detail: { readonly amount: MicroUsd; readonly old?: Record<string, unknown> },
): BudgetExceededError {
  const headers = {
    'x-tollgate-budget-scope': ref.scope,
    'x-tollgate-budget-window': ref.window,
    'x-tollgate-budget-reset': new Date(ref.windowEnd).toISOString(),
  };
  const needs = `this request needs up to ${displayUsd(detail.amount)}`;
  const budget = `${WINDOW_ADJECTIVE[ref.window] ?? ref.window} budget`;
  const resets = `it resets at ${utcTime(ref.windowEnd)}`;
  const who = scopeName(ref.scope);
  let message: string;
  if (ref.scope === 'platform') {
    // The platform's own figures are the operator's business, not the caller's.
    message = `The platform's ${budget} is exhausted and ${needs}; ${resets}, or ask an admin to raise it.`;
  } else if (detail.old === undefined) {
    message =
      `Budget exceeded: ${who} has a ${budget} of ${displayUsd(ref.limit ?? 0)} and ${needs}, more than the whole limit; ` +
      `send a smaller request (less context or a lower max_tokens), or ask an admin to raise it (budgets set ${ref.scope} ${ref.window} USD).`;
  } else {
    const spent = num(detail.old.spent);
    const held = num(detail.old.reserved);
    const inFlight = held > 0 ? ` (+${displayUsd(held)} held by requests in flight)` : '';
    message =
      `Budget exceeded: ${who} has spent ${displayUsd(spent)}${inFlight} of its ${displayUsd(ref.limit ?? 0)} ${budget} and ${needs}; ` +
      `${resets}, or ask an admin to raise it (budgets set ${ref.scope} ${ref.window} USD).`;
  }
  return new BudgetExceededError(message, { code: 'insufficient_quota', headers });
}

/** The caller-facing denial for a scope whose circuit is open (from the circuit item as it was). */
export function circuitOpen(ref: CircuitRef, old: Record<string, unknown> | undefined, now: number): CircuitOpenError {
  const until = num(old?.openUntil);
  const byAck = until >= UNTIL_ACKNOWLEDGED;
  const headers: Record<string, string> = {
    'x-tollgate-circuit-scope': ref.scope,
    'x-tollgate-circuit-closes-at': byAck ? 'on-acknowledgement' : new Date(until).toISOString(),
  };
  if (!byAck) headers['Retry-After'] = String(Math.max(1, Math.ceil((until - now) / 1000)));
  // An SDK's automatic retries cannot outlast an open circuit; the caller (or an operator) must act.
  headers['x-should-retry'] = 'false';
  const when = byAck ? 'it stays open until an admin acknowledges it' : `it closes at ${utcTime(until)} by itself`;
  const why = ref.scope === 'platform' ? '' : typeof old?.reason === 'string' ? ` (${old.reason})` : '';
  return new CircuitOpenError(
    `The spend circuit breaker for ${ref.scope} is open${why}; ${when}, or an admin can reset it (circuits reset ${ref.scope} --ack "…").`,
    { code: 'circuit_open', headers },
  );
}

/** The caller-facing denial of the loop guard, from the fingerprint's item as it was. */
export function loopDetected(check: LoopCheck, old: Record<string, unknown> | undefined): LoopDetectedError {
  const count = num(old?.[`n${check.window}`]);
  const minutes = Math.round(check.windowMs / 60_000);
  const repeats = count >= check.maxRepeats;
  const blockMs = failureBlockMs(num(old?.fails), check.maxFailures, check.windowMs);
  const retryAt = repeats ? check.windowEnd : num(old?.lastFailAt) + blockMs;
  const lastStatus = typeof old?.lastStatus === 'number' ? old.lastStatus : undefined;
  // Copies are counted, presumed failed, when admitted: with no failure stamped (lastFailAt), the streak is
  // copies still in flight — nothing failed, and a retry passes once one of them is answered.
  if (!repeats && old?.lastFailAt === undefined) {
    return new LoopDetectedError(
      `Loop guard: ${num(old?.fails)} identical copies of this request are in flight for ${check.owner} (last through key ${check.keyId}), ` +
        `not answered yet; at most ${Math.min(check.maxFailures, check.maxRepeats)} may be unanswered at once. Retry when one is answered.`,
      { code: 'loop_detected', headers: { 'Retry-After': '1', 'x-should-retry': 'true' } },
    );
  }
  const message = repeats
    ? `Loop detected: this request (or a near-copy) was sent ${count} times within ${minutes} minutes by ${check.owner} (last through key ${check.keyId}) (at most ${check.maxRepeats}); ` +
      'change the request or wait before retrying.'
    : `Loop detected: this request failed upstream ${num(old?.fails)} times in a row${lastStatus === undefined ? '' : ` (the provider answered ${lastStatus} last)`} for ${check.owner} (last through key ${check.keyId}); ` +
      `it is refused for ${Math.round(blockMs / 60_000)} minutes after the last failure (doubling with each failed retry).`;
  const err = new LoopDetectedError(message, {
    code: 'loop_detected',
    headers: { 'Retry-After': String(Math.max(1, Math.ceil((retryAt - check.now) / 1000))), 'x-should-retry': 'false' },
  });
  if (!repeats) err.streak = { fails: num(old?.fails), blockMinutes: Math.round(blockMs / 60_000), ...(lastStatus === undefined ? {} : { lastStatus }) };
  return err;
}

/** The caller-facing denial of the spend-velocity breaker (the pipeline then opens the circuit and alerts). */
export function velocityTripped(charge: VelocityCharge, old: Record<string, unknown> | undefined, now: number): SpendVelocityError {
  const spent = num(old?.v);
  const retryS = Math.max(1, Math.ceil((charge.windowEnd - now) / 1000));
  return new SpendVelocityError(
    `The spend circuit breaker for ${charge.scope} is open: ${displayUsd(spent)} admitted within a few minutes, over its velocity ` +
      `ceiling of ${displayUsd(charge.ceilingMicros)} (a runaway loop?); stop the agent and check what it repeats, then wait for the ` +
      `cooldown or ask an admin to reset it (circuits reset ${charge.scope} --ack "…").`,
    { scope: charge.scope, window: charge.window, windowEnd: charge.windowEnd, spentMicros: spent, ceilingMicros: charge.ceilingMicros },
    {
      code: 'circuit_open',
      headers: {
        'Retry-After': String(retryS),
        'x-should-retry': 'false',
        'x-tollgate-circuit-scope': charge.scope,
        'x-tollgate-circuit-cause': 'velocity',
      },
    },
  );
}

/** The caller-facing denial for buckets without capacity now, with OpenAI-style rate-limit headers. */
export function rateLimited(
  denied: ReadonlyArray<{ charge: RateCharge; inc: number; oldTat: number | undefined }>,
  nowUs: number,
): RateLimitError {
  const retryMs = Math.max(...denied.map((d) => gcraRetryAfterMs(d.oldTat, nowUs, d.inc)), 1);
  const headers: Record<string, string> = {
    'Retry-After': String(Math.max(1, Math.ceil(retryMs / 1000))),
    'retry-after-ms': String(retryMs),
  };
  for (const { charge, oldTat } of denied) {
    headers[`x-ratelimit-limit-${charge.dimension}`] = String(charge.limitPerMinute);
    headers[`x-ratelimit-remaining-${charge.dimension}`] = String(gcraRemaining(oldTat, nowUs, charge.limitPerMinute));
    headers[`x-ratelimit-reset-${charge.dimension}`] = formatResetDuration(gcraResetMs(oldTat, nowUs));
  }
  const what = denied
    .map(({ charge }) => `${charge.limitPerMinute.toLocaleString('en-US')} ${charge.dimension} per minute (this request needs ${charge.amount.toLocaleString('en-US')})`)
    .join(' and ');
  return new RateLimitError(
    `Rate limit reached for key ${denied[0]?.charge.keyId}: its ${what} are used up; retry in ${formatResetDuration(retryMs)}, ` +
      `or ask an admin to raise the key's limit (keys create --rpm/--tpm).`,
    { code: 'rate_limit_exceeded', headers },
  );
}

/**
 * A charge larger than the bucket: it can never pass, so nothing is written and no Retry-After is given (the
 * caller gets `x-should-retry: false`), and the message says what would let it through.
 */
export function requestTooLarge(charge: RateCharge): RateLimitError {
  const n = (v: number) => v.toLocaleString('en-US');
  const knob = charge.dimension === 'tokens' ? 'tpm' : 'rpm';
  return new RateLimitError(
    `Request too large for key ${charge.keyId}: it needs ${n(charge.amount)} ${charge.dimension} but the key's limit is ` +
      `${n(charge.limitPerMinute)} ${charge.dimension} per minute, so retrying can never succeed; send less context or a ` +
      `smaller output cap, or have an admin raise the key's ${knob} (keys create --${knob}, TOLLGATE_DEFAULT_KEY_${knob.toUpperCase()}).`,
    {
      code: 'rate_limit_exceeded',
      headers: {
        [`x-ratelimit-limit-${charge.dimension}`]: String(charge.limitPerMinute),
      },
    },
  );
}

