import type { RequestEvent } from '../../lambda/http/app';
import type { UsageRecord } from '../../lambda/core/types';
import { recordGuardrailEvent } from '../../lambda/observability/guardrail-events';
import { createMetricsObserver, gatewayMetrics } from '../../lambda/observability/metrics-observer';
import { errorClassOf } from '../../lambda/observability/metric-names';

interface EmfLine {
  _aws: { CloudWatchMetrics: { Namespace: string; Dimensions: string[][]; Metrics: { Name: string; Unit: string }[] }[] };
  [key: string]: unknown;
}

/** Runs `fn` and returns the EMF documents Powertools wrote to stdout meanwhile. */
function captureEmf(fn: () => void): EmfLine[] {
  const lines: string[] = [];
  const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    lines.push(String(chunk));
    return true;
  });
  try {
    fn();
  } finally {
    spy.mockRestore();
  }
  return lines
    .join('')
    .split('\n')
    .filter((l) => l.includes('"_aws"'))
    .map((l) => JSON.parse(l) as EmfLine);
}

function usage(overrides: Partial<UsageRecord> = {}): UsageRecord {
  return {
    requestId: 'req_1',
    timestamp: '2026-11-23T02:00:00.000Z',
    userId: 'alice',
    keyId: 'key_a1',
    orgId: 'acme',
    provider: 'openai',
    model: 'gpt-4o-mini',
    requestType: 'chat',
    endpoint: '/v1/chat/completions',
    stream: false,
    usage: { inputTokens: 1200, outputTokens: 300, cachedInputTokens: 200, cacheWriteTokens: 0 },
    costMicros: 1_234_567,
    costEstimated: false,
    outcome: 'ok',
    httpStatus: 200,
    durationMs: 850,
    byok: false,
    ...overrides,
  };
}

function event(overrides: Partial<RequestEvent> = {}): RequestEvent {
  return { requestId: 'req_1', method: 'POST', path: '/v1/chat/completions', status: 200, durationMs: 900, ...overrides };
}

describe('metrics observer', () => {
  it('when a billed request finishes, it publishes one EMF line with every request metric by total and by provider × model', () => {
    const observe = createMetricsObserver({ stage: 'prod', metrics: gatewayMetrics('prod') });
    const [line, ...more] = captureEmf(() =>
      observe(event({ usage: usage(), upstreamMs: 640, principal: { userId: 'alice', keyId: 'key_a1', orgId: 'acme' } })),
    );
    expect(more).toHaveLength(0);
    const directive = line!._aws.CloudWatchMetrics[0]!;
    expect(directive.Namespace).toBe('Tollgate');
    expect(directive.Dimensions).toEqual([
      ['service', 'Stage'],
      ['service', 'Stage', 'Provider', 'Model'],
    ]);
    expect(Object.fromEntries(directive.Metrics.map((m) => [m.Name, m.Unit]))).toEqual({
      RequestCount: 'Count',
      Latency: 'Milliseconds',
      UpstreamLatency: 'Milliseconds',
      TokensProcessed: 'Count',
      InputTokens: 'Count',
      OutputTokens: 'Count',
      CachedInputTokens: 'Count',
      CostUsd: 'None',
    });
    expect(line).toMatchObject({
      service: 'tollgate-gateway',
      Stage: 'prod',
      Provider: 'openai',
      Model: 'gpt-4o-mini',
      RequestCount: 1,
      Latency: 900,
      UpstreamLatency: 640,
      TokensProcessed: 1500,
      InputTokens: 1200,
      OutputTokens: 300,
      CachedInputTokens: 200,
      CostUsd: 1.234567,
      requestId: 'req_1',
      userId: 'alice',
      keyId: 'key_a1',
      orgId: 'acme',
    });
  });

  it('when user and key ids are recorded, they are metadata and never dimensions', () => {
    const observe = createMetricsObserver({ stage: 'dev', metrics: gatewayMetrics('dev') });
    const lines = captureEmf(() => observe(event({ usage: usage(), principal: { userId: 'alice', keyId: 'key_a1' } })));
    for (const line of lines) {
      const dims = line._aws.CloudWatchMetrics[0]!.Dimensions.flat();
      expect(dims).not.toContain('userId');
      expect(dims).not.toContain('keyId');
      expect(line.userId).toBe('alice');
    }
  });

  it('when a request is refused before reaching a provider, it counts the request and the error by class, without model dimensions', () => {
    const observe = createMetricsObserver({ stage: 'dev', metrics: gatewayMetrics('dev') });
    const lines = captureEmf(() =>
      observe(event({ status: 429, error: { kind: 'insufficient_quota', code: 'insufficient_quota', message: 'budget' }, principal: { userId: 'bob', keyId: 'key_b' } })),
    );
    expect(lines).toHaveLength(3);
    const [request, error, refusal] = lines;
    expect(request!._aws.CloudWatchMetrics[0]!.Dimensions).toEqual([['service', 'Stage']]);
    expect(request!.RequestCount).toBe(1);
    expect(request!.CostUsd).toBeUndefined();
    expect(request!.UpstreamLatency).toBeUndefined();
    expect(error!._aws.CloudWatchMetrics[0]!.Dimensions).toEqual([['service', 'Stage', 'ErrorClass']]);
    expect(error).toMatchObject({ ErrorCount: 1, ErrorClass: 'budget', keyId: 'key_b', Stage: 'dev' });
    expect(refusal!._aws.CloudWatchMetrics[0]!.Dimensions).toEqual([['service', 'Stage'], ['service', 'Stage', 'Reason']]);
    expect(refusal).toMatchObject({ Refusals: 1, Reason: 'budget', refusalScope: 'key:key_b', keyId: 'key_b' });
  });

  it('when an upstream fails or the input is bad, no refusal is counted', () => {
    const observe = createMetricsObserver({ stage: 'dev', metrics: gatewayMetrics('dev') });
    const lines = captureEmf(() => {
      observe(event({ status: 502, error: { kind: 'upstream', message: 'boom' }, principal: { userId: 'bob', keyId: 'key_b' } }));
      observe(event({ status: 400, error: { kind: 'invalid_request', code: 'invalid_json', message: 'bad' }, principal: { userId: 'bob', keyId: 'key_b' } }));
    });
    expect(lines.filter((l) => 'Refusals' in l)).toEqual([]);
    expect(lines.map((l) => l.ErrorClass).filter(Boolean)).toEqual(['upstream', 'client']);
  });

  it('when two requests are observed back to back, their metrics are not merged', () => {
    const observe = createMetricsObserver({ stage: 'dev', metrics: gatewayMetrics('dev') });
    const lines = captureEmf(() => {
      observe(event({ requestId: 'a', usage: usage({ costMicros: 100 }) }));
      observe(event({ requestId: 'b', usage: usage({ costMicros: 200, model: 'gpt-4o' }) }));
    });
    expect(lines.map((l) => [l.requestId, l.Model, l.CostUsd, l.RequestCount])).toEqual([
      ['a', 'gpt-4o-mini', 0.0001, 1],
      ['b', 'gpt-4o', 0.0002, 1],
    ]);
  });

  it('when a stream started but the upstream broke off, it is counted as an upstream error', () => {
    const observe = createMetricsObserver({ stage: 'dev', metrics: gatewayMetrics('dev') });
    const lines = captureEmf(() => observe(event({ usage: usage({ outcome: 'stream_incomplete' }) })));
    expect(lines.map((l) => l.ErrorClass)).toEqual([undefined, 'upstream']);
  });
});

describe('error classes', () => {
  it.each([
    [{ error: { kind: 'authentication' as const } }, 'auth'],
    [{ error: { kind: 'permission' as const } }, 'auth'],
    [{ error: { kind: 'insufficient_quota' as const } }, 'budget'],
    [{ error: { kind: 'rate_limit' as const } }, 'rate_limit'],
    [{ error: { kind: 'rate_limit' as const, code: 'loop_detected' } }, 'loop'],
    [{ error: { kind: 'upstream' as const } }, 'upstream'],
    [{ error: { kind: 'invalid_request' as const } }, 'client'],
    [{ error: { kind: 'unavailable' as const } }, 'server'],
    [{ outcome: 'timeout' as const }, 'upstream'],
    [{ outcome: 'client_disconnected' as const }, undefined],
    [{ outcome: 'ok' as const }, undefined],
  ])('when a request ends with %j, its class is %s', (failure, expected) => {
    expect(errorClassOf(failure)).toBe(expected);
  });
});

describe('guardrail events', () => {
  it('when the kill switch activates, it publishes KillSwitchActivated under the guardrails service and stage', () => {
    const [line] = captureEmf(() => recordGuardrailEvent('KillSwitchActivated', { stage: 'prod', count: 3, metadata: { threshold: '100%' } }));
    expect(line!._aws.CloudWatchMetrics[0]).toMatchObject({ Namespace: 'Tollgate', Dimensions: [['service', 'Stage']] });
    expect(line).toMatchObject({ service: 'tollgate-guardrails', Stage: 'prod', KillSwitchActivated: 3, threshold: '100%' });
  });
});
