import { ChangeMessageVisibilityCommand, DeleteMessageCommand, ReceiveMessageCommand, SendMessageCommand, SQSClient } from '@aws-sdk/client-sqs';
import { mockClient } from 'aws-sdk-client-mock';
import { InMemoryRunQueue } from '../../lambda/core/agent/queue';
import { SqsRunQueue } from '../../lambda/core/agent/sqs-queue';
import { StoreUnavailableError } from '../../lambda/core/errors';

const QUEUE_URL = 'https://sqs.eu-west-1.amazonaws.com/123456789012/tollgate-test-agent-runs';

describe('SqsRunQueue', () => {
  const sqs = mockClient(SQSClient);
  const queue = new SqsRunQueue({ client: new SQSClient({ region: 'eu-west-1' }), queueUrl: QUEUE_URL });
  beforeEach(() => sqs.reset());

  it('when a run is enqueued, it sends its id as the JSON body to the queue', async () => {
    sqs.on(SendMessageCommand).resolves({ MessageId: 'm1' });
    await queue.enqueue('run_1');
    expect(sqs.commandCalls(SendMessageCommand)[0]!.args[0].input).toEqual({ QueueUrl: QUEUE_URL, MessageBody: '{"runId":"run_1"}' });
  });

  it('when a message arrives, it is read with its receive count, and delete and release use its receipt handle', async () => {
    sqs.on(ReceiveMessageCommand).resolves({
      Messages: [{ MessageId: 'm1', ReceiptHandle: 'rh-1', Body: '{"runId":"run_1"}', Attributes: { ApproximateReceiveCount: '2' } }],
    });
    const message = await queue.receive({ waitMs: 20_000 });
    expect(message).toEqual({ runId: 'run_1', receipt: 'rh-1', receiveCount: 2 });
    expect(sqs.commandCalls(ReceiveMessageCommand)[0]!.args[0].input).toMatchObject({ MaxNumberOfMessages: 1, WaitTimeSeconds: 20 });
    await queue.delete(message!);
    expect(sqs.commandCalls(DeleteMessageCommand)[0]!.args[0].input).toEqual({ QueueUrl: QUEUE_URL, ReceiptHandle: 'rh-1' });
    await queue.release(message!);
    expect(sqs.commandCalls(ChangeMessageVisibilityCommand)[0]!.args[0].input).toEqual({ QueueUrl: QUEUE_URL, ReceiptHandle: 'rh-1', VisibilityTimeout: 0 });
  });

  it('when a message has no run id, it is left for the dead-letter queue and nothing is returned', async () => {
    sqs.on(ReceiveMessageCommand).resolves({ Messages: [{ MessageId: 'm1', ReceiptHandle: 'rh-1', Body: 'not json' }] });
    expect(await queue.receive({ waitMs: 0 })).toBeUndefined();
    expect(sqs.commandCalls(DeleteMessageCommand)).toHaveLength(0);
  });

  it('when SQS fails, the queue throws StoreUnavailableError (503) naming no URL', async () => {
    sqs.on(SendMessageCommand).rejects(Object.assign(new Error('boom'), { name: 'InternalError' }));
    const err = await queue.enqueue('run_1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreUnavailableError);
    expect((err as Error).message).not.toContain('amazonaws');
  });
});

describe('InMemoryRunQueue', () => {
  it('when a message is received, it stays in flight until deleted, and a release puts it back first in line', async () => {
    const queue = new InMemoryRunQueue();
    await queue.enqueue('a');
    await queue.enqueue('b');
    const a = await queue.receive({ waitMs: 0 });
    expect(a).toMatchObject({ runId: 'a', receiveCount: 1 });
    expect(queue.waitingRunIds()).toEqual(['b']);
    await queue.release(a!);
    expect(queue.waitingRunIds()).toEqual(['a', 'b']);
    const again = await queue.receive({ waitMs: 0 });
    expect(again).toMatchObject({ runId: 'a', receiveCount: 2 });
    await queue.delete(again!);
    expect(queue.inFlightCount()).toBe(0);
  });

  it('when a receiver is waiting, an enqueue wakes it, and an abort ends the wait empty', async () => {
    const queue = new InMemoryRunQueue();
    const waiting = queue.receive({ waitMs: 10_000 });
    await queue.enqueue('late');
    expect(await waiting).toMatchObject({ runId: 'late' });
    const abort = new AbortController();
    const idle = queue.receive({ waitMs: 10_000, signal: abort.signal });
    abort.abort();
    expect(await idle).toBeUndefined();
  });
});
