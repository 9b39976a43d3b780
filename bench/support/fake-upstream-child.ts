/**
 * The fake OpenAI/Anthropic upstream of bench:portkey (test/support/fake-upstream.ts) in a Node process of its
 * own, so that its work does not share an event loop with the load generator or a measured gateway. Tells the
 * parent its base URLs over IPC ({ ready: { openaiBaseUrl, anthropicBaseUrl } }); on the message 'reset' it
 * forgets the requests it recorded (and answers { reset: true }); it exits when the parent goes away.
 */
import { startFakeUpstream } from '../../test/support/fake-upstream';

async function main(): Promise<void> {
  const upstream = await startFakeUpstream();
  const stop = async () => {
    await upstream.close().catch(() => undefined);
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('disconnect', () => void stop());
  process.on('message', (message) => {
    if (message === 'reset') {
      upstream.reset();
      process.send?.({ reset: true });
    }
  });
  process.send?.({ ready: { openaiBaseUrl: upstream.openaiBaseUrl, anthropicBaseUrl: upstream.anthropicBaseUrl } });
}

void main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
