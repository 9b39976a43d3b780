/** The providers the gateway can route to, by id (`openai/gpt-4o` goes to the provider `openai`). */
import type { BedrockRuntimeClient } from '@aws-sdk/client-bedrock-runtime';
import type { Clock } from '../core/clock';
import { lazyBedrockClient } from '../store/aws-clients';
import type { ProviderEndpoints } from '../config';
import { AnthropicProvider } from './anthropic/provider';
import { BedrockProvider } from './bedrock/provider';
import type { Provider } from './contract';
import { MockProvider } from './mock/provider';
import { OpenAiProvider } from './openai/provider';

/** A map of provider id → provider. */
export class ProviderRegistry {
  private readonly providers = new Map<string, Provider>();
  private readonly byokOnly = new Set<string>();

  constructor(providers: Iterable<Provider> = []) {
    for (const provider of providers) this.register(provider);
  }

  /**
   * Adds a provider; a second provider with the same id is a programming error. With `byokOnly`, the
   * platform has no key for it: only callers who stored their own key (BYOK) can use it.
   */
  register(provider: Provider, options: { readonly byokOnly?: boolean } = {}): this {
    if (this.providers.has(provider.id)) throw new Error(`provider "${provider.id}" is registered twice`);
    this.providers.set(provider.id, provider);
    if (options.byokOnly) this.byokOnly.add(provider.id);
    return this;
  }

  /** Whether calls to this provider need the caller's own key (the platform has none). */
  needsCallerKey(id: string): boolean {
    return this.byokOnly.has(id);
  }

  /** The provider with this id, or undefined when none is configured. */
  get(id: string): Provider | undefined {
    return this.providers.get(id);
  }

  /** The ids of the configured providers, in registration order. */
  ids(): string[] {
    return [...this.providers.keys()];
  }
}

/** The platform's provider keys; a provider without a key is offered only to BYOK callers, when BYOK is on. */
export interface ProviderSecrets {
  readonly openaiApiKey?: string;
  readonly anthropicApiKey?: string;
}

export interface CreateProvidersOptions {
  /** The Bedrock client to use. @default a new BedrockRuntimeClient in `config.bedrockRegion` */
  readonly bedrockClient?: BedrockRuntimeClient;
  /** `max_tokens` for translated requests (anthropic, bedrock) that set none. @default 4096 */
  readonly defaultMaxTokens?: number;
  /** Stamps `created` on translated answers. @default systemClock */
  readonly clock?: Clock;
  /** BYOK is configured: register openai and anthropic even without a platform key, for callers' own keys. */
  readonly byok?: boolean;
}

/**
 * Builds the registry from configuration: openai and anthropic when their key is configured (or, with BYOK
 * on, for callers' own keys only), bedrock when a region is set, mock when enabled.
 */
export function createProviders(
  config: ProviderEndpoints,
  secrets: ProviderSecrets,
  options: CreateProvidersOptions = {},
): ProviderRegistry {
  const registry = new ProviderRegistry();
  const shared = { defaultMaxTokens: options.defaultMaxTokens, clock: options.clock };
  if (secrets.openaiApiKey || options.byok) {
    registry.register(new OpenAiProvider({ baseUrl: config.openaiBaseUrl, apiKey: secrets.openaiApiKey ?? '' }), {
      byokOnly: !secrets.openaiApiKey,
    });
  }
  if (secrets.anthropicApiKey || options.byok) {
    registry.register(
      new AnthropicProvider({ baseUrl: config.anthropicBaseUrl, apiKey: secrets.anthropicApiKey ?? '', ...shared }),
      { byokOnly: !secrets.anthropicApiKey },
    );
  }
  if (config.bedrockRegion) {
    // Created with the first Bedrock request, so gateways that never call Bedrock never load its SDK.
    const client = options.bedrockClient ?? lazyBedrockClient({ region: config.bedrockRegion });
    registry.register(new BedrockProvider({ client, ...shared }));
  }
  if (config.mockEnabled) registry.register(new MockProvider({ clock: options.clock }));
  return registry;
}
