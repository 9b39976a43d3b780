/**
 * Anthropic Messages requests (`POST /v1/messages`) read into OpenAI chat-completions requests, so that every
 * provider that answers chat completions (openai, bedrock, mock) also answers an Anthropic-dialect caller
 * (Claude Code with an OpenAI or Bedrock model).
 *
 * What maps:
 * - `system` (a string or text blocks) → a system message first; a mid-conversation `system` message → a
 *   system message in place.
 * - user blocks: `text`, `image` (base64 or URL) → text / image_url parts; a base64 PDF `document` → a `file`
 *   part; `tool_result` → one `tool` message per result (before the turn's other parts, as OpenAI wants tool
 *   messages right after the assistant's tool calls); images inside a tool result follow as a user message.
 * - assistant blocks: `text` → content, `tool_use` → `tool_calls`; `thinking` / `redacted_thinking` are
 *   dropped (another model's reasoning carries nothing the next model can use).
 * - `tools` (`input_schema` → `function.parameters`), `tool_choice` (auto / any → required / none / tool,
 *   `disable_parallel_tool_use` → `parallel_tool_calls: false`).
 * - `max_tokens` → `max_completion_tokens` (the route first lowers it to the model's own output limit, which
 *   OpenAI would otherwise refuse: lambda/http/app.ts); `temperature`, `top_p`, `stop_sequences` → `stop`,
 *   `metadata.user_id` → `user`.
 * - reasoning, for OpenAI reasoning models only (o-series, gpt-5; others refuse the field): `output_config.effort`
 *   → `reasoning_effort` (`max` → `high`), else `thinking: {type: 'enabled', budget_tokens}` → `low` below
 *   8,192 tokens, `medium` below 24,576, else `high` (Claude Code's "think" 4k, "think hard" 10k and
 *   "ultrathink" 32k land on the three levels). OpenAI has no token budget for reasoning, only these levels.
 * - structured output: `output_config.format` (and the older `output_format`) `json_schema` →
 *   `response_format: {type: 'json_schema'}`.
 *
 * Dropped, because the chat API has no such thing: `top_k`, `thinking` (for models without reasoning, or
 * `adaptive` / `disabled` without an effort: the model's own default), `cache_control`, `context_management`,
 * `service_tier`, `container`. Refused with a 400 naming the block or tool: Anthropic's own server and
 * client tools (`web_search_…`, `bash_…`, `text_editor_…`, …), `mcp_servers`, and content blocks with no
 * chat equivalent (`search_result`, `server_tool_use`, …).
 */
import { InvalidRequestError } from '../../core/errors';
import type { ChatCompletionBody, MessagesBody } from '../contract';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(message: string, param: string, code = 'invalid_value'): InvalidRequestError {
  return new InvalidRequestError(message, { param, code });
}

/** Block types dropped from assistant turns: reasoning that only the model that wrote it can read. */
const DROPPED_BLOCKS = new Set(['thinking', 'redacted_thinking']);

/** The text of blocks that may only hold text (system, tool_result text). */
function textOf(content: unknown, at: string): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw invalid(`${at} must be a string or an array of text blocks`, at);
  return content
    .map((block, i) => {
      if (isRecord(block) && block.type === 'text' && typeof block.text === 'string') return block.text;
      throw invalid(`${at}[${i}] must be a text block`, `${at}[${i}]`);
    })
    .join('\n');
}

/** An Anthropic image block → a chat image_url part. */
function imagePart(block: Record<string, unknown>, at: string): Record<string, unknown> {
  const source = isRecord(block.source) ? block.source : {};
  if (source.type === 'base64' && typeof source.media_type === 'string' && typeof source.data === 'string') {
    return { type: 'image_url', image_url: { url: `data:${source.media_type};base64,${source.data}` } };
  }
  if (source.type === 'url' && typeof source.url === 'string') return { type: 'image_url', image_url: { url: source.url } };
  throw invalid(`${at}: only base64 and url image sources can be translated for this model`, `${at}.source`, 'unsupported_content');
}

/** An Anthropic document block → a chat file part (base64 PDFs) or text (plain-text documents). */
function documentPart(block: Record<string, unknown>, at: string): Record<string, unknown> {
  const source = isRecord(block.source) ? block.source : {};
  if (source.type === 'base64' && source.media_type === 'application/pdf' && typeof source.data === 'string') {
    const filename = typeof block.title === 'string' && block.title !== '' ? block.title : 'document.pdf';
    return { type: 'file', file: { filename, file_data: `data:application/pdf;base64,${source.data}` } };
  }
  if (source.type === 'text' && typeof source.data === 'string') return { type: 'text', text: source.data };
  throw invalid(`${at}: only base64 PDF and plain-text documents can be translated for this model`, `${at}.source`, 'unsupported_content');
}

/** One user-turn block (other than tool_result) → one chat part. */
function userPart(block: Record<string, unknown>, at: string): Record<string, unknown> {
  switch (block.type) {
    case 'text':
      if (typeof block.text !== 'string') throw invalid(`${at}.text must be a string`, `${at}.text`);
      return { type: 'text', text: block.text };
    case 'image':
      return imagePart(block, at);
    case 'document':
      return documentPart(block, at);
    default:
      throw invalid(
        `${at}: content block type "${String(block.type)}" has no equivalent on this model's provider`,
        `${at}.type`,
        'unsupported_content',
      );
  }
}

/** A tool_result → its tool message's text and any images it returned. */
function toolResult(block: Record<string, unknown>, at: string): { text: string; images: Record<string, unknown>[] } {
  const content = block.content;
  const texts: string[] = [];
  const images: Record<string, unknown>[] = [];
  if (typeof content === 'string') texts.push(content);
  else if (Array.isArray(content)) {
    content.forEach((part, i) => {
      const partAt = `${at}.content[${i}]`;
      if (isRecord(part) && part.type === 'text' && typeof part.text === 'string') texts.push(part.text);
      else if (isRecord(part) && part.type === 'image') images.push(imagePart(part, partAt));
      else if (isRecord(part) && part.type === 'document') {
        const doc = documentPart(part, partAt);
        if (doc.type === 'text') texts.push(doc.text as string);
        else images.push(doc);
      } else {
        throw invalid(`${partAt}: a tool result may hold text, images and documents for this model`, partAt, 'unsupported_content');
      }
    });
  } else if (content !== undefined && content !== null) {
    throw invalid(`${at}.content must be a string or an array of blocks`, `${at}.content`);
  }
  let text = texts.join('\n');
  // The chat API has no error flag on tool messages: the model learns it from the text.
  if (block.is_error === true) text = text === '' ? 'Error' : `Error: ${text}`;
  if (text === '' && images.length > 0) text = '(see the attached content)';
  return { text, images };
}

/** Anthropic `messages` → chat messages, appended to `out`. */
function translateMessages(body: MessagesBody, out: Record<string, unknown>[]): void {
  const toolUseIds = new Set<string>();
  body.messages.forEach((message, m) => {
    const at = `messages[${m}]`;
    const role = message.role;
    const content = message.content;
    if (role === 'system') {
      out.push({ role: 'system', content: textOf(content, `${at}.content`) });
      return;
    }
    if (typeof content === 'string') {
      out.push({ role, content });
      return;
    }
    const blocks = Array.isArray(content) ? content : [];
    if (role === 'assistant') {
      const texts: string[] = [];
      const calls: Record<string, unknown>[] = [];
      blocks.forEach((block, b) => {
        const blockAt = `${at}.content[${b}]`;
        if (!isRecord(block)) throw invalid(`${blockAt} must be an object`, blockAt);
        if (DROPPED_BLOCKS.has(String(block.type))) return;
        if (block.type === 'text' && typeof block.text === 'string') texts.push(block.text);
        else if (block.type === 'tool_use') {
          if (typeof block.id !== 'string' || typeof block.name !== 'string') throw invalid(`${blockAt} must have an id and a name`, blockAt);
          toolUseIds.add(block.id);
          calls.push({ id: block.id, type: 'function', function: { name: block.name, arguments: JSON.stringify(block.input ?? {}) } });
        } else {
          throw invalid(
            `${blockAt}: assistant content block type "${String(block.type)}" has no equivalent on this model's provider`,
            `${blockAt}.type`,
            'unsupported_content',
          );
        }
      });
      if (texts.length === 0 && calls.length === 0) return;
      out.push({ role: 'assistant', content: texts.length > 0 ? texts.join('') : null, ...(calls.length > 0 ? { tool_calls: calls } : {}) });
      return;
    }
    // A user turn: tool results first (each its own tool message), then the rest as one user message.
    const parts: Record<string, unknown>[] = [];
    const returned: Record<string, unknown>[] = [];
    blocks.forEach((block, b) => {
      const blockAt = `${at}.content[${b}]`;
      if (!isRecord(block)) throw invalid(`${blockAt} must be an object`, blockAt);
      if (block.type === 'tool_result') {
        if (typeof block.tool_use_id !== 'string') throw invalid(`${blockAt}.tool_use_id is required`, `${blockAt}.tool_use_id`);
        if (!toolUseIds.has(block.tool_use_id)) {
          throw invalid(
            `${blockAt} answers tool_use "${block.tool_use_id}", which no earlier assistant message made`,
            `${blockAt}.tool_use_id`,
          );
        }
        const result = toolResult(block, blockAt);
        out.push({ role: 'tool', tool_call_id: block.tool_use_id, content: result.text });
        returned.push(...result.images);
      } else {
        parts.push(userPart(block, blockAt));
      }
    });
    const all = [...returned, ...parts];
    if (all.length > 0) out.push({ role: 'user', content: all });
  });
}

/** Tool definitions → chat function tools; Anthropic's typed built-in tools (`bash_20250124`, `web_search_20250305`, …) are refused. */
function translateTools(tools: unknown): Record<string, unknown>[] | undefined {
  if (tools === undefined || tools === null) return undefined;
  if (!Array.isArray(tools)) throw invalid('tools must be an array', 'tools');
  if (tools.length === 0) return undefined;
  return tools.map((tool, i) => {
    const at = `tools[${i}]`;
    if (!isRecord(tool) || typeof tool.name !== 'string') throw invalid(`${at} must have a name`, at);
    if (tool.type !== undefined && tool.type !== null && tool.type !== 'custom') {
      throw invalid(
        `${at} ("${tool.name}", type "${String(tool.type)}"): Anthropic's built-in tools run only on Anthropic models; ` +
          'declare it as a custom tool with an input_schema, or use a Claude model',
        at,
        'unsupported_tool',
      );
    }
    return {
      type: 'function',
      function: {
        name: tool.name,
        ...(typeof tool.description === 'string' ? { description: tool.description } : {}),
        parameters: isRecord(tool.input_schema) ? tool.input_schema : { type: 'object', properties: {} },
      },
    };
  });
}

/** `tool_choice` → chat `tool_choice` and `parallel_tool_calls`. */
function translateToolChoice(choice: unknown): { tool_choice?: unknown; parallel_tool_calls?: boolean } {
  if (choice === undefined || choice === null) return {};
  if (!isRecord(choice)) throw invalid('tool_choice must be an object', 'tool_choice');
  const parallel = choice.disable_parallel_tool_use === true ? { parallel_tool_calls: false } : {};
  switch (choice.type) {
    case 'auto':
      return { tool_choice: 'auto', ...parallel };
    case 'any':
      return { tool_choice: 'required', ...parallel };
    case 'none':
      return { tool_choice: 'none' };
    case 'tool':
      if (typeof choice.name !== 'string') throw invalid('tool_choice.name is required', 'tool_choice.name');
      return { tool_choice: { type: 'function', function: { name: choice.name } }, ...parallel };
    default:
      throw invalid('tool_choice.type must be auto, any, none or tool', 'tool_choice.type');
  }
}

/** `output_config.format` (or the beta `output_format`) → chat `response_format`. */
function translateOutputFormat(body: MessagesBody): Record<string, unknown> | undefined {
  const config = isRecord(body.output_config) ? body.output_config : undefined;
  const format = isRecord(config?.format) ? config.format : isRecord(body.output_format) ? body.output_format : undefined;
  if (!format) return undefined;
  const param = isRecord(config?.format) ? 'output_config.format' : 'output_format';
  if (format.type !== 'json_schema') throw invalid(`${param}.type must be json_schema`, `${param}.type`);
  if (!isRecord(format.schema)) throw invalid(`${param}.schema must be a JSON Schema object`, `${param}.schema`);
  return { type: 'json_schema', json_schema: { name: 'output', schema: format.schema } };
}

/** OpenAI's reasoning models (o1, o3, o4-mini, gpt-5…), the only ones that take `reasoning_effort`. */
export function isOpenAIReasoningModel(model: unknown): boolean {
  if (typeof model !== 'string') return false;
  return /^(o\d|gpt-5)/.test(model.replace(/^([a-z]{2,7}\.)?openai\./, ''));
}

/** Thinking budgets below these many tokens map to `low`, then `medium`; the rest to `high`. */
export const EFFORT_THRESHOLDS = { low: 8_192, medium: 24_576 } as const;

/** The `reasoning_effort` an Anthropic request's effort or thinking budget asks for, if any (see the file comment). */
export function reasoningEffortOf(body: MessagesBody): 'low' | 'medium' | 'high' | undefined {
  const config = isRecord(body.output_config) ? body.output_config : undefined;
  const effort = config?.effort;
  if (effort === 'low' || effort === 'medium' || effort === 'high') return effort;
  if (effort === 'max') return 'high';
  const thinking = isRecord(body.thinking) ? body.thinking : undefined;
  if (thinking?.type !== 'enabled' || typeof thinking.budget_tokens !== 'number') return undefined;
  if (thinking.budget_tokens < EFFORT_THRESHOLDS.low) return 'low';
  if (thinking.budget_tokens < EFFORT_THRESHOLDS.medium) return 'medium';
  return 'high';
}

/** Translates an Anthropic Messages request into the chat-completions request a chat provider answers. */
export function messagesToChatRequest(body: MessagesBody): ChatCompletionBody {
  if (body.mcp_servers !== undefined && body.mcp_servers !== null) {
    throw invalid('mcp_servers (the MCP connector) runs only on Anthropic models', 'mcp_servers', 'unsupported_parameter');
  }
  const messages: Record<string, unknown>[] = [];
  if (body.system !== undefined && body.system !== null) {
    const system = textOf(body.system, 'system');
    if (system !== '') messages.push({ role: 'system', content: system });
  }
  translateMessages(body, messages);
  const tools = translateTools(body.tools);
  const choice = tools ? translateToolChoice(body.tool_choice) : {};
  const responseFormat = translateOutputFormat(body);
  const metadata = isRecord(body.metadata) ? body.metadata : {};
  const stops = body.stop_sequences;
  if (stops !== undefined && stops !== null && !(Array.isArray(stops) && stops.every((s) => typeof s === 'string'))) {
    throw invalid('stop_sequences must be an array of strings', 'stop_sequences');
  }
  const effort = isOpenAIReasoningModel(body.model) ? reasoningEffortOf(body) : undefined;
  const out: Record<string, unknown> = {
    model: body.model,
    messages,
    max_completion_tokens: body.max_tokens,
    ...(effort ? { reasoning_effort: effort } : {}),
    ...(body.stream === true ? { stream: true } : {}),
    ...(typeof body.temperature === 'number' ? { temperature: body.temperature } : {}),
    ...(typeof body.top_p === 'number' ? { top_p: body.top_p } : {}),
    ...(Array.isArray(stops) && stops.length > 0 ? { stop: stops } : {}),
    ...(typeof metadata.user_id === 'string' ? { user: metadata.user_id } : {}),
    ...(tools ? { tools, ...choice } : {}),
    ...(responseFormat ? { response_format: responseFormat } : {}),
  };
  if (messages.length === 0) throw invalid('messages must hold at least one message with content', 'messages');
  return out as ChatCompletionBody;
}
