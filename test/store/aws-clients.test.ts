import { Sha256 } from '@aws-crypto/sha256-js';
import { DynamoDBClient, GetItemCommand } from '@aws-sdk/client-dynamodb';
import { SignatureV4 } from '@smithy/signature-v4';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { lazy } from '../../lambda/core/lazy';
import { lazySsmClient, withoutSdkLogger } from '../../lambda/store/aws-clients';
import { createDynamoDbClient } from '../../lambda/store/dynamodb/client';

const middlewareNames = (client: { middlewareStack: { identify(): string[] } }) => client.middlewareStack.identify().join(' ');

describe('AWS SDK clients', () => {
  it('when the gateway creates its DynamoDB client, the SDK logger middleware is not on its stack', () => {
    expect(middlewareNames(new DynamoDBClient({ region: 'us-east-1' }))).toContain('loggerMiddleware');
    expect(middlewareNames(createDynamoDbClient({ region: 'us-east-1', endpoint: 'http://127.0.0.1:1' }))).not.toContain('loggerMiddleware');
    expect(middlewareNames(withoutSdkLogger(new DynamoDBClient({ region: 'us-east-1' })))).not.toContain('loggerMiddleware');
  });

  it('when an optional client is asked for twice, it is created once, without the logger middleware', async () => {
    const ssm = lazySsmClient({ region: 'us-east-1' });
    const [a, b] = await Promise.all([ssm(), ssm()]);
    expect(a).toBe(b);
    expect(middlewareNames(a)).not.toContain('loggerMiddleware');
  });

  it('when a lazy load fails, the next call tries again instead of keeping the failure', async () => {
    let attempts = 0;
    const get = lazy(async () => {
      attempts++;
      if (attempts === 1) throw new Error('first load fails');
      return { ok: true };
    });
    await expect(get()).rejects.toThrow('first load fails');
    await expect(get()).resolves.toEqual({ ok: true });
    expect(attempts).toBe(2);
  });
});

/** A stand-in DynamoDB endpoint on loopback: records each call's headers and body, answers GetItem with the key it was asked for. */
interface RecordedCall {
  readonly method: string;
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: string;
}

async function recordingEndpoint(): Promise<{ url: string; calls: RecordedCall[]; server: Server }> {
  const calls: RecordedCall[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      calls.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers, body });
      const { Key } = JSON.parse(body) as { Key: unknown };
      res.writeHead(200, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(JSON.stringify({ Item: Key }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, calls, server };
}

describe('the gateway DynamoDB client', () => {
  it('when it sends calls, each carries the same user-agent headers as a client straight from the SDK', async () => {
    const endpoint = await recordingEndpoint();
    try {
      const plain = new DynamoDBClient({ region: 'us-east-1', endpoint: endpoint.url, credentials: { accessKeyId: 'local', secretAccessKey: 'local' } });
      const gateway = createDynamoDbClient({ region: 'us-east-1', endpoint: endpoint.url, cacheMiddleware: true });
      const get = (pk: string) => new GetItemCommand({ TableName: 't', Key: { pk: { S: pk } } });
      for (const client of [plain, gateway, plain, gateway]) await client.send(get('a'));
      const [plain1, gateway1, plain2, gateway2] = endpoint.calls.map((c) => c.headers);
      for (const name of ['user-agent', 'x-amz-user-agent']) {
        expect(plain1![name]).toMatch(/aws-sdk-js/);
        expect(gateway1![name]).toBe(plain1![name]);
        expect(gateway2![name]).toBe(plain2![name]);
      }
      expect(Object.keys(gateway2!).sort()).toEqual(Object.keys(plain2!).sort());
    } finally {
      endpoint.server.close();
    }
  });

  it('when it sends calls, each carries a valid SigV4 signature of what it sent', async () => {
    const endpoint = await recordingEndpoint();
    try {
      const gateway = createDynamoDbClient({ region: 'eu-west-1', endpoint: endpoint.url, cacheMiddleware: true });
      for (const pk of ['a', 'b', 'c']) await gateway.send(new GetItemCommand({ TableName: 't', Key: { pk: { S: pk } } }));
      const verifier = new SignatureV4({ credentials: { accessKeyId: 'local', secretAccessKey: 'local' }, region: 'eu-west-1', service: 'dynamodb', sha256: Sha256 });
      for (const call of endpoint.calls) {
        const authorization = String(call.headers.authorization);
        const signed = /SignedHeaders=([^,]+)/.exec(authorization)![1]!.split(';');
        const amzDate = String(call.headers['x-amz-date']);
        const signingDate = new Date(`${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13)}`);
        const url = new URL(endpoint.url);
        const again = await verifier.sign(
          {
            method: call.method,
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
        expect(authorization).toMatch(/^AWS4-HMAC-SHA256 Credential=local\/\d{8}\/eu-west-1\/dynamodb\/aws4_request/);
        expect(again.headers.authorization).toBe(authorization);
      }
    } finally {
      endpoint.server.close();
    }
  });

  it('when cacheMiddleware is on and calls of one command overlap, each sends its own input and gets its own answer', async () => {
    const endpoint = await recordingEndpoint();
    try {
      const client = createDynamoDbClient({ region: 'us-east-1', endpoint: endpoint.url, cacheMiddleware: true });
      const keys = Array.from({ length: 24 }, (_, i) => `key-${i}`);
      const answers = await Promise.all(keys.map((pk) => client.send(new GetItemCommand({ TableName: `table-${pk}`, Key: { pk: { S: pk } } }))));
      expect(answers.map((a) => a.Item?.pk?.S)).toEqual(keys);
      const sent = endpoint.calls.map((c) => JSON.parse(c.body) as { TableName: string; Key: { pk: { S: string } } });
      expect(sent.map((b) => b.Key.pk.S).sort()).toEqual([...keys].sort());
      for (const body of sent) expect(body.TableName).toBe(`table-${body.Key.pk.S}`);
    } finally {
      endpoint.server.close();
    }
  });
});
