import { costOf, maxCostOf, PriceBook } from '../../lambda/core/pricing';
import { InvalidRequestError } from '../../lambda/core/errors';

const usage = (input: number, output: number, cached = 0, write = 0) => ({
  inputTokens: input,
  outputTokens: output,
  cachedInputTokens: cached,
  cacheWriteTokens: write,
});

describe('prices and routing', () => {
  const book = new PriceBook({ providers: ['openai', 'anthropic', 'mock'] });

  it('when a bare model name is priced, it routes to the provider the price data names', () => {
    const m = book.resolve('gpt-4o');
    expect(m.provider).toBe('openai');
    expect(m.upstreamModel).toBe('gpt-4o');
    expect(m.price.input).toBe(2_500_000);
    expect(m.price.output).toBe(10_000_000);
    expect(m.price.cachedInput).toBe(1_250_000);
    expect(book.resolve('claude-sonnet-4-5').provider).toBe('anthropic');
  });

  it('when a bare embedding model is named, it routes to the provider whose price data lists it', () => {
    const m = book.resolve('text-embedding-3-small');
    expect(m.provider).toBe('openai');
    expect(m.price.input).toBe(20_000);
  });

  it('when a provider/model name is given, that provider serves it; mock imitates the real price', () => {
    const m = book.resolve('mock/gpt-4o-mini');
    expect(m.provider).toBe('mock');
    expect(m.upstreamModel).toBe('gpt-4o-mini');
    expect(m.price.input).toBe(150_000);
    expect(m.id).toBe('mock/gpt-4o-mini');
  });

  it('when a model has no price, it is refused with 400, never billed at $0', () => {
    expect(() => book.resolve('my-free-model')).toThrow(InvalidRequestError);
    expect(() => book.resolve('mock/no-such-model')).toThrow(/no known price/);
  });

  it('when the provider is not configured, the model is refused with a message naming it', () => {
    const noAnthropic = new PriceBook({ providers: ['openai'] });
    expect(() => noAnthropic.resolve('claude-sonnet-4-5')).toThrow(/provider "anthropic", which is not configured/);
  });

  it('when an operator overrides a price, the override wins and can add a model', () => {
    const custom = new PriceBook({
      providers: ['openai'],
      overrides: { 'openai/gpt-4o': { input: 1, output: 2 }, 'openai/in-house-7b': { input: 0.1, output: 0.2, maxOutputTokens: 512 } },
    });
    expect(custom.resolve('gpt-4o').price.input).toBe(1_000_000);
    const inHouse = custom.resolve('in-house-7b');
    expect(inHouse.provider).toBe('openai');
    expect(inHouse.price.maxOutputTokens).toBe(512);
    expect(custom.listModels().map((m) => m.id)).toContain('openai/in-house-7b');
  });

  it('when usage is priced, cached input is billed at the cache price and the total rounds up once', () => {
    const price = book.resolve('gpt-4o').price;
    // 1000 input (400 cached) and 500 output: 600×2.5 + 400×1.25 + 500×10 = 1500 + 500 + 5000 = 7000 µ$
    expect(costOf(price, usage(1000, 500, 400))).toBe(7000);
    expect(costOf(price, usage(1, 0))).toBe(3); // 2.5 µ$ → 3
  });

  it('when input crosses a long-context tier, the whole request is billed at the tier price', () => {
    const price = book.resolve('claude-sonnet-4-5').price;
    expect(costOf(price, usage(100_000, 0))).toBe(300_000);
    expect(costOf(price, usage(200_000, 0))).toBe(1_200_000);
  });

  it('when a reservation is sized, it covers every input token and the full output allowance', () => {
    const price = book.resolve('gpt-4o').price;
    expect(maxCostOf(price, { inputTokens: 4000, maxOutputTokens: 1000 })).toBe(4000 * 2.5 + 1000 * 10);
  });

  it('when models are listed, only priced models of configured providers appear', () => {
    const ids = new PriceBook({ providers: ['openai'] }).listModels().map((m) => m.id);
    expect(ids).toContain('openai/gpt-4o');
    expect(ids.some((id) => id.startsWith('anthropic/'))).toBe(false);
  });
});
