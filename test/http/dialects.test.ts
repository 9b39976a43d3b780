/**
 * How refusals are rendered per dialect: a 429 no retry can help carries the `type` and header Codex shows
 * (checked against the real Codex binary in test/clients/codex.e2e.test.ts); everything else is unchanged.
 */
import { BudgetExceededError, CircuitOpenError, InvalidRequestError, LoopDetectedError, RateLimitError } from '../../lambda/core/errors';
import { CODEX_MESSAGE_HEADER, errorResponse, headerSafeMessage } from '../../lambda/http/dialects';

const body = (r: { body?: unknown }) => JSON.parse(String(r.body)) as { error: Record<string, unknown>; type?: string };

describe('refusal rendering', () => {
  it('when a budget refusal goes to an OpenAI-dialect caller, it stays a 429 insufficient_quota of type usage_limit_reached with the sentence in the Codex header', () => {
    const err = new BudgetExceededError('Budget exceeded: user:alice has spent $10.00 of its $10.00 daily budget; it resets at 2100-01-02 00:00 UTC, or ask an admin to raise it.', { code: 'insufficient_quota' });
    const r = errorResponse('openai', err);
    expect(r.status).toBe(429);
    expect(body(r).error).toEqual({ message: err.message, type: 'usage_limit_reached', param: null, code: 'insufficient_quota' });
    expect(r.headers).toMatchObject({ 'x-should-retry': 'false', [CODEX_MESSAGE_HEADER]: err.message.slice(0, -1) });
  });

  it('when a loop or an open circuit refuses without hope of a retry, the OpenAI dialect gets the same shape; a loop of copies in flight does not', () => {
    for (const err of [new LoopDetectedError('Loop detected: the same request failed 3 times.', { code: 'loop_detected' }), new CircuitOpenError('Circuit open for user:bob until 12:00.', { code: 'circuit_open' })]) {
      const r = errorResponse('openai', err);
      expect(body(r).error.type).toBe('usage_limit_reached');
      expect(r.headers[CODEX_MESSAGE_HEADER]).toBe(err.message.slice(0, -1));
    }
    const inFlight = errorResponse('openai', new LoopDetectedError('Copies in flight.', { code: 'loop_detected', headers: { 'x-should-retry': 'true', 'retry-after': '1' } }));
    expect(body(inFlight).error.type).toBe('rate_limit_error');
    expect(inFlight.headers[CODEX_MESSAGE_HEADER]).toBeUndefined();
  });

  it('when a refusal can be retried, or is not a 429, or goes to an Anthropic caller, nothing changes', () => {
    const retryable = errorResponse('openai', new RateLimitError('Rate limit reached.', { code: 'rate_limit_exceeded', headers: { 'retry-after': '3' } }));
    expect(body(retryable).error.type).toBe('rate_limit_error');
    expect(retryable.headers[CODEX_MESSAGE_HEADER]).toBeUndefined();
    const bad = errorResponse('openai', new InvalidRequestError('model is required'));
    expect(body(bad).error.type).toBe('invalid_request_error');
    const anthropic = errorResponse('anthropic', new BudgetExceededError('Budget exceeded.', { code: 'insufficient_quota' }));
    expect(body(anthropic)).toEqual({ type: 'error', error: { type: 'rate_limit_error', message: 'Budget exceeded.' } });
    expect(anthropic.headers[CODEX_MESSAGE_HEADER]).toBeUndefined();
  });

  it('when the sentence has typography, line breaks or other characters a header cannot carry, the header has printable ASCII only', () => {
    expect(headerSafeMessage('Needs ≥ 5 × more… “budget” — ask\r\nan admin ☃.')).toBe('Needs >= 5 x more... "budget" - ask an admin ?');
    const long = headerSafeMessage('x'.repeat(5_000));
    expect(long).toHaveLength(1_000);
    expect(long.endsWith('...')).toBe(true);
  });
});
