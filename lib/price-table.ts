/**
 * Build-time generator of the gateway's compact price table (`lambda/core/price-table.generated.ts`) from the
 * maintained data in @pydantic/genai-prices: integer micro-USD per million tokens for the four unit prices the
 * gateway bills, for the providers it routes to, plus every provider's model pattern (bare names route by
 * them). The Lambda then carries a few KiB instead of the package's 466 KiB catalogue.
 *
 *   npm run prices:generate        (after upgrading @pydantic/genai-prices; commit the result)
 *
 * `test/core/price-table.test.ts` fails when the committed table differs from what this renders.
 */
import { waitForUpdate, type MatchLogic, type ModelInfo, type ModelPrice, type Provider } from '@pydantic/genai-prices';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PriceMatch, PriceTableData, TableDatedPrices, TableModel, TablePrice, TablePrices, TableProvider } from '../lambda/core/price-data';

/** The data's provider ids the gateway routes to (openai, anthropic, bedrock = aws). */
export const SERVED_DATA_PROVIDERS = ['openai', 'anthropic', 'aws'] as const;

/** Where the generated module lives. */
export const PRICE_TABLE_PATH = join(__dirname, '..', 'lambda', 'core', 'price-table.generated.ts');

const toMicros = (usdPerMTok: number): number => Math.round(usdPerMTok * 1_000_000);

function unitPrice(v: ModelPrice[string]): TablePrice | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'number') return toMicros(v);
  return { base: toMicros(v.base), tiers: v.tiers.map((t) => ({ start: t.start, price: toMicros(t.price) })) };
}

function prices(p: ModelPrice): TablePrices {
  const out: { -readonly [K in keyof TablePrices]: TablePrices[K] } = {};
  const input = unitPrice(p.input_mtok);
  const output = unitPrice(p.output_mtok);
  const cacheRead = unitPrice(p.cache_read_mtok);
  const cacheWrite = unitPrice(p.cache_write_mtok);
  if (input !== undefined) out.input = input;
  if (output !== undefined) out.output = output;
  if (cacheRead !== undefined) out.cacheRead = cacheRead;
  if (cacheWrite !== undefined) out.cacheWrite = cacheWrite;
  return out;
}

function model(providerId: string, m: ModelInfo): TableModel {
  const base = {
    id: m.id,
    match: m.match as PriceMatch,
    ...(m.context_window !== undefined ? { contextWindow: m.context_window } : {}),
    ...(m.deprecated ? { deprecated: true } : {}),
  };
  if (!Array.isArray(m.prices)) return { ...base, prices: prices(m.prices) };
  const dated: TableDatedPrices[] = m.prices.map((c) => {
    if (c.constraint === undefined) return { prices: prices(c.prices) };
    if (c.constraint.type !== 'start_date') {
      // The gateway's lookup only knows dated changes; fail the build rather than bill a time-of-day price wrongly.
      throw new Error(`${providerId}/${m.id}: unsupported price constraint ${JSON.stringify(c.constraint)}`);
    }
    return { startDate: c.constraint.start_date, prices: prices(c.prices) };
  });
  return { ...base, prices: dated };
}

/** Every provider in the data's order (for pattern routing), with models for the served ones and their fallbacks. */
export async function buildPriceTable(): Promise<PriceTableData> {
  const all = await allProviders();
  const withModels = new Set<string>(SERVED_DATA_PROVIDERS);
  for (const id of SERVED_DATA_PROVIDERS) for (const f of all.find((p) => p.id === id)?.fallback_model_providers ?? []) withModels.add(f);
  const providers: TableProvider[] = all.map((p) => ({
    id: p.id,
    ...(p.model_match ? { modelMatch: p.model_match as MatchLogic as PriceMatch } : {}),
    ...(withModels.has(p.id) && p.fallback_model_providers?.length ? { fallback: p.fallback_model_providers } : {}),
    ...(withModels.has(p.id) ? { models: p.models.map((m) => model(p.id, m)) } : {}),
  }));
  return { source: `@pydantic/genai-prices@${packageVersion()}`, providers };
}

/** The providers in the package's order (the order `findProvider` tries their patterns in). */
async function allProviders(): Promise<readonly Provider[]> {
  // With no remote update configured this resolves to the data the package ships.
  const providers = await waitForUpdate();
  if (!providers?.length) throw new Error('@pydantic/genai-prices returned no provider data.');
  return providers;
}

function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(__dirname, '..', 'node_modules', '@pydantic', 'genai-prices', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/**
 * The generated module's text: one provider pattern or model per line, so an upgrade's diff is readable. The
 * table is JSON text parsed once at load (String.raw keeps JSON's escapes as they are): V8 parses JSON about
 * ten times faster than the same object literal, which is most of this module's share of the Lambda's init.
 */
export function renderPriceTable(data: PriceTableData): string {
  const providers = data.providers.map((p) => {
    const { models, ...head } = p;
    if (!models) return `    ${JSON.stringify(head)}`;
    const fields = JSON.stringify(head).slice(0, -1);
    return `    ${fields},"models":[\n${models.map((m) => `      ${JSON.stringify(m)}`).join(',\n')}\n    ]}`;
  });
  const json = `{"source":${JSON.stringify(data.source)},"providers":[\n${providers.join(',\n')}\n]}`;
  if (json.includes('`') || json.includes('${')) throw new Error('the price data holds a backtick or "${": it cannot be embedded in String.raw');
  JSON.parse(json);
  return `// Generated by lib/price-table.ts from ${data.source} (npm run prices:generate). Do not edit.
// Prices are integer micro-USD per million tokens.
import type { PriceTableData } from './price-data';

export const PRICE_TABLE = JSON.parse(String.raw\`${json}\`) as PriceTableData;
`;
}

if (require.main === module) {
  void buildPriceTable().then((data) => {
    writeFileSync(PRICE_TABLE_PATH, renderPriceTable(data));
    console.log(`wrote ${PRICE_TABLE_PATH} (${data.source})`);
  });
}
