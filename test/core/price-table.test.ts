/**
 * The compact price table the gateway ships must say exactly what @pydantic/genai-prices says: the committed
 * module equals what the generator renders from the installed package, and the PriceBook over the table
 * resolves every served model (and dated and prefixed variants) to the same prices, provider and context window
 * as the package's own `calcPrice`/`findProvider` do.
 */
import { readFileSync } from 'node:fs';
import { calcPrice, findProvider, type MatchLogic, type ModelPrice as DataModelPrice } from '@pydantic/genai-prices';
import { buildPriceTable, PRICE_TABLE_PATH, renderPriceTable, SERVED_DATA_PROVIDERS } from '../../lib/price-table';
import { priceTable } from '../../lambda/core/price-data';
import { PriceBook } from '../../lambda/core/pricing';

const toMicros = (usd: number): number => Math.round(usd * 1_000_000);

/** The package's answer in the PriceBook's units (the conversion the gateway used before the table). */
function fromPackage(provider: string | undefined, model: string, at: Date) {
  const r = calcPrice({ input_tokens: 1 }, model, { ...(provider ? { providerId: provider } : {}), timestamp: at });
  if (!r) return undefined;
  const p: DataModelPrice = r.model_price;
  const base = (k: string) => {
    const v = p[k];
    return v === undefined ? 0 : toMicros(typeof v === 'number' ? v : v.base);
  };
  const input = base('input_mtok');
  return {
    provider: r.provider.id,
    input,
    output: base('output_mtok'),
    cachedInput: p.cache_read_mtok === undefined ? input : base('cache_read_mtok'),
    cacheWrite: p.cache_write_mtok === undefined ? input : base('cache_write_mtok'),
    contextWindow: r.model.context_window,
  };
}

function literals(m: MatchLogic): string[] {
  if ('or' in m) return m.or.flatMap(literals);
  if ('and' in m) return m.and.flatMap(literals);
  if ('equals' in m) return [m.equals];
  if ('starts_with' in m) return [m.starts_with, `${m.starts_with}-preview`];
  if ('ends_with' in m) return [`x${m.ends_with}`];
  if ('contains' in m) return [`a-${m.contains}-b`];
  return [];
}

/** Names to probe: every model id, every literal of its patterns, with dated suffixes in both spellings. */
function probeNames(providerId: string): string[] {
  const names = new Set<string>();
  for (const m of findProvider({ providerId })?.models ?? []) {
    for (const n of [m.id, ...literals(m.match)]) {
      names.add(n);
      names.add(`${n}-20250219`);
      names.add(`${n}-2025-02-19`);
      names.add(` ${n.toUpperCase()} `);
    }
  }
  names.add('no-such-model');
  return [...names];
}

interface Probe {
  readonly dataProvider: string | undefined;
  readonly name: string;
  readonly at: Date;
}

/**
 * Every probe name at today's date from the clock, and the names of each model whose price changes on a date
 * at that date and the instant before it.
 */
function probes(): Probe[] {
  const out: Probe[] = [];
  const now = new Date();
  for (const dataProvider of [...SERVED_DATA_PROVIDERS, undefined]) {
    const names = dataProvider ? probeNames(dataProvider) : [...probeNames('openai'), ...probeNames('anthropic')];
    for (const name of names) out.push({ dataProvider, name, at: now });
  }
  for (const dataProvider of SERVED_DATA_PROVIDERS) {
    for (const m of findProvider({ providerId: dataProvider })?.models ?? []) {
      if (!Array.isArray(m.prices)) continue;
      for (const c of m.prices) {
        if (c.constraint?.type !== 'start_date') continue;
        const start = Date.parse(`${c.constraint.start_date}T00:00:00Z`);
        for (const name of [m.id, ...literals(m.match)]) {
          for (const at of [new Date(start), new Date(start - 1)]) out.push({ dataProvider, name, at }, { dataProvider: undefined, name, at });
        }
      }
    }
  }
  return out;
}

describe('the generated price table', () => {
  it('when the installed @pydantic/genai-prices is rendered, it equals the committed table (run npm run prices:generate)', async () => {
    expect(readFileSync(PRICE_TABLE_PATH, 'utf8')).toBe(renderPriceTable(await buildPriceTable()));
  });

  it('when any served model or variant is looked up at any price-change date, the table gives the package’s prices', () => {
    let compared = 0;
    const books = new Map<number, PriceBook>();
    for (const { dataProvider, name, at } of probes()) {
      const expected = fromPackage(dataProvider, name, at);
      const found = priceTable.lookup(name, { ...(dataProvider ? { providerId: dataProvider } : {}), at });
      if (!expected || !(SERVED_DATA_PROVIDERS as readonly string[]).includes(expected.provider)) {
        // Unpriced, or a provider whose models the table does not carry (only its pattern is kept).
        expect({ name, found }).toEqual({ name, found: undefined });
        continue;
      }
      let book = books.get(at.getTime());
      if (!book) {
        book = new PriceBook({ providers: ['openai', 'anthropic', 'bedrock', 'mock'], now: () => at.getTime() });
        books.set(at.getTime(), book);
      }
      const route = dataProvider === undefined ? 'mock' : dataProvider === 'aws' ? 'bedrock' : dataProvider;
      const price = book.priceOf(route, name);
      if (route === 'mock' && !['openai', 'anthropic'].includes(expected.provider)) {
        expect({ name, price }).toEqual({ name, price: undefined });
        continue;
      }
      const { input, output, cachedInput, cacheWrite, contextWindow } = price ?? {};
      expect({ name, at: at.toISOString(), provider: found?.providerId, input, output, cachedInput, cacheWrite, contextWindow }).toEqual({
        name,
        at: at.toISOString(),
        ...expected,
      });
      compared++;
    }
    expect(compared).toBeGreaterThan(500);
  });

  it('when a bare name is routed, the table names the same provider as the package’s patterns', () => {
    for (const name of [...probeNames('openai'), ...probeNames('anthropic'), 'gemini-2.5-pro', 'mistral-large', 'o3-mini', 'whisper-1']) {
      expect({ name, provider: priceTable.providerForModel(name) }).toEqual({ name, provider: findProvider({ modelId: name })?.id });
    }
  });
});
