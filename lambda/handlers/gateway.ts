/**
 * The gateway Lambda: every /v1 route behind API Gateway's streaming integration. Cold start reads config and
 * secrets once; each invocation translates the event, runs the same GatewayApp as the local server, streams
 * the answer, and settles usage after the last byte (middy's requestEnd hook runs once the stream is done).
 */
import middy from '@middy/core';
import { executionModeStreamifyResponse } from '@middy/core/executionModeStreamifyResponse';
import type { APIGatewayProxyEvent, Context } from 'aws-lambda';
import { createGateway, type Gateway, loadGatewaySecrets } from '../compose';
import { loadConfig } from '../config';
import { asTollgateError } from '../core/errors';
import { powertoolsLogger } from '../core/log';
import { deferTokenizerLoad } from '../core/tokens';
import { SsmSecretSource } from '../core/secrets';
import { dialectOf, errorResponse } from '../http/dialects';
import { lazySsmClient } from '../store/aws-clients';
import { createDynamoDbClient } from '../store/dynamodb/client';
import { toHttpRequest, toStreamingResult, type StreamingResult } from './api-gateway';

// The tokenizer comes from a layer and is built after the first request's estimate, not at cold start.
deferTokenizerLoad();

const config = loadConfig();
const log = powertoolsLogger({ serviceName: 'tollgate-gateway', persistentKeys: { stage: config.stage } });

async function initialise(): Promise<Gateway> {
  if (!config.ssmPrefix) throw new Error('TOLLGATE_SSM_PREFIX is not set');
  const secrets = await loadGatewaySecrets(
    new SsmSecretSource({ client: lazySsmClient({ region: config.region }), prefix: config.ssmPrefix }),
  );
  return createGateway({
    config,
    secrets,
    dynamodb: createDynamoDbClient({ region: config.region, cacheMiddleware: true, directCalls: true, ...(config.dynamodbEndpoint ? { endpoint: config.dynamodbEndpoint } : {}) }),
    log,
    // Each request's EMF line is written when its observers run, i.e. after settlement in requestEnd below.
    emitMetrics: true,
  });
}

let ready: Promise<Gateway> | undefined;
/** Initialisation is retried on the next request if it failed (e.g. SSM briefly unreachable). */
function gateway(): Promise<Gateway> {
  ready ??= initialise().catch((err: unknown) => {
    ready = undefined;
    throw err;
  });
  return ready;
}
void gateway().catch(() => undefined);

const pendingSettlement = new WeakMap<object, () => Promise<unknown>>();

export async function handleEvent(event: APIGatewayProxyEvent, context: Context, signal: AbortSignal): Promise<StreamingResult> {
  log.powertools.addContext(context);
  let gw: Gateway;
  try {
    gw = await gateway();
  } catch (err) {
    const error = asTollgateError(err);
    log.log('error', 'gateway initialisation failed', { error: error.message });
    // Fail closed: without config and secrets nothing can be verified.
    return toStreamingResult(errorResponse(dialectOf(event.path), error));
  }
  const res = await gw.app.handle(toHttpRequest(event, signal));
  if (res.after) pendingSettlement.set(context, res.after);
  return toStreamingResult(res);
}

export const handler = middy<APIGatewayProxyEvent, StreamingResult>({
  executionMode: executionModeStreamifyResponse,
  requestEnd: async (request) => {
    const after = pendingSettlement.get(request.context);
    if (after) await after();
  },
}).handler((event, context, { signal }) => handleEvent(event, context, signal));
