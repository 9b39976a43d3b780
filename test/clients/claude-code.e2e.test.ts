/**
 * The real Claude Code CLI (`claude -p`, headless, HOME in a temp dir) through the gateway against the fake
 * upstream: one tool turn (the model asks Claude Code to write a file, then answers), and a runaway (the model
 * keeps asking to read a file that does not exist) stopped by the gateway's defaults within 10 model calls at
 * ≤ $1. Counts and dollars are asserted, never wall-clock time. The binary is installed once per machine
 * (agent-binaries.ts).
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FakeScript } from '../support/fake-upstream';
import { claudeBinary } from './agent-binaries';
import { startClientSuite, type ClientSuite } from './support';
import { isRecord, recordAgentRow, recordingProxy, type Run, runCli, runReport, secondsSince, spentBy as spentByUser, tempDirs } from './agent-cli';

jest.setTimeout(20 * 60_000);

/** The model Claude Code 2.1.328 sends when none is set (read from its requests). */
const DEFAULT_CLAUDE_CODE_MODEL = 'claude-opus-5-5';

let s: ClientSuite;
let claude: string;
const temp = tempDirs();
beforeAll(async () => {
  claude = claudeBinary();
  s = await startClientSuite();
});
afterAll(async () => {
  await s?.h.close();
  temp.removeAll();
});

const tempDir = (prefix: string) => temp.make(prefix);

/**
 * `claude -p PROMPT` in `cwd` with a fresh HOME, talking only to the gateway. `model: null` sets no model at
 * all (neither ANTHROPIC_MODEL nor the small-model variables): Claude Code's built-in default.
 */
function runClaude(key: string, cwd: string, prompt: string, model: string | null = 'claude-sonnet-4-6', baseUrl = s.h.url): Promise<Run> {
  const home = tempDir('claude-home-');
  const models: NodeJS.ProcessEnv =
    model === null ? {} : { ANTHROPIC_MODEL: model, ANTHROPIC_DEFAULT_HAIKU_MODEL: 'claude-haiku-4-5', ANTHROPIC_SMALL_FAST_MODEL: 'claude-haiku-4-5' };
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH,
    HOME: home,
    ANTHROPIC_BASE_URL: baseUrl,
    ANTHROPIC_AUTH_TOKEN: key,
    ...models,
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_AUTOUPDATER: '1',
    DISABLE_TELEMETRY: '1',
    DISABLE_ERROR_REPORTING: '1',
  };
  return runCli(claude, ['-p', prompt, '--output-format', 'json', '--permission-mode', 'acceptEdits', '--allowedTools', 'Write,Read'], { cwd, env });
}

const toolNames = (body: Record<string, unknown>): string[] =>
  Array.isArray(body.tools) ? body.tools.flatMap((t) => (isRecord(t) && typeof t.name === 'string' ? [t.name] : [])) : [];
function endsWithToolResult(body: Record<string, unknown>): boolean {
  const messages = Array.isArray(body.messages) ? body.messages : [];
  const last = messages[messages.length - 1];
  return isRecord(last) && Array.isArray(last.content) && last.content.some((b) => isRecord(b) && b.type === 'tool_result');
}
/** The agent's main loop carries its tools; side calls (titles, topic checks) carry none. */
const isAgentTurn = (body: Record<string, unknown>) => toolNames(body).includes('Write');
const agentTurns = () => s.h.upstream.requests.filter((r) => r.path === '/v1/messages' && isRecord(r.body) && isAgentTurn(r.body));

const spentBy = (userId: string) => spentByUser(s.h, userId);

const describeReport = (run: Run) => runReport(run);

describe('Claude Code (claude -p) through the gateway', () => {
  it('when the model asks for a tool, Claude Code runs it and finishes the turn, and the cost is recorded', async () => {
    const project = tempDir('claude-project-');
    const target = join(project, 'hello.txt');
    s.h.upstream.scriptEach((body): FakeScript => {
      const usage = { inputTokens: 2_000, outputTokens: 30 };
      if (!isAgentTurn(body)) return { replyText: 'Greeting file', usage };
      if (endsWithToolResult(body)) return { replyText: 'I wrote hello.txt.', usage };
      return { replyText: '', usage, toolCall: { id: 'toolu_fake_write', name: 'Write', input: { file_path: target, content: 'hi from the fake model\n' } } };
    });
    const userId = 'u-claude-code-tool';
    const key = await s.key(userId);
    const run = await runClaude(key, project, 'Create hello.txt saying hi.');
    expect({ code: run.code, report: describeReport(run) }).toMatchObject({ code: 0 });
    expect(readFileSync(target, 'utf8')).toBe('hi from the fake model\n');
    expect(JSON.parse(run.stdout)).toMatchObject({ result: 'I wrote hello.txt.' });
    expect(await spentBy(userId)).toBeGreaterThan(0);    recordAgentRow({ agent: 'Claude Code', model: 'claude-sonnet-4-6', kind: 'tool', ok: true });
  });

  it("on its built-in default model (no model set), Claude Code runs the tool and finishes the turn; its body reaches Anthropic as sent and is priced", async () => {
    const project = tempDir('claude-default-');
    const target = join(project, 'hello.txt');
    s.h.upstream.scriptEach((body): FakeScript => {
      const usage = { inputTokens: 2_000, outputTokens: 30 };
      if (!isAgentTurn(body)) return { replyText: 'Greeting file', usage };
      if (endsWithToolResult(body)) return { replyText: 'I wrote hello.txt on the default model.', usage };
      return { replyText: '', usage, toolCall: { id: 'toolu_default_write', name: 'Write', input: { file_path: target, content: 'hi from the default model\n' } } };
    });
    const userId = 'u-claude-code-default';
    const key = await s.key(userId);
    const before = s.h.upstream.requests.length;
    const proxy = await recordingProxy(s.h.url);
    const run = await runClaude(key, project, 'Create hello.txt saying hi.', null, proxy.url).finally(() => proxy.close());
    expect({ code: run.code, report: describeReport(run) }).toMatchObject({ code: 0 });
    expect(readFileSync(target, 'utf8')).toBe('hi from the default model\n');
    expect(JSON.parse(run.stdout)).toMatchObject({ result: 'I wrote hello.txt on the default model.' });
    const turns = s.h.upstream.requests.slice(before).filter((r) => r.path === '/v1/messages' && isRecord(r.body) && isAgentTurn(r.body));
    expect(turns.length).toBeGreaterThanOrEqual(2);
    // Claude Code 2.1.328's built-in default model, priced by the gateway's table (claude-opus-5-5: $4/$20 per M).
    expect([...new Set(turns.map((r) => (r.body as { model?: unknown }).model))]).toEqual([DEFAULT_CLAUDE_CODE_MODEL]);
    expect(await spentBy(userId)).toBe(turns.length * (2_000 * 4 + 30 * 20));
    // Pass-through is faithful: the tool turn's body (adaptive thinking, context_management, output_config, a
    // mid-conversation system message) and its beta header reach Anthropic exactly as Claude Code sent them.
    const last = turns.at(-1)!;
    const body = last.body as Record<string, unknown>;
    expect(body).toMatchObject({ thinking: expect.anything(), context_management: expect.anything(), output_config: expect.anything() });
    expect((body.messages as { role: string }[]).map((m) => m.role)).toContain('system');
    const sentTurns = proxy.sent.filter((r) => r.path.startsWith('/v1/messages') && !r.path.includes('count_tokens')).map((r) => ({ ...r, body: JSON.parse(r.rawBody) as unknown }));
    const asSent = sentTurns.find((r) => isRecord(r.body) && Array.isArray(r.body.messages) && r.body.messages.length === (body.messages as unknown[]).length && isAgentTurn(r.body));
    expect(asSent?.body).toEqual(body);
    expect(last.headers['anthropic-beta']).toBe(asSent!.headers['anthropic-beta']);    recordAgentRow({ agent: 'Claude Code', model: `default (${DEFAULT_CLAUDE_CODE_MODEL})`, kind: 'tool', ok: true });
  });

  it('on an OpenAI model (ANTHROPIC_MODEL=gpt-4o), Claude Code runs the tool and finishes the turn through the translation to chat completions', async () => {
    const project = tempDir('claude-openai-');
    const target = join(project, 'hello.txt');
    const chatTools = (body: Record<string, unknown>): string[] =>
      Array.isArray(body.tools) ? body.tools.flatMap((t) => (isRecord(t) && isRecord(t.function) && typeof t.function.name === 'string' ? [t.function.name] : [])) : [];
    const lastIsTool = (body: Record<string, unknown>) => {
      const messages = Array.isArray(body.messages) ? body.messages : [];
      const last = messages[messages.length - 1];
      return isRecord(last) && last.role === 'tool';
    };
    s.h.upstream.scriptEach((body): FakeScript => {
      const usage = { inputTokens: 2_000, outputTokens: 30 };
      if (!chatTools(body).includes('Write')) return { replyText: 'Greeting file', usage };
      if (lastIsTool(body)) return { replyText: 'I wrote hello.txt with GPT.', usage };
      return { replyText: '', usage, toolCall: { id: 'call_fake_write', name: 'Write', input: { file_path: target, content: 'hi from gpt\n' } } };
    });
    const userId = 'u-claude-code-openai';
    const key = await s.key(userId);
    const before = s.h.upstream.requests.length;
    const run = await runClaude(key, project, 'Create hello.txt saying hi.', 'gpt-4o');
    expect({ code: run.code, report: describeReport(run) }).toMatchObject({ code: 0 });
    expect(readFileSync(target, 'utf8')).toBe('hi from gpt\n');
    expect(JSON.parse(run.stdout)).toMatchObject({ result: 'I wrote hello.txt with GPT.' });
    const paths = new Set(s.h.upstream.requests.slice(before).filter((r) => isRecord(r.body) && chatTools(r.body).includes('Write')).map((r) => r.path));
    expect([...paths]).toEqual(['/v1/chat/completions']);
    expect(await spentBy(userId)).toBeGreaterThan(0);    recordAgentRow({ agent: 'Claude Code', model: 'gpt-4o (translated to chat)', kind: 'tool', ok: true });
  });

  it('when a turn carries 300 KB of files read, the default limits admit it and Claude Code finishes', async () => {
    const project = tempDir('claude-files-');
    // Five 70 KB files of ordinary code lines (~100 characters each, well under Claude Code's per-read limits).
    const line = (i: number, f: number) => `export const value${f}_${i} = compute(input${i}, { retries: ${i % 7}, label: 'file ${f} line ${i}' });\n`;
    const files = Array.from({ length: 5 }, (_, f) => {
      const path = join(project, `src${f}.ts`);
      let text = '';
      for (let i = 0; text.length < 70_000; i++) text += line(i, f);
      writeFileSync(path, text);
      return path;
    });
    const results = (body: Record<string, unknown>) =>
      (Array.isArray(body.messages) ? body.messages : []).flatMap((m) => (isRecord(m) && Array.isArray(m.content) ? m.content : [])).filter((b) => isRecord(b) && b.type === 'tool_result').length;
    s.h.upstream.scriptEach((body): FakeScript => {
      const usage = { inputTokens: 2_000, outputTokens: 30 };
      if (!isAgentTurn(body)) return { replyText: 'Reading files', usage };
      const read = results(body);
      if (read >= files.length) return { replyText: 'All five files read.', usage: { inputTokens: 90_000, outputTokens: 30 } };
      return { replyText: '', usage, toolCall: { id: `toolu_read_${read}`, name: 'Read', input: { file_path: files[read]! } } };
    });
    const userId = 'u-claude-code-files';
    const key = await s.key(userId);
    const run = await runClaude(key, project, 'Read the five source files and summarise them.');
    expect({ code: run.code, report: describeReport(run) }).toMatchObject({ code: 0 });
    expect(JSON.parse(run.stdout)).toMatchObject({ result: 'All five files read.' });
    const last = agentTurns().at(-1)!;
    expect(Buffer.byteLength(last.rawBody)).toBeGreaterThan(300_000);    recordAgentRow({ agent: 'Claude Code', model: 'claude-sonnet-4-6, a 300 KB turn of 5 files', kind: 'tool', ok: true });
  });

  it.each([['claude-sonnet-4-6'], [null]] as const)(
    'when the model keeps asking to read a missing file, the gateway stops Claude Code (model %s; null: its default) by default within 10 model calls at ≤ $1',
    async (model) => {
      const project = tempDir('claude-runaway-');
      let n = 0;
      s.h.upstream.scriptEach((body): FakeScript => {
        // An agent-sized turn: 30k tokens of context read on every call.
        const usage = { inputTokens: 30_000, outputTokens: 60 };
        if (!isAgentTurn(body)) return { replyText: 'Fix tests', usage };
        return { replyText: '', usage, toolCall: { id: `toolu_stuck_${++n}`, name: 'Read', input: { file_path: join(project, 'missing.ts') } } };
      });
      const userId = `u-claude-code-runaway-${model ?? 'default'}`;
      const key = await s.key(userId);
      const before = agentTurns().length;
      const started = performance.now();
      const run = await runClaude(key, project, 'Fix the failing test in missing.ts.', model);
      const seconds = secondsSince(started);
      const calls = agentTurns().length - before;
      const spent = await spentBy(userId);
      expect(calls).toBeGreaterThanOrEqual(2);
      expect(calls).toBeLessThanOrEqual(10);
      expect(spent).toBeLessThanOrEqual(1_000_000);
      // Claude Code ends with the gateway's refusal, not with an answer.
      expect(`${run.stdout}${run.stderr}`).toMatch(/Loop detected/);
      recordAgentRow({ agent: 'Claude Code', model: model ?? `default (${DEFAULT_CLAUDE_CODE_MODEL})`, kind: 'runaway', ok: true, calls, seconds, micros: spent, note: 'loop guard' });
    },
  );
});
