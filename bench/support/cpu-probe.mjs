// Preloaded into each gateway process of bench:portkey (node --import): answers the parent's "cpu" message with
// this process's process.cpuUsage(), so the bench measures each gateway's own Node CPU.
process.on('message', (message) => {
  if (message === 'cpu') process.send?.({ cpu: process.cpuUsage() });
});
