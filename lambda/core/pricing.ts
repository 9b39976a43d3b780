/**
 * Prices and model routing: the one place that turns usage into cost.
 *
 * Prices come from maintained data (@pydantic/genai-prices, compiled at build time into the compact table of
 * `price-data.ts`, so the Lambda does not load the whole catalogue) with operator overrides from config. Every price is held as integer micro-USD per million
 * tokens; a cost is computed with integer arithmetic and rounded up to a whole micro-USD once per request.
 * A model with no price is refused: never billed at $0.
 */
import type { PriceOverride } from '../config';
import { InvalidRequestError } from './errors';
import { priceTable, type PriceTable, type TablePrice, type TablePrices } from './price-data';
import { costOfTokens, type MicroUsd, type MicroUsdPerMTok } from './money';
import type { TokenUsage } from './types';

/** Unit prices that apply above an input-token threshold (long-context pricing). */
export interface PriceTier {
  readonly fromInputTokens: number;
  readonly input: MicroUsdPerMTok;
  readonly output: MicroUsdPerMTok;
  readonly cachedInput: MicroUsdPerMTok;
  readonly cacheWrite: MicroUsdPerMTok;
}

export interface ModelPrice {
  readonly input: MicroUsdPerMTok;
  readonly output: MicroUsdPerMTok;
  readonly cachedInput: MicroUsdPerMTok;
  readonly cacheWrite: MicroUsdPerMTok;
  /** Higher tiers, ascending by threshold. */
  readonly tiers: readonly PriceTier[];
  readonly maxOutputTokens?: number;
  readonly contextWindow?: number;
  readonly source: 'data' | 'override';
}

/** A model name resolved to the provider that serves it and the price it is billed at. */
export interface ResolvedModel {
  /** Routing id of the provider: openai, anthropic, bedrock, mock. */
  readonly provider: string;
  /** The name sent upstream (without the `provider/` prefix). */
  readonly upstreamModel: string;
  /** `provider/model`, as reported in usage records and /v1/models. */
  readonly id: string;
  readonly price: ModelPrice;
}

/** Our routing ids and the provider ids of the price data. */
const PRICE_DATA_PROVIDER: Readonly<Record<string, string>> = { openai: 'openai', anthropic: 'anthropic', bedrock: 'aws' };
const ROUTE_FOR_DATA_PROVIDER: Readonly<Record<string, string>> = { openai: 'openai', anthropic: 'anthropic', aws: 'bedrock' };
/** Providers whose models the mock provider imitates (and lists). */
const MOCKED_PROVIDERS = ['openai', 'anthropic'] as const;

const toMicros = (usdPerMTok: number): MicroUsdPerMTok => Math.round(usdPerMTok * 1_000_000);

function fromData(data: TablePrices, contextWindow: number | undefined): ModelPrice {
  const base = (v: TablePrice | undefined): number => (v === undefined ? 0 : typeof v === 'number' ? v : v.base);
  const tierStarts = new Set<number>();
  for (const v of [data.input, data.output, data.cacheRead, data.cacheWrite]) {
    if (v !== undefined && typeof v === 'object') for (const t of v.tiers) tierStarts.add(t.start);
  }
  const at = (v: TablePrice | undefined, start: number): number => {
    if (v === undefined) return 0;
    if (typeof v === 'number') return v;
    let price = v.base;
    for (const t of v.tiers) if (start >= t.start) price = t.price;
    return price;
  };
  const input = base(data.input);
  return {
    input,
    output: base(data.output),
    // Models without a cache-read price bill cached tokens as ordinary input.
    cachedInput: data.cacheRead === undefined ? input : base(data.cacheRead),
    cacheWrite: data.cacheWrite === undefined ? input : base(data.cacheWrite),
    tiers: [...tierStarts]
      .sort((a, b) => a - b)
      .map((start) => ({
        fromInputTokens: start,
        input: at(data.input, start),
        output: at(data.output, start),
        cachedInput: at(data.cacheRead ?? data.input, start),
        cacheWrite: at(data.cacheWrite ?? data.input, start),
      })),
    contextWindow,
    source: 'data',
  };
}

function fromOverride(o: PriceOverride): ModelPrice {
  const input = toMicros(o.input);
  return {
    input,
    output: toMicros(o.output ?? 0),
    cachedInput: o.cachedInput === undefined ? input : toMicros(o.cachedInput),
    cacheWrite: o.cacheWrite === undefined ? input : toMicros(o.cacheWrite),
    tiers: [],
    maxOutputTokens: o.maxOutputTokens,
    source: 'override',
  };
}

export interface PriceBookOptions {
  /** Operator overrides keyed `provider/model` (e.g. `openai/gpt-4o`). */
  readonly overrides?: Readonly<Record<string, PriceOverride>>;
  /** Routing ids of the providers this gateway has configured. */
  readonly providers: readonly string[];
  readonly now?: () => number;
  /** The price data. @default the table generated from @pydantic/genai-prices */
  readonly table?: PriceTable;
}

export class PriceBook {
  private readonly overrides: ReadonlyMap<string, ModelPrice>;
  private readonly providers: ReadonlySet<string>;
  private readonly cache = new Map<string, { price: ModelPrice | undefined; at: number }>();
  private readonly now: () => number;
  private readonly table: PriceTable;

  constructor(options: PriceBookOptions) {
    this.table = options.table ?? priceTable;
    this.overrides = new Map(Object.entries(options.overrides ?? {}).map(([k, v]) => [k, fromOverride(v)]));
    this.providers = new Set(options.providers);
    this.now = options.now ?? Date.now;
  }

  /** The price of `model` at `provider` (routing id), or undefined when nobody publishes one. */
  priceOf(provider: string, model: string): ModelPrice | undefined {
    const override = this.overrides.get(`${provider}/${model}`);
    if (override) return override;
    const key = `${provider}/${model}`;
    const hit = this.cache.get(key);
    // Conditional prices (time-of-day, dated changes) are re-read hourly.
    if (hit && this.now() - hit.at < 3_600_000) return hit.price;
    const price = this.lookupData(provider, model);
    this.cache.set(key, { price, at: this.now() });
    return price;
  }

  private lookupData(provider: string, model: string): ModelPrice | undefined {
    const dataProvider = provider === 'mock' ? undefined : PRICE_DATA_PROVIDER[provider];
    if (provider !== 'mock' && !dataProvider) return undefined;
    const at = new Date(this.now());
    // The mock matches by model name first; embedding models match no provider pattern, so it then asks
    // each provider it imitates by id.
    const result =
      this.table.lookup(model, { ...(dataProvider ? { providerId: dataProvider } : {}), at }) ??
      (provider === 'mock' ? MOCKED_PROVIDERS.map((providerId) => this.table.lookup(model, { providerId, at })).find(Boolean) : undefined);
    if (!result) return undefined;
    // The mock provider imitates only the providers it can speak for.
    if (provider === 'mock' && !(MOCKED_PROVIDERS as readonly string[]).includes(result.providerId)) return undefined;
    return fromData(result.prices, result.model.contextWindow);
  }

  /**
   * Resolves a caller's model name: `provider/model` routes to that provider; a bare name routes to the
   * provider the price data (or an override) names. Throws a 400 naming the model when it has no price or no
   * configured provider.
   */
  resolve(name: string): ResolvedModel {
    const slash = name.indexOf('/');
    let provider: string;
    let upstreamModel: string;
    if (slash > 0 && this.isRoutingId(name.slice(0, slash))) {
      provider = name.slice(0, slash);
      upstreamModel = name.slice(slash + 1);
    } else {
      upstreamModel = name;
      const routed = this.routeBareName(name);
      if (!routed) {
        throw new InvalidRequestError(`The model "${name}" has no known price, so this gateway does not serve it.`, {
          code: 'model_not_found',
          param: 'model',
        });
      }
      provider = routed;
    }
    if (!this.providers.has(provider)) {
      throw new InvalidRequestError(
        `The model "${name}" is served by provider "${provider}", which is not configured on this gateway.`,
        { code: 'model_not_found', param: 'model' },
      );
    }
    const price = this.priceOf(provider, upstreamModel);
    if (!price) {
      throw new InvalidRequestError(`The model "${name}" has no known price, so this gateway does not serve it.`, {
        code: 'model_not_found',
        param: 'model',
      });
    }
    return { provider, upstreamModel, id: `${provider}/${upstreamModel}`, price };
  }

  /**
   * The provider for a bare model name: an operator override first, then the provider the price data
   * matches the name to, then any configured provider whose price data lists it (embedding models are
   * not matched by provider patterns).
   */
  private routeBareName(name: string): string | undefined {
    const fromOverride = [...this.overrides.keys()].find((k) => k.endsWith(`/${name}`) && this.providers.has(k.split('/')[0]!));
    if (fromOverride) return fromOverride.split('/')[0]!;
    const matched = this.table.providerForModel(name);
    if (matched && ROUTE_FOR_DATA_PROVIDER[matched]) return ROUTE_FOR_DATA_PROVIDER[matched];
    return Object.keys(PRICE_DATA_PROVIDER).find((p) => this.providers.has(p) && this.priceOf(p, name) !== undefined);
  }

  private isRoutingId(id: string): boolean {
    return id === 'mock' || id in PRICE_DATA_PROVIDER;
  }

  /** Every model the gateway can serve and bill: priced and with a configured provider. */
  listModels(): { id: string; provider: string }[] {
    const out = new Map<string, string>();
    for (const provider of this.providers) {
      const dataIds = provider === 'mock' ? [...MOCKED_PROVIDERS] : PRICE_DATA_PROVIDER[provider] ? [PRICE_DATA_PROVIDER[provider]!] : [];
      for (const dataId of dataIds) {
        for (const m of this.table.modelsOf(dataId)) {
          if (m.deprecated) continue;
          if (this.priceOf(provider, m.id)) out.set(`${provider}/${m.id}`, provider);
        }
      }
    }
    for (const key of this.overrides.keys()) {
      const provider = key.split('/')[0]!;
      if (this.providers.has(provider)) out.set(key, provider);
    }
    return [...out.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([id, provider]) => ({ id, provider }));
  }
}

function tierFor(price: ModelPrice, inputTokens: number): Omit<PriceTier, 'fromInputTokens'> {
  let unit: Omit<PriceTier, 'fromInputTokens'> = price;
  for (const tier of price.tiers) if (inputTokens >= tier.fromInputTokens) unit = tier;
  return unit;
}

/** The cost of a request's actual usage, rounded up to a whole micro-USD. */
export function costOf(price: ModelPrice, usage: TokenUsage): MicroUsd {
  const unit = tierFor(price, usage.inputTokens);
  const cached = Math.min(usage.cachedInputTokens, usage.inputTokens);
  const written = Math.min(usage.cacheWriteTokens, usage.inputTokens - cached);
  const plain = usage.inputTokens - cached - written;
  // Sum exact products in micro-USD × 10^6 (BigInt), round up once.
  const total =
    BigInt(plain) * BigInt(unit.input) +
    BigInt(cached) * BigInt(unit.cachedInput) +
    BigInt(written) * BigInt(unit.cacheWrite) +
    BigInt(usage.outputTokens) * BigInt(unit.output);
  return Number((total + 999_999n) / 1_000_000n);
}

/** The most a request can cost: every estimated input token at the full input price plus every output token. */
export function maxCostOf(price: ModelPrice, estimate: { inputTokens: number; maxOutputTokens: number }): MicroUsd {
  const unit = tierFor(price, estimate.inputTokens);
  return costOfTokens(estimate.inputTokens, unit.input) + costOfTokens(estimate.maxOutputTokens, unit.output);
}
