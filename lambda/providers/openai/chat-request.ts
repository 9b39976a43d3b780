/**
 * Reads an OpenAI chat-completions request into a dialect-neutral form that the translating providers
 * (anthropic, bedrock) render into their own request shapes. Scalar parameters are mapped with tables
 * ({@link ParamRule}) rather than code.
 */
import { InvalidRequestError } from '../../core/errors';
import type { ChatCompletionBody } from '../contract';

/** One piece of a turn. */
export type ChatPart =
  | { readonly type: 'text'; readonly text: string }
  | { readonly type: 'image'; readonly source: ImageSource }
  | { readonly type: 'tool_call'; readonly id: string; readonly name: string; readonly input: unknown }
  | { readonly type: 'tool_result'; readonly toolCallId: string; readonly text: string };

/** An image given inline (a `data:` URL) or by URL. */
export type ImageSource =
  | { readonly kind: 'base64'; readonly mediaType: string; readonly data: string }
  | { readonly kind: 'url'; readonly url: string };

/** Consecutive messages of one role, merged (tool results are user turns, as Anthropic and Bedrock want). */
export interface ChatTurn {
  readonly role: 'user' | 'assistant';
  readonly parts: ChatPart[];
}

export interface ChatTool {
  readonly name: string;
  readonly description?: string;
  /** JSON Schema of the arguments. */
  readonly parameters: Record<string, unknown>;
}

export type ChatToolChoice =
  | { readonly type: 'auto' }
  | { readonly type: 'any' }
  | { readonly type: 'none' }
  | { readonly type: 'tool'; readonly name: string };

/** The request, neutral of dialect. Scalars (temperature, stop, …) stay in the body and go through tables. */
export interface NeutralChatRequest {
  /** System and developer messages, in order. */
  readonly system: readonly string[];
  readonly turns: readonly ChatTurn[];
  readonly tools: readonly ChatTool[];
  readonly toolChoice?: ChatToolChoice;
  /** `max_completion_tokens ?? max_tokens ?? defaultMaxTokens`. */
  readonly maxTokens: number;
}

function invalid(message: string, param: string): InvalidRequestError {
  return new InvalidRequestError(message, { param });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The text of a `content` that may only hold text (system, tool, assistant): a string or text parts. */
function textOnly(content: unknown, param: string): string {
  if (content === null || content === undefined) return '';
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw invalid(`${param} must be a string or an array of parts`, param);
  return content
    .map((part, i) => {
      if (isRecord(part) && (part.type === 'text' || part.type === 'refusal')) {
        const text = part.type === 'text' ? part.text : part.refusal;
        if (typeof text === 'string') return text;
      }
      throw invalid(`${param}[${i}] must be a text part`, `${param}[${i}]`);
    })
    .join('');
}

const DATA_URL = /^data:([a-z]+\/[a-z0-9.+\-]+);base64,(.*)$/is;

function imagePart(part: Record<string, unknown>, param: string): ChatPart {
  const imageUrl = part.image_url;
  const url = isRecord(imageUrl) ? imageUrl.url : imageUrl;
  if (typeof url !== 'string' || url === '') throw invalid(`${param}.image_url.url must be a URL`, param);
  const m = DATA_URL.exec(url);
  if (m) return { type: 'image', source: { kind: 'base64', mediaType: m[1].toLowerCase(), data: m[2] } };
  if (!/^https?:\/\//i.test(url)) throw invalid(`${param}.image_url.url must be an http(s) or data: URL`, param);
  return { type: 'image', source: { kind: 'url', url } };
}

function userParts(content: unknown, param: string): ChatPart[] {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  if (!Array.isArray(content)) throw invalid(`${param} must be a string or an array of parts`, param);
  return content.map((part, i): ChatPart => {
    const at = `${param}[${i}]`;
    if (isRecord(part) && part.type === 'text' && typeof part.text === 'string') return { type: 'text', text: part.text };
    if (isRecord(part) && part.type === 'image_url') return imagePart(part, at);
    const type = isRecord(part) && typeof part.type === 'string' ? part.type : 'unknown';
    throw invalid(`content part type "${type}" is not supported by this model's provider`, at);
  });
}

function toolCallParts(toolCalls: unknown, param: string): ChatPart[] {
  if (toolCalls === undefined || toolCalls === null) return [];
  if (!Array.isArray(toolCalls)) throw invalid(`${param} must be an array`, param);
  return toolCalls.map((call, i): ChatPart => {
    const at = `${param}[${i}]`;
    const fn = isRecord(call) ? call.function : undefined;
    if (!isRecord(call) || typeof call.id !== 'string' || !isRecord(fn) || typeof fn.name !== 'string') {
      throw invalid(`${at} must have an id and a function name`, at);
    }
    let input: unknown = {};
    if (typeof fn.arguments === 'string' && fn.arguments.trim() !== '') {
      try {
        input = JSON.parse(fn.arguments);
      } catch {
        throw invalid(`${at}.function.arguments is not valid JSON`, `${at}.function.arguments`);
      }
    }
    return { type: 'tool_call', id: call.id, name: fn.name, input };
  });
}

function parseTools(tools: unknown): ChatTool[] {
  if (tools === undefined || tools === null) return [];
  if (!Array.isArray(tools)) throw invalid('tools must be an array', 'tools');
  return tools.map((tool, i) => {
    const fn = isRecord(tool) ? tool.function : undefined;
    if (!isRecord(tool) || tool.type !== 'function' || !isRecord(fn) || typeof fn.name !== 'string') {
      throw invalid(`tools[${i}] must be a function tool with a name`, `tools[${i}]`);
    }
    return {
      name: fn.name,
      ...(typeof fn.description === 'string' ? { description: fn.description } : {}),
      parameters: isRecord(fn.parameters) ? fn.parameters : { type: 'object', properties: {} },
    };
  });
}

const TOOL_CHOICE_WORDS: Readonly<Record<string, ChatToolChoice>> = {
  auto: { type: 'auto' },
  none: { type: 'none' },
  required: { type: 'any' },
};

function parseToolChoice(choice: unknown): ChatToolChoice | undefined {
  if (choice === undefined || choice === null) return undefined;
  if (typeof choice === 'string' && TOOL_CHOICE_WORDS[choice]) return TOOL_CHOICE_WORDS[choice];
  if (isRecord(choice) && isRecord(choice.function) && typeof choice.function.name === 'string') {
    return { type: 'tool', name: choice.function.name };
  }
  throw invalid('tool_choice must be "auto", "none", "required" or a named function', 'tool_choice');
}

function positiveInt(value: unknown, param: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) {
    throw invalid(`${param} must be a positive whole number`, param);
  }
  return value;
}

/** Reads the messages, tools and token limit of an OpenAI chat request. */
export function readChatRequest(
  body: ChatCompletionBody,
  options: { readonly defaultMaxTokens: number },
): NeutralChatRequest {
  const system: string[] = [];
  const turns: ChatTurn[] = [];
  const append = (role: ChatTurn['role'], parts: ChatPart[]): void => {
    const kept = parts.filter((p) => p.type !== 'text' || p.text !== '');
    if (kept.length === 0) return;
    const last = turns[turns.length - 1];
    if (last && last.role === role) last.parts.push(...kept);
    else turns.push({ role, parts: kept });
  };

  // Tool results must answer a call an earlier assistant message made: Anthropic and Bedrock refuse them
  // otherwise, so the gateway does (400 before anything is reserved) instead of the upstream.
  const toolCallIds = new Set<string>();
  body.messages.forEach((message, i) => {
    const at = `messages[${i}]`;
    switch (message.role) {
      case 'system':
      case 'developer': {
        const text = textOnly(message.content, `${at}.content`);
        if (text !== '') system.push(text);
        break;
      }
      case 'user':
        append('user', userParts(message.content, `${at}.content`));
        break;
      case 'assistant': {
        const calls = toolCallParts(message.tool_calls, `${at}.tool_calls`);
        for (const call of calls) if (call.type === 'tool_call') toolCallIds.add(call.id);
        append('assistant', [{ type: 'text', text: textOnly(message.content, `${at}.content`) }, ...calls]);
        break;
      }
      case 'tool':
        if (typeof message.tool_call_id !== 'string') throw invalid(`${at}.tool_call_id is required`, at);
        if (!toolCallIds.has(message.tool_call_id)) {
          throw invalid(
            `${at} answers tool call "${message.tool_call_id}", which no earlier assistant message made; a tool message must follow the assistant message whose tool_calls it answers`,
            `${at}.tool_call_id`,
          );
        }
        append('user', [
          { type: 'tool_result', toolCallId: message.tool_call_id, text: textOnly(message.content, `${at}.content`) },
        ]);
        break;
      default:
        throw invalid(`${at}.role "${String(message.role)}" is not supported by this model's provider`, `${at}.role`);
    }
  });

  return {
    system,
    turns,
    tools: parseTools(body.tools),
    toolChoice: parseToolChoice(body.tool_choice),
    maxTokens:
      positiveInt(body.max_completion_tokens, 'max_completion_tokens') ??
      positiveInt(body.max_tokens, 'max_tokens') ??
      options.defaultMaxTokens,
  };
}

/** One row of a parameter table: copy OpenAI's `from` to the target's `to`, converting when needed. */
export interface ParamRule {
  readonly from: string;
  readonly to: string;
  /** Converts the value; returning undefined drops the parameter. */
  readonly convert?: (value: unknown) => unknown;
}

/** Applies a parameter table to a request body; absent (undefined or null) parameters are skipped. */
export function mapParams(body: Readonly<Record<string, unknown>>, rules: readonly ParamRule[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const rule of rules) {
    const value = body[rule.from];
    if (value === undefined || value === null) continue;
    const converted = rule.convert ? rule.convert(value) : value;
    if (converted !== undefined) out[rule.to] = converted;
  }
  return out;
}

/** OpenAI's `stop` (a string or a list) as a list of stop sequences. */
export function stopSequences(value: unknown): string[] | undefined {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value.length > 0 ? value : undefined;
  throw invalid('stop must be a string or an array of strings', 'stop');
}

/**
 * Structured output for providers without OpenAI's `response_format`: the schema becomes one more tool the
 * model is made to call, and its input is the answer (turned back into the message's text).
 */
export interface StructuredOutput {
  /** The tool's name: the schema's name, made unique among the caller's tools. */
  readonly toolName: string;
  readonly schema: Record<string, unknown>;
  readonly description: string;
}

const TOOL_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Reads `response_format`: undefined for text (or none), a {@link StructuredOutput} for `json_schema` and
 * `json_object` (any JSON object); anything else is a 400, never silently dropped.
 */
export function readStructuredOutput(body: Readonly<Record<string, unknown>>): StructuredOutput | undefined {
  const format = body.response_format;
  if (format === undefined || format === null) return undefined;
  if (!isRecord(format)) throw invalid('response_format must be an object', 'response_format');
  const taken = new Set(parseTools(body.tools).map((t) => t.name));
  const unique = (name: string): string => {
    let candidate = TOOL_NAME.test(name) ? name : 'json_response';
    while (taken.has(candidate)) candidate = `${candidate}_json`.slice(-64);
    return candidate;
  };
  switch (format.type) {
    case 'text':
      return undefined;
    case 'json_object':
      return {
        toolName: unique('json_response'),
        schema: { type: 'object', additionalProperties: true },
        description: 'Give your answer as a JSON object by calling this tool; its input is the answer.',
      };
    case 'json_schema': {
      const spec = format.json_schema;
      if (!isRecord(spec) || !isRecord(spec.schema)) {
        throw invalid('response_format.json_schema.schema must be a JSON Schema object', 'response_format.json_schema.schema');
      }
      if (spec.schema.type !== undefined && spec.schema.type !== 'object') {
        throw invalid(
          "response_format.json_schema.schema must describe an object (type: 'object') for this model's provider",
          'response_format.json_schema.schema',
        );
      }
      return {
        toolName: unique(typeof spec.name === 'string' ? spec.name : 'json_response'),
        schema: { type: 'object', ...spec.schema },
        description:
          (typeof spec.description === 'string' ? `${spec.description} ` : '') +
          'Give your answer by calling this tool; its input is the answer.',
      };
    }
    default:
      throw invalid('response_format.type must be text, json_object or json_schema', 'response_format.type');
  }
}
