/**
 * {@link RunQueue} on Amazon SQS. The body of a message is `{"runId": "…"}`; a release sets the message's
 * visibility timeout to 0 so another worker can take it at once. SDK failures become
 * {@link StoreUnavailableError} here, at the edge.
 */
import type { SQSClient } from '@aws-sdk/client-sqs';
import { StoreUnavailableError } from '../errors';
import { lazy, resolveLazily, type Lazily } from '../lazy';
import type { Logger } from '../log';
import type { ReceiveOptions, RunMessage, RunQueue } from './queue';

/** SQS long polling waits at most 20 seconds per call. */
const MAX_WAIT_SECONDS = 20;

export interface SqsRunQueueOptions {
  /** The client, or a function creating it on first use. */
  readonly client: Lazily<Pick<SQSClient, 'send'>>;
  readonly queueUrl: string;
  /** Told of messages that cannot be read (they are left to go to the dead-letter queue). */
  readonly log?: Logger;
}

function unavailable(action: string, err: unknown): StoreUnavailableError {
  return new StoreUnavailableError(`The agent run queue cannot ${action} right now; try again shortly.`, {
    code: 'queue_unavailable',
    headers: { 'Retry-After': '1' },
    cause: err,
  });
}

function isAbort(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { name?: unknown }).name === 'AbortError';
}

/** The SQS commands, loaded with the first queue call. */
const sqsSdk = lazy(() => import('@aws-sdk/client-sqs'));

export class SqsRunQueue implements RunQueue {
  private readonly client: () => Promise<Pick<SQSClient, 'send'>>;

  constructor(private readonly options: SqsRunQueueOptions) {
    this.client = resolveLazily(options.client);
  }

  async enqueue(runId: string): Promise<void> {
    try {
      await (await this.client()).send(new (await sqsSdk()).SendMessageCommand({ QueueUrl: this.options.queueUrl, MessageBody: JSON.stringify({ runId }) }));
    } catch (err) {
      throw unavailable('take the run', err);
    }
  }

  async receive(options: ReceiveOptions): Promise<RunMessage | undefined> {
    if (options.signal?.aborted) return undefined;
    let out;
    try {
      out = await (await this.client()).send(
        new (await sqsSdk()).ReceiveMessageCommand({
          QueueUrl: this.options.queueUrl,
          MaxNumberOfMessages: 1,
          WaitTimeSeconds: Math.min(MAX_WAIT_SECONDS, Math.max(0, Math.ceil(options.waitMs / 1000))),
          MessageSystemAttributeNames: ['ApproximateReceiveCount'],
        }),
        { abortSignal: options.signal },
      );
    } catch (err) {
      if (isAbort(err) || options.signal?.aborted) return undefined;
      throw unavailable('deliver runs', err);
    }
    const message = out.Messages?.[0];
    if (!message?.ReceiptHandle) return undefined;
    const receiveCount = Number(message.Attributes?.ApproximateReceiveCount ?? '1');
    let runId: unknown;
    try {
      runId = (JSON.parse(message.Body ?? '') as { runId?: unknown }).runId;
    } catch {
      runId = undefined;
    }
    if (typeof runId !== 'string') {
      // Not ours to fix: after maxReceiveCount deliveries SQS moves it to the dead-letter queue.
      this.options.log?.log('warn', 'agent queue message without a run id', { messageId: message.MessageId, receiveCount });
      return undefined;
    }
    return { runId, receipt: message.ReceiptHandle, receiveCount: Number.isFinite(receiveCount) ? receiveCount : 1 };
  }

  async delete(message: RunMessage): Promise<void> {
    try {
      await (await this.client()).send(new (await sqsSdk()).DeleteMessageCommand({ QueueUrl: this.options.queueUrl, ReceiptHandle: message.receipt }));
    } catch (err) {
      throw unavailable('delete a finished run', err);
    }
  }

  async release(message: RunMessage): Promise<void> {
    try {
      await (await this.client()).send(
        new (await sqsSdk()).ChangeMessageVisibilityCommand({ QueueUrl: this.options.queueUrl, ReceiptHandle: message.receipt, VisibilityTimeout: 0 }),
      );
    } catch (err) {
      throw unavailable('return a run', err);
    }
  }
}
