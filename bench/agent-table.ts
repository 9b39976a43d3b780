/**
 * The agents table of issue 22: for each agent and model, whether a tool turn completed through the gateway,
 * and for each runaway how many model calls reached the provider, how long the agent ran and what it cost.
 * Read from the rows the real-agent e2e suites write (test/clients/agent-cli.ts: `.bench/agent-runs.jsonl`),
 * newest per agent, model and kind:
 *
 *   npx jest test/clients/claude-code.e2e.test.ts test/clients/codex.e2e.test.ts test/clients/agents-sdk.e2e.test.ts
 *   npm run bench:agents
 */
import { existsSync, readFileSync } from 'node:fs';
import { AGENT_ROWS_FILE, type AgentRow } from '../test/clients/agent-cli';

function main(): void {
  if (!existsSync(AGENT_ROWS_FILE)) {
    console.log(`No rows yet: run the real-agent e2e suites first (${AGENT_ROWS_FILE}).`);
    return;
  }
  const newest = new Map<string, AgentRow>();
  for (const line of readFileSync(AGENT_ROWS_FILE, 'utf8').split('\n')) {
    if (line.trim() === '') continue;
    const row = JSON.parse(line) as AgentRow;
    newest.set(`${row.agent}\u0000${row.model}\u0000${row.kind}`, row);
  }
  const pairs = new Map<string, { agent: string; model: string; tool?: AgentRow; runaway?: AgentRow }>();
  for (const row of newest.values()) {
    const k = `${row.agent}\u0000${row.model}`;
    const entry = pairs.get(k) ?? { agent: row.agent, model: row.model };
    entry[row.kind] = row;
    pairs.set(k, entry);
  }
  const usd = (micros?: number) => (micros === undefined ? '—' : `$${(micros / 1_000_000).toFixed(2)}`);
  console.log('| agent | model | tool turn | runaway: model calls | seconds | spent |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  for (const { agent, model, tool, runaway } of pairs.values()) {
    const turn = tool ? `${tool.ok ? '✓' : '✗'}${tool.note ? ` ${tool.note}` : ''}` : '—';
    const stopped = runaway ? `${runaway.ok ? '' : '✗ '}${runaway.calls ?? '?'}${runaway.note ? ` (${runaway.note})` : ''}` : '—';
    console.log(`| ${agent} | ${model} | ${turn} | ${stopped} | ${runaway?.seconds ?? '—'} | ${runaway ? usd(runaway.micros) : '—'} |`);
  }
}

main();
