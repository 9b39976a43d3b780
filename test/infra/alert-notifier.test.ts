import { GetParametersCommand, SSMClient } from '@aws-sdk/client-ssm';
import type { SNSEvent } from 'aws-lambda';
import { mockClient } from 'aws-sdk-client-mock';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { UpstreamError } from '../../lambda/core/errors';
import { SsmSecretSource } from '../../lambda/core/secrets';
import { createAlertNotifier, formatAlert } from '../../lambda/handlers/alert-notifier';

const ssm = mockClient(SSMClient);

/** A stand-in for Slack's incoming webhook: records posts, answers with `status`. */
let server: Server;
let posts: Array<{ path: string; contentType?: string; body: unknown }>;
let status = 200;
let webhook: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      posts.push({ path: req.url ?? '', contentType: req.headers['content-type'], body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
      res.writeHead(status).end(status === 200 ? 'ok' : 'invalid_payload');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  webhook = `http://127.0.0.1:${(server.address() as AddressInfo).port}/services/T000/B000/secret-token`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

beforeEach(() => {
  posts = [];
  status = 200;
  ssm.reset();
});

function event(...messages: Array<{ subject?: string; message: string }>): SNSEvent {
  return {
    Records: messages.map((m, i) => ({
      EventSource: 'aws:sns',
      EventVersion: '1.0',
      EventSubscriptionArn: 'arn:aws:sns:us-east-1:123456789012:tollgate-dev-alerts:sub',
      Sns: {
        Type: 'Notification',
        MessageId: `m${i}`,
        TopicArn: 'arn:aws:sns:us-east-1:123456789012:tollgate-dev-alerts',
        Subject: m.subject ?? null,
        Message: m.message,
        Timestamp: '2026-11-23T00:00:00.000Z',
        SignatureVersion: '1',
        Signature: '',
        SigningCertUrl: '',
        UnsubscribeUrl: '',
        MessageAttributes: {},
      },
    })),
  } as unknown as SNSEvent;
}

function notifier(logs: string[] = []) {
  return createAlertNotifier({
    secrets: new SsmSecretSource({ client: new SSMClient({}), prefix: '/tollgate/dev/', names: ['slack-webhook-url'] }),
    log: { log: (level, message, fields) => logs.push(JSON.stringify({ level, message, ...fields })) },
  });
}

const BUDGET_TEXT = `AWS Budget Notification November 23, 2026
AWS Account 123456789012

Dear AWS Customer,

You requested that we alert you when the ACTUAL Cost associated with your tollgate-dev-monthly budget is greater than $80.00 for the current month. The ACTUAL Cost associated with this budget is $81.37. You can find additional details below and by accessing the AWS Budgets dashboard.`;

describe('alert notifier', () => {
  it('when an alarm fires, it posts the formatted alarm to the webhook read from SSM', async () => {
    ssm.on(GetParametersCommand).resolves({ Parameters: [{ Name: '/tollgate/dev/slack-webhook-url', Value: webhook }] });
    const alarm = {
      AlarmName: 'tollgate-dev-api-5xx',
      AlarmDescription: 'The gateway answered 5 or more 5xx responses in 5 minutes.',
      NewStateValue: 'ALARM',
      NewStateReason: 'Threshold Crossed: 1 datapoint [7.0] was >= 5.0',
    };
    await notifier()(event({ subject: 'ALARM: "tollgate-dev-api-5xx"', message: JSON.stringify(alarm) }));
    expect(posts).toHaveLength(1);
    expect(posts[0].path).toBe('/services/T000/B000/secret-token');
    expect(posts[0].contentType).toBe('application/json');
    expect(posts[0].body).toEqual({
      text: ':red_circle: *tollgate-dev-api-5xx* is ALARM\nThe gateway answered 5 or more 5xx responses in 5 minutes.\n_Threshold Crossed: 1 datapoint [7.0] was &gt;= 5.0_',
    });
    expect(ssm.commandCalls(GetParametersCommand)[0].args[0].input).toEqual({ Names: ['/tollgate/dev/slack-webhook-url'], WithDecryption: true });
  });

  it('when a batch has several records, each becomes one post and the webhook is fetched once', async () => {
    ssm.on(GetParametersCommand).resolves({ Parameters: [{ Name: '/tollgate/dev/slack-webhook-url', Value: webhook }] });
    const handle = notifier();
    await handle(event({ subject: 'AWS Budgets: tollgate-dev-monthly has exceeded your alert threshold', message: BUDGET_TEXT }, { message: 'plain' }));
    await handle(event({ message: 'again' }));
    expect(posts.map((p) => (p.body as { text: string }).text)).toEqual([
      ':moneybag: *Budget tollgate-dev-monthly* crossed $80.00: actual cost $81.37',
      '*tollgate alert*\nplain',
      '*tollgate alert*\nagain',
    ]);
    expect(ssm.commandCalls(GetParametersCommand)).toHaveLength(1);
  });

  it('when Slack answers with an error, it throws so Lambda retries, and the error does not contain the webhook URL', async () => {
    ssm.on(GetParametersCommand).resolves({ Parameters: [{ Name: '/tollgate/dev/slack-webhook-url', Value: webhook }] });
    status = 400;
    const logs: string[] = [];
    const failure = notifier(logs)(event({ message: 'x' }));
    await expect(failure).rejects.toBeInstanceOf(UpstreamError);
    await expect(failure).rejects.toThrow('Slack webhook answered 400');
    const err = await failure.catch((e: Error) => e);
    expect(`${(err as Error).message} ${logs.join('')}`).not.toContain('secret-token');
  });

  it('when Slack cannot be reached, it throws an UpstreamError that does not name the URL', async () => {
    ssm.on(GetParametersCommand).resolves({
      Parameters: [{ Name: '/tollgate/dev/slack-webhook-url', Value: 'http://127.0.0.1:1/services/unreachable-token' }],
    });
    const err = await notifier()(event({ message: 'x' })).catch((e: Error) => e);
    expect(err).toBeInstanceOf(UpstreamError);
    expect((err as Error).message).not.toContain('unreachable-token');
  });

  it('when no webhook is configured, it logs a warning and posts nothing', async () => {
    ssm.on(GetParametersCommand).resolves({ Parameters: [], InvalidParameters: ['/tollgate/dev/slack-webhook-url'] });
    const logs: string[] = [];
    await notifier(logs)(event({ message: 'x' }));
    expect(posts).toHaveLength(0);
    expect(logs.join('')).toContain('slack-webhook-url is not set');
  });
});

describe('formatAlert', () => {
  it('when the message is a tollgate event, it lists the summary and details', () => {
    const text = formatAlert(undefined, JSON.stringify({
      source: 'tollgate',
      type: 'kill-switch',
      summary: 'Suspended 12 keys: monthly budget at 100%',
      details: { suspended: 12, budget: 'tollgate-dev-monthly' },
    })).text;
    expect(text).toBe(':rotating_light: *tollgate kill-switch*: Suspended 12 keys: monthly budget at 100%\n• suspended: 12\n• budget: tollgate-dev-monthly');
  });

  it('when text contains Slack control characters, they are escaped so a message cannot inject mentions or links', () => {
    expect(formatAlert('<!channel> & <http://x|y>', 'a < b').text).toBe('*&lt;!channel&gt; &amp; &lt;http://x|y&gt;*\na &lt; b');
  });

  it('when a message is very long, it is cut to fit one Slack message', () => {
    const text = formatAlert('s', 'x'.repeat(10_000)).text;
    expect(text.length).toBe(3_000);
    expect(text.endsWith('…')).toBe(true);
  });
});
