import { estimateChatInputTokens, estimateEmbeddingInputTokens, estimateMessagesInputTokens } from '../../lambda/core/tokens';

describe('input token estimates', () => {
  it('when English text is estimated, the estimate is above the usual 4 characters per token', () => {
    const text = 'The quick brown fox jumps over the lazy dog. '.repeat(100);
    const est = estimateChatInputTokens({ messages: [{ role: 'user', content: text }] });
    expect(est).toBeGreaterThan(text.length / 4);
  });

  it('when CJK text is estimated, each character counts about one token', () => {
    const text = '你好世界'.repeat(250);
    expect(estimateChatInputTokens({ messages: [{ role: 'user', content: text }] })).toBeGreaterThanOrEqual(1000);
  });

  it('when a message has images and tools, they are counted', () => {
    const base = estimateChatInputTokens({ messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }] }] });
    const withImage = estimateChatInputTokens({
      messages: [{ role: 'user', content: [{ type: 'text', text: 'hi' }, { type: 'image_url', image_url: { url: 'x' } }] }],
      tools: [{ type: 'function', function: { name: 'lookup', parameters: {} } }],
    });
    expect(withImage - base).toBeGreaterThan(1600);
  });

  it('when an Anthropic body has a system prompt, it is counted', () => {
    const without = estimateMessagesInputTokens({ messages: [{ role: 'user', content: 'hi' }] });
    const withSystem = estimateMessagesInputTokens({ messages: [{ role: 'user', content: 'hi' }], system: 'x'.repeat(300) });
    expect(withSystem - without).toBe(100);
  });

  it('when embeddings input is pre-tokenized, tokens are counted one for one', () => {
    expect(estimateEmbeddingInputTokens([[1, 2, 3], [4, 5]])).toBe(5);
    expect(estimateEmbeddingInputTokens(['abc', 'def'])).toBe(2);
  });
});
