/**
 * Starts AWS's DynamoDB Local (the Java jar shipped inside the `amplify-dynamodb-simulator` npm package) as a
 * child process, for `npm start` and the integration tests. The package's own index.js is never loaded: we
 * only borrow its jar and spawn Java ourselves.
 *
 *   startDynamoDbLocal()  ──spawn──▶  java [javaOptions] -jar DynamoDBLocal.jar -port P …
 *          │                                   │
 *          └── polls ListTables until it answers (or the child dies / the timeout passes)
 *
 * The child never outlives us by accident: `stop()` kills it, and so does a `process.on('exit')` hook. SIGINT /
 * SIGTERM handling is opt-in (`stopOnSignals`), because what to do on a signal is the caller's decision.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { DynamoDBClient, ListTablesCommand } from '@aws-sdk/client-dynamodb';

export interface DynamoDbLocalOptions {
  /**
   * TCP port to listen on; 0 picks a free one.
   * @default 8000
   */
  readonly port?: number;
  /**
   * Keep tables in memory only (gone when the process stops). When false, tables live in `dataDir`.
   * @default true when no dataDir is given
   */
  readonly inMemory?: boolean;
  /** Directory for the database file (created if missing); used when `inMemory` is false. */
  readonly dataDir?: string;
  /** Receives each line the Java process prints (stdout and stderr). @default lines are dropped */
  readonly log?: (line: string) => void;
  /** A file to write the child's pid to (removed again by `stop()`). @default no file */
  readonly pidFile?: string;
  /** How long to wait for the first successful ListTables. @default 30_000 */
  readonly startTimeoutMs?: number;
  /**
   * Stop the child on SIGINT/SIGTERM and then exit with the conventional code (130/143). Leave off when the
   * caller installs its own handlers (and calls `stop()` from them).
   * @default false
   */
  readonly stopOnSignals?: boolean;
  /** The Java executable. @default 'java' (from PATH) */
  readonly javaCommand?: string;
  /**
   * JVM options, before `-jar`. The default, {@link DEFAULT_JAVA_OPTIONS}, compiles with C1 only and uses the
   * serial collector; `[]` leaves the JVM's own choices (C2 and G1).
   * @default DEFAULT_JAVA_OPTIONS
   */
  readonly javaOptions?: readonly string[];
}

/**
 * The JVM options DynamoDB Local runs with unless told otherwise. With the JVM's own choices most of its CPU
 * in the first thousands of requests is C2 compiling (and G1's concurrent threads), on the cores the gateway
 * and its callers need; C1 alone and the serial collector halve its CPU per request there (measured on a
 * 2-core machine: 3.3–3.6 ms instead of 6.5–7.5 ms per request over the first 3,000 requests, each a loop-guard
 * update and a usage write). After about 5,000 requests C2's code is some 20 % cheaper per request; a local
 * store rarely lives that long, and `javaOptions: []` restores the JVM's defaults.
 */
export const DEFAULT_JAVA_OPTIONS: readonly string[] = ['-XX:TieredStopAtLevel=1', '-XX:+UseSerialGC'];

/** A running DynamoDB Local. */
export interface DynamoDbLocal {
  /** e.g. `http://127.0.0.1:8000` */
  readonly endpoint: string;
  readonly port: number;
  /** Pid of the Java process. */
  readonly pid: number;
  /** Kills the Java process (SIGTERM, then SIGKILL after 5 s) and resolves once it has exited. Idempotent. */
  stop(): Promise<void>;
}

/** Thrown when DynamoDB Local cannot be started; the message says what to fix. */
export class DynamoDbLocalStartError extends Error {
  constructor(message: string, options?: { readonly cause?: unknown }) {
    super(message, options);
    this.name = 'DynamoDbLocalStartError';
  }
}

/** The folder holding DynamoDBLocal.jar and DynamoDBLocal_lib/. */
export function dynamoDbLocalDir(): string {
  return path.join(path.dirname(require.resolve('amplify-dynamodb-simulator/package.json')), 'emulator');
}

const LOCAL_HOST = '127.0.0.1';
const STOP_GRACE_MS = 5_000;
const PROBE_INTERVAL_MS = 100;

/** Starts of a free-port DynamoDB Local whose port was taken before Java could bind it. */
const FREE_PORT_ATTEMPTS = 3;

/**
 * Starts DynamoDB Local and resolves once it answers ListTables. With port 0 the free port is found by us and
 * bound by Java seconds later (longer on a loaded machine); when something else took it meanwhile, Java
 * exits with a BindException and the start is tried again on another free port.
 */
export async function startDynamoDbLocal(options: DynamoDbLocalOptions = {}): Promise<DynamoDbLocal> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(options);
    } catch (err) {
      const portStolen = err instanceof DynamoDbLocalStartError && /BindException|Address already in use/.test(err.message);
      if ((options.port ?? 8000) !== 0 || !portStolen || attempt >= FREE_PORT_ATTEMPTS) throw err;
      options.log?.(`dynamodb-local: the free port was taken before Java bound it; trying another (${err.message.split('\n')[0]})`);
    }
  }
}

async function startOnce(options: DynamoDbLocalOptions): Promise<DynamoDbLocal> {
  const requestedPort = options.port ?? 8000;
  const inMemory = options.inMemory ?? options.dataDir === undefined;
  const startTimeoutMs = options.startTimeoutMs ?? 30_000;
  const log = options.log ?? (() => undefined);
  if (!inMemory && options.dataDir === undefined) {
    throw new DynamoDbLocalStartError('startDynamoDbLocal: inMemory is false but no dataDir was given');
  }

  // Check the port ourselves first: if another DynamoDB Local already listens there, our ListTables probe
  // would succeed against *it* and we would report a child that is in fact dying.
  const port = await claimPort(requestedPort);

  const emulatorDir = dynamoDbLocalDir();
  const args = [
    ...(options.javaOptions ?? DEFAULT_JAVA_OPTIONS),
    `-Djava.library.path=${path.join(emulatorDir, 'DynamoDBLocal_lib')}`,
    '-jar',
    path.join(emulatorDir, 'DynamoDBLocal.jar'),
    '-port',
    String(port),
    '-disableTelemetry',
    '-sharedDb',
  ];
  if (inMemory) {
    args.push('-inMemory');
  } else {
    const dataDir = path.resolve(options.dataDir as string);
    mkdirSync(dataDir, { recursive: true });
    args.push('-dbPath', dataDir);
  }

  const env = { ...process.env };
  delete env.JAVA_TOOL_OPTIONS; // its "Picked up …" banner on stderr is noise, and it may carry agents
  const child = spawn(options.javaCommand ?? 'java', args, { cwd: emulatorDir, env, stdio: ['ignore', 'pipe', 'pipe'] });

  const recentOutput: string[] = [];
  const onOutput = (chunk: Buffer): void => {
    for (const line of chunk.toString('utf8').split(/\r?\n/)) {
      if (line.trim() === '') continue;
      recentOutput.push(line);
      if (recentOutput.length > 20) recentOutput.shift();
      log(line);
    }
  };
  child.stdout?.on('data', onOutput);
  child.stderr?.on('data', onOutput);

  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const killOnExit = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.on('exit', killOnExit);

  let stopping: Promise<void> | undefined;
  const signalHandlers: Array<[NodeJS.Signals, () => void]> = [];
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      // No pid: Java never started (e.g. not installed), so there is nothing to wait for.
      if (child.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_GRACE_MS);
        await exited;
        clearTimeout(timer);
      }
      process.removeListener('exit', killOnExit);
      for (const [signal, handler] of signalHandlers) process.removeListener(signal, handler);
      if (options.pidFile) rmSync(options.pidFile, { force: true });
    })();
    return stopping;
  };

  try {
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve());
      child.once('error', (err: NodeJS.ErrnoException) => {
        reject(
          err.code === 'ENOENT'
            ? new DynamoDbLocalStartError(
                `Java was not found ("${options.javaCommand ?? 'java'}"): DynamoDB Local needs a Java runtime (17 or newer) on PATH`,
                { cause: err },
              )
            : new DynamoDbLocalStartError(`Could not start Java for DynamoDB Local: ${err.message}`, { cause: err }),
        );
      });
    });
    child.on('error', (err) => log(`dynamodb-local: ${err.message}`));
    const endpoint = `http://${LOCAL_HOST}:${port}`;
    await waitUntilReady({ endpoint, child, exited, startTimeoutMs, recentOutput });
    const pid = child.pid as number;
    if (options.pidFile) writeFileSync(options.pidFile, `${pid}\n`);
    if (options.stopOnSignals) {
      for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
        const handler = (): void => void stop().finally(() => process.exit(code));
        signalHandlers.push([signal, handler]);
        process.once(signal, handler);
      }
    }
    return { endpoint, port, pid, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Resolves with `port` (or a free one when 0) after checking that nothing listens there. */
function claimPort(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        err.code === 'EADDRINUSE'
          ? new DynamoDbLocalStartError(`Port ${port} is already in use: stop what listens there or choose another port`)
          : new DynamoDbLocalStartError(`Cannot listen on port ${port}: ${err.message}`, { cause: err }),
      );
    });
    server.listen({ port, host: LOCAL_HOST, exclusive: true }, () => {
      const address = server.address();
      const chosen = typeof address === 'object' && address !== null ? address.port : port;
      server.close(() => resolve(chosen));
    });
  });
}

async function waitUntilReady(options: {
  readonly endpoint: string;
  readonly child: ChildProcess;
  readonly exited: Promise<void>;
  readonly startTimeoutMs: number;
  readonly recentOutput: readonly string[];
}): Promise<void> {
  const { endpoint, child, startTimeoutMs, recentOutput } = options;
  const client = new DynamoDBClient({
    region: 'us-east-1',
    endpoint,
    credentials: { accessKeyId: 'local', secretAccessKey: 'local' },
    maxAttempts: 1,
    requestHandler: { connectionTimeout: 1_000, requestTimeout: 2_000, throwOnRequestTimeout: true },
  });
  const deadline = Date.now() + startTimeoutMs;
  let childGone = false;
  void options.exited.then(() => {
    childGone = true;
  });
  const tail = (): string => (recentOutput.length ? `\n${recentOutput.join('\n')}` : '');
  try {
    for (;;) {
      if (childGone) {
        throw new DynamoDbLocalStartError(
          `DynamoDB Local exited during start (code ${child.exitCode ?? child.signalCode})${tail()}`,
        );
      }
      try {
        await client.send(new ListTablesCommand({ Limit: 1 }));
        return;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        throw new DynamoDbLocalStartError(`DynamoDB Local did not answer within ${startTimeoutMs} ms${tail()}`);
      }
      await new Promise((r) => setTimeout(r, PROBE_INTERVAL_MS));
    }
  } finally {
    client.destroy();
  }
}
