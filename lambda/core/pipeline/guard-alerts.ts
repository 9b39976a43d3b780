/**
 * What the guardrails do after a request is refused or settled, off the caller's critical path: the alerts
 * of a loop, a repeated turn, a spend-velocity trip, an overshoot and a crossed budget tier, and the circuits
 * they open. Every failure here is logged, never the caller's problem.
 */
import type { Clock } from '../clock';
import { LoopDetectedError, SpendVelocityError } from '../errors';
import { crossingsOf, recordCrossings } from '../guardrails/alerts';
import type { LoopCheck, RepeatedTurn } from '../guardrails/loop-guard';
import { countersPastLimit, overshootAlert, overshootOf } from '../guardrails/overshoot';
import type { Logger } from '../log';
import { displayUsd, type MicroUsd } from '../money';
import type { CounterValue, Ledger, Reservation } from '../stores';
import type { BudgetLimits, ScopeId } from '../types';
import type { BillableCall, PipelineGuardrails } from './types';

export class GuardAlerts {
  constructor(
    private readonly guard: PipelineGuardrails | undefined,
    private readonly ledger: Pick<Ledger, 'readCounters'>,
    private readonly clock: Clock,
    private readonly log: Logger,
  ) {}

  /** The velocity refusal as the caller sees it: Retry-After is the circuit's cooldown, not the window's end. */
  velocityRefusal(err: SpendVelocityError): SpendVelocityError {
    const cooldownMs = this.guard?.settings.velocity?.cooldownMs ?? 0;
    return new SpendVelocityError(err.message, err.trip, {
      code: 'circuit_open',
      headers: { ...err.headers, 'Retry-After': String(Math.max(1, Math.ceil(cooldownMs / 1000))) },
    });
  }

  /**
   * After a velocity refusal: counts the trip (once per velocity window) and opens the scope's circuit — for
   * the cooldown on the day's first trip, until an operator acknowledges it on a later one — with one alert.
   */
  async recordVelocityTrip(call: BillableCall, err: SpendVelocityError): Promise<void> {
    const guard = this.guard;
    const settings = guard?.settings.velocity;
    if (!guard || !settings) return;
    const { scope, window, spentMicros, ceilingMicros } = err.trip;
    const now = this.clock.now();
    const day = new Date(now).toISOString().slice(0, 10);
    try {
      const trips = await guard.store.countVelocityTrip(scope, day, window);
      if (trips === undefined) return;
      const escalate = trips >= 2;
      const why = `${displayUsd(spentMicros)} within ${Math.round(settings.windowMs / 60_000)} minutes, over its ceiling of ${displayUsd(ceilingMicros)}`;
      const alert = {
        id: `velocity-${call.requestId}`,
        at: now,
        type: escalate ? 'spend_velocity_escalation' : 'spend_velocity',
        severity: 'critical' as const,
        scope,
        summary: escalate
          ? `${scope} tripped the spend-velocity breaker again today (${why}); its circuit is open until an operator acknowledges it`
          : `${scope} tripped the spend-velocity breaker (${why}); its circuit is open until ${new Date(now + settings.cooldownMs).toISOString()}`,
        details: { scope, keyId: call.principal.keyId, userId: call.principal.userId, model: call.model.id, spentMicros, ceilingMicros, trips },
      };
      const fresh = await guard.store.recordAlert(alert, {
        dedupeKey: `velocity#${day}#w${window}`,
        dedupeUntil: err.trip.windowEnd + settings.cooldownMs,
        openCircuit: {
          scope,
          cause: escalate ? 'escalation' : 'velocity',
          openedAt: now,
          ...(escalate ? {} : { closesAt: now + settings.cooldownMs }),
          reason: escalate ? 'spend velocity tripped twice today' : 'spend velocity over its ceiling',
        },
      });
      if (!fresh) return;
      this.log.log('error', 'guardrail alert', { requestId: call.requestId, alertType: alert.type, scope, summary: alert.summary, circuitOpened: true });
      if (guard.sink) await guard.sink.publish(alert);
    } catch (e) {
      this.log.log('warn', 'velocity trip record failed', { requestId: call.requestId, error: e instanceof Error ? e.message : String(e) });
    }
  }

  /** Records the alert of a repeated-turn loop, once per user, turn and loop window. */
  async alertRepeatedTurn(call: BillableCall, turn: RepeatedTurn, err: LoopDetectedError): Promise<void> {
    const guard = this.guard;
    if (!guard) return;
    const now = this.clock.now();
    const windowMs = guard.settings.loop.windowMs;
    const window = Math.floor(now / windowMs);
    const sample = turn.sample.replace(/[^A-Za-z0-9]+/g, '').slice(0, 40);
    await this.recordLoopAlert(
      call,
      now,
      `Loop guard stopped user ${call.principal.userId} (key ${call.principal.keyId}) on ${call.model.id}: ${err.message}`,
      { kind: `repeated_${turn.kind}`, repeats: turn.count },
      { dedupeKey: `loopturn#${call.model.id}#${sample}#${window}`, dedupeUntil: (window + 1) * windowMs },
    );
  }

  /**
   * After settle: records tier alerts and trips circuits. TransactWriteItems returns no new values, so the
   * counters are read again, but only when the read after the hold showed a counter within reach of the
   * first tier: `committed` then included every hold in flight (an upper bound of what they will spend), so
   * far below 80 % nothing can have crossed. A failure here is logged, never the caller's problem.
   */
  async checkTiers(
    call: BillableCall,
    reservation: Reservation,
    cost: MicroUsd,
    ctx: { readonly limits: Map<ScopeId, BudgetLimits>; readonly afterHold: Promise<CounterValue[] | undefined> },
  ): Promise<void> {
    const guard = this.guard;
    if (!guard) return;
    try {
      const before = await ctx.afterHold;
      const overshoot = Math.max(0, cost - reservation.amount);
      const inReach = (values: readonly CounterValue[]) =>
        values.some((v) => {
          const limit = ctx.limits.get(v.ref.scope)?.[v.ref.window];
          return limit !== undefined && v.committed + overshoot >= 0.8 * limit;
        });
      if (before !== undefined && !inReach(before)) return;
      const limited = reservation.counters.filter((c) => c.limit !== undefined);
      if (limited.length === 0) return;
      const values = await this.ledger.readCounters(limited);
      const crossings = crossingsOf(values, ctx.limits, {
        now: this.clock.now(),
        lastReservation: reservation.amount,
        cooldownMs: guard.settings.breaker.cooldownMs,
      });
      if (crossings.length === 0) return;
      const recorded = await recordCrossings(crossings, { store: guard.store, settings: guard.settings.breaker, ...(guard.sink ? { sink: guard.sink } : {}) });
      for (const alert of recorded) {
        this.log.log(alert.severity === 'critical' ? 'error' : 'warn', 'guardrail alert', {
          requestId: call.requestId,
          alertType: alert.type,
          scope: alert.scope,
          summary: alert.summary,
          ...(alert.type !== 'spend_warning' && alert.details.window === 'hour' ? { circuitOpened: true } : {}),
        });
      }
    } catch (err) {
      this.log.log('warn', 'guardrail check failed', { requestId: call.requestId, error: err instanceof Error ? err.message : String(err) });
    }
  }

  /** Records the loop guard's alert (once per fingerprint and window), after the 429 went out. */
  async alertLoop(call: BillableCall, loop: LoopCheck, err: LoopDetectedError): Promise<void> {
    await this.recordLoopAlert(
      call,
      this.clock.now(),
      `Loop guard stopped key ${call.principal.keyId} (user ${call.principal.userId}) on ${call.model.id}: ${err.message}`,
      { fingerprint: loop.fingerprint.slice(0, 12) },
      { dedupeKey: `loop#${loop.fingerprint}#${loop.window}`, dedupeUntil: loop.windowEnd },
    );
  }

  /** A loop guard alert on the user's scope: recorded once per dedupe key, then logged and published. */
  private async recordLoopAlert(
    call: BillableCall,
    at: number,
    summary: string,
    extra: Record<string, string | number>,
    dedupe: { readonly dedupeKey: string; readonly dedupeUntil: number },
  ): Promise<void> {
    const guard = this.guard;
    if (!guard) return;
    const scope: ScopeId = `user:${call.principal.userId}`;
    try {
      const alert = {
        id: `loop-${call.requestId}`,
        at,
        type: 'loop_detected',
        severity: 'warning' as const,
        scope,
        summary,
        details: { keyId: call.principal.keyId, userId: call.principal.userId, model: call.model.id, ...extra },
      };
      const fresh = await guard.store.recordAlert(alert, dedupe);
      if (!fresh) return;
      this.log.log('warn', 'guardrail alert', { requestId: call.requestId, alertType: alert.type, scope, summary: alert.summary });
      if (guard.sink) await guard.sink.publish(alert);
    } catch (e) {
      this.log.log('warn', 'loop alert failed', { requestId: call.requestId, error: e instanceof Error ? e.message : String(e) });
    }
  }

  /**
   * A settle above its reservation (core/guardrails/overshoot.ts): logged, alerted once per request, and the
   * circuit of a scope it took past a limit opens until the window ends. Failures are logged, never thrown.
   */
  async reportOvershoot(
    call: BillableCall,
    reservation: Reservation,
    cost: MicroUsd,
    limits: Map<ScopeId, BudgetLimits>,
  ): Promise<void> {
    const { log, clock } = this;
    log.log('warn', 'settle above its reservation', {
      requestId: call.requestId,
      keyId: call.principal.keyId,
      model: call.model.id,
      reservedMicros: reservation.amount,
      costMicros: cost,
      overshootMicros: overshootOf(reservation.amount, cost),
    });
    const guard = this.guard;
    if (!guard) return;
    try {
      const limited = reservation.counters.filter((c) => c.limit !== undefined);
      const values = limited.length > 0 ? await this.ledger.readCounters(limited) : [];
      const past = countersPastLimit(values, limits)[0];
      const now = clock.now();
      const { alert, circuit } = overshootAlert({
        requestId: call.requestId,
        keyId: call.principal.keyId,
        model: call.model.id,
        reserved: reservation.amount,
        cost,
        now,
        ...(past ? { past } : {}),
      });
      const fresh = await guard.store.recordAlert(alert, {
        dedupeKey: `overshoot#${call.requestId}`,
        dedupeUntil: now + 86_400_000,
        ...(circuit ? { openCircuit: circuit } : {}),
      });
      if (!fresh) return;
      log.log(alert.severity === 'critical' ? 'error' : 'warn', 'guardrail alert', {
        requestId: call.requestId,
        alertType: alert.type,
        scope: alert.scope,
        summary: alert.summary,
        ...(circuit ? { circuitOpened: true } : {}),
      });
      if (guard.sink) await guard.sink.publish(alert);
    } catch (err) {
      log.log('warn', 'overshoot alert failed', { requestId: call.requestId, error: err instanceof Error ? err.message : String(err) });
    }
  }
}


/** The refusal of a conversation that keeps repeating a turn (see core/guardrails/loop-guard.ts `repeatedTurns`). */
export function repeatedTurnError(turn: RepeatedTurn, keyId: string): LoopDetectedError {
  const what = turn.kind === 'assistant' ? 'the same answer' : 'the same tool call with the same result';
  return new LoopDetectedError(
    `Loop detected: this conversation carries ${what} ${turn.count} times ("${turn.sample.slice(0, 60)}"), so it is retrying a ` +
      `failing step (key ${keyId}). Change the approach or start a new conversation; retrying this one will not help.`,
    { code: 'loop_detected', headers: { 'x-should-retry': 'false' } },
  );
}

