/**
 * Waiting for room that requests in flight hold. A reserve holds its request's maximum cost (the whole output
 * cap) until it settles, and a pool's grant holds several requests' worth until its pool is released, so a
 * counter can be full (`committed` = spent + held ≥ limit) long before it is spent. A refusal only for what is
 * held is not final:
 *
 *   refused, spent + need ≤ limit (the rest is held) ──► 1. reclaim: the idle room of the scope's pools goes back
 *        to the counter (pool-reclaim.ts), with what their requests spent already
 *     ──► 2. wait: read the counter (one eventually consistent GetItem, never a transaction) every 50–250 ms
 *        until it shows room for the request, then the exact reserve again — up to ROOM_WAIT_MS after the first such refusal
 *     ──► 3. refuse: at once when spent + need > limit (spend itself leaves no room: final, as before); when the
 *        wait ends, with a 429 that says so (`Retry-After: 2`, `x-should-retry: true`)
 *
 * Every admission is still the reserve's conditional write: waiting changes when a request is decided, never
 * what may pass a limit. Not waited for: budget leases (a refused lease falls back to per-request reserves,
 * which wait themselves) and limits smaller than the request.
 *
 * The bound (docs/money.md, "Early refusal"): a request needing n is refused before spend reaches the limit L
 * only when, at its last try, spent + n ≤ L < spent + H + R + n: H the maximum cost of the requests then in
 * flight (per-request holds and pool takes), R the pools' room not yet reclaimed (near the limit ≤ 4 pools ×
 * left/8). It is refused early by at most H + R, after ROOM_WAIT_MS in which every request in flight at its
 * first refusal that finished returned its unspent part.
 */
import { GetItemCommand } from '@aws-sdk/client-dynamodb';
import { marshall, unmarshall } from '@aws-sdk/util-dynamodb';
import { budgetRefusalOf, type BudgetRefusal } from './denials';
import { counterPk, num } from './items';
import type { LedgerCore } from './ledger-core';

/** Longest a reserve refused only for held room waits for it, from its first such refusal (ms). */
export const ROOM_WAIT_MS = 2_000;
const FIRST_POLL_MS = 50;
const MAX_POLL_MS = 250;

/** A refusal that waiting can change: the counter's spend alone leaves room for the request; the rest is held. */
export function heldRefusal(err: unknown): BudgetRefusal | undefined {
  const refusal = budgetRefusalOf(err);
  if (!refusal?.old || refusal.ref.limit === undefined) return undefined;
  if (num(refusal.old.reserved) <= 0) return undefined;
  return num(refusal.old.spent) + refusal.amount <= refusal.ref.limit ? refusal : undefined;
}

/** What a poll of the refused counter found: room for the request, spend leaving none, or still held. */
export type RoomSeen = { readonly room: true } | { readonly room: false; readonly spentOut: boolean; readonly old: Record<string, unknown> };

/** Reads the refused counter until it has room for the request (or spend leaves none, or the deadline passes). */
export class RoomWait {
  constructor(private readonly core: LedgerCore) {}

  /**
   * Waits (virtual time in a simulation: the core's sleep and clock) until the clock reaches `deadline` or the
   * pauses slept add up to `wait.leftMs` (a clock that does not move while the sleep does still ends the wait).
   */
  async until(
    refusal: BudgetRefusal,
    deadline: number,
    round: number,
    wait: { leftMs: number },
    reclaim: () => Promise<unknown>,
    /** The scope is admitted through pools, whose room the counter does not show: try again after each pause. */
    pooled = false,
  ): Promise<RoomSeen> {
    let old = refusal.old ?? {};
    for (let poll = round; ; poll++) {
      const now = this.core.clock.now();
      if (now >= deadline || wait.leftMs <= 0) return { room: false, spentOut: false, old };
      const backoff = Math.min(MAX_POLL_MS, FIRST_POLL_MS * 1.5 ** poll) * (0.5 + Math.random() / 2);
      const pause = Math.max(1, Math.min(Math.round(backoff), Math.ceil(deadline - now), wait.leftMs));
      wait.leftMs -= pause;
      await this.core.sleep(pause);
      // The pools' idle room back to the counter first (throttled: one instance per scope every 250 ms).
      await reclaim().catch(() => undefined);
      const read = await this.read(refusal);
      if (!read) return { room: true };
      old = read;
      const limit = refusal.ref.limit as number;
      if (num(read.spent) + refusal.amount > limit) return { room: false, spentOut: true, old };
      if (pooled || num(read.committed) + refusal.amount <= limit) return { room: true };
    }
  }

  private async read(refusal: BudgetRefusal): Promise<Record<string, unknown> | undefined> {
    try {
      const out = await this.core.client.send(
        new GetItemCommand({ TableName: this.core.budgets, Key: marshall({ pk: counterPk(refusal.ref), sk: refusal.ref.windowKey }) }),
      );
      return out.Item ? unmarshall(out.Item) : undefined;
    } catch {
      return undefined; // only a hint: the reserve decides
    }
  }
}
