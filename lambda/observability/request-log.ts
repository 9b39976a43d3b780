/**
 * One structured log line per finished request (`message: "request"`), as a {@link RequestObserver}: the
 * request id, who (user, key, org), what (model, provider, tokens), the cost in integer micro-USD and as a
 * dollar string, the outcome and timings. CloudWatch Logs Insights queries on the dashboard (top users and keys
 * by cost) read these lines; see {@link REQUEST_LOG_MESSAGE}. No secret is ever a field here: keys are named by
 * id, never by value.
 */
import type { Logger, LogLevel } from '../core/log';
import { formatUsd, type MicroUsd, usdToMicros } from '../core/money';
import type { RequestEvent, RequestObserver } from '../http/app';
import { errorClassOf } from './metric-names';
import { refusalOf } from './refusals';

/** The `message` of the per-request line, which the Logs Insights queries filter on. */
export const REQUEST_LOG_MESSAGE = 'request';

/** The fields of the per-request line, flat so Logs Insights discovers each one. */
export function requestLogFields(event: RequestEvent): Record<string, string | number | boolean> {
  const u = event.usage;
  const who = event.principal ?? u;
  const errorClass = errorClassOf({ ...(event.error ? { error: event.error } : {}), ...(u ? { outcome: u.outcome } : {}) });
  const refusal = refusalOf(event);
  const fields: Record<string, string | number | boolean | undefined> = {
    requestId: event.requestId,
    method: event.method,
    path: event.path,
    status: event.status,
    durationMs: event.durationMs,
    upstreamMs: event.upstreamMs,
    userId: who?.userId,
    keyId: who?.keyId,
    orgId: who?.orgId,
    provider: u?.provider,
    model: u?.model,
    stream: u?.stream,
    inputTokens: u?.usage.inputTokens,
    outputTokens: u?.usage.outputTokens,
    cachedInputTokens: u?.usage.cachedInputTokens,
    costMicros: u?.costMicros,
    costUsd: u ? formatUsd(u.costMicros) : undefined,
    costEstimated: u?.costEstimated,
    outcome: u?.outcome ?? (event.error ? 'rejected' : 'ok'),
    errorClass,
    errorKind: event.error?.kind,
    errorCode: event.error?.code,
    refusalReason: refusal?.reason,
    refusalScope: refusal?.scope,
    refusalWindow: refusal?.window,
    budgetScope: event.budget?.scope,
    budgetRemainingUsd: event.budget?.remainingUsd,
    budgetRemainingMicros: event.budget ? microsOrUndefined(event.budget.remainingUsd) : undefined,
  };
  return Object.fromEntries(Object.entries(fields).filter((e): e is [string, string | number | boolean] => e[1] !== undefined));
}

function microsOrUndefined(usd: string): MicroUsd | undefined {
  try {
    return usdToMicros(usd);
  } catch {
    return undefined;
  }
}

/** Logs each request once it is over: info when it succeeded, warn for 4xx-class refusals, error for 5xx. */
export function createRequestLogObserver(log: Logger): RequestObserver {
  return (event) => {
    const level: LogLevel = event.status >= 500 ? 'error' : event.status >= 400 || event.usage?.outcome === 'stream_incomplete' ? 'warn' : 'info';
    log.log(level, REQUEST_LOG_MESSAGE, requestLogFields(event));
  };
}
