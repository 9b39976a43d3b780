import { jsonLogger, powertoolsLogger, REDACTED, redactSecrets } from '../../lambda/core/log';
import type { RequestEvent } from '../../lambda/http/app';
import { createRequestLogObserver, requestLogFields } from '../../lambda/observability/request-log';

const billed: RequestEvent = {
  requestId: 'req_9',
  method: 'POST',
  path: '/v1/messages',
  status: 200,
  durationMs: 1200,
  upstreamMs: 1100,
  principal: { userId: 'alice', keyId: 'key_a', orgId: 'acme' },
  budget: { scope: 'user:alice', remainingUsd: '4.250000' },
  usage: {
    requestId: 'req_9',
    timestamp: '2026-11-23T02:00:00.000Z',
    userId: 'alice',
    keyId: 'key_a',
    orgId: 'acme',
    provider: 'anthropic',
    model: 'anthropic/claude-sonnet-4',
    requestType: 'messages',
    endpoint: '/v1/messages',
    stream: true,
    usage: { inputTokens: 900, outputTokens: 100, cachedInputTokens: 400, cacheWriteTokens: 0 },
    costMicros: 4_321,
    costEstimated: false,
    outcome: 'ok',
    httpStatus: 200,
    durationMs: 1200,
    byok: false,
  },
};

describe('request log line', () => {
  it('when a billed request finishes, one info line carries who, what, cost in micro-USD and dollars, outcome and timings', () => {
    const lines: string[] = [];
    createRequestLogObserver(jsonLogger({ sink: (l) => lines.push(l) }))(billed);
    expect(lines).toHaveLength(1);
    expect(JSON.parse(lines[0]!)).toMatchObject({
      level: 'info',
      message: 'request',
      requestId: 'req_9',
      userId: 'alice',
      keyId: 'key_a',
      orgId: 'acme',
      provider: 'anthropic',
      model: 'anthropic/claude-sonnet-4',
      inputTokens: 900,
      outputTokens: 100,
      cachedInputTokens: 400,
      costMicros: 4321,
      costUsd: '0.004321',
      outcome: 'ok',
      durationMs: 1200,
      upstreamMs: 1100,
      budgetScope: 'user:alice',
      budgetRemainingMicros: 4_250_000,
    });
  });

  it('when a request is refused, the line is a warning with the error class and no cost fields', () => {
    const fields = requestLogFields({ requestId: 'r', method: 'POST', path: '/v1/chat/completions', status: 401, durationMs: 2, error: { kind: 'authentication', code: 'invalid_api_key', message: 'bad key' } });
    expect(fields).toEqual({ requestId: 'r', method: 'POST', path: '/v1/chat/completions', status: 401, durationMs: 2, outcome: 'rejected', errorClass: 'auth', errorKind: 'authentication', errorCode: 'invalid_api_key', refusalReason: 'invalid_key', refusalScope: '-' });
    const lines: string[] = [];
    createRequestLogObserver(jsonLogger({ sink: (l) => lines.push(l) }))({ requestId: 'r', method: 'GET', path: '/x', status: 503, durationMs: 1, error: { kind: 'unavailable', message: 'down' } });
    expect(JSON.parse(lines[0]!).level).toBe('error');
  });
});

describe('secret redaction', () => {
  it('when fields name credentials or values look like API keys, they are replaced and other fields are kept', () => {
    expect(
      redactSecrets({
        authorization: 'Bearer sk-tg-abc',
        apiKey: 'anything',
        note: 'caller sent sk-proj-ABCDEFGHIJKLMNOP by mistake',
        nested: [{ 'x-api-key': 'v' }, 'Bearer eyJhbGciOi'],
        inputTokens: 12,
        keyId: 'key_123',
      }),
    ).toEqual({
      authorization: REDACTED,
      apiKey: REDACTED,
      note: `caller sent ${REDACTED} by mistake`,
      nested: [{ 'x-api-key': REDACTED }, REDACTED],
      inputTokens: 12,
      keyId: 'key_123',
    });
  });

  it('when the Powertools logger writes a line, it is structured JSON with the service, the fields, and no secret', () => {
    const out: string[] = [];
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
      out.push(String(chunk));
      return true;
    });
    try {
      const log = powertoolsLogger({ serviceName: 'tollgate-gateway', persistentKeys: { stage: 'test' } });
      log.log('info', 'request', { requestId: 'req_1', costMicros: 5, error: 'upstream said: invalid key sk-upstream-SECRET-123456' });
      log.log('debug', 'dropped below info');
    } finally {
      spy.mockRestore();
    }
    const lines = out.join('').trim().split('\n');
    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]!);
    expect(line).toMatchObject({ level: 'INFO', message: 'request', service: 'tollgate-gateway', stage: 'test', requestId: 'req_1', costMicros: 5 });
    expect(lines[0]).not.toContain('SECRET');
  });
});
