/**
 * Summarises a V8 .cpuprofile (as `node --cpu-prof` writes, e.g. bench:portkey's --profile): the functions and
 * the modules (a package under node_modules, a repo file, or a V8/Node internal) with the most self time.
 *
 *   npx tsx bench/support/cpuprofile-top.ts FILE [--top 40] [--skip-ms 0]
 *
 * `--skip-ms` leaves out the first milliseconds of the profile (start-up: module loading, DynamoDB Local, the
 * tables), so the figures are of the measured requests. The third table, "by caller", gives each sample of a
 * Node internal or native frame (writev, the garbage collector aside) to the nearest frame up its stack that is
 * a package or a repo file: which code's sockets, hashing and streams cost the time.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}
interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
  readonly children?: readonly number[];
}
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly startTime: number;
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

/** A module's short name: `pkg` (or `@scope/pkg`) for node_modules, the repo-relative path, or the internal name. */
function moduleOf(url: string, functionName: string): string {
  if (url === '') return `(${functionName || 'native'})`;
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const parts = url.slice(nm + '/node_modules/'.length).split('/');
    return parts[0]!.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0]!;
  }
  if (url.startsWith('node:')) return url;
  const repo = url.indexOf('/lambda/');
  return repo >= 0 ? url.slice(repo + 1) : url.replace(/^file:\/\//, '');
}

function main(): void {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: { top: { type: 'string', default: '40' }, 'skip-ms': { type: 'string', default: '0' } },
  });
  const file = positionals[0];
  if (file === undefined) throw new Error('usage: cpuprofile-top.ts FILE [--top N] [--skip-ms MS]');
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const top = Number(values.top);
  const skipUs = Number(values['skip-ms']) * 1000;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parentOf = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parentOf.set(c, n.id);
  const selfUs = new Map<number, number>();
  let t = 0;
  let totalUs = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    t += profile.timeDeltas[i]!;
    if (t < skipUs) continue;
    const delta = profile.timeDeltas[i + 1] ?? 0;
    selfUs.set(profile.samples[i]!, (selfUs.get(profile.samples[i]!) ?? 0) + delta);
    totalUs += delta;
  }
  const fn = new Map<string, number>();
  const mod = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const { callFrame: cf } = byId.get(id)!;
    if (cf.functionName === '(idle)') continue;
    const key = `${cf.functionName || '(anonymous)'}  ${moduleOf(cf.url, cf.functionName)}:${cf.lineNumber + 1}`;
    fn.set(key, (fn.get(key) ?? 0) + us);
    const m = moduleOf(cf.url, cf.functionName);
    mod.set(m, (mod.get(m) ?? 0) + us);
  }
  const caller = new Map<string, number>();
  for (const [id, us] of selfUs) {
    if (byId.get(id)!.callFrame.functionName === '(idle)') continue;
    let at: number | undefined = id;
    let name: string | undefined;
    while (at !== undefined) {
      const cf = byId.get(at)!.callFrame;
      if (cf.url !== '' && !cf.url.startsWith('node:')) {
        name = `${cf.functionName || '(anonymous)'}  ${moduleOf(cf.url, cf.functionName)}`;
        break;
      }
      at = parentOf.get(at);
    }
    const key = name ?? `${moduleOf(byId.get(id)!.callFrame.url, byId.get(id)!.callFrame.functionName)} (no package frame)`;
    caller.set(key, (caller.get(key) ?? 0) + us);
  }
  const idle = [...selfUs].filter(([id]) => byId.get(id)!.callFrame.functionName === '(idle)').reduce((a, [, us]) => a + us, 0);
  const busy = totalUs - idle;
  const print = (title: string, m: Map<string, number>) => {
    console.log(`\n${title} (self time, % of ${(busy / 1000).toFixed(0)} ms busy)`);
    for (const [k, us] of [...m].sort((a, b) => b[1] - a[1]).slice(0, top)) {
      console.log(`${((us / busy) * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(6)} ms  ${k}`);
    }
  };
  console.log(`${file}: ${(totalUs / 1000).toFixed(0)} ms sampled, ${(idle / 1000).toFixed(0)} ms idle`);
  print('modules', mod);
  print('functions', fn);
  const callerModules = new Map<string, number>();
  for (const [k, us] of caller) {
    const m = k.split('  ')[1] ?? k;
    callerModules.set(m, (callerModules.get(m) ?? 0) + us);
  }
  print('by caller: modules (internals charged to the nearest package or repo frame)', callerModules);
  print('by caller: functions', caller);
}

main();
