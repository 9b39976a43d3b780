/**
 * Keeps every credential the gateway holds out of what it tells callers and logs. An upstream can echo the key
 * it was sent anywhere in its error (`error.message`, `error.param`, `error.code`, a header): errors from
 * providers are passed through {@link CredentialRedactor.redactError} with the platform credentials (provider
 * keys, the key pepper, the JWT secret, the admin token) plus the caller's own BYOK key for that call.
 */
import { TollgateError } from './errors';
import { REDACTED } from './log';

/** Things that look like provider keys, scrubbed even when they are not ours. */
const KEY_PATTERN = /\b(?:sk|pk|rk)-[A-Za-z0-9_\-*.]{4,}|\bAKIA[A-Z0-9]{12,}/g;

/** Credentials shorter than this are not matched (they would redact ordinary words). */
const MIN_SECRET_CHARS = 6;

export class CredentialRedactor {
  private readonly secrets: readonly string[];

  /** `credentials`: every secret value the gateway holds; empty and undefined entries are ignored. */
  constructor(credentials: Iterable<string | undefined> = []) {
    this.secrets = CredentialRedactor.variants([...credentials]);
  }

  /** `text` with every known credential (and `extra` ones, e.g. a BYOK key) and anything key-shaped replaced. */
  redactText(text: string, extra: readonly string[] = []): string {
    let out = text;
    for (const secret of [...CredentialRedactor.variants(extra), ...this.secrets]) {
      if (out.includes(secret)) out = out.split(secret).join(REDACTED);
    }
    return out.replace(KEY_PATTERN, REDACTED);
  }

  /**
   * A copy of `err` (same class, status and kind) whose message, code, param, header values and cause carry no
   * credential. Non-gateway errors become a plain Error with a redacted message.
   */
  redactError<E>(err: E, extra: readonly string[] = []): E {
    if (!(err instanceof Error)) return err;
    const text = (s: string) => this.redactText(s, extra);
    const cause = (err as { cause?: unknown }).cause;
    const redactedCause = cause instanceof Error ? Object.assign(new Error(text(cause.message)), { name: cause.name }) : undefined;
    if (!(err instanceof TollgateError)) {
      const copy = new Error(text(err.message), redactedCause ? { cause: redactedCause } : undefined);
      copy.name = err.name;
      return copy as E;
    }
    const copy = Object.create(Object.getPrototypeOf(err) as object) as TollgateError;
    Object.assign(copy, err, {
      code: err.code === undefined ? undefined : text(err.code),
      param: err.param === undefined ? undefined : text(err.param),
      headers: Object.fromEntries(Object.entries(err.headers).map(([k, v]) => [k, text(v)])),
    });
    Object.defineProperty(copy, 'message', { value: text(err.message), writable: true, configurable: true });
    Object.defineProperty(copy, 'stack', { value: `${err.name}: ${copy.message}`, writable: true, configurable: true });
    if (cause !== undefined) Object.defineProperty(copy, 'cause', { value: redactedCause, writable: true, configurable: true });
    return copy as E;
  }

  /**
   * `body` with every known credential (and `extra`) replaced, for streamed answers (an upstream `error` event
   * mid-stream). Only exact credentials are matched, never the key-shape pattern, so model output is left alone.
   * Bytes are passed on up to the last newline of what has arrived (a credential never spans a line), so an SSE
   * stream, whose chunks end with a newline, is not held back. A failure of `body` is rethrown redacted.
   */
  async *redactStream(body: AsyncIterable<Uint8Array>, extra: readonly string[] = []): AsyncGenerator<Uint8Array> {
    const secrets = [...CredentialRedactor.variants(extra), ...this.secrets];
    const scrub = (bytes: Uint8Array): Uint8Array => {
      const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8');
      if (!secrets.some((s) => text.includes(s))) return bytes;
      let out = text;
      for (const secret of secrets) out = out.split(secret).join(REDACTED);
      return Buffer.from(out, 'utf8');
    };
    let held: Uint8Array = new Uint8Array(0);
    try {
      for await (const chunk of body) {
        const all = held.length === 0 ? chunk : Buffer.concat([held, chunk]);
        const cut = all.lastIndexOf(0x0a) + 1;
        held = all.subarray(cut);
        if (cut > 0) yield scrub(all.subarray(0, cut));
      }
    } catch (err) {
      // A stream that fails mid-way is logged by whoever reads it: the failure quotes the upstream.
      throw this.redactError(err, extra);
    }
    if (held.length > 0) yield scrub(held);
  }

  /** Each secret as it may appear in text: raw and JSON-escaped; longest first so no fragment survives. */
  private static variants(credentials: readonly (string | undefined)[]): string[] {
    const out = new Set<string>();
    for (const c of credentials) {
      if (!c || c.length < MIN_SECRET_CHARS) continue;
      out.add(c);
      out.add(JSON.stringify(c).slice(1, -1));
      out.add(encodeURIComponent(c));
    }
    return [...out].sort((a, b) => b.length - a.length);
  }
}

/** The secret parts of a `kid:secret[,kid:secret…]` JWT secret value (and the whole value). */
export function jwtSecretParts(value: string | undefined): string[] {
  if (!value) return [];
  return [value, ...value.split(',').map((entry) => entry.slice(entry.indexOf(':') + 1).trim())];
}
