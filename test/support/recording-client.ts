/**
 * A DynamoDB client that passes every command to `client` and records its name, in order (`GetItemCommand`,
 * `TransactWriteItemsCommand`, …): for tests that say which calls a path makes, or that it makes none.
 */
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';

export function recordingClient(client: DynamoDBClient): { client: DynamoDBClient; calls: string[] } {
  const calls: string[] = [];
  const recording = {
    send: (command: { constructor: { name: string } }) => {
      calls.push(command.constructor.name);
      return client.send(command as never);
    },
  } as unknown as DynamoDBClient;
  return { client: recording, calls };
}
