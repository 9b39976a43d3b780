/**
 * The CPU an input estimate costs (lambda/core/tokens.ts), next to a same-run baseline: JSON.parse of the same
 * body, which the gateway does for every request anyway. Bodies are built from this repository's own source:
 *
 *   - a 300 KB Messages turn (system prompt, tools, three 73 KB files read, history), first seen;
 *   - the same conversation one turn later (a 3 KB tool result added): what an agent sends on each turn;
 *   - 300 KB of thirty distinct 10 KB files in one request (the per-request budget's worst case).
 *
 * Also prints each estimate against the tokenizer's whole count of the same text.
 *
 *   npm run bench:tokens [-- --runs 5]
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { countTokens } from 'gpt-tokenizer/cjs/encoding/o200k_base';
import { estimateMessagesInputTokens } from '../lambda/core/tokens';

const root = resolve(__dirname, '..');
const SOURCE = ['lambda/http/app.ts', 'README.md', 'lambda/store/dynamodb/ledger.ts', 'docs/how-it-works.md']
  .map((f) => readFileSync(join(root, f), 'utf8'))
  .join('\n');

function text(chars: number, salt: string): string {
  let out = `// ${salt}\n`;
  while (out.length < chars) out += SOURCE;
  return out.slice(0, chars);
}

type Body = Parameters<typeof estimateMessagesInputTokens>[0];

function agentTurn(run: number, extraTurns: number): Body {
  const messages: Record<string, unknown>[] = [{ role: 'user', content: `Fix the failing test (run ${run}).` }];
  for (let i = 0; i < 3; i++) {
    messages.push({ role: 'assistant', content: [{ type: 'tool_use', id: `toolu_${i}`, name: 'Read', input: { file_path: `f${i}.ts` } }] });
    messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: `toolu_${i}`, content: text(73_000, `run ${run} file ${i}`) }] });
  }
  for (let i = 0; i < extraTurns; i++) {
    messages.push({ role: 'assistant', content: [{ type: 'tool_use', id: `toolu_x${i}`, name: 'Bash', input: { command: 'npm test' } }] });
    messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: `toolu_x${i}`, content: text(3_000, `run ${run} out ${i}`) }] });
  }
  return {
    system: text(40_000, `run ${run} system`),
    tools: [{ name: 'Read', description: text(6_000, `run ${run} tools`), input_schema: { type: 'object', properties: { file_path: { type: 'string' } } } }],
    messages,
  };
}

function manyFiles(run: number): Body {
  return { messages: Array.from({ length: 30 }, (_, i) => ({ role: 'user', content: text(10_000, `run ${run} many ${i}`) })) };
}

function wholeCount(body: Body): number {
  const plain = { disallowedSpecial: new Set<string>() };
  const strings: string[] = [];
  const walk = (v: unknown): void => {
    if (typeof v === 'string') strings.push(v);
    else if (Array.isArray(v)) v.forEach(walk);
    else if (v && typeof v === 'object') Object.values(v).forEach(walk);
  };
  walk(body);
  return strings.reduce((n, s) => n + countTokens(s, plain), 0);
}

function ms(f: () => void): number {
  const t = process.hrtime.bigint();
  f();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function main(): void {
  const { values } = parseArgs({ options: { runs: { type: 'string', default: '5' } } });
  const runs = Number(values.runs);
  estimateMessagesInputTokens({ messages: [{ role: 'user', content: 'warm up the tokenizer' }] });
  const rows: Record<string, { parse: number[]; est: number[]; bytes: number; ratio: number }> = {};
  const add = (name: string, body: Body, measure = true): void => {
    const json = JSON.stringify(body);
    const parse = ms(() => JSON.parse(json));
    let n = 0;
    const est = ms(() => {
      n = estimateMessagesInputTokens(body);
    });
    if (!measure) return;
    const row = (rows[name] ??= { parse: [], est: [], bytes: Buffer.byteLength(json), ratio: 0 });
    row.parse.push(parse);
    row.est.push(est);
    row.ratio = n / wholeCount(body);
  };
  for (let run = 0; run < runs; run++) {
    add('300 KB agent turn, first seen', agentTurn(run, 0));
    add('same conversation, next turn (+3 KB)', agentTurn(run, 1));
    add('300 KB of 30 distinct 10 KB files', manyFiles(run));
  }
  console.log('case | body KB | JSON.parse ms | estimate ms | estimate ÷ parse | estimate ÷ whole o200k count');
  for (const [name, r] of Object.entries(rows)) {
    const p = median(r.parse);
    const e = median(r.est);
    console.log(`${name} | ${(r.bytes / 1024).toFixed(0)} | ${p.toFixed(2)} | ${e.toFixed(2)} | ${(e / p).toFixed(1)}× | ${r.ratio.toFixed(3)}`);
  }
}

main();
