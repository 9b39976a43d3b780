/**
 * Settle: the end of every admitted call, whatever happened to it. One ledger write (retried while the store
 * is unreachable) drops the hold, charges what the call cost and writes its usage record; the money rules are
 * the ledger's (store/dynamodb/ledger.ts), the one decided here is what a call cost:
 *
 *   - the provider reported usage: its price;
 *   - no usage, and the provider may have produced output (an answer, a stream that started, a body cut
 *     short): the reservation, the most it could cost — never $0, since the gateway cannot prove it unspent;
 *   - no usage and nothing could have been produced (refused before the provider, connection refused): $0.
 *
 * After the write: the key's lastUsedAt (at most once a minute), the tier alerts and the overshoot alert.
 */
import type { Clock } from '../clock';
import type { Logger } from '../log';
import { costOf } from '../pricing';
import { overshootOf } from '../guardrails/overshoot';
import { settleWithRetries, type SettleRetryOptions } from '../settle-retry';
import type { CounterValue, KeyStore, Ledger, Reservation } from '../stores';
import type { BudgetLimits, ScopeId, UsageRecord } from '../types';
import type { GuardAlerts } from './guard-alerts';
import type { BillableCall, Settlement } from './types';

const LAST_USED_EVERY_MS = 60_000;

export interface SettleContext {
  readonly limits: Map<ScopeId, BudgetLimits>;
  /** The limited counters read after the hold (tells the tier check whether a tier is within reach). */
  readonly afterHold: Promise<CounterValue[] | undefined>;
}

export class Settler {
  private readonly lastTouched = new Map<string, number>();

  constructor(
    private readonly options: {
      readonly ledger: Ledger;
      readonly keys: KeyStore;
      readonly clock: Clock;
      readonly log: Logger;
      readonly settleRetry?: SettleRetryOptions;
    },
    private readonly alerts: GuardAlerts,
  ) {}

  async settle(
    call: BillableCall,
    reservation: Reservation,
    s: Settlement,
    ctx: SettleContext,
  ): Promise<UsageRecord | undefined> {
    const { ledger, log } = this.options;
    const usage = s.usage;
    // No usage from the provider: a failure before any output costs nothing; an answer or stream that may
    // have produced output without reporting usage is charged its reservation (the most it could cost), never $0.
    const cost = usage ? costOf(call.model.price, usage) : s.mayHaveOutput ? reservation.amount : 0;
    const p = call.principal;
    const record: UsageRecord = {
      requestId: call.requestId,
      timestamp: new Date(call.startedAt).toISOString(),
      userId: p.userId,
      keyId: p.keyId,
      ...(p.orgId ? { orgId: p.orgId } : {}),
      provider: call.model.provider,
      model: call.model.id,
      requestType: call.requestType,
      endpoint: call.endpoint,
      stream: call.stream,
      usage: usage ?? { inputTokens: 0, outputTokens: 0, cachedInputTokens: 0, cacheWriteTokens: 0 },
      costMicros: cost,
      costEstimated: usage === undefined && cost > 0,
      ...(overshootOf(reservation.amount, cost) > 0 ? { overshootMicros: overshootOf(reservation.amount, cost) } : {}),
      outcome: s.outcome,
      httpStatus: s.httpStatus,
      durationMs: Math.max(0, s.endedAt - call.startedAt),
      ...(call.userAgent ? { userAgent: call.userAgent.slice(0, 256) } : {}),
      byok: call.byok ?? false,
    };
    const actualTokens = usage ? usage.inputTokens + usage.outputTokens : undefined;
    try {
      await settleWithRetries(
        () =>
          ledger.settle({
            reservation,
            cost,
            ...(actualTokens === undefined ? {} : { actualTokens }),
            usage: record,
            ...(loopOutcomeOf(s) ? { loopOutcome: loopOutcomeOf(s) } : {}),
            ...(loopOutcomeOf(s) === 'failed' && s.upstreamStatus !== undefined ? { loopStatus: s.upstreamStatus } : {}),
          }),
        {
          ...this.options.settleRetry,
          onRetry: (err, attempt) =>
            log.log('warn', 'settle failed; retrying', { requestId: call.requestId, attempt, error: err.message }),
        },
      );
    } catch (err) {
      // The hold stays; after its expiry the sweeper charges its full reservation (never less than this cost
      // unless the answer overshot), and a later settle of this request would still replace that estimate.
      log.log('error', 'settle failed; hold left for the sweeper, which charges the reservation', {
        requestId: call.requestId,
        costMicros: cost,
        reservedMicros: reservation.amount,
        error: err instanceof Error ? err.message : String(err),
      });
      return undefined;
    }
    log.log('info', 'request settled', {
      requestId: call.requestId,
      userId: p.userId,
      keyId: p.keyId,
      model: call.model.id,
      outcome: s.outcome,
      costMicros: cost,
      inputTokens: record.usage.inputTokens,
      outputTokens: record.usage.outputTokens,
      durationMs: record.durationMs,
    });
    await Promise.all([
      this.touchLastUsed(p.keyId, p.key.lastUsedAt),
      this.alerts.checkTiers(call, reservation, cost, ctx),
      record.overshootMicros ? this.alerts.reportOvershoot(call, reservation, cost, ctx.limits) : Promise.resolve(),
    ]);
    return record;
  }


  /** lastUsedAt is written at most once a minute per key, after the response. */
  private async touchLastUsed(keyId: string, storedIso: string | undefined): Promise<void> {
    const now = this.options.clock.now();
    const last = Math.max(this.lastTouched.get(keyId) ?? 0, storedIso ? Date.parse(storedIso) : 0);
    if (now - last < LAST_USED_EVERY_MS) return;
    this.lastTouched.set(keyId, now);
    try {
      await this.options.keys.touchLastUsed(keyId, new Date(now).toISOString());
    } catch (err) {
      this.options.log.log('warn', 'lastUsedAt update failed', { keyId, error: err instanceof Error ? err.message : String(err) });
    }
  }
}

/** What an ended call says about the upstream, for the loop guard's failure streak. */
function loopOutcomeOf(s: Settlement): 'failed' | 'succeeded' | undefined {
  if (s.routedAround || s.outcome === 'client_disconnected' || s.outcome === 'abandoned' || s.outcome === 'rejected') return undefined;
  if (s.outcome !== 'ok' || s.emptyAnswer) return 'failed';
  return 'succeeded';
}
