// The load generator of bench:portkey, in a Node process of its own (plain JavaScript: no TypeScript loader in
// the way), so neither the fake upstream nor the measured gateway shares an event loop with it.
//
// The parent sends { id, run: { url, headers, bodyPrefix, bodySuffix, start, n, concurrency } } over IPC; this
// process POSTs n requests to url with at most `concurrency` in flight (request i's body is
// bodyPrefix + (start + i) + bodySuffix, so no two are identical), reads each answer to its end and sends back
// { id, result: { ok, statuses, latenciesMs, elapsedMs } }: how many answered 200, a count per other status
// (0 for a connection error), the latency of each 200 in ms (in completion order) and the wall time of the run.
// Connections are kept alive between requests and runs (one pool per origin), as a real client's would be.
import http from 'node:http';

const agent = new http.Agent({ keepAlive: true, maxSockets: 256 });

/** One POST; resolves to [status, ms] (status 0 when the connection failed). */
function post(url, headers, body) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const req = http.request(url, { method: 'POST', agent, headers: { ...headers, 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.on('data', () => {});
      res.on('end', () => resolve([res.statusCode ?? 0, performance.now() - t0]));
      res.on('error', () => resolve([0, performance.now() - t0]));
    });
    req.on('error', () => resolve([0, performance.now() - t0]));
    req.end(body);
  });
}

async function run(spec) {
  const { url, headers, bodyPrefix, bodySuffix, start, n, concurrency } = spec;
  const latenciesMs = [];
  const statuses = {};
  let next = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(concurrency, n)) }, async () => {
      while (next < n) {
        const i = next++;
        const [status, ms] = await post(url, headers, `${bodyPrefix}${start + i}${bodySuffix}`);
        if (status === 200) latenciesMs.push(ms);
        else statuses[status] = (statuses[status] ?? 0) + 1;
      }
    }),
  );
  return { ok: latenciesMs.length, statuses, latenciesMs, elapsedMs: performance.now() - t0 };
}

process.on('message', (message) => {
  if (!message || typeof message !== 'object' || !message.run) return;
  run(message.run).then(
    (result) => process.send({ id: message.id, result }),
    (err) => process.send({ id: message.id, error: String(err && err.stack ? err.stack : err) }),
  );
});
process.on('disconnect', () => {
  agent.destroy();
  process.exit(0);
});
process.send({ ready: true });
