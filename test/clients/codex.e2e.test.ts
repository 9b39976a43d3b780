/**
 * The real Codex CLI (`codex exec`, headless, HOME and CODEX_HOME in a temp dir) through the gateway against
 * the fake upstream on the Responses API: one tool turn (the model asks Codex to run a shell command that
 * writes a file, then answers), and a runaway (the model keeps asking for the same failing command) stopped by
 * the gateway's defaults within 10 model calls at ≤ $1. Counts and dollars are asserted, never wall-clock
 * time. The binary is installed once per machine (agent-binaries.ts).
 */
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FakeScript } from '../support/fake-upstream';
import { codexCommand } from './agent-binaries';
import { startClientSuite, type ClientSuite } from './support';
import { isRecord, recordAgentRow, recordingProxy, type Run, runCli, runReport, secondsSince, spentBy as spentByUser, tempDirs } from './agent-cli';

jest.setTimeout(20 * 60_000);

let s: ClientSuite;
let codex: ReturnType<typeof codexCommand>;
const temp = tempDirs();
beforeAll(async () => {
  codex = codexCommand();
  s = await startClientSuite();
});
afterAll(async () => {
  await s?.h.close();
  temp.removeAll();
});

const tempDir = (prefix: string) => temp.make(prefix);

/** `codex exec PROMPT` in `cwd` with a fresh HOME, its provider set to the gateway by the docs/agents.md lines. */
function runCodex(key: string, cwd: string, prompt: string, model = 'gpt-5.1-codex', config: readonly string[] = [], baseUrl = s.h.baseURL): Promise<Run> {
  const home = tempDir('codex-home-');
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, HOME: home, CODEX_HOME: join(home, '.codex'), TOLLGATE_KEY: key };
  const provider = `model_providers.tollgate={name="tollgate",base_url="${baseUrl}",env_key="TOLLGATE_KEY",wire_api="responses"}`;
  const args = [
    ...codex.args,
    'exec',
    '--skip-git-repo-check',
    '--dangerously-bypass-approvals-and-sandbox',
    '-m',
    model,
    '-c',
    'model_provider=tollgate',
    '-c',
    provider,
    ...config.flatMap((c) => ['-c', c]),
    prompt,
  ];
  mkdirSync(join(home, '.codex'), { recursive: true });
  return runCli(codex.command, args, { cwd, env });
}

const toolNames = (body: Record<string, unknown>): string[] =>
  Array.isArray(body.tools) ? body.tools.flatMap((t) => (isRecord(t) && typeof t.name === 'string' ? [t.name] : [])) : [];

function endsWithToolResult(body: Record<string, unknown>): boolean {
  const input = Array.isArray(body.input) ? body.input : [];
  const last = input[input.length - 1];
  return isRecord(last) && last.type === 'function_call_output';
}
/** Codex's agent turns carry its shell tool; anything else is a side call. */
const isAgentTurn = (body: Record<string, unknown>) => toolNames(body).includes('exec_command');
const agentTurns = () => s.h.upstream.requests.filter((r) => r.path === '/v1/responses' && isRecord(r.body) && isAgentTurn(r.body));

const spentBy = (userId: string) => spentByUser(s.h, userId);

const report = (run: Run) => runReport(run, 3000);

describe('Codex (codex exec) through the gateway', () => {
  it('when the model asks for a shell command, Codex runs it and finishes the turn, and the cost is recorded', async () => {
    const project = tempDir('codex-project-');
    s.h.upstream.scriptEach((body): FakeScript => {
      const usage = { inputTokens: 2_000, outputTokens: 30 };
      if (!isAgentTurn(body)) return { replyText: 'ok', usage };
      if (endsWithToolResult(body)) return { replyText: 'I wrote hello.txt.', usage };
      return { replyText: '', usage, toolCall: { id: 'call_fake_write', name: 'exec_command', input: { cmd: "printf 'hi from the fake model\\n' > hello.txt" } } };
    });
    const userId = 'u-codex-tool';
    const key = await s.key(userId);
    const run = await runCodex(key, project, 'Create hello.txt saying hi.');
    expect({ code: run.code, report: report(run) }).toMatchObject({ code: 0 });
    expect(readFileSync(join(project, 'hello.txt'), 'utf8')).toBe('hi from the fake model\n');
    expect(run.stdout).toContain('I wrote hello.txt.');
    expect(agentTurns().length).toBeGreaterThanOrEqual(2);
    // Codex sets no output cap: the gateway reserves and sends the model's own (gpt-5: 128k), not 4,096.
    expect((agentTurns()[0]!.body as { max_output_tokens?: number }).max_output_tokens).toBe(128_000);
    expect(await spentBy(userId)).toBeGreaterThan(0);    recordAgentRow({ agent: 'Codex', model: 'gpt-5.1-codex', kind: 'tool', ok: true });
  });

  it('on a Claude model (-m claude-sonnet-4-5), Codex runs the command and finishes the turn through the translation to Anthropic messages', async () => {
    const project = tempDir('codex-claude-');
    const anthropicTools = (body: Record<string, unknown>): string[] =>
      Array.isArray(body.tools) ? body.tools.flatMap((t) => (isRecord(t) && typeof t.name === 'string' ? [t.name] : [])) : [];
    const lastIsToolResult = (body: Record<string, unknown>) => {
      const messages = Array.isArray(body.messages) ? body.messages : [];
      const last = messages[messages.length - 1];
      return isRecord(last) && Array.isArray(last.content) && last.content.some((b) => isRecord(b) && b.type === 'tool_result');
    };
    s.h.upstream.scriptEach((body): FakeScript => {
      const usage = { inputTokens: 2_000, outputTokens: 30 };
      if (!anthropicTools(body).includes('exec_command')) return { replyText: 'ok', usage };
      if (lastIsToolResult(body)) return { replyText: 'Claude wrote hello.txt.', usage };
      return { replyText: '', usage, toolCall: { id: 'toolu_fake_exec', name: 'exec_command', input: { cmd: "printf 'hi from claude\\n' > hello.txt" } } };
    });
    const userId = 'u-codex-claude';
    const key = await s.key(userId);
    const before = s.h.upstream.requests.length;
    const run = await runCodex(key, project, 'Create hello.txt saying hi.', 'claude-sonnet-4-5', ['web_search="disabled"']);
    expect({ code: run.code, report: report(run) }).toMatchObject({ code: 0 });
    expect(readFileSync(join(project, 'hello.txt'), 'utf8')).toBe('hi from claude\n');
    expect(run.stdout).toContain('Claude wrote hello.txt.');
    const paths = new Set(s.h.upstream.requests.slice(before).filter((r) => isRecord(r.body) && anthropicTools(r.body).includes('exec_command')).map((r) => r.path));
    expect([...paths]).toEqual(['/v1/messages']);
    expect(await spentBy(userId)).toBeGreaterThan(0);    recordAgentRow({ agent: 'Codex', model: 'claude-sonnet-4-5 (translated to Messages)', kind: 'tool', ok: true });
  });

  it("on a Claude model with web search left on, Codex shows the gateway's one-line refusal naming the tool, and nothing is charged", async () => {
    const project = tempDir('codex-claude-web-');
    s.h.upstream.scriptEach((): FakeScript => ({ replyText: 'ok' }));
    const userId = 'u-codex-claude-web';
    const key = await s.key(userId);
    const run = await runCodex(key, project, 'Create hello.txt saying hi.', 'claude-sonnet-4-5');
    expect(run.code).not.toBe(0);
    // Codex prints the gateway's error JSON as it came (quotes escaped).
    expect(run.stderr).toMatch(/web_search\\?" is a tool OpenAI runs on its own servers/);
    expect(run.stderr).toContain('in Codex, turn the feature off');
    expect(await spentBy(userId)).toBe(0);
  });

  it("when the user's budget is spent, Codex shows the gateway's sentence naming the budget, its scope and what to do, asks once, and nothing is charged", async () => {
    const project = tempDir('codex-budget-');
    s.h.upstream.scriptEach((): FakeScript => ({ replyText: 'ok' }));
    const userId = 'u-codex-budget';
    const key = await s.brokeKey(userId);
    const before = s.h.upstream.requests.length;
    const proxy = await recordingProxy(s.h.url);
    const run = await runCodex(key, project, 'Create hello.txt saying hi.', 'gpt-5.1-codex', [], `${proxy.url}/v1`).finally(() => proxy.close());
    expect(run.code).not.toBe(0);
    // Codex's own frame around the gateway's words: "You've hit your usage limit. <sentence>, or try again later."
    const shown = `${run.stdout}\n${run.stderr}`;
    expect(shown).not.toContain('Quota exceeded. Check your plan');
    expect(shown).toMatch(/Budget exceeded: key \S+ has a daily budget of \$0\.000001 and this request needs up to \$[\d.]+, more than the whole limit; send a smaller request[^\n]*, or try again later\./);
    // One refusal with x-should-retry: false, and Codex does not ask again.
    expect(proxy.sent.filter((r) => r.path.startsWith('/v1/responses'))).toHaveLength(1);
    expect(s.h.upstream.requests.length).toBe(before);
    expect(await spentBy(userId)).toBe(0);
  });

  it('when the model keeps asking for the same failing command, the gateway stops Codex by default within 10 model calls at ≤ $1', async () => {
    const project = tempDir('codex-runaway-');
    let n = 0;
    s.h.upstream.scriptEach((body): FakeScript => {
      // An agent-sized turn: 30k tokens of context read on every call.
      const usage = { inputTokens: 30_000, outputTokens: 60 };
      if (!isAgentTurn(body)) return { replyText: 'ok', usage };
      return { replyText: '', usage, toolCall: { id: `call_stuck_${++n}`, name: 'exec_command', input: { cmd: 'cat missing.ts' } } };
    });
    const userId = 'u-codex-runaway';
    const key = await s.key(userId);
    const before = agentTurns().length;
    const started = performance.now();
    const run = await runCodex(key, project, 'Fix the failing test in missing.ts.');
    const seconds = secondsSince(started);
    const calls = agentTurns().length - before;
    expect({ calls, report: report(run) }).toMatchObject({ calls: expect.any(Number) });
    expect(calls).toBeGreaterThanOrEqual(2);
    expect(calls).toBeLessThanOrEqual(10);
    expect(await spentBy(userId)).toBeLessThanOrEqual(1_000_000);
    expect(existsSync(join(project, 'missing.ts'))).toBe(false);
    // Codex ends with the gateway's loop refusal in its own words, not "exceeded retry limit, last status: 429".
    expect(`${run.stdout}\n${run.stderr}`).toMatch(/You.ve hit your usage limit\. Loop detected/);
    recordAgentRow({ agent: 'Codex', model: 'gpt-5.1-codex', kind: 'runaway', ok: true, calls, seconds, micros: await spentBy(userId), note: 'loop guard' });
  });
});
