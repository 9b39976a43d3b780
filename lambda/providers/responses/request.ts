/**
 * OpenAI Responses API requests (`POST /v1/responses`) read into chat-completions requests, so that every
 * provider that answers chat completions (anthropic, bedrock, mock) also answers the Responses API.
 *
 * Input items understood: a string, and a list of `message` items (roles user, system, developer, assistant;
 * content a string or `input_text` / `output_text` / `input_image` parts; `type: "message"` optional),
 * `function_call` and `function_call_output` items, `custom_tool_call` and `custom_tool_call_output` items;
 * `reasoning` items are dropped (another model cannot read them). Anything the gateway cannot translate
 * (`item_reference` to a stored item, files, hosted tools' calls) is refused with a 400 naming the item,
 * never dropped.
 *
 * Tools: `function` tools map as they are; a `custom` tool (free-form input, e.g. Codex's `apply_patch`)
 * becomes a function taking `{"input": string}` whose description carries the input's grammar, and its
 * calls come back as `custom_tool_call` items with the string input; a `namespace` tool's function and
 * custom tools become functions named `<namespace>__<name>`, whose calls come back with `namespace` set.
 * Hosted tools that only OpenAI runs (`web_search`, `file_search`, `code_interpreter`, `image_generation`,
 * `mcp`, `computer_use_preview`, `local_shell`, `shell`, `apply_patch`, `tool_search`, …) are refused per tool
 * with a 400 naming the tool and why. {@link responsesToolMap} is the mapping both ways.
 */
import { InvalidRequestError } from '../../core/errors';
import type { ChatCompletionBody } from '../contract';

/** OpenAI Responses request body (validated; unknown fields pass through). */
export type ResponsesBody = Record<string, unknown> & {
  readonly model: string;
  readonly input?: unknown;
  readonly instructions?: unknown;
  readonly stream?: boolean;
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function invalid(message: string, param: string, code = 'invalid_value'): InvalidRequestError {
  return new InvalidRequestError(message, { param, code });
}

/** One Responses content part → one chat content part. */
function chatPart(part: unknown, at: string): Record<string, unknown> {
  if (!isRecord(part)) throw invalid(`${at} must be a content part object`, at);
  switch (part.type) {
    case 'input_text':
    case 'output_text':
    case 'text':
      if (typeof part.text !== 'string') throw invalid(`${at}.text must be a string`, `${at}.text`);
      return { type: 'text', text: part.text };
    case 'refusal':
      return { type: 'text', text: typeof part.refusal === 'string' ? part.refusal : '' };
    case 'input_image': {
      const url = part.image_url;
      if (typeof url !== 'string' || url === '') {
        throw invalid(`${at}: only input_image parts with an image_url (https or data: URL) can be translated`, at);
      }
      return { type: 'image_url', image_url: { url, ...(typeof part.detail === 'string' ? { detail: part.detail } : {}) } };
    }
    default:
      throw invalid(`${at}: content part type "${String(part.type)}" is not supported for this model`, at, 'unsupported_content');
  }
}

function chatContent(content: unknown, at: string): string | Record<string, unknown>[] {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) throw invalid(`${at} must be a string or an array of content parts`, at);
  return content.map((part, i) => chatPart(part, `${at}[${i}]`));
}

/** The text of a tool output: a string, or input_text parts joined. */
function outputText(output: unknown, at: string): string {
  if (typeof output === 'string') return output;
  if (Array.isArray(output)) {
    return output
      .map((part, i) => {
        const p = chatPart(part, `${at}[${i}]`);
        if (p.type !== 'text') throw invalid(`${at}[${i}]: tool outputs can only hold text for this model`, `${at}[${i}]`);
        return p.text as string;
      })
      .join('');
  }
  throw invalid(`${at} must be a string or an array of input_text parts`, at);
}

/** Responses `input` (plus `instructions`) → chat `messages`. */
function chatMessages(body: ResponsesBody): Record<string, unknown>[] {
  const messages: Record<string, unknown>[] = [];
  if (typeof body.instructions === 'string' && body.instructions !== '') {
    messages.push({ role: 'system', content: body.instructions });
  }
  const input = body.input;
  if (typeof input === 'string') {
    messages.push({ role: 'user', content: input });
    return messages;
  }
  if (!Array.isArray(input)) throw invalid('input must be a string or an array of input items', 'input');
  input.forEach((item, i) => {
    const at = `input[${i}]`;
    if (!isRecord(item)) throw invalid(`${at} must be an object`, at);
    const type = item.type ?? (typeof item.role === 'string' ? 'message' : undefined);
    switch (type) {
      case 'message': {
        const role = item.role;
        if (role !== 'user' && role !== 'system' && role !== 'developer' && role !== 'assistant') {
          throw invalid(`${at}.role must be user, system, developer or assistant`, `${at}.role`);
        }
        const content = chatContent(item.content, `${at}.content`);
        if (role === 'assistant' && Array.isArray(content)) {
          messages.push({ role, content: content.map((p) => (typeof p.text === 'string' ? p.text : '')).join('') });
        } else {
          messages.push({ role, content });
        }
        break;
      }
      case 'function_call':
      case 'custom_tool_call': {
        if (typeof item.call_id !== 'string' || typeof item.name !== 'string') {
          throw invalid(`${at} must have a call_id and a name`, at);
        }
        const name = flatToolName(typeof item.namespace === 'string' ? item.namespace : undefined, item.name);
        // A custom tool's string input travels as the one argument of the function it became.
        const args =
          type === 'custom_tool_call'
            ? JSON.stringify({ input: typeof item.input === 'string' ? item.input : '' })
            : typeof item.arguments === 'string'
              ? item.arguments
              : '{}';
        const call = { id: item.call_id, type: 'function', function: { name, arguments: args } };
        // Consecutive calls belong to one assistant turn (parallel tool calls).
        const last = messages[messages.length - 1];
        if (last && last.role === 'assistant' && Array.isArray(last.tool_calls)) (last.tool_calls as unknown[]).push(call);
        else if (last && last.role === 'assistant' && last.tool_calls === undefined) last.tool_calls = [call];
        else messages.push({ role: 'assistant', content: null, tool_calls: [call] });
        break;
      }
      case 'function_call_output':
      case 'custom_tool_call_output':
        if (typeof item.call_id !== 'string') throw invalid(`${at}.call_id is required`, `${at}.call_id`);
        messages.push({ role: 'tool', tool_call_id: item.call_id, content: outputText(item.output, `${at}.output`) });
        break;
      case 'reasoning':
        // Reasoning items of an earlier answer carry nothing another model can use.
        break;
      case 'item_reference':
        throw invalid(
          `${at}: item_reference needs an item stored by the provider; this gateway does not store responses for this model. ` +
            'Send the items themselves (with the AI SDK: providerOptions: { openai: { store: false } }).',
          at,
          'item_reference_unsupported',
        );
      default:
        throw invalid(`${at}: input item type "${String(type)}" is not supported for this model`, `${at}.type`, 'unsupported_item');
    }
  });
  return messages;
}

/** What a flattened chat function stands for in the caller's Responses tools. */
export interface ResponsesToolTarget {
  readonly kind: 'function' | 'custom';
  /** The tool's own name (inside its namespace, if any). */
  readonly name: string;
  readonly namespace?: string;
}

/** Flattened chat function name → the Responses tool it stands for. */
export type ResponsesToolMap = ReadonlyMap<string, ResponsesToolTarget>;

/** The name a namespaced tool gets as a chat function. */
export function flatToolName(namespace: string | undefined, name: string): string {
  return namespace ? `${namespace}__${name}` : name;
}

const FLAT_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/** Why a hosted tool cannot be used with a translated model, by tool type. */
function hostedToolReason(type: string): string {
  return (
    `"${type}" is a tool OpenAI runs on its own servers, and this model's provider has no such tool. ` +
    'Remove it from the request (in Codex, turn the feature off) or use an OpenAI model'
  );
}

/** A custom tool's input format, told to the model in the function's description. */
function customFormatNote(format: unknown): string {
  if (isRecord(format) && format.type === 'grammar' && typeof format.definition === 'string') {
    const syntax = typeof format.syntax === 'string' ? format.syntax : 'grammar';
    return `Call it with {"input": "<text>"}; the text must follow this ${syntax} grammar:\n${format.definition}`;
  }
  return 'Call it with {"input": "<text>"}: the input is free-form text.';
}

/** One function or custom tool (top level or in a namespace) → one chat function, recorded in `map`. */
function flatTool(tool: Record<string, unknown>, at: string, map: Map<string, ResponsesToolTarget>, namespace?: string): Record<string, unknown> {
  if (typeof tool.name !== 'string' || tool.name === '') throw invalid(`${at} must have a name`, `${at}.name`);
  const name = flatToolName(namespace, tool.name);
  if (namespace !== undefined && !FLAT_NAME.test(name)) {
    throw invalid(
      `${at} ("${tool.name}" in namespace "${namespace}"): its flattened name "${name}" is not 1-64 letters, digits, _ or -, which this model's provider requires`,
      at,
      'unsupported_tool',
    );
  }
  if (map.has(name)) throw invalid(`${at}: the tool name "${name}" is declared twice`, at, 'duplicate_tool');
  const description = typeof tool.description === 'string' && tool.description !== '' ? tool.description : undefined;
  if (tool.type === 'custom') {
    map.set(name, { kind: 'custom', name: tool.name, ...(namespace ? { namespace } : {}) });
    return {
      type: 'function',
      function: {
        name,
        description: [description, customFormatNote(tool.format)].filter(Boolean).join('\n\n'),
        parameters: { type: 'object', properties: { input: { type: 'string' } }, required: ['input'], additionalProperties: false },
      },
    };
  }
  map.set(name, { kind: 'function', name: tool.name, ...(namespace ? { namespace } : {}) });
  return {
    type: 'function',
    function: {
      name,
      ...(description ? { description } : {}),
      parameters: isRecord(tool.parameters) ? tool.parameters : { type: 'object', properties: {} },
    },
  };
}

/** Responses `tools` → chat function tools plus the map back; every tool the provider cannot run is refused by index. */
function chatTools(tools: unknown): { tools: Record<string, unknown>[] | undefined; map: Map<string, ResponsesToolTarget> } {
  const map = new Map<string, ResponsesToolTarget>();
  if (tools === undefined || tools === null) return { tools: undefined, map };
  if (!Array.isArray(tools)) throw invalid('tools must be an array', 'tools');
  const out: Record<string, unknown>[] = [];
  tools.forEach((tool, i) => {
    const at = `tools[${i}]`;
    if (!isRecord(tool)) throw invalid(`${at} must be an object`, at);
    const label = typeof tool.name === 'string' ? `${at} ("${tool.name}")` : at;
    switch (tool.type) {
      case 'function':
      case 'custom':
        out.push(flatTool(tool, at, map));
        return;
      case 'namespace': {
        if (typeof tool.name !== 'string' || tool.name === '') throw invalid(`${at}: a namespace tool must have a name`, `${at}.name`);
        if (!Array.isArray(tool.tools)) throw invalid(`${label}: a namespace tool must list its tools`, `${at}.tools`);
        const namespace = tool.name;
        tool.tools.forEach((inner, j) => {
          const innerAt = `${at}.tools[${j}]`;
          if (!isRecord(inner) || (inner.type !== 'function' && inner.type !== 'custom')) {
            const type = isRecord(inner) ? String(inner.type) : 'unknown';
            throw invalid(`${innerAt}: a namespace may hold function and custom tools (got "${type}")`, innerAt, 'unsupported_tool');
          }
          out.push(flatTool(inner, innerAt, map, namespace));
        });
        return;
      }
      default:
        throw invalid(`${label}: ${hostedToolReason(String(tool.type))}.`, at, 'unsupported_tool');
    }
  });
  return { tools: out.length > 0 ? out : undefined, map };
}

/** The flattened-name map of a Responses request's tools (for translating the answer's tool calls back). */
export function responsesToolMap(body: Readonly<Record<string, unknown>>): ResponsesToolMap {
  return chatTools(body.tools).map;
}

function chatToolChoice(choice: unknown): unknown {
  if (choice === undefined || choice === null) return undefined;
  if (choice === 'auto' || choice === 'none' || choice === 'required') return choice;
  if (isRecord(choice) && (choice.type === 'function' || choice.type === 'custom') && typeof choice.name === 'string') {
    const namespace = typeof choice.namespace === 'string' ? choice.namespace : undefined;
    return { type: 'function', function: { name: flatToolName(namespace, choice.name) } };
  }
  throw invalid(
    'tool_choice must be "auto", "none", "required" or {"type": "function" | "custom", "name": …} for this model',
    'tool_choice',
  );
}

/** `text.format` → chat `response_format`. */
function chatResponseFormat(text: unknown): Record<string, unknown> | undefined {
  if (!isRecord(text) || !isRecord(text.format)) return undefined;
  const format = text.format;
  switch (format.type) {
    case 'text':
      return undefined;
    case 'json_object':
      return { type: 'json_object' };
    case 'json_schema':
      if (!isRecord(format.schema)) throw invalid('text.format.schema must be a JSON Schema object', 'text.format.schema');
      return {
        type: 'json_schema',
        json_schema: {
          name: typeof format.name === 'string' ? format.name : 'response',
          schema: format.schema,
          ...(typeof format.strict === 'boolean' ? { strict: format.strict } : {}),
          ...(typeof format.description === 'string' ? { description: format.description } : {}),
        },
      };
    default:
      throw invalid(`text.format.type must be text, json_object or json_schema`, 'text.format.type');
  }
}

/** Translates a Responses request into the chat-completions request a translating provider answers. */
export function responsesToChatRequest(body: ResponsesBody): ChatCompletionBody {
  const { tools } = chatTools(body.tools);
  const toolChoice = chatToolChoice(body.tool_choice);
  const responseFormat = chatResponseFormat(body.text);
  const out: Record<string, unknown> = {
    model: body.model,
    messages: chatMessages(body),
    ...(body.stream === true ? { stream: true } : {}),
    ...(typeof body.max_output_tokens === 'number' ? { max_completion_tokens: body.max_output_tokens } : {}),
    ...(typeof body.temperature === 'number' ? { temperature: body.temperature } : {}),
    ...(typeof body.top_p === 'number' ? { top_p: body.top_p } : {}),
    ...(typeof body.parallel_tool_calls === 'boolean' ? { parallel_tool_calls: body.parallel_tool_calls } : {}),
    ...(typeof body.user === 'string' ? { user: body.user } : {}),
    ...(tools ? { tools } : {}),
    ...(toolChoice !== undefined && tools ? { tool_choice: toolChoice } : {}),
    ...(responseFormat ? { response_format: responseFormat } : {}),
  };
  if ((out.messages as unknown[]).length === 0) throw invalid('input must hold at least one message', 'input');
  return out as ChatCompletionBody;
}

/**
 * What the gateway decides about stored state, for every provider: `previous_response_id` and
 * `conversation` need responses stored by the gateway, which it does not do, so they are refused with a 400
 * (send the whole conversation as `input` instead); `store` is accepted and passed to OpenAI as given.
 */
export function refuseStoredState(body: Readonly<Record<string, unknown>>): void {
  if (body.previous_response_id !== undefined && body.previous_response_id !== null) {
    throw invalid(
      'previous_response_id is not supported by this gateway: it does not keep responses between requests. Send the conversation as input items.',
      'previous_response_id',
      'previous_response_id_unsupported',
    );
  }
  if (body.conversation !== undefined && body.conversation !== null) {
    throw invalid('conversation is not supported by this gateway; send the conversation as input items.', 'conversation', 'conversation_unsupported');
  }
}
