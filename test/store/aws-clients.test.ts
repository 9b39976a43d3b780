import { DynamoDBClient } from '@aws-sdk/client-dynamodb';
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
