/**
 * The compact price table's shape and the lookups the {@link PriceBook} needs, with the same matching rules as
 * @pydantic/genai-prices (provider by model pattern, model by match clause, dated model ids, fallback
 * providers, start-date price changes) but none of its 466 KiB catalogue at Lambda init.
 *
 * The table itself is generated from the package at build time (`npm run prices:generate`, committed as
 * `price-table.generated.ts`); `test/core/price-table.test.ts` fails when the installed package's data and
 * the committed table differ, so the table cannot go stale silently.
 */
import { PRICE_TABLE } from './price-table.generated';

/** A model-name pattern, as in the price data (case-insensitive except `regex`). */
export type PriceMatch =
  | { readonly and: readonly PriceMatch[] }
  | { readonly or: readonly PriceMatch[] }
  | { readonly equals: string }
  | { readonly starts_with: string }
  | { readonly ends_with: string }
  | { readonly contains: string }
  | { readonly regex: string };

/** A unit price in integer micro-USD per million tokens, flat or with input-token tiers. */
export type TablePrice = number | { readonly base: number; readonly tiers: readonly { readonly start: number; readonly price: number }[] };

/** The unit prices the gateway bills (others in the data, e.g. audio or web search, are not served). */
export interface TablePrices {
  readonly input?: TablePrice;
  readonly output?: TablePrice;
  readonly cacheRead?: TablePrice;
  readonly cacheWrite?: TablePrice;
}

/** Prices that apply from a UTC date on (`YYYY-MM-DD`); without a date, from the beginning. */
export interface TableDatedPrices {
  readonly startDate?: string;
  readonly prices: TablePrices;
}

export interface TableModel {
  readonly id: string;
  readonly match: PriceMatch;
  readonly contextWindow?: number;
  readonly deprecated?: boolean;
  /** One set of prices, or dated sets in ascending order. */
  readonly prices: TablePrices | readonly TableDatedPrices[];
}

export interface TableProvider {
  readonly id: string;
  /** Which bare model names belong to this provider (providers are tried in order). */
  readonly modelMatch?: PriceMatch;
  /** Providers whose models this one also serves. */
  readonly fallback?: readonly string[];
  /** Present only for the providers the gateway can route to (and their fallbacks). */
  readonly models?: readonly TableModel[];
}

export interface PriceTableData {
  /** The @pydantic/genai-prices version the table was generated from. */
  readonly source: string;
  readonly providers: readonly TableProvider[];
}

/** A model found in the table, with the prices that apply at the asked time. */
export interface TableLookup {
  readonly providerId: string;
  readonly model: TableModel;
  readonly prices: TablePrices;
}

const regexCache = new Map<string, RegExp>();

/** Whether `name` matches `m`, with the data's semantics. */
export function matchesModel(m: PriceMatch, name: string): boolean {
  if ('or' in m) return m.or.some((x) => matchesModel(x, name));
  if ('and' in m) return m.and.every((x) => matchesModel(x, name));
  const lower = name.toLowerCase();
  if ('equals' in m) return lower === m.equals.toLowerCase();
  if ('starts_with' in m) return lower.startsWith(m.starts_with.toLowerCase());
  if ('ends_with' in m) return lower.endsWith(m.ends_with.toLowerCase());
  if ('contains' in m) return lower.includes(m.contains.toLowerCase());
  let re = regexCache.get(m.regex);
  if (!re) {
    re = new RegExp(m.regex);
    regexCache.set(m.regex, re);
  }
  return re.test(name);
}

/** `-20240806` → `-2024-08-06` when it is a real date (the data lists dated ids with dashes). */
const COMPACT_DATE = /(-)(20\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])(?=-|:|$)/g;
function dashDates(name: string): string {
  return name.replace(COMPACT_DATE, (whole, dash: string, y: string, mo: string, d: string) => {
    const date = new Date(Date.UTC(Number(y), Number(mo) - 1, Number(d)));
    return date.getUTCFullYear() !== Number(y) || date.getUTCMonth() !== Number(mo) - 1 || date.getUTCDate() !== Number(d)
      ? whole
      : `${dash}${y}-${mo}-${d}`;
  });
}

/** Reads one generated table; the gateway uses {@link priceTable}. Tests pass others. */
export class PriceTable {
  private readonly byId: ReadonlyMap<string, TableProvider>;

  constructor(readonly data: PriceTableData) {
    this.byId = new Map(data.providers.map((p) => [p.id, p]));
  }

  /** The first provider whose pattern claims a bare model name (any provider in the data, served or not). */
  providerForModel(name: string): string | undefined {
    return this.data.providers.find((p) => p.modelMatch && matchesModel(p.modelMatch, name))?.id;
  }

  /** The models of a provider the table carries models for. */
  modelsOf(providerId: string): readonly TableModel[] {
    return this.byId.get(providerId)?.models ?? [];
  }

  /**
   * The model and its prices at `at` for `name`, at `providerId` or, without one, at the provider whose
   * pattern claims the name. Undefined when nothing matches (or the provider's models are not in the table).
   */
  lookup(name: string, options: { providerId?: string; at: Date }): TableLookup | undefined {
    const id = name.toLowerCase().trim();
    const providerId = options.providerId ?? this.providerForModel(id);
    const provider = providerId === undefined ? undefined : this.byId.get(providerId);
    if (!provider) return undefined;
    const model = this.findModel(provider, id, true) ?? (dashDates(id) !== id ? this.findModel(provider, dashDates(id), true) : undefined);
    if (!model) return undefined;
    return { providerId: provider.id, model, prices: pricesAt(model, options.at) };
  }

  private findModel(provider: TableProvider, id: string, withFallback: boolean): TableModel | undefined {
    const own = provider.models?.find((m) => matchesModel(m.match, id));
    if (own || !withFallback) return own;
    for (const fallbackId of provider.fallback ?? []) {
      const fallback = this.byId.get(fallbackId);
      const found = fallback && this.findModel(fallback, id, false);
      if (found) return found;
    }
    return undefined;
  }
}

function pricesAt(model: TableModel, at: Date): TablePrices {
  if (!Array.isArray(model.prices)) return model.prices as TablePrices;
  const dated = model.prices as readonly TableDatedPrices[];
  for (let i = dated.length - 1; i >= 0; i--) {
    const d = dated[i]!;
    if (d.startDate === undefined || at.getTime() >= Date.parse(`${d.startDate}T00:00:00Z`)) return d.prices;
  }
  return dated[0]!.prices;
}

/** The table generated from the installed @pydantic/genai-prices. */
export const priceTable = new PriceTable(PRICE_TABLE);
