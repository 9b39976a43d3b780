// Preloaded into each gateway process of bench:portkey (node --import): answers the parent's "cpu" message with
// this process's process.cpuUsage(), so the bench measures each gateway's own Node CPU.
process.on('message', (message) => {
  if (message === 'cpu') process.send?.({ cpu: process.cpuUsage() });
});
// A process without a SIGTERM handler of its own exits normally on SIGTERM, so that `node --cpu-prof` (the
// bench's --profile) can write its profile; one with a handler (tollgate's child) is left to it.
process.on('SIGTERM', () => {
  if (process.listenerCount('SIGTERM') === 1) process.exit(0);
});
