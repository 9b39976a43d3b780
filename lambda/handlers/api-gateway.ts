/**
 * Translation between API Gateway REST proxy events and the gateway's own request/response shapes.
 */
import type { APIGatewayProxyEvent } from 'aws-lambda';
import { Readable } from 'node:stream';
import type { HttpRequest, HttpResponse } from '../http/types';
import { isStreamBody } from '../http/types';

export function toHttpRequest(event: APIGatewayProxyEvent, signal: AbortSignal): HttpRequest {
  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(event.headers ?? {})) {
    if (value !== undefined) headers[name.toLowerCase()] = value;
  }
  const query = new URLSearchParams();
  for (const [name, values] of Object.entries(event.multiValueQueryStringParameters ?? {})) {
    for (const v of values ?? []) query.append(name, v);
  }
  const body = event.body ? Buffer.from(event.body, event.isBase64Encoded ? 'base64' : 'utf8') : Buffer.alloc(0);
  const identity = event.requestContext?.identity;
  return {
    method: event.httpMethod.toUpperCase(),
    path: event.path,
    query,
    headers,
    body,
    ...(identity?.sourceIp ? { sourceIp: identity.sourceIp } : {}),
    ...(identity?.userArn ? { iamCaller: identity.userArn } : {}),
    signal,
  };
}

/** The response shape middy's streamifyResponse mode writes: status and headers first, then the body. */
export interface StreamingResult {
  readonly statusCode: number;
  readonly headers: Record<string, string>;
  readonly body: string | Readable;
}

export function toStreamingResult(res: HttpResponse): StreamingResult {
  const { body } = res;
  return {
    statusCode: res.status,
    headers: res.headers,
    body: typeof body === 'string' ? body : isStreamBody(body) ? Readable.from(body) : Readable.from([Buffer.from(body)]),
  };
}
