/**
 * Checks a caller's provider key with the provider before it is stored: one cheap authenticated GET (the model
 * list), sent straight to the configured provider endpoint with its own timeout. It runs in its own context,
 * never through the gateway's request path (no pipeline, no BYOK lookup, no retries), so a failing validation
 * cannot recurse or loop. Messages never contain the key or the provider's answer.
 */
import { UpstreamError } from '../errors';

/** The providers whose keys callers may bring. */
export const BYOK_PROVIDERS = ['openai', 'anthropic'] as const;
export type ByokProvider = (typeof BYOK_PROVIDERS)[number];

/** True when callers may store a key for `provider`. */
export function isByokProvider(provider: string): provider is ByokProvider {
  return (BYOK_PROVIDERS as readonly string[]).includes(provider);
}

/** `valid`: the provider accepted the key; `invalid`: it refused it (401/403). */
export type KeyValidation = 'valid' | 'invalid';

export interface ProviderKeyValidator {
  /** Throws {@link UpstreamError} (502) when the provider could not be asked. */
  validate(provider: ByokProvider, apiKey: string): Promise<KeyValidation>;
}

export interface HttpProviderKeyValidatorOptions {
  /** OpenAI-compatible base URL ending in `/v1`. */
  readonly openaiBaseUrl: string;
  /** Anthropic base URL without `/v1`. */
  readonly anthropicBaseUrl: string;
  /** @default 5000 */
  readonly timeoutMs?: number;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
}

/** Validates keys with `GET /v1/models` at the configured OpenAI or Anthropic endpoint. */
export class HttpProviderKeyValidator implements ProviderKeyValidator {
  constructor(private readonly options: HttpProviderKeyValidatorOptions) {}

  async validate(provider: ByokProvider, apiKey: string): Promise<KeyValidation> {
    const request: { url: string; headers: Record<string, string> } =
      provider === 'openai'
        ? { url: `${this.options.openaiBaseUrl}/models`, headers: { authorization: `Bearer ${apiKey}` } }
        : {
            url: `${this.options.anthropicBaseUrl}/v1/models`,
            headers: { 'x-api-key': apiKey, 'anthropic-version': '2023-06-01' },
          };
    const doFetch = this.options.fetch ?? fetch;
    let status: number;
    try {
      const res = await doFetch(request.url, {
        method: 'GET',
        headers: request.headers,
        redirect: 'error',
        signal: AbortSignal.timeout(this.options.timeoutMs ?? 5_000),
      });
      status = res.status;
      await res.body?.cancel().catch(() => undefined);
    } catch (err) {
      throw new UpstreamError(`The key could not be checked with ${provider} (unreachable or too slow); nothing was stored.`, {
        code: 'byok_validation_unavailable',
        cause: err instanceof Error ? new Error(err.name) : undefined,
      });
    }
    if (status >= 200 && status < 300) return 'valid';
    if (status === 401 || status === 403) return 'invalid';
    throw new UpstreamError(`${provider} answered ${status} while checking the key; nothing was stored.`, {
      code: 'byok_validation_unavailable',
    });
  }
}
