import {
  KEEP_RECENT_MESSAGES,
  MAX_SUMMARY_CHARS,
  pruneConversation,
  PRUNE_AFTER_MESSAGES,
  SUMMARY_HEADING,
  type ChatMessage,
} from '../../agent/src/conversation';
import { checkBeforeCall, MAX_TOOL_RETRIES, toolCallSignature, ToolRetryGuard } from '../../agent/src/guards';
import { BUILT_IN_TOOLS, calculate, ToolError } from '../../agent/src/tools';
import { parseRunRequest } from '../../lambda/core/agent/run';
import { InvalidRequestError } from '../../lambda/core/errors';

function conversation(steps: number, text = 'x'): ChatMessage[] {
  const messages: ChatMessage[] = [
    { role: 'system', content: 'system prompt' },
    { role: 'user', content: 'the task' },
  ];
  for (let i = 0; i < steps; i++) {
    messages.push({ role: 'assistant', content: null, tool_calls: [{ id: `c${i}`, type: 'function', function: { name: 'count_words', arguments: `{"text":"${text}${i}"}` } }] });
    messages.push({ role: 'tool', tool_call_id: `c${i}`, content: String(i) });
  }
  return messages;
}

describe('conversation pruning', () => {
  it('when a conversation has 50 messages or fewer, it is left as it is', () => {
    const messages = conversation(24);
    expect(messages).toHaveLength(PRUNE_AFTER_MESSAGES);
    expect(pruneConversation(messages)).toBe(messages);
  });

  it('when it passes 50 messages, the system prompt, the task, a summary of the middle and the recent steps remain, calls with their results', () => {
    const pruned = pruneConversation(conversation(30));
    expect(pruned.length).toBeLessThanOrEqual(3 + KEEP_RECENT_MESSAGES);
    expect(pruned[0]).toEqual({ role: 'system', content: 'system prompt' });
    expect(pruned[1]).toEqual({ role: 'user', content: 'the task' });
    expect(pruned[2]!.content).toMatch(new RegExp(`^${SUMMARY_HEADING.replace(/[()]/g, '\\$&')}`));
    expect(pruned[2]!.content).toContain('count_words({"text":"x0"})');
    expect(pruned[3]!.role).toBe('assistant');
    expect(pruned.at(-1)).toEqual({ role: 'tool', tool_call_id: 'c29', content: '29' });
  });

  it('when pruned again and again, the earlier summary is carried on and the summary stays bounded', () => {
    let messages: ChatMessage[] = conversation(0, 'y'.repeat(150));
    for (let i = 0; i < 500; i++) {
      messages.push({ role: 'assistant', content: null, tool_calls: [{ id: `c${i}`, type: 'function', function: { name: 'count_words', arguments: `{"text":"${'y'.repeat(150)}${i}"}` } }] });
      messages.push({ role: 'tool', tool_call_id: `c${i}`, content: '' });
      messages = [...pruneConversation(messages)];
      expect(messages.length).toBeLessThanOrEqual(PRUNE_AFTER_MESSAGES);
    }
    expect(messages[2]!.content!.length).toBeLessThanOrEqual(SUMMARY_HEADING.length + 1 + MAX_SUMMARY_CHARS);
    expect(messages[2]!.content).toContain('tool result: (empty)');
  });
});

describe('loop guards', () => {
  it('when the same tool call fails, it may run 1 + 3 times with doubling backoff, then it is refused', () => {
    const guard = new ToolRetryGuard(100);
    const sig = toolCallSignature('get_item', { index: 99 });
    const waits: number[] = [];
    for (let i = 0; i <= MAX_TOOL_RETRIES; i++) {
      const admitted = guard.admit(sig);
      expect(admitted.kind).toBe('run');
      if (admitted.kind === 'run') waits.push(admitted.waitMs);
      guard.failed(sig);
    }
    expect(waits).toEqual([0, 100, 200, 400]);
    expect(guard.admit(sig)).toEqual({ kind: 'refuse', failures: 4 });
    // Another call (other arguments) is counted on its own.
    expect(guard.admit(toolCallSignature('get_item', { index: 1 }))).toEqual({ kind: 'run', waitMs: 0 });
  });

  it('when a failing call succeeds, its failures are forgotten', () => {
    const guard = new ToolRetryGuard(10);
    const sig = toolCallSignature('calculate', { expression: '1/0' });
    guard.failed(sig);
    guard.succeeded(sig);
    expect(guard.admit(sig)).toEqual({ kind: 'run', waitMs: 0 });
  });

  it('when arguments differ only in key order, they are the same call', () => {
    expect(toolCallSignature('t', { a: 1, b: { c: 2, d: 3 } })).toBe(toolCallSignature('t', { b: { d: 3, c: 2 }, a: 1 }));
  });

  it('when checked before a call, the deadline wins over the cost cap, which wins over the iteration limit', () => {
    const limits = { maxIterations: 2, maxCostMicros: 100, deadline: 1_000 };
    expect(checkBeforeCall({ iterations: 0, spentMicros: 0, now: 0 }, limits)).toBeUndefined();
    expect(checkBeforeCall({ iterations: 2, spentMicros: 100, now: 1_000 }, limits)).toBe('timed_out');
    expect(checkBeforeCall({ iterations: 2, spentMicros: 100, now: 0 }, limits)).toBe('stopped_cost');
    expect(checkBeforeCall({ iterations: 2, spentMicros: 99, now: 0 }, limits)).toBe('stopped_iterations');
  });
});

describe('built-in tools', () => {
  const tool = (name: string) => BUILT_IN_TOOLS.find((t) => t.name === name)!;

  it('when an input item is empty, get_item answers an empty string rather than failing', async () => {
    expect(await tool('get_item').run({ index: 0 }, { input: [''], outputs: [] })).toBe('');
    expect(() => tool('get_item').run({ index: 1 }, { input: [''], outputs: [] })).toThrow(ToolError);
  });

  it('when asked to calculate, it evaluates arithmetic only', () => {
    expect(calculate('(3 + 4) * 2 - 1 / 4')).toBe(13.75);
    expect(calculate('-2 * -3')).toBe(6);
    expect(() => calculate('process.exit(1)')).toThrow(ToolError);
    expect(() => calculate('1 / 0')).toThrow(/Division by zero/);
  });

  it('when outputs are recorded, they are kept with their item', async () => {
    const outputs: { item?: number; value: string }[] = [];
    await tool('record_output').run({ item: 0, value: 'positive' }, { input: ['a'], outputs });
    expect(outputs).toEqual([{ item: 0, value: 'positive' }]);
  });
});

describe('run requests', () => {
  it('when a request is valid, the cap is parsed into integer micro-USD', () => {
    expect(parseRunRequest({ instructions: 'x', input: ['a'], model: 'gpt-4o', maxCostUsd: 1 })).toEqual({
      instructions: 'x',
      input: ['a'],
      model: 'gpt-4o',
      maxCostMicros: 1_000_000,
    });
    expect(parseRunRequest({ instructions: 'x', model: 'gpt-4o', maxCostUsd: '0.000001' }).maxCostMicros).toBe(1);
  });

  it('when a field is wrong, it is refused naming the field', () => {
    const param = (body: Record<string, unknown>) => {
      try {
        parseRunRequest(body);
      } catch (err) {
        expect(err).toBeInstanceOf(InvalidRequestError);
        return (err as InvalidRequestError).param;
      }
      return undefined;
    };
    expect(param({ model: 'm' })).toBe('instructions');
    expect(param({ instructions: 'x', model: 'm', input: [1] })).toBe('input');
    expect(param({ instructions: 'x' })).toBe('model');
    expect(param({ instructions: 'x', model: 'm', maxCostUsd: 0 })).toBe('maxCostUsd');
    expect(param({ instructions: 'x', model: 'm', maxCostUsd: '0.0000001' })).toBe('maxCostUsd');
    expect(param({ instructions: 'x', model: 'm', input: ['y'.repeat(300 * 1024)] })).toBe('input');
  });
});
