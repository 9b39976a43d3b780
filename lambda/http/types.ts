/**
 * The gateway's own request/response shapes, free of any server framework: the local node:http server and
 * the API Gateway streaming Lambda handler both translate to and from these.
 */
export interface HttpRequest {
  readonly method: string;
  /** Path without the API Gateway stage, e.g. `/v1/chat/completions`. */
  readonly path: string;
  readonly query: URLSearchParams;
  /** Header names in lower case. */
  readonly headers: Readonly<Record<string, string>>;
  readonly body: Buffer;
  readonly sourceIp?: string;
  /** Aborted when the client goes away. */
  readonly signal: AbortSignal;
  /** The IAM principal ARN when API Gateway authorized the call with AWS_IAM (admin routes). */
  readonly iamCaller?: string;
}

export type HttpBody = string | Uint8Array | AsyncIterable<Uint8Array>;

export interface HttpResponse {
  readonly status: number;
  readonly headers: Record<string, string>;
  readonly body: HttpBody;
  /**
   * Work to run after the last byte has been handed to the client (settling usage). Adapters call it after
   * ending the response, so it never delays the bytes the client waits for.
   */
  readonly after?: () => Promise<unknown>;
}

export function isStreamBody(body: HttpBody): body is AsyncIterable<Uint8Array> {
  return typeof body === 'object' && body !== null && Symbol.asyncIterator in body;
}
