/**
 * The Responses API for providers that speak chat completions only (anthropic, bedrock, mock): the request
 * is translated to chat completions, the provider answers, and the answer (or its stream) is translated
 * back. Usage is the provider's own, so billing is the same as on `/v1/chat/completions`.
 */
import type { TokenUsage } from '../../core/types';
import type { Provider, ProviderCallContext, ProviderResult } from '../contract';
import { parseSse } from '../sse';
import { responsesToChatRequest, responsesToolMap, type ResponsesBody } from './request';
import { chatChunksToResponseEvents, chatCompletionToResponse, type ResponseIdentity } from './response';

/** Answers a Responses request with `provider.chatCompletions`. */
export async function responsesViaChat(
  provider: Required<Pick<Provider, 'chatCompletions'>>,
  body: ResponsesBody,
  ctx: ProviderCallContext,
  options: { readonly createdAt: number },
): Promise<ProviderResult> {
  const chat = responsesToChatRequest(body);
  const tools = responsesToolMap(body);
  const identity: ResponseIdentity = { id: `resp_${ctx.requestId.replace(/^req_/, '')}`, model: body.model, createdAt: options.createdAt };
  // The usage chunk is always asked for: it becomes the usage of response.completed.
  const result = await provider.chatCompletions(chat, { ...ctx, callerWantsStreamUsage: true });
  if (result.kind === 'json') {
    return { kind: 'json', body: chatCompletionToResponse(result.body, identity, body, result.usage, tools), usage: result.usage };
  }
  const events = chatChunksToResponseEvents(parseSse(result.body), { identity, body, tools });
  return { kind: 'stream', body: events, usage: (): TokenUsage | undefined => result.usage(), ...(result.cut ? { cut: result.cut } : {}) };
}
