import { crossingsOf, tierOf } from '../../lambda/core/guardrails/alerts';
import { parseBudgetNotification } from '../../lambda/core/guardrails/kill-switch';
import { createHash } from 'node:crypto';
import { isEmptyAnswer, loopCheckFor, normalizeVolatile, repeatedTurns, requestFingerprint } from '../../lambda/core/guardrails/loop-guard';
import { DEFAULT_GUARDRAILS, loopSettingsFor } from '../../lambda/core/guardrails/settings';
import type { CounterValue } from '../../lambda/core/stores';
import type { BudgetLimits, ScopeId } from '../../lambda/core/types';
import { windowKey } from '../../lambda/core/windows';
import { BUDGET_NOTIFICATION } from './fixtures';

const T0 = Date.parse('2026-11-23T10:20:00.000Z');


function value(scope: ScopeId, window: 'hour' | 'day' | 'month', spent: number): CounterValue {
  return { ref: { scope, window, windowKey: windowKey(window, T0), windowEnd: 0 }, committed: spent, spent, reserved: 0, requests: 1 };
}

describe('alert tiers', () => {
  it('when spend is below 80 % of a limit, it is in no tier', () => {
    expect(tierOf('hour', 799_999, 1_000_000, 1_000)).toBeUndefined();
  });

  it('when spend crosses 80 %, it is a warning; at the limit, critical; at 200 % of a day, an escalation', () => {
    expect(tierOf('hour', 800_000, 1_000_000, 1_000)).toBe('warning');
    expect(tierOf('hour', 1_000_000, 1_000_000, 1_000)).toBe('critical');
    expect(tierOf('day', 2_000_000, 1_000_000, 1_000)).toBe('escalation');
    expect(tierOf('month', 2_500_000, 1_000_000, 1_000)).toBe('critical');
  });

  it('when less is left than the last request reserved (past 80 %), the limit counts as reached', () => {
    expect(tierOf('hour', 950_000, 1_000_000, 60_000)).toBe('critical');
    // A huge reservation far below 80 % does not count as reaching the limit.
    expect(tierOf('hour', 200_000, 1_000_000, 900_000)).toBeUndefined();
  });

  it('when the hourly limit is reached, the crossing opens the circuit until the hour ends (or the cooldown)', () => {
    const limits = new Map<ScopeId, BudgetLimits>([['user:ann', { hour: 1_000_000, day: 500_000 }]]);
    const [hour, day] = crossingsOf([value('user:ann', 'hour', 1_000_000), value('user:ann', 'day', 1_000_000)], limits, {
      now: T0,
      lastReservation: 10,
      cooldownMs: 0,
    });
    expect(hour!.alert.type).toBe('spend_critical');
    expect(hour!.circuit).toMatchObject({ scope: 'user:ann', cause: 'breaker', closesAt: Date.parse('2026-11-23T11:00:00.000Z') });
    expect(hour!.dedupeKey).toBe('hour#2026-11-23T10#critical');
    expect(day!.alert.type).toBe('spend_escalation');
    expect(day!.circuit!.closesAt).toBeUndefined();
    const cooled = crossingsOf([value('user:ann', 'hour', 1_000_000)], limits, { now: T0, lastReservation: 10, cooldownMs: 15 * 60_000 });
    expect(cooled[0]!.circuit!.closesAt).toBe(T0 + 15 * 60_000);
  });

  it('when a counter has no limit, no alert is made for it', () => {
    expect(crossingsOf([value('user:bob', 'hour', 9_999_999)], new Map(), { now: T0, lastReservation: 1, cooldownMs: 0 })).toEqual([]);
  });
});

/** The fingerprint as first written (normalized copy, then canonical JSON): counts in the store use it. */
function firstFingerprint(body: Readonly<Record<string, unknown>>): string {
  const trim = (value: unknown): unknown => {
    if (typeof value === 'string') return normalizeVolatile(value);
    if (Array.isArray(value)) return value.map(trim);
    if (value !== null && typeof value === 'object') return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, trim(v)]));
    return value;
  };
  const canonical = (value: unknown): string => {
    if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
    if (value !== null && typeof value === 'object') {
      const entries = Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
    }
    return JSON.stringify(value) ?? 'null';
  };
  const normalized: Record<string, unknown> = {};
  const volatile = new Set(['stream', 'stream_options', 'user', 'metadata', 'store', 'service_tier']);
  for (const [k, v] of Object.entries(body)) if (!volatile.has(k)) normalized[k] = trim(v);
  return createHash('sha256').update(canonical(normalized)).digest('hex');
}

describe('loop guard fingerprints', () => {
  it('when bodies of every shape are fingerprinted, the fingerprint is the one first written (counts already stored stay valid)', () => {
    const bodies: Record<string, unknown>[] = [
      { model: 'gpt-4o', messages: [{ role: 'user', content: '  Say   hello #12345678 at 2026-01-02T03:04:05Z, attempt 3 of 5 ' }], max_tokens: 50, stream: true, user: 'u' },
      { z: 1, a: [1, 'two', null, true, { y: [], x: {} }, [[]]], 'é': 'accent', A: 'upper', '10': 'digit key', m: { b: undefined, a: 'call_abc12345678 msg_0f8fad5b-d9cb-469f-a165-70867728950e' } },
      { input: [{ type: 'message', content: [{ type: 'input_text', text: 'deadbeefcafe0123456789 retry #4' }] }], tools: [{ type: 'function', name: 'f', parameters: { type: 'object' } }], temperature: 0.2, n: 1e21, s: '' },
      JSON.parse('{"__proto__":{"polluted":"yes"},"messages":[{"role":"user","content":"x","__proto__":{"inner":1}}]}') as Record<string, unknown>,
      { messages: [undefined, { content: undefined }], metadata: { run: 7 } },
    ];
    for (const body of bodies) expect(requestFingerprint(body)).toBe(firstFingerprint(body));
  });

  const body = { model: 'gpt-4o', messages: [{ role: 'user', content: 'Classify: refund please' }], temperature: 0 };

  it('when only key order, streaming or surrounding whitespace differ, the fingerprint is the same', () => {
    const reordered = { temperature: 0, stream: true, messages: [{ content: '  Classify: refund please ', role: 'user' }], model: 'gpt-4o' };
    expect(requestFingerprint(reordered)).toBe(requestFingerprint(body));
  });

  it('when the prompt changes, the fingerprint changes', () => {
    expect(requestFingerprint({ ...body, messages: [{ role: 'user', content: 'Classify: invoice' }] })).not.toBe(requestFingerprint(body));
  });

  it('when the same body comes from another user or goes to another model, it is another loop', () => {
    const fp = requestFingerprint(body);
    const s = DEFAULT_GUARDRAILS.loop;
    const a = loopCheckFor({ keyId: 'k1', userId: 'u1', model: 'openai/gpt-4o', bodyFingerprint: fp }, T0, s);
    expect(loopCheckFor({ keyId: 'k2', userId: 'u2', model: 'openai/gpt-4o', bodyFingerprint: fp }, T0, s).fingerprint).not.toBe(a.fingerprint);
    expect(loopCheckFor({ keyId: 'k1', userId: 'u1', model: 'openai/gpt-4o-mini', bodyFingerprint: fp }, T0, s).fingerprint).not.toBe(a.fingerprint);
    expect(a.windowEnd - T0).toBeLessThanOrEqual(s.windowMs);
    expect(a.maxRepeats).toBe(5);
    expect(a.maxFailures).toBe(3);
  });

  it('when only item ids differ (msg_<uuid>, fc_…, call_…), the fingerprint is the same; ids in words without digits stay', () => {
    const turn = (msg: string, fc: string, call: string) => ({
      model: 'gpt-5',
      input: [
        { id: msg, type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Run the tests.' }] },
        { id: fc, type: 'function_call', call_id: call, name: 'shell', arguments: '{"cmd":"npm test"}' },
        { type: 'function_call_output', call_id: call, output: 'exit 1' },
      ],
    });
    const a = turn('msg_0f8e2a1c-5b7d-4e21-9c3a-1d2e3f4a5b6c', 'fc_68a1f0c2d9e84b7f', 'call_Xk3vQ9pLmN2rT7wY');
    const b = turn('msg_9b1c2d3e-4f50-4a61-8b72-c3d4e5f6a7b8', 'fc_77b2e1d3c0f95a60', 'call_Pq8sR4tUvW1xY6zA');
    expect(requestFingerprint(a)).toBe(requestFingerprint(b));
    const words = (w: string) => ({ model: 'gpt-4o', messages: [{ role: 'user', content: `rename ${w}` }] });
    expect(requestFingerprint(words('call_count'))).not.toBe(requestFingerprint(words('call_total')));
  });

  it('when a Responses input repeats the same failing function call, repeatedTurns finds it; distinct calls are progress', () => {
    const loop = (n: number, args: (i: number) => string) => ({
      model: 'gpt-5',
      input: [
        { type: 'message', role: 'user', content: 'Fix the build.' },
        ...Array.from({ length: n }, (_, i) => [
          { type: 'reasoning', id: `rs_${i}0000000`, summary: [], encrypted_content: `opaque-${i}` },
          { type: 'function_call', id: `fc_${i}0000000`, call_id: `call_${i}`, name: 'shell', arguments: args(i) },
          { type: 'function_call_output', call_id: `call_${i}`, output: 'Error: build failed' },
        ]).flat(),
      ],
    });
    const same = () => '{"cmd":"npm run build"}';
    expect(repeatedTurns(loop(4, same), 3)).toBeUndefined(); // a tool call gets 2 retries more than an answer
    expect(repeatedTurns(loop(5, same), 3)).toMatchObject({ count: 5, sample: expect.stringContaining('shell(') });
    expect(repeatedTurns(loop(8, (i) => `{"cmd":"cat src/file${i}.ts"}`), 3)).toBeUndefined();
  });

  it('when a key has overrides, they replace the defaults', () => {
    expect(loopSettingsFor(DEFAULT_GUARDRAILS.loop, { maxRepeats: 50 })).toMatchObject({ maxRepeats: 50, maxFailures: 3 });
  });

  it('when an answer carries no text and no tool call, it counts as empty', () => {
    expect(isEmptyAnswer({ choices: [{ message: { role: 'assistant', content: '' } }] })).toBe(true);
    expect(isEmptyAnswer({ choices: [{ message: { role: 'assistant', content: 'ok' } }] })).toBe(false);
    expect(isEmptyAnswer({ choices: [{ message: { content: null, tool_calls: [{ id: 't' }] } }] })).toBe(false);
    expect(isEmptyAnswer({ type: 'message', content: [{ type: 'text', text: ' ' }] })).toBe(true);
  });
});

describe('AWS Budgets notifications', () => {
  it('when a real ACTUAL notification arrives, its budget, threshold and actual amount are read', () => {
    expect(parseBudgetNotification(BUDGET_NOTIFICATION)).toEqual({
      budgetName: 'tollgate-dev-monthly',
      alertType: 'ACTUAL',
      thresholdMicros: 100_000_000,
      actualMicros: 104_370_000,
    });
  });

  it('when the message is not a budget notification, it is not parsed', () => {
    expect(parseBudgetNotification('{"AlarmName":"x","NewStateValue":"ALARM"}')).toBeUndefined();
  });
});
