/**
 * The conversation of one run, in OpenAI chat shapes, and its pruning. A long run must not carry (and pay
 * for, and hold in memory) every message it ever exchanged: past {@link PRUNE_AFTER_MESSAGES} messages the
 * older middle is folded into one summary message, keeping the system prompt and the task:
 *
 *   [system] [task] [m2 … m40] [m41 … m51]     more than 50 messages
 *   [system] [task] [summary of m2 … m40] [m41 … m51]
 *
 * The cut never separates an assistant message with tool calls from its tool results (the API refuses a
 * tool message without its call), and the summary itself is bounded, so memory stays flat however long a
 * run goes on.
 */

export interface ToolCall {
  readonly id: string;
  readonly type: 'function';
  readonly function: { readonly name: string; readonly arguments: string };
}

export type ChatMessage =
  | { readonly role: 'system' | 'user'; readonly content: string }
  | { readonly role: 'assistant'; readonly content: string | null; readonly tool_calls?: readonly ToolCall[] }
  | { readonly role: 'tool'; readonly tool_call_id: string; readonly content: string };

/** Pruning starts when a conversation has more messages than this. */
export const PRUNE_AFTER_MESSAGES = 50;
/** Recent messages kept verbatim after pruning (at least; the cut moves back to a whole step). */
export const KEEP_RECENT_MESSAGES = 20;
/** The summary's largest size in characters; older lines are dropped first. */
export const MAX_SUMMARY_CHARS = 4_000;
/** How much of one message's text a summary line quotes. */
const QUOTE_CHARS = 160;

export const SUMMARY_HEADING = 'Summary of earlier steps (older messages were pruned):';

function quote(text: string): string {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > QUOTE_CHARS ? `${flat.slice(0, QUOTE_CHARS)}…` : flat;
}

function summaryLine(message: ChatMessage): string | undefined {
  switch (message.role) {
    case 'assistant': {
      const calls = (message.tool_calls ?? []).map((c) => `${c.function.name}(${quote(c.function.arguments)})`);
      const said = message.content ? `said "${quote(message.content)}"` : '';
      return `- assistant ${[said, calls.length ? `called ${calls.join(', ')}` : ''].filter(Boolean).join(' and ')}`;
    }
    case 'tool':
      return `- tool result: ${message.content === '' ? '(empty)' : `"${quote(message.content)}"`}`;
    case 'user':
      return message.content.startsWith(SUMMARY_HEADING) ? undefined : `- user: "${quote(message.content)}"`;
    default:
      return undefined;
  }
}

/**
 * Returns the conversation pruned when it is longer than {@link PRUNE_AFTER_MESSAGES}: the first `keepHead`
 * messages (system prompt, task), one summary message, and the recent tail. Shorter conversations come back
 * unchanged (the same array).
 */
export function pruneConversation(messages: readonly ChatMessage[], options: { readonly keepHead?: number } = {}): readonly ChatMessage[] {
  if (messages.length <= PRUNE_AFTER_MESSAGES) return messages;
  const keepHead = options.keepHead ?? 2;
  const head = messages.slice(0, keepHead);
  let previousSummary: string | undefined;
  let start = keepHead;
  const first = messages[keepHead];
  if (first?.role === 'user' && first.content.startsWith(SUMMARY_HEADING)) {
    previousSummary = first.content.slice(SUMMARY_HEADING.length).trim();
    start += 1;
  }
  // The tail starts at an assistant message, so every tool result in it keeps its call.
  let cut = Math.max(start, messages.length - KEEP_RECENT_MESSAGES);
  while (cut > start && messages[cut]?.role === 'tool') cut -= 1;
  const folded = messages.slice(start, cut);
  const lines = [
    ...(previousSummary ? previousSummary.split('\n') : []),
    ...folded.map(summaryLine).filter((l): l is string => l !== undefined),
  ];
  // Bounded: keep the newest lines that fit.
  const kept: string[] = [];
  let size = 0;
  for (let i = lines.length - 1; i >= 0; i--) {
    size += lines[i]!.length + 1;
    if (size > MAX_SUMMARY_CHARS) break;
    kept.unshift(lines[i]!);
  }
  const summary: ChatMessage = { role: 'user', content: `${SUMMARY_HEADING}\n${kept.join('\n')}` };
  return [...head, summary, ...messages.slice(cut)];
}
