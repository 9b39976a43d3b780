/**
 * Subscribed to the budget and alerts SNS topics: turns each message (an AWS Budgets notification, a CloudWatch
 * alarm, or a tollgate event such as the kill switch firing) into one Slack message and posts it to the
 * webhook stored as the `slack-webhook-url` SecureString. The webhook URL is itself a credential: it is never
 * logged or put in an error message. A Slack failure is thrown so Lambda's async retries try again.
 */
import { SSMClient } from '@aws-sdk/client-ssm';
import type { SNSEvent } from 'aws-lambda';
import { loadConfig } from '../config';
import { UpstreamError } from '../core/errors';
import { jsonLogger, type Logger } from '../core/log';
import { SsmSecretSource, type SecretSource } from '../core/secrets';

/** A Slack incoming-webhook payload. */
export interface SlackMessage {
  readonly text: string;
}

const MAX_TEXT = 3_000;

/** Escapes the three characters Slack's mrkdwn treats as control characters. */
function slackEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function truncate(text: string): string {
  return text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT - 1)}…` : text;
}

interface AlarmMessage {
  readonly AlarmName: string;
  readonly NewStateValue: string;
  readonly NewStateReason?: string;
  readonly AlarmDescription?: string | null;
  readonly StateChangeTime?: string;
  readonly Region?: string;
}

/** A tollgate event published by its own functions (kill switch, breaker, …). */
interface TollgateEvent {
  readonly source: 'tollgate';
  readonly type: string;
  readonly summary: string;
  readonly details?: Readonly<Record<string, string | number | boolean>>;
}

function isAlarm(value: unknown): value is AlarmMessage {
  const v = value as Partial<AlarmMessage> | null;
  return typeof v === 'object' && v !== null && typeof v.AlarmName === 'string' && typeof v.NewStateValue === 'string';
}

function isTollgateEvent(value: unknown): value is TollgateEvent {
  const v = value as Partial<TollgateEvent> | null;
  return typeof v === 'object' && v !== null && v.source === 'tollgate' && typeof v.type === 'string' && typeof v.summary === 'string';
}

const STATE_ICON: Readonly<Record<string, string>> = { ALARM: ':red_circle:', OK: ':large_green_circle:', INSUFFICIENT_DATA: ':white_circle:' };

/**
 * Formats one SNS message for Slack. Recognises CloudWatch alarm state changes, AWS Budgets notifications
 * (plain text naming the budget, its threshold and the actual cost) and tollgate events; anything else is
 * passed on with its subject.
 */
export function formatAlert(subject: string | undefined, message: string): SlackMessage {
  let parsed: unknown;
  try {
    parsed = JSON.parse(message);
  } catch {
    parsed = undefined;
  }

  if (isAlarm(parsed)) {
    const icon = STATE_ICON[parsed.NewStateValue] ?? ':grey_question:';
    const lines = [`${icon} *${slackEscape(parsed.AlarmName)}* is ${slackEscape(parsed.NewStateValue)}`];
    if (parsed.AlarmDescription) lines.push(slackEscape(parsed.AlarmDescription));
    if (parsed.NewStateReason) lines.push(`_${slackEscape(parsed.NewStateReason)}_`);
    return { text: truncate(lines.join('\n')) };
  }

  if (isTollgateEvent(parsed)) {
    const lines = [`:rotating_light: *tollgate ${slackEscape(parsed.type)}*: ${slackEscape(parsed.summary)}`];
    for (const [k, v] of Object.entries(parsed.details ?? {})) lines.push(`• ${slackEscape(k)}: ${slackEscape(String(v))}`);
    return { text: truncate(lines.join('\n')) };
  }

  const budget = /budget/i.test(subject ?? '') || /AWS Budget/i.test(message);
  if (budget) {
    const name = /associated with your (\S+) budget/i.exec(message)?.[1];
    const threshold = /is (greater than|forecasted to be greater than) (\$\d[\d,]*(?:\.\d+)?)/i.exec(message)?.[2];
    const actual = /associated with this budget is (\$\d[\d,]*(?:\.\d+)?)/i.exec(message)?.[1];
    const head = name
      ? `:moneybag: *Budget ${slackEscape(name)}*${threshold ? ` crossed ${slackEscape(threshold)}` : ''}${actual ? `: actual cost ${slackEscape(actual)}` : ''}`
      : `:moneybag: *${slackEscape(subject ?? 'AWS Budgets notification')}*`;
    return { text: truncate(name ? head : `${head}\n${slackEscape(message)}`) };
  }

  return { text: truncate(`*${slackEscape(subject ?? 'tollgate alert')}*\n${slackEscape(message)}`) };
}

export interface AlertNotifierOptions {
  readonly secrets: SecretSource;
  readonly log: Logger;
  /** @default globalThis.fetch */
  readonly fetch?: typeof fetch;
  /** @default 5000 */
  readonly timeoutMs?: number;
}

/** Builds the SNS handler. Without a webhook configured it logs once per batch and drops the messages. */
export function createAlertNotifier(options: AlertNotifierOptions): (event: SNSEvent) => Promise<void> {
  const doFetch = options.fetch ?? globalThis.fetch;
  const timeoutMs = options.timeoutMs ?? 5_000;
  return async (event) => {
    const webhook = await options.secrets.get('slack-webhook-url');
    if (!webhook) {
      options.log.log('warn', 'slack-webhook-url is not set; alert not forwarded', { records: event.Records.length });
      return;
    }
    for (const record of event.Records) {
      const message = formatAlert(record.Sns.Subject ?? undefined, record.Sns.Message);
      let status: number;
      try {
        const res = await doFetch(webhook, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(message),
          signal: AbortSignal.timeout(timeoutMs),
        });
        status = res.status;
        await res.arrayBuffer();
      } catch (err) {
        // The cause may carry the URL; keep only its class for the message.
        throw new UpstreamError(`Slack webhook could not be reached (${(err as Error)?.name ?? 'error'})`);
      }
      if (status < 200 || status >= 300) throw new UpstreamError(`Slack webhook answered ${status}`, { status: 502 });
      options.log.log('info', 'alert forwarded to Slack', { messageId: record.Sns.MessageId, topic: record.Sns.TopicArn });
    }
  };
}

let cached: ((event: SNSEvent) => Promise<void>) | undefined;

/** The Lambda entry point; config and the SSM client are created once per container. */
export const handler = async (event: SNSEvent): Promise<void> => {
  if (!cached) {
    const config = loadConfig();
    if (!config.ssmPrefix) throw new Error('TOLLGATE_SSM_PREFIX is not set');
    cached = createAlertNotifier({
      secrets: new SsmSecretSource({
        client: new SSMClient({ region: config.region }),
        prefix: config.ssmPrefix,
        names: ['slack-webhook-url'],
      }),
      log: jsonLogger(),
    });
  }
  return cached(event);
};
