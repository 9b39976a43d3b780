/**
 * The agent's `jwt-secret`, read from SSM and re-read so a rotation reaches a running task without a restart:
 * cached for `ttlMs` (default 5 minutes), and re-read at once when the gateway refuses a token (401: the key the
 * agent signed with is no longer in the gateway's ring). A read that fails keeps the last good value, so an SSM
 * hiccup does not stop runs that a still-valid key can sign.
 */
import { GetParameterCommand, type SSMClient } from '@aws-sdk/client-ssm';
import type { Clock } from '../../lambda/core/clock';

export const JWT_SECRET_TTL_MS = 5 * 60_000;

export class RefreshingSecret {
  private cached: { readonly value: string; readonly at: number } | undefined;
  private stale = false;
  private reading: Promise<string> | undefined;

  constructor(
    private readonly read: () => Promise<string>,
    private readonly options: { readonly clock: Clock; readonly ttlMs?: number },
  ) {}

  /** The current value: the cached one while fresh, else one read (concurrent callers share it). */
  async get(): Promise<string> {
    const ttl = this.options.ttlMs ?? JWT_SECRET_TTL_MS;
    if (this.cached && !this.stale && this.options.clock.now() - this.cached.at < ttl) return this.cached.value;
    this.reading ??= this.read()
      .then((value) => {
        this.cached = { value, at: this.options.clock.now() };
        this.stale = false;
        return value;
      })
      .catch((err: unknown) => {
        if (this.cached) return this.cached.value;
        throw err;
      })
      .finally(() => {
        this.reading = undefined;
      });
    return this.reading;
  }

  /** Makes the next {@link get} read again (the gateway refused a token signed with the cached value). */
  invalidate(): void {
    this.stale = true;
  }
}

/** Reads one SecureString parameter, decrypted. */
export function ssmParameterReader(ssm: Pick<SSMClient, 'send'>, name: string): () => Promise<string> {
  return async () => {
    const out = await ssm.send(new GetParameterCommand({ Name: name, WithDecryption: true }));
    const value = out.Parameter?.Value;
    if (!value) throw new Error(`${name} has no value`);
    return value;
  };
}
