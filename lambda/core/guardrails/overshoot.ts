/**
 * Overshoot: a settle whose actual cost is above what its request reserved. The reservation is sized from
 * the output cap the gateway sends upstream, so an overshoot means a provider billed past that cap (or a
 * price changed mid-flight). It is always charged (never clipped), and then:
 *
 *   settle cost > reservation ──► usage record `overshootMicros` + warn log + metric (request observer)
 *                             ──► alert `spend_overshoot` (once per request)
 *                             ──► any limited counter now past its limit → that scope's circuit opens
 *                                 until the window ends (the next request would be refused anyway)
 */
import { displayUsd, type MicroUsd } from '../money';
import type { Alert, CircuitState, CounterValue } from '../stores';
import type { BudgetLimits, ScopeId } from '../types';
import { windowBounds } from '../windows';

/** What a settle charged above its reservation (0 when within it). */
export function overshootOf(reserved: MicroUsd, cost: MicroUsd): MicroUsd {
  return Math.max(0, cost - reserved);
}

/** Counters a settle pushed past their limit: `committed` (spent + held) above the window's limit. */
export function countersPastLimit(
  values: readonly CounterValue[],
  limits: ReadonlyMap<ScopeId, BudgetLimits>,
): Array<{ readonly value: CounterValue; readonly limit: MicroUsd }> {
  const out: Array<{ value: CounterValue; limit: MicroUsd }> = [];
  for (const value of values) {
    const limit = limits.get(value.ref.scope)?.[value.ref.window];
    if (limit !== undefined && value.committed > limit) out.push({ value, limit });
  }
  return out;
}

/** The alert for one overshoot, with the circuit to open when it took a scope past a limit. */
export function overshootAlert(input: {
  readonly requestId: string;
  readonly keyId: string;
  readonly model: string;
  readonly reserved: MicroUsd;
  readonly cost: MicroUsd;
  readonly now: number;
  readonly past?: { readonly value: CounterValue; readonly limit: MicroUsd };
}): { readonly alert: Alert; readonly circuit?: CircuitState } {
  const over = overshootOf(input.reserved, input.cost);
  const past = input.past;
  const scope: ScopeId = past ? past.value.ref.scope : `key:${input.keyId}`;
  const circuit: CircuitState | undefined = past
    ? {
        scope,
        cause: 'breaker',
        openedAt: input.now,
        closesAt: windowBounds(past.value.ref.window, input.now).end,
        reason: `an answer cost more than reserved and took ${past.value.ref.window} spend past its limit`,
      }
    : undefined;
  const then = past
    ? `; ${scope} is now at ${displayUsd(past.value.committed)} of its ${past.value.ref.window} limit ${displayUsd(past.limit)}, its circuit is open until ${new Date(circuit?.closesAt ?? input.now).toISOString()}`
    : '';
  return {
    alert: {
      id: `overshoot-${input.requestId}`,
      at: input.now,
      type: 'spend_overshoot',
      severity: past ? 'critical' : 'warning',
      scope,
      summary: `Request ${input.requestId} on ${input.model} (key ${input.keyId}) cost ${displayUsd(input.cost)}, ${displayUsd(over)} more than the ${displayUsd(input.reserved)} reserved${then}`,
      details: {
        requestId: input.requestId,
        keyId: input.keyId,
        model: input.model,
        reservedMicros: input.reserved,
        costMicros: input.cost,
        overshootMicros: over,
        ...(past ? { window: past.value.ref.window, limitMicros: past.limit, committedMicros: past.value.committed } : {}),
      },
    },
    ...(circuit ? { circuit } : {}),
  };
}
