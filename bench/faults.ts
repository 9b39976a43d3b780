/**
 * `npm run bench:faults`: the money figures of issue 11, printed (the tests assert correctness, never these).
 *
 * 1. Store killed mid-traffic: a gateway on its own DynamoDB Local (data dir) has requests at the provider
 *    when the JVM is SIGKILLed, takes requests while it is down, and serves again after a restart on the same
 *    data; then the sweeper runs. Prints what the provider delivered vs what the gateway recorded.
 * 2. Burst: N concurrent requests on one key racing a budget that fits 20, once with the store client and
 *    admission as they were before (baseline: 1 s connection timeout incl. socket-pool wait, 50 sockets, no
 *    admission lanes) and once as they are now. Prints the status histogram of each.
 *
 * Flags: --burst 500 --fits 20 --in-flight 12 --outage 6 --after 40
 */
import { parseArgs } from 'node:util';
import { formatUsd } from '../lambda/core/money';
import { runBurst, runFaultScenario, startOwnStoreGateway } from '../test/support/money-scenarios';

const { values } = parseArgs({
  options: {
    burst: { type: 'string', default: '500' },
    fits: { type: 'string', default: '20' },
    'in-flight': { type: 'string', default: '12' },
    outage: { type: 'string', default: '6' },
    after: { type: 'string', default: '40' },
  },
});

function usd(micros: number): string {
  return `$${formatUsd(micros)}`;
}

async function faults(): Promise<void> {
  const g = await startOwnStoreGateway({
    env: { TOLLGATE_SETTLE_ATTEMPTS: '2', TOLLGATE_SETTLE_RETRY_BASE_MS: '50', TOLLGATE_ADMISSION_MAX_WAIT_MS: '0', TOLLGATE_ADMISSION_PER_KEY_IN_FLIGHT: '16' },
  });
  try {
    const f = await runFaultScenario(g, {
      inFlight: Number(values['in-flight']),
      duringOutage: Number(values.outage),
      afterRestart: Number(values.after),
      fits: 30,
    });
    console.log('\n== store killed mid-traffic (DynamoDB Local SIGKILL, restart on the same data, sweeper) ==');
    console.log(`phases: at kill ${JSON.stringify(f.phases.inFlightAtKill)}  during outage ${JSON.stringify(f.phases.duringOutage)}  after restart ${JSON.stringify(f.phases.afterRestart)}`);
    console.log(`delivered by the provider: ${f.delivered.answers} answers, ${usd(f.delivered.micros)}`);
    console.log(
      `recorded by the gateway:   ${f.recorded.records} usage records, ${usd(f.recorded.micros)} ` +
        `(${f.recorded.abandoned} charged at their reservation by the sweeper; ${f.settlesLeftForSweeper} settles gave up while the store was down)`,
    );
    console.log(`recorded / delivered: ${(f.recorded.micros / Math.max(1, f.delivered.micros)).toFixed(3)}  answers without a record: ${f.unrecordedAnswers}`);
    console.log(`budget ${usd(f.limit)}: counter spent ${usd(f.recorded.counterSpent)}, committed ${usd(f.recorded.counterCommitted)}, overspend ${usd(f.overspend)}; holds left ${f.holdsLeft}; upstream calls ${f.upstreamCalls}`);
  } finally {
    await g.close();
  }
}

async function burst(label: string, options: Parameters<typeof startOwnStoreGateway>[0]): Promise<void> {
  const g = await startOwnStoreGateway(options);
  try {
    const b = await runBurst(g, { size: Number(values.burst), fits: Number(values.fits), userId: `burst-${label}` });
    const ok = b.histogram['200'] ?? 0;
    console.log(`${label.padEnd(9)} ${JSON.stringify(b.histogram)}  upstream ${b.upstreamCalls}  counters = records: ${b.counterSpent === b.recordedMicros}  committed ≤ limit: ${b.counterCommitted <= b.limit}  5xx share ${((Object.entries(b.histogram).filter(([k]) => k.startsWith('5')).reduce((s, [, n]) => s + n, 0)) / b.answers.length).toFixed(3)}  200s ${ok}`);
  } finally {
    await g.close();
  }
}

async function main(): Promise<void> {
  await faults();
  console.log(`\n== ${values.burst} concurrent requests on one key, budget fits ${values.fits} ==`);
  await burst('baseline', {
    client: { connectionTimeoutMs: 1_000, requestTimeoutMs: 5_000, maxAttempts: 2, maxSockets: 50 },
    env: {
      TOLLGATE_ADMISSION_MAX_IN_FLIGHT: '10000',
      TOLLGATE_ADMISSION_MAX_QUEUED: '100000',
      TOLLGATE_ADMISSION_PER_KEY_IN_FLIGHT: '1000',
      TOLLGATE_ADMISSION_PER_KEY_QUEUED: '100000',
      TOLLGATE_ADMISSION_MAX_WAIT_MS: '60000',
    },
  });
  await burst('now', {});
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
