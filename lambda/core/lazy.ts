/**
 * Loads something on first use and keeps it: the gateway's optional AWS clients (SSM, Bedrock, KMS, SQS, SNS)
 * are imported this way so a cold start loads only what the first request needs. A failed load is retried by
 * the next call instead of being remembered.
 */
export function lazy<T>(load: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    pending ??= load().catch((err: unknown) => {
      pending = undefined;
      throw err;
    });
    return pending;
  };
}

/** A value, or a function producing it on first use (an optional AWS client, say). */
export type Lazily<T extends object> = T | (() => Promise<T>);

/** A getter for a {@link Lazily} value: the function is called once (again after a failure), a value is returned as is. */
export function resolveLazily<T extends object>(ref: Lazily<T>): () => Promise<T> {
  if (typeof ref === 'function') return lazy(ref as () => Promise<T>);
  const ready = Promise.resolve(ref);
  return () => ready;
}
