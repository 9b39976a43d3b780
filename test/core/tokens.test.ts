import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { countTokens } from 'gpt-tokenizer/cjs/encoding/o200k_base';
import {
  EXACT_BUDGET_CHARS,
  EXACT_CHARS,
  SAMPLE_CHARS,
  SAMPLE_WINDOWS,
  estimateChatInputTokens,
  estimateEmbeddingInputTokens,
  estimateMessagesInputTokens,
  estimateResponsesTokens,
  inputTokensFor,
  textTokens,
  tokenizerWork,
} from '../../lambda/core/tokens';

/** The tokenizer's own whole count, the reference every estimate is held to. */
const exact = (text: string): number => countTokens(text, { disallowedSpecial: new Set() });

/**
 * Real source text and prose, repeated to `chars` UTF-16 units: the two SDKs' client code and READMEs, pinned by
 * package-lock.json, so an edit to this repository's own files (which this once read) cannot move a figure.
 */
function sourceText(chars: number, salt: string): string {
  const root = join(__dirname, '..', '..', 'node_modules');
  const files = ['openai/src/client.ts', 'openai/README.md', '@anthropic-ai/sdk/src/client.ts', '@anthropic-ai/sdk/README.md'];
  const src = files.map((f) => readFileSync(join(root, f), 'utf8')).join('\n');
  let out = `// ${salt}\n`;
  while (out.length < chars) out += src;
  return out.slice(0, chars);
}

describe('input token estimates (o200k)', () => {
  it('when English text is estimated, it is the tokenizer count plus the message framing', () => {
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(100);
    const est = estimateChatInputTokens({ messages: [{ role: 'user', content: text }] });
    expect(est).toBe(3 + 4 + exact(text));
    // Far below the old bytes ÷ 3 (1,500): ~4.5 characters a token.
    expect(est).toBeLessThan(text.length / 4);
  });

  it('when CJK text is estimated, it is the tokenizer count', () => {
    const text = '你好世界，今天天气很好。'.repeat(100);
    expect(textTokens(text)).toBe(exact(text));
  });

  it('when text carries special-token markup, it is counted as plain text and never throws', () => {
    const text = 'before <|endoftext|> after <|im_start|>';
    expect(textTokens(text)).toBe(exact(text));
  });

  it('when a message has images and tools, they are counted', () => {
    const base = estimateChatInputTokens({ messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }] });
    const withImage = estimateChatInputTokens({
      messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }, { type: 'image_url', image_url: { url: 'x' } }] }],
      tools: [{ type: 'function', function: { name: 'lookup', description: 'Looks a word up', parameters: {} } }],
    });
    expect(withImage - base).toBeGreaterThan(1600);
  });

  it('when an Anthropic body has a system prompt, its tokens are added', () => {
    const system = 'You are a careful coding agent. Read files before editing them. '.repeat(5);
    const without = estimateMessagesInputTokens({ messages: [{ role: 'user', content: 'hi' }] });
    const withSystem = estimateMessagesInputTokens({ messages: [{ role: 'user', content: 'hi' }], system });
    expect(withSystem - without).toBe(exact(system));
  });

  it('when a Responses body carries function calls and their outputs, they are counted', () => {
    const output = 'ENOENT: no such file or directory, open src/missing.ts';
    const est = estimateResponsesTokens({
      instructions: 'Be brief.',
      input: [
        { role: 'user', content: [{ type: 'input_text', text: 'Read src/missing.ts' }] },
        { type: 'function_call', call_id: 'call_1', name: 'read_file', arguments: '{"path":"src/missing.ts"}' },
        { type: 'function_call_output', call_id: 'call_1', output },
      ],
    });
    expect(est).toBeGreaterThanOrEqual(exact('Be brief.') + exact('Read src/missing.ts') + exact(output) + exact('{"path":"src/missing.ts"}'));
    expect(est).toBeLessThan(80);
  });

  it('when embeddings input is pre-tokenized, tokens are counted one for one', () => {
    expect(estimateEmbeddingInputTokens([[1, 2, 3], [4, 5]])).toBe(5);
    expect(estimateEmbeddingInputTokens(['abc', 'def'])).toBe(2);
  });

  it('when a string is longer than the whole-count limit, the sampled count is within 15 % above of the whole count', () => {
    const text = sourceText(300_000, 'sampled');
    const before = tokenizerWork();
    const est = textTokens(text);
    const truth = exact(text);
    expect(tokenizerWork() - before).toBe(SAMPLE_WINDOWS * SAMPLE_CHARS);
    expect(est / truth).toBeGreaterThan(0.97);
    expect(est / truth).toBeLessThan(1.15);
  });

  it('when one request holds 300 KB of distinct mid-sized strings, at most the budget is tokenized whole', () => {
    const files = Array.from({ length: 30 }, (_, i) => sourceText(10_000, `file ${i}`));
    expect(files[0]!.length).toBeLessThanOrEqual(EXACT_CHARS);
    const body = { messages: files.map((f) => ({ role: 'user', content: f })) };
    const before = tokenizerWork();
    const est = estimateChatInputTokens(body);
    const read = tokenizerWork() - before;
    expect(read).toBeLessThanOrEqual(EXACT_BUDGET_CHARS + files.length * SAMPLE_WINDOWS * SAMPLE_CHARS);
    expect(read).toBeLessThan(files.join('').length / 2);
    const truth = files.reduce((n, f) => n + exact(f), 0);
    expect(est / truth).toBeGreaterThan(0.97);
    expect(est / truth).toBeLessThan(1.15);
  });

  it('when an agent resends the same conversation with one new turn, only the new turn is tokenized', () => {
    const system = sourceText(40_000, 'system prompt');
    const tools = [{ name: 'read_file', description: sourceText(6_000, 'tool doc'), input_schema: { type: 'object' } }];
    const history = [
      { role: 'user', content: sourceText(12_000, 'turn 1') },
      { role: 'assistant', content: [{ type: 'tool_use', id: 'toolu_1', name: 'read_file', input: { path: 'a.ts' } }] },
    ];
    estimateMessagesInputTokens({ system, tools, messages: history });
    const newTurn = { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'toolu_1', content: sourceText(3_000, 'turn 2') }] };
    const before = tokenizerWork();
    estimateMessagesInputTokens({ system, tools, messages: [...history, newTurn] });
    expect(tokenizerWork() - before).toBeLessThan(3_000 + 200);
  });

  it('when the model is not an OpenAI one, the estimate is scaled for its own tokenizer', () => {
    expect(inputTokensFor('openai', 1000)).toBe(1000);
    expect(inputTokensFor('mock', 1000)).toBe(1000);
    expect(inputTokensFor('anthropic', 1000)).toBe(1200);
    expect(inputTokensFor('bedrock', 1001)).toBe(1202);
  });
});
