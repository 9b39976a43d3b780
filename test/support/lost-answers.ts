/**
 * A real SDK client on the run's DynamoDB Local whose chosen writes DynamoDB applies and whose answers are then
 * lost, once per distinct call (a connection reset after the write): the SDK retries, as in AWS. What the
 * ledger's exactly-once writes are tested against.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { createDynamoDbClient } from '../../lambda/store/dynamodb/client';
import { testDynamoDbEndpoint } from './dynamo';

/**
 * `lose(command, input)` picks the calls whose answer is lost; at most `max` answers are lost in all (the SDK's
 * retry quota, 500 tokens at 10 per timeout retry, would otherwise stop retrying, as in AWS).
 */
export function losingAnswers(lose: (command: string, input: Record<string, unknown>) => boolean, max = 40): { client: DynamoDBClient; lost: { count: number } } {
  const client = createDynamoDbClient({ region: 'us-east-1', endpoint: testDynamoDbEndpoint(), maxAttempts: 4, requestTimeoutMs: 120_000, connectionTimeoutMs: 30_000 });
  const lost = { count: 0 };
  const seen = new Set<string>();
  client.middlewareStack.add(
    (next, context) => async (args) => {
      const out = await next(args);
      const input = args.input as Record<string, unknown>;
      const id = `${String(context.commandName)} ${JSON.stringify(input)}`;
      if (lost.count < max && !seen.has(id) && lose(String(context.commandName), input)) {
        seen.add(id);
        lost.count++;
        throw Object.assign(new Error('socket hang up'), { name: 'TimeoutError', code: 'ECONNRESET', $metadata: {} });
      }
      return out;
    },
    { step: 'deserialize', name: 'loseAnswerOnce' },
  );
  return { client, lost };
}

/** Loses the answer of each distinct UpdateItem on a loop guard item once. */
export function losingLoopAnswers(): { client: DynamoDBClient; lost: { count: number } } {
  return losingAnswers((command, input) => command === 'UpdateItemCommand' && String((input.Key as { pk?: { S?: string } } | undefined)?.pk?.S ?? '').startsWith('loop#'));
}
