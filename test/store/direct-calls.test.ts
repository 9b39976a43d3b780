import { Sha256 } from '@aws-crypto/sha256-js';
import {
  BatchGetItemCommand,
  BatchWriteItemCommand,
  ConditionalCheckFailedException,
  DeleteItemCommand,
  DescribeTableCommand,
  DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  TransactionCanceledException,
  TransactWriteItemsCommand,
  UpdateItemCommand,
} from '@aws-sdk/client-dynamodb';
import { SignatureV4 } from '@smithy/signature-v4';
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { StoreUnavailableError } from '../../lambda/core/errors';
import { createDynamoDbClient, errorName, translateError } from '../../lambda/store/dynamodb/client';
import { withDirectCalls } from '../../lambda/store/dynamodb/direct-calls';
import { createTestTables, testDynamoDbEndpoint, type TestTables } from '../support/dynamo';

// The same calls through the SDK and through direct calls, on DynamoDB Local: the same outputs and errors.
let db: TestTables;
let direct: DynamoDBClient;
beforeAll(async () => {
  db = await createTestTables();
  direct = createDynamoDbClient({ region: 'us-east-1', endpoint: testDynamoDbEndpoint(), directCalls: true, maxAttempts: 10, requestTimeoutMs: 120_000, connectionTimeoutMs: 30_000 });
});
afterAll(async () => {
  direct.destroy();
  await db.cleanup();
});

type Send = (command: unknown) => Promise<Record<string, unknown>>;
const sendVia = (client: DynamoDBClient): Send => (command) => (client.send as unknown as Send)(command);
/** An output without its request metadata (request ids differ between two calls). */
const body = ({ $metadata, ...rest }: Record<string, unknown>) => {
  expect($metadata).toEqual(expect.objectContaining({ httpStatusCode: 200, attempts: 1 }));
  return rest;
};

async function failureOf(promise: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  try {
    await promise;
  } catch (err) {
    return err as Error & Record<string, unknown>;
  }
  throw new Error('the call did not fail');
}

describe('direct DynamoDB calls', () => {
  it('when the same item calls go through the SDK and directly, their outputs are the same, binary values included', async () => {
    const outputs: Record<string, unknown>[][] = [];
    for (const [via, client] of [['sdk', db.client], ['direct', direct]] as const) {
      const send = sendVia(client);
      const pk = { S: `direct-test#${via}` };
      const item = {
        pk,
        sk: { S: 'a' },
        n: { N: '42' },
        s: { S: 'text "quoted" \u00e9' },
        b: { B: new Uint8Array([0, 1, 2, 250, 255]) },
        bs: { BS: [new Uint8Array([1]), new Uint8Array([2, 3])] },
        m: { M: { B: { S: 'a map key named B' }, l: { L: [{ N: '1' }, { BOOL: true }, { NULL: true }] } } },
        ss: { SS: ['x', 'y'] },
      };
      const got: Record<string, unknown>[] = [];
      got.push(body(await send(new PutItemCommand({ TableName: db.tables.budgets, Item: item }))));
      got.push(body(await send(new GetItemCommand({ TableName: db.tables.budgets, Key: { pk, sk: { S: 'a' } }, ConsistentRead: true }))));
      got.push(
        body(
          await send(
            new UpdateItemCommand({
              TableName: db.tables.budgets,
              Key: { pk, sk: { S: 'a' } },
              UpdateExpression: 'ADD #n :one SET fresh = :b',
              ExpressionAttributeNames: { '#n': 'n' },
              ExpressionAttributeValues: { ':one': { N: '1' }, ':b': { B: new Uint8Array([9, 9]) } },
              ReturnValues: 'ALL_NEW',
            }),
          ),
        ),
      );
      got.push(
        body(
          await send(
            new BatchWriteItemCommand({
              RequestItems: { [db.tables.budgets]: [1, 2, 3].map((i) => ({ PutRequest: { Item: { pk, sk: { S: `b${i}` }, i: { N: String(i) } } } })) },
            }),
          ),
        ),
      );
      const batch = body(await send(new BatchGetItemCommand({ RequestItems: { [db.tables.budgets]: { Keys: [1, 2, 3].map((i) => ({ pk, sk: { S: `b${i}` } })) } } })));
      const responses = (batch.Responses as Record<string, { sk: { S: string } }[]>)[db.tables.budgets]!;
      got.push({ ...batch, Responses: [...responses].sort((x, y) => x.sk.S.localeCompare(y.sk.S)) });
      got.push(
        body(
          await send(
            new TransactWriteItemsCommand({
              TransactItems: [
                { Update: { TableName: db.tables.budgets, Key: { pk, sk: { S: 'b1' } }, UpdateExpression: 'ADD i :ten', ExpressionAttributeValues: { ':ten': { N: '10' } } } },
                { Delete: { TableName: db.tables.budgets, Key: { pk, sk: { S: 'b2' } } } },
              ],
            }),
          ),
        ),
      );
      got.push(body(await send(new QueryCommand({ TableName: db.tables.budgets, KeyConditionExpression: 'pk = :pk', ExpressionAttributeValues: { ':pk': pk }, Limit: 2 }))));
      got.push(body(await send(new DeleteItemCommand({ TableName: db.tables.budgets, Key: { pk, sk: { S: 'b3' } }, ReturnValues: 'ALL_OLD' }))));
      // The partition key differs between the two runs: compare with it replaced.
      outputs.push(JSON.parse(JSON.stringify(got, (_k, v: unknown) => (v instanceof Uint8Array ? { bytes: [...v] } : v)).replaceAll(`direct-test#${via}`, 'PK')));
      const read = got[1]!.Item as Record<string, { B?: unknown; BS?: unknown[] }>;
      expect(read.b!.B).toBeInstanceOf(Uint8Array);
      expect(read.bs!.BS![1]).toBeInstanceOf(Uint8Array);
    }
    expect(outputs[1]).toEqual(outputs[0]);
    expect(JSON.stringify(outputs[1])).toContain('"Item"');
  });

  it('when a condition fails, the direct call throws the SDK exception with the old item, as the SDK does', async () => {
    const errors: (Error & Record<string, unknown>)[] = [];
    for (const [via, client] of [['sdk', db.client], ['direct', direct]] as const) {
      const send = sendVia(client);
      const Key = { pk: { S: 'direct-test#cond' }, sk: { S: via } };
      await send(new PutItemCommand({ TableName: db.tables.budgets, Item: { ...Key, n: { N: '5' } } }));
      errors.push(
        await failureOf(
          send(
            new UpdateItemCommand({
              TableName: db.tables.budgets,
              Key,
              UpdateExpression: 'ADD n :one',
              ConditionExpression: 'n < :max',
              ExpressionAttributeValues: { ':one': { N: '1' }, ':max': { N: '3' } },
              ReturnValuesOnConditionCheckFailure: 'ALL_OLD',
            }),
          ),
        ),
      );
    }
    const [sdk, viaDirect] = errors;
    expect(viaDirect).toBeInstanceOf(ConditionalCheckFailedException);
    expect(errorName(viaDirect)).toBe(errorName(sdk));
    expect(viaDirect!.message).toBe(sdk!.message);
    expect(viaDirect!.$fault).toBe('client');
    expect((viaDirect!.$metadata as { httpStatusCode: number }).httpStatusCode).toBe(400);
    expect((viaDirect!.Item as { sk: unknown }).sk).toEqual({ S: 'direct' });
    expect({ ...(viaDirect!.Item as object), sk: null }).toEqual({ ...(sdk!.Item as object), sk: null });
  });

  it('when a transaction is cancelled, the direct call throws TransactionCanceledException with the same reasons', async () => {
    const errors: (Error & Record<string, unknown>)[] = [];
    for (const [via, client] of [['sdk', db.client], ['direct', direct]] as const) {
      const send = sendVia(client);
      const Key = { pk: { S: 'direct-test#tx' }, sk: { S: via } };
      await send(new PutItemCommand({ TableName: db.tables.budgets, Item: { ...Key, n: { N: '7' } } }));
      errors.push(
        await failureOf(
          send(
            new TransactWriteItemsCommand({
              TransactItems: [
                { Put: { TableName: db.tables.budgets, Item: { pk: { S: 'direct-test#tx-other' }, sk: { S: via } } } },
                { ConditionCheck: { TableName: db.tables.budgets, Key, ConditionExpression: 'attribute_not_exists(n)', ReturnValuesOnConditionCheckFailure: 'ALL_OLD' } },
              ],
            }),
          ),
        ),
      );
    }
    const [sdk, viaDirect] = errors;
    expect(viaDirect).toBeInstanceOf(TransactionCanceledException);
    expect(viaDirect!.message).toBe(sdk!.message);
    const reasons = (e: Record<string, unknown>) => JSON.stringify(e.CancellationReasons).replaceAll('"direct"', '"sdk"');
    expect(reasons(viaDirect!)).toBe(reasons(sdk!));
    expect(reasons(viaDirect!)).toContain('ConditionalCheckFailed');
  });

  it('when the input is invalid, the direct call throws the same validation error as the SDK, and is not retried', async () => {
    const bad = () => new GetItemCommand({ TableName: db.tables.budgets, Key: { pk: { S: 'x' } } });
    const sdk = await failureOf(sendVia(db.client)(bad()));
    const viaDirect = await failureOf(sendVia(direct)(bad()));
    expect(errorName(viaDirect)).toBe('ValidationException');
    expect(errorName(viaDirect)).toBe(errorName(sdk));
    expect(viaDirect.message).toBe(sdk.message);
    expect((viaDirect.$metadata as { attempts: number }).attempts).toBe(1);
    expect(translateError(viaDirect)).toBe(viaDirect);
  });

  it('when a command is not an item operation, it goes through the SDK (its middleware sees it)', async () => {
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: testDynamoDbEndpoint(), directCalls: true, maxAttempts: 10, requestTimeoutMs: 120_000 });
    const seen: string[] = [];
    client.middlewareStack.add((next, context) => (args) => {
      seen.push(context.commandName ?? '');
      return next(args);
    }, { step: 'initialize', name: 'testSeen' });
    try {
      const out = await client.send(new DescribeTableCommand({ TableName: db.tables.budgets }));
      expect(out.Table?.CreationDateTime).toBeInstanceOf(Date);
      await client.send(new GetItemCommand({ TableName: db.tables.budgets, Key: { pk: { S: 'x' }, sk: { S: 'y' } } }));
      expect(seen).toEqual(['DescribeTableCommand']);
    } finally {
      client.destroy();
    }
  });
});

/** A stand-in endpoint on loopback answering each call with the next of `answers` (the last one repeats). */
interface Recorded {
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
  readonly path: string;
}
type Answer = (req: IncomingMessage, res: ServerResponse) => void;
async function scriptedEndpoint(answers: Answer[]): Promise<{ url: string; calls: Recorded[]; server: Server }> {
  const calls: Recorded[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      calls.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8'), path: req.url ?? '' });
      answers[Math.min(calls.length, answers.length) - 1]!(req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, calls, server };
}
const json = (status: number, value: unknown): Answer => (_req, res) => {
  res.writeHead(status, { 'content-type': 'application/x-amz-json-1.0', 'x-amzn-requestid': `req-${status}` });
  res.end(JSON.stringify(value));
};
const closeServer = (server: Server) => {
  server.closeAllConnections();
  return new Promise<void>((resolve) => server.close(() => resolve()));
};

describe('direct DynamoDB calls on the wire', () => {
  it('when it signs a call with a session token, the signature is the one the SDK signer computes for what was sent', async () => {
    const endpoint = await scriptedEndpoint([json(200, { Item: { pk: { S: 'a' } } })]);
    const credentials = { accessKeyId: 'AKIDEXAMPLE', secretAccessKey: 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', sessionToken: 'session-token-example' };
    const client = withDirectCalls(new DynamoDBClient({ region: 'eu-west-1', endpoint: endpoint.url, credentials }), {
      region: 'eu-west-1',
      endpoint: endpoint.url,
      maxAttempts: 1,
      connectionTimeoutMs: 30_000,
      requestTimeoutMs: 30_000,
      maxSockets: 4,
    });
    try {
      for (const pk of ['a', 'b']) await client.send(new GetItemCommand({ TableName: 'table', Key: { pk: { S: pk } } }));
      const verifier = new SignatureV4({ credentials, region: 'eu-west-1', service: 'dynamodb', sha256: Sha256, applyChecksum: false });
      expect(endpoint.calls).toHaveLength(2);
      for (const call of endpoint.calls) {
        const authorization = String(call.headers.authorization);
        const signed = /SignedHeaders=([^,]+)/.exec(authorization)![1]!.split(';');
        expect(signed).toEqual(['content-type', 'host', 'x-amz-date', 'x-amz-security-token', 'x-amz-target']);
        const amzDate = String(call.headers['x-amz-date']);
        const signingDate = new Date(`${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13)}`);
        const url = new URL(endpoint.url);
        const again = await verifier.sign(
          {
            method: 'POST',
            protocol: url.protocol,
            hostname: url.hostname,
            port: Number(url.port),
            path: call.path,
            query: {},
            headers: Object.fromEntries(signed.map((name) => [name, String(call.headers[name])])),
            body: call.body,
          },
          { signingDate },
        );
        expect(authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE\/\d{8}\/eu-west-1\/dynamodb\/aws4_request/);
        expect(again.headers.authorization).toBe(authorization);
        expect(call.headers['x-amz-target']).toBe('DynamoDB_20120810.GetItem');
        expect(JSON.parse(call.body)).toEqual({ TableName: 'table', Key: { pk: { S: expect.any(String) } } });
      }
    } finally {
      client.destroy();
      await closeServer(endpoint.server);
    }
  });

  it('when the store answers 500 and then 200, the call is retried and succeeds; its metadata counts the attempts', async () => {
    const endpoint = await scriptedEndpoint([
      json(500, { __type: 'com.amazonaws.dynamodb.v20120810#InternalServerError', message: 'internal' }),
      json(400, { __type: 'com.amazonaws.dynamodb.v20120810#ThrottlingException', message: 'slow down' }),
      json(200, { Attributes: { n: { N: '2' } } }),
    ]);
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: endpoint.url, directCalls: true, maxAttempts: 3 });
    try {
      const out = await client.send(new UpdateItemCommand({ TableName: 'table', Key: { pk: { S: 'a' } }, UpdateExpression: 'ADD n :one', ExpressionAttributeValues: { ':one': { N: '1' } } }));
      expect(out.Attributes).toEqual({ n: { N: '2' } });
      expect(out.$metadata).toEqual(expect.objectContaining({ httpStatusCode: 200, attempts: 3, requestId: 'req-200' }));
      expect(endpoint.calls.map((c) => c.body)).toEqual([endpoint.calls[0]!.body, endpoint.calls[0]!.body, endpoint.calls[0]!.body]);
    } finally {
      client.destroy();
      await closeServer(endpoint.server);
    }
  });

  it('when the store keeps answering 503, the call fails after maxAttempts and becomes StoreUnavailableError', async () => {
    const endpoint = await scriptedEndpoint([json(503, { __type: 'com.amazon.coral.availability#ServiceUnavailableException', message: 'unavailable' })]);
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: endpoint.url, directCalls: true, maxAttempts: 2 });
    try {
      const err = await failureOf(client.send(new GetItemCommand({ TableName: 'table', Key: { pk: { S: 'a' } } })));
      expect(errorName(err)).toBe('ServiceUnavailableException');
      expect(endpoint.calls).toHaveLength(2);
      expect(translateError(err)).toBeInstanceOf(StoreUnavailableError);
    } finally {
      client.destroy();
      await closeServer(endpoint.server);
    }
  });

  it('when the store never answers, the call times out and becomes StoreUnavailableError', async () => {
    const endpoint = await scriptedEndpoint([() => undefined]);
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: endpoint.url, directCalls: true, maxAttempts: 1, requestTimeoutMs: 200 });
    try {
      const err = await failureOf(client.send(new GetItemCommand({ TableName: 'table', Key: { pk: { S: 'a' } } })));
      expect(errorName(err)).toBe('TimeoutError');
      expect(translateError(err)).toBeInstanceOf(StoreUnavailableError);
    } finally {
      client.destroy();
      await closeServer(endpoint.server);
    }
  });

  it('when nothing listens at the endpoint, the call fails as unavailable after its attempts', async () => {
    const endpoint = await scriptedEndpoint([json(200, {})]);
    const url = endpoint.url;
    await closeServer(endpoint.server);
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: url, directCalls: true, maxAttempts: 2 });
    try {
      const err = await failureOf(client.send(new PutItemCommand({ TableName: 'table', Item: { pk: { S: 'a' } } })));
      expect((err as { code?: string }).code).toBe('ECONNREFUSED');
      const translated = translateError(err);
      expect(translated).toBeInstanceOf(StoreUnavailableError);
      expect((translated as Error).message).not.toContain('127.0.0.1');
    } finally {
      client.destroy();
    }
  });

  it('when the caller aborts, the call fails with AbortError and is not retried', async () => {
    const endpoint = await scriptedEndpoint([() => undefined]);
    const client = createDynamoDbClient({ region: 'us-east-1', endpoint: endpoint.url, directCalls: true, maxAttempts: 3 });
    try {
      const controller = new AbortController();
      const call = failureOf(client.send(new GetItemCommand({ TableName: 'table', Key: { pk: { S: 'a' } } }), { abortSignal: controller.signal }));
      while (endpoint.calls.length === 0) await new Promise((r) => setTimeout(r, 5));
      controller.abort();
      expect(errorName(await call)).toBe('AbortError');
      expect(endpoint.calls).toHaveLength(1);
    } finally {
      client.destroy();
      await closeServer(endpoint.server);
    }
  });
});
