/**
 * `POST /v1/responses`: the OpenAI Responses API as one more billable route. OpenAI models get it natively
 * (the provider's `responses`); every other provider answers it through chat completions, translated both
 * ways (providers/responses). Reserve, forward and settle are the same pipeline as every other route.
 *
 * Stored state: `previous_response_id` and `conversation` are refused with 400 (the gateway keeps no
 * responses between requests); `store` is accepted, passed to OpenAI as given and answered `false` by
 * translated models, which store nothing.
 */
import * as z from 'zod/mini';
import type { Clock } from '../core/clock';
import { estimateResponsesTokens } from '../core/tokens';
import type { Provider, ProviderCallContext, ProviderResult } from '../providers/contract';
import { refuseStoredState, responsesToChatRequest, type ResponsesBody } from '../providers/responses/request';
import { responsesViaChat } from '../providers/responses/via-chat';

const positiveInt = z.int().check(z.minimum(1));

/** What the gateway relies on in a Responses request; everything else passes through. */
export const responsesSchema = z.looseObject({
  model: z.string().check(z.minLength(1), z.maxLength(256)),
  input: z.union([z.string(), z.array(z.looseObject({}))]),
  instructions: z.optional(z.nullable(z.string())),
  stream: z.optional(z.boolean()),
  max_output_tokens: z.optional(z.nullable(positiveInt)),
  tools: z.optional(z.array(z.looseObject({ type: z.string() }))),
  temperature: z.optional(z.nullable(z.number().check(z.minimum(0), z.maximum(2)))),
});

/** Input tokens of a Responses request for the reservation (core/tokens.ts). */
export function estimateResponsesInputTokens(body: Readonly<Record<string, unknown>>): number {
  return estimateResponsesTokens(body);
}

/** Checks what can be refused before anything is reserved. */
export function checkResponsesRequest(body: Readonly<Record<string, unknown>>): void {
  refuseStoredState(body);
}

/**
 * The operation answering a Responses request on `provider`: its native `responses`, else chat completions
 * translated both ways; undefined when it offers neither.
 */
export function responsesOperation(
  provider: Provider,
  clock: Clock,
): ((body: Record<string, unknown>, ctx: ProviderCallContext) => Promise<ProviderResult>) | undefined {
  if (provider.responses) {
    const native = provider.responses.bind(provider);
    return (body, ctx) => native(body as ResponsesBody, ctx);
  }
  const chat = provider.chatCompletions?.bind(provider);
  if (!chat) return undefined;
  return (body, ctx) =>
    responsesViaChat({ chatCompletions: chat }, body as ResponsesBody, ctx, { createdAt: Math.floor(clock.now() / 1000) });
}

/**
 * Refuses, before anything is reserved, what a translating `provider` cannot express: the translation to
 * chat completions (a tool or item with no equivalent, named per tool) and the provider's check of its result.
 * Native Responses providers (OpenAI) judge the body themselves.
 */
export function checkResponsesFor(provider: Provider, body: Record<string, unknown>): void {
  if (provider.responses || !provider.chatCompletions) return;
  provider.check?.('chatCompletions', responsesToChatRequest(body as ResponsesBody));
}
