/**
 * The request path after authentication: reserve → forward → settle.
 *
 *   caller ──► reserve (1 ledger write: rate buckets + every budget counter or pool + the hold)
 *                 │ denied: 429, nothing written
 *                 ▼
 *              forward to the provider ──► bytes to the caller as they arrive
 *                 │                           (budget read runs alongside the upstream call)
 *                 ▼ after the last byte
 *              settle (1 ledger write: drop the hold, add the actual cost, write the usage record)
 *
 * Every failure after the hold (provider error, timeout, client gone) still settles: the hold is released and
 * the failure recorded. A stream that ends without reported usage is charged its reservation, never $0.
 *
 * Guardrails ride in the same two writes: reserve also counts the request's fingerprint for the loop guard, and
 * reads the scopes' circuits just before its transaction (429 `circuit_open` / `loop_detected`, nothing
 * forwarded); settle also
 * records the upstream outcome on the fingerprint. Tier alerts and circuit trips are decided after settle,
 * off the hot path.
 *
 * The parts, one file each:
 *   types.ts         the contract with the HTTP and routing layers (BillableCall, CallOutcome, Settle)
 *   limits-cache.ts  budget limits and loop overrides, cached per instance
 *   admission.ts     scopes, counters, circuits, rate charges, output cap and the hold of a call
 *   budget-view.ts   the remaining-budget headers (a conservative bound, read after the hold) and rate headers
 *   stream-relay.ts  a provider stream to the caller: preamble held back, errors noted
 *   settle.ts        what a call cost, and the one write that settles it
 *   guard-alerts.ts  loop, velocity, overshoot and tier alerts after the response
 */
import type { ProviderResult } from '../../providers/contract';
import type { Principal } from '../auth';
import { byokScopesOf } from '../byok/scope';
import { asTollgateError, LoopDetectedError, SpendVelocityError, type TollgateError, UpstreamError } from '../errors';
import { type DefaultLimits, NO_DEFAULT_LIMITS } from '../guardrails/defaults';
import { isEmptyAnswer, loopCheckFor, type LoopCheck, repeatedTurns, type RepeatedTurn, requestFingerprint } from '../guardrails/loop-guard';
import { loopSettingsFor } from '../guardrails/settings';
import { baselineHourKey, VelocityBaselines, velocityScopes } from '../guardrails/velocity';
import { formatUsd } from '../money';
import { costOf } from '../pricing';
import type { CircuitRef, CounterRef, CounterValue, Reservation } from '../stores';
import type { BudgetLimits, ScopeId, UsageOutcome } from '../types';
import { windowBounds } from '../windows';
import { admissionOf, circuitsFor, countersFor, scopesOf } from './admission';
import { budgetHeaders, BudgetView, rateHeaders } from './budget-view';
import { GuardAlerts, repeatedTurnError } from './guard-alerts';
import { LimitsCache } from './limits-cache';
import { Settler } from './settle';
import { startStream } from './stream-relay';
import type { BillableCall, CallOutcome, PipelineOptions, SettleOptions, Settlement } from './types';

export { STALE_LIMITS_MS } from './limits-cache';
export { rateHeaders } from './budget-view';
export type { BillableCall, CallOutcome, PipelineOptions, Settle, SettleOptions } from './types';

export class RequestPipeline {
  private readonly velocity: VelocityBaselines | undefined;
  private readonly defaults: DefaultLimits;
  private readonly cache: LimitsCache;
  private readonly budgets: BudgetView;
  private readonly alerts: GuardAlerts;
  private readonly settler: Settler;

  constructor(private readonly options: PipelineOptions) {
    const v = options.guardrails?.settings.velocity;
    this.velocity = v?.enabled ? new VelocityBaselines(v) : undefined;
    this.defaults = options.defaults ?? NO_DEFAULT_LIMITS;
    this.cache = new LimitsCache(options.ledger, options.clock, options.limitsCacheMs, this.defaults);
    this.budgets = new BudgetView(options.ledger, options.clock, options.platformShards);
    this.alerts = new GuardAlerts(options.guardrails, options.ledger, options.clock, options.log);
    this.settler = new Settler(options, this.alerts);
  }

  /** Scopes a principal's spend counts toward, tightest first in messages. */
  scopesOf(principal: Pick<Principal, 'keyId' | 'userId' | 'orgId'>): ScopeId[] {
    return scopesOf(principal);
  }

  /** Effective budget limits of the given scopes (their own, or the defaults), cached; see LimitsCache. */
  limitsOf(scopes: readonly ScopeId[]): Promise<Map<ScopeId, BudgetLimits>> {
    return this.cache.limitsOf(scopes);
  }

  /**
   * Starts the reads `run` will need for this principal (limits of its platform and BYOK scopes, its loop
   * overrides) so they run alongside other lookups (the BYOK key) instead of after them: a cold key then
   * costs two sequential round trips before the reserve, not three. Never rejects; `run` sees any failure.
   */
  prefetch(principal: Principal): void {
    void this.cache.limitsOf([...scopesOf(principal), ...byokScopesOf(principal)]).catch(() => undefined);
    if (this.options.guardrails) void this.cache.loopOverridesOf(principal.keyId).catch(() => undefined);
  }

  /** The loop guard's fingerprint of a validated request body (BillableCall.fingerprint). */
  fingerprintOf(body: Readonly<Record<string, unknown>>): string {
    return requestFingerprint(body);
  }

  /** The turn a conversation keeps repeating, if it repeats one often enough to be a loop (BillableCall.repeatedTurn). */
  repeatedTurnOf(body: Readonly<Record<string, unknown>>): RepeatedTurn | undefined {
    const guard = this.options.guardrails;
    return guard ? repeatedTurns(body, guard.settings.loop.maxTurnRepeats) : undefined;
  }

  /** The circuit items a request must find closed: one per scope, the platform's in the request's shard. */
  circuitsFor(scopes: readonly ScopeId[], requestId: string): CircuitRef[] {
    return circuitsFor(scopes, requestId, this.options.platformShards);
  }

  /** Current values of counters (for usage reports). */
  readCounters(refs: readonly CounterRef[]): Promise<CounterValue[]> {
    return this.options.ledger.readCounters(refs);
  }

  /** Forgets cached limits (after an admin change in this process). */
  invalidateLimits(): void {
    this.cache.invalidate();
  }

  /** Every counter a request touches: each scope × each window; limits attached where set. */
  countersFor(scopes: readonly ScopeId[], limits: Map<ScopeId, BudgetLimits>, now: number, requestId: string): CounterRef[] {
    return countersFor(scopes, limits, now, requestId, this.options.platformShards);
  }

  async run(call: BillableCall): Promise<CallOutcome> {
    const { clock, ledger } = this.options;
    // The arrival time is the hold's time too, so the usage record of a late settle and the sweeper's
    // "abandoned" record share a key and the settle replaces it.
    const now = call.startedAt;
    const { principal } = call;
    // BYOK spend is the caller's own money: only their BYOK budget, never platform, org or platform-funded ones.
    const scopes = call.byok ? byokScopesOf(principal) : scopesOf(principal);
    const guard = this.options.guardrails;
    const loopWanted = guard !== undefined && call.fingerprint !== undefined;
    const [limits, loopOverrides] = await Promise.all([
      this.cache.limitsOf(scopes),
      loopWanted ? this.cache.loopOverridesOf(principal.keyId) : Promise.resolve(undefined),
    ]);
    const loop: LoopCheck | undefined =
      guard && call.fingerprint !== undefined
        ? loopCheckFor(
            {
              keyId: principal.keyId,
              // Keyed by user: the same loop through several keys is one loop, and a service acting for
              // many users sees each user's requests apart.
              userId: principal.userId,
              model: call.model.id,
              bodyFingerprint: call.fingerprint,
            },
            now,
            loopSettingsFor(guard.settings.loop, loopOverrides),
          )
        : undefined;
    if (guard && call.repeatedTurn) {
      const err = repeatedTurnError(call.repeatedTurn, principal.keyId);
      return { kind: 'error', error: err, headers: {}, after: () => this.alerts.alertRepeatedTurn(call, call.repeatedTurn!, err).then(() => undefined) };
    }
    const counters = this.countersFor(scopes, limits, now, call.requestId);
    const { cap, rateCharges, amount, velocityAmount } = admissionOf(call, {
      defaults: this.defaults,
      minOutputTokens: this.options.minOutputTokens ?? 1_024,
      ...this.budgets.remainingOf(counters),
    });
    const velocity = this.velocity && guard && !call.byok ? this.velocity.chargesFor(scopes, now, velocityAmount) : [];

    // Throws 429 (rate, budget, open circuit) or 503 before anything reaches the provider; a loop becomes a
    // 429 whose alert is recorded after the response.
    let reservation: Reservation;
    try {
      reservation = await ledger.reserve({
        requestId: call.requestId,
        now,
        expiresAt: now + this.options.holdTtlMs,
        amount,
        counters,
        rateCharges,
        ...(guard ? { circuits: this.circuitsFor(scopes, call.requestId) } : {}),
        ...(loop ? { loop } : {}),
        ...(velocity.length ? { velocity } : {}),
        context: {
          keyId: principal.keyId,
          userId: principal.userId,
          ...(principal.orgId ? { orgId: principal.orgId } : {}),
          model: call.model.id,
          provider: call.model.provider,
          requestType: call.requestType,
          endpoint: call.endpoint,
          ...(call.stream ? { stream: true } : {}),
          ...(call.byok ? { byok: true } : {}),
        },
      });
    } catch (err) {
      if (err instanceof LoopDetectedError && loop && guard) {
        return { kind: 'error', error: err, headers: {}, after: () => this.alerts.alertLoop(call, loop, err).then(() => undefined) };
      }
      if (err instanceof SpendVelocityError && guard) {
        const refused = this.alerts.velocityRefusal(err);
        return { kind: 'error', error: refused, headers: {}, after: () => this.alerts.recordVelocityTrip(call, refused).then(() => undefined) };
      }
      throw err;
    }

    // The limited counters after the hold, read while the provider works: they tell settle whether any alert
    // tier is within reach, and the answer's remaining-budget headers (which wait for this read only when the
    // provider answers first).
    const { afterHold, remaining } = this.budgets.readBack(reservation, limits);
    void this.readBaselines(scopes, now);

    const upstreamCall = upstreamSignal(this.options.upstreamTimeoutMs, call.stream ? call.clientSignal : undefined);
    const { signal } = upstreamCall;
    const baseHeaders = rateHeaders(reservation.rateStates);
    const settleWith = (s: Settlement) => (o?: SettleOptions) => {
      upstreamCall.done();
      const settling = this.settler.settle(call, reservation, o?.routedAround ? { ...s, routedAround: true } : s, { limits, afterHold });
      // A later request's remaining-budget read waits for it (budget-view.ts).
      this.budgets.noteSettle(reservation, settling);
      return settling;
    };
    const failureOutcome = (): UsageOutcome =>
      call.clientSignal.aborted ? 'client_disconnected' : upstreamCall.timedOut() ? 'timeout' : 'upstream_error';
    const failed = (error: TollgateError, s: Omit<Settlement, 'endedAt'>): CallOutcome => ({
      kind: 'error',
      error,
      headers: baseHeaders,
      after: settleWith({ ...s, endedAt: clock.now(), ...(error instanceof UpstreamError && error.upstreamStatus ? { upstreamStatus: error.upstreamStatus } : {}) }),
    });

    let result: ProviderResult;
    try {
      result = await call.invoke({ signal, ...(cap.chosenByGateway ? { maxOutputTokens: cap.maxOutputTokens } : {}) });
    } catch (err) {
      // A request that reached the provider and lost its answer (cut short, timed out after it was sent) may
      // have been billed: charged its reservation. An error answer or an unreachable upstream costs nothing.
      const billable = err instanceof UpstreamError && err.mayHaveOutput;
      const error = upstreamCall.timedOut() && !call.clientSignal.aborted
        ? new UpstreamError(`The provider did not answer within ${this.options.upstreamTimeoutMs} ms.`, { cause: err, mayHaveOutput: billable })
        : asTollgateError(err);
      // Nothing reached the provider (a request its translator cannot express): released at $0, the loop
      // guard hears nothing.
      if (isGatewayRefusal(error)) return failed(error, { outcome: 'rejected', usage: undefined, httpStatus: error.status, mayHaveOutput: false });
      this.options.log.log('warn', 'upstream call failed', { requestId: call.requestId, model: call.model.id, status: error.status, error: error.message });
      return failed(error, { outcome: failureOutcome(), usage: undefined, httpStatus: error.status, mayHaveOutput: billable });
    }

    if (result.kind === 'json') {
      upstreamCall.done();
      const cost = result.usage ? costOf(call.model.price, result.usage) : reservation.amount;
      return {
        kind: 'json',
        body: result.body,
        headers: { ...baseHeaders, 'x-tollgate-cost-usd': formatUsd(cost), ...budgetHeaders(await remaining(amount - cost)) },
        // A caller that left while the provider answered is billed like any other (the provider billed us).
        after: settleWith({
          outcome: call.clientSignal.aborted ? 'client_disconnected' : 'ok',
          usage: result.usage,
          httpStatus: 200,
          endedAt: clock.now(),
          mayHaveOutput: true,
          emptyAnswer: loop !== undefined && isEmptyAnswer(result.body),
        }),
      };
    }

    // A stream is charged at the usage it reported, else its reservation: the gateway cannot prove the
    // provider spent nothing, even when it failed before any output.
    const upstream = result;
    const started = await startStream(upstream.body, {
      clock,
      failureOutcome,
      clientSignal: call.clientSignal,
      abortUpstream: () => upstreamCall.abort(),
    }, upstream.watch);
    if (started.kind === 'broken') {
      const error = asTollgateError(started.cause);
      return failed(error instanceof UpstreamError ? error : new UpstreamError('The provider stream failed before any output.', { cause: started.cause }), {
        outcome: failureOutcome(),
        usage: upstream.usage(),
        httpStatus: 502,
        mayHaveOutput: true,
      });
    }
    if (started.kind === 'provider_error') {
      const early = started.error;
      this.options.log.log('warn', 'provider error inside a 200 stream', { requestId: call.requestId, model: call.model.id, type: early.type });
      return failed(new UpstreamError(early.message, { status: early.status, code: early.type, upstreamStatus: early.status }), {
        // A stream cut before any output (closed without its end marker) says so.
        outcome: upstream.cut?.() ? 'stream_incomplete' : 'upstream_error',
        usage: upstream.usage(),
        httpStatus: early.status,
        mayHaveOutput: true,
      });
    }
    return {
      kind: 'stream',
      body: started.body,
      headers: { ...baseHeaders, ...budgetHeaders(await remaining(0)) },
      after: (o?: SettleOptions) => {
        const ended = started.ended();
        const outcome = ended.outcome === 'upstream_error' && upstream.cut?.() ? 'stream_incomplete' : ended.outcome;
        return settleWith({ outcome, usage: upstream.usage(), httpStatus: 200, endedAt: ended.endedAt, mayHaveOutput: true })(o);
      },
    };
  }

  /**
   * Reads the velocity baselines (the previous hour's spend) this instance lacks, off the critical path (the
   * provider is working meanwhile); until read, the floor alone is the ceiling.
   */
  private async readBaselines(scopes: readonly ScopeId[], now: number): Promise<void> {
    if (!this.velocity) return;
    const missing = this.velocity.missing(velocityScopes(scopes), now);
    if (missing.length === 0) return;
    const hourKey = baselineHourKey(now);
    const prev = now - 3_600_000;
    try {
      const values = await this.options.ledger.readCounters(
        missing.map((scope) => ({ scope, window: 'hour' as const, windowKey: hourKey, windowEnd: windowBounds('hour', prev).end })),
      );
      for (const scope of missing) this.velocity.remember(scope, now, values.find((v) => v.ref.scope === scope)?.spent ?? 0);
    } catch (err) {
      this.options.log.log('warn', 'velocity baseline read failed', { error: err instanceof Error ? err.message : String(err) });
    }
  }
}

/**
 * A failure of the gateway's own making before the provider was called (a request its translator cannot
 * express, a bad header value): a 4xx that is not the provider's answer.
 */
function isGatewayRefusal(error: TollgateError): boolean {
  return !(error instanceof UpstreamError) && error.status >= 400 && error.status < 500;
}

/**
 * The upstream call's signal: aborted when the upstream timeout passes (reason: a TimeoutError, as
 * AbortSignal.timeout gives), when the client leaves (streams only; its reason), or by `abort` (the relay).
 * One controller and one timer instead of AbortSignal.timeout and AbortSignal.any per request; `done` clears
 * them once the answer is read (JSON) or the request settles (streams, failures).
 */
function upstreamSignal(timeoutMs: number, client: AbortSignal | undefined) {
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort(new DOMException('The operation was aborted due to timeout', 'TimeoutError'));
  }, timeoutMs);
  timer.unref();
  const onClient = () => controller.abort(client?.reason);
  if (client?.aborted) onClient();
  else client?.addEventListener('abort', onClient, { once: true });
  return {
    signal: controller.signal,
    timedOut: () => timedOut,
    abort: () => controller.abort(),
    done: () => {
      clearTimeout(timer);
      client?.removeEventListener('abort', onClient);
    },
  };
}
