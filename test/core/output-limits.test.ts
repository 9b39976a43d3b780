import { knownMaxOutputTokens } from '../../lambda/core/output-limits';

describe('known output limits', () => {
  it('when a model family is known, its own output limit is the default cap, with or without a Bedrock prefix', () => {
    expect(knownMaxOutputTokens('gpt-5.1-codex')).toBe(128_000);
    expect(knownMaxOutputTokens('gpt-4o-mini')).toBe(16_384);
    expect(knownMaxOutputTokens('o1-pro')).toBe(100_000);
    expect(knownMaxOutputTokens('claude-sonnet-4-6')).toBe(64_000);
    expect(knownMaxOutputTokens('claude-opus-4-1')).toBe(32_000);
    expect(knownMaxOutputTokens('claude-opus-4-8')).toBe(64_000);
    expect(knownMaxOutputTokens('us.anthropic.claude-sonnet-4-6-v1:0')).toBe(64_000);
    expect(knownMaxOutputTokens('global.openai.gpt-5.6-sol')).toBe(128_000);
  });

  it('when a model family is unknown, there is no table limit (the configured default applies)', () => {
    expect(knownMaxOutputTokens('claude-fable-5')).toBeUndefined();
    expect(knownMaxOutputTokens('text-embedding-3-small')).toBeUndefined();
  });
});
