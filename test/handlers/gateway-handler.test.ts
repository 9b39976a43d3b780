/**
 * The gateway Lambda handler, run as Lambda would run it: an API Gateway REST proxy event in, a response
 * stream out (the `awslambda` streaming globals are stood in for at the edge; Lambda's runtime cannot run
 * here), real DynamoDB Local tables underneath, SSM mocked with aws-sdk-client-mock.
 */
import { GetParametersCommand, SSMClient } from '@aws-sdk/client-ssm';
import type { APIGatewayProxyEvent, Context } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { Writable } from 'node:stream';
import { createApiKey } from '../../lambda/core/key-admin';
import { systemClock } from '../../lambda/core/clock';
import { DynamoDbKeyStore } from '../../lambda/store/dynamodb/key-store';
import { DynamoDbLedger } from '../../lambda/store/dynamodb/ledger';
import { usageDayPartition, usageScopeShard } from '../../lambda/store/dynamodb/usage-store';
import { createTestTables, testDynamoDbEndpoint, type TestTables } from '../support/dynamo';

interface Captured {
  prelude?: { statusCode: number; headers: Record<string, string> };
  body: string;
}

class ResponseSink extends Writable {
  readonly captured: Captured = { body: '' };
  _write(chunk: Buffer, _enc: BufferEncoding, done: () => void): void {
    this.captured.body += chunk.toString();
    done();
  }
}

const ssm = mockClient(SSMClient);
let tables: TestTables;
let handler: (event: APIGatewayProxyEvent, context: Context) => Promise<Captured>;

beforeAll(async () => {
  tables = await createTestTables();
  (globalThis as Record<string, unknown>).awslambda = {
    streamifyResponse:
      (fn: (e: unknown, s: Writable, c: unknown) => Promise<void>) =>
      async (event: unknown, context: unknown): Promise<Captured> => {
        const sink = new ResponseSink();
        await fn(event, sink, context);
        return sink.captured;
      },
    HttpResponseStream: {
      from: (stream: ResponseSink, prelude: Captured['prelude']) => {
        stream.captured.prelude = prelude;
        return stream;
      },
    },
  };
  ssm.on(GetParametersCommand).resolves({
    Parameters: [{ Name: '/tollgate/test/key-pepper', Value: 'lambda-pepper' }],
    InvalidParameters: ['/tollgate/test/openai-api-key'],
  });
  Object.assign(process.env, {
    TOLLGATE_STAGE: 'test',
    TOLLGATE_SSM_PREFIX: '/tollgate/test/',
    TOLLGATE_TABLE_KEYS: tables.tables.keys,
    TOLLGATE_TABLE_BUDGETS: tables.tables.budgets,
    TOLLGATE_TABLE_USAGE: tables.tables.usage,
    TOLLGATE_TABLE_BYOK: tables.tables.byok,
    TOLLGATE_DYNAMODB_ENDPOINT: testDynamoDbEndpoint(),
    TOLLGATE_MOCK_PROVIDER: 'true',
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: 'local',
    AWS_SECRET_ACCESS_KEY: 'local',
  });
  handler = (await import('../../lambda/handlers/gateway')).handler as unknown as typeof handler;
});

afterAll(async () => {
  delete (globalThis as Record<string, unknown>).awslambda;
  ssm.restore();
  await tables.cleanup();
});

function event(path: string, body: unknown, headers: Record<string, string>): APIGatewayProxyEvent {
  return {
    httpMethod: 'POST',
    path,
    resource: '/v1/{proxy+}',
    headers,
    multiValueHeaders: {},
    queryStringParameters: null,
    multiValueQueryStringParameters: null,
    pathParameters: null,
    stageVariables: null,
    body: Buffer.from(JSON.stringify(body)).toString('base64'),
    isBase64Encoded: true,
    requestContext: { identity: { sourceIp: '203.0.113.9' } } as APIGatewayProxyEvent['requestContext'],
  };
}

const context = () => ({ awsRequestId: 'aws-req-1', getRemainingTimeInMillis: () => 30_000 }) as unknown as Context;

describe('the gateway Lambda handler', () => {
  it('when a streaming chat request arrives through API Gateway, the SSE body is streamed and usage is settled after it', async () => {
    const keys = new DynamoDbKeyStore(tables.client, tables.tables);
    const ledger = new DynamoDbLedger(tables.client, { tables: tables.tables, platformShards: 8, usageRetentionDays: 30 });
    const { raw, record } = await createApiKey({ keys, ledger }, { userId: 'lambda-user' }, { pepper: 'lambda-pepper', clock: systemClock });
    const out = await handler(
      event('/v1/chat/completions', { model: 'mock/gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'hi' }] }, { Authorization: `Bearer ${raw}` }),
      context(),
    );
    expect(out.prelude?.statusCode).toBe(200);
    expect(out.prelude?.headers['content-type']).toContain('text/event-stream');
    expect(out.body).toContain('data: [DONE]');
    // requestEnd ran the settlement before the invocation finished.
    const { ScanCommand } = await import('@aws-sdk/client-dynamodb');
    const usage = await tables.client.send(new ScanCommand({ TableName: tables.tables.usage }));
    expect(usage.Items?.map((i) => [i.pk?.S, i.keyId?.S])).toEqual([
      [
        usageDayPartition(String(usage.Items?.[0]?.timestamp?.S).slice(0, 10), 'lambda-user', usageScopeShard(usage.Items?.[0]?.requestId?.S ?? '')),
        record.keyId,
      ],
    ]);
  });

  it('when the key is wrong, the Lambda answers 401 in OpenAI error JSON', async () => {
    const out = await handler(event('/v1/chat/completions', { model: 'mock/gpt-4o-mini', messages: [] }, { authorization: 'Bearer nope' }), context());
    expect(out.prelude?.statusCode).toBe(401);
    expect(JSON.parse(out.body)).toMatchObject({ error: { code: 'invalid_api_key' } });
  });
});
