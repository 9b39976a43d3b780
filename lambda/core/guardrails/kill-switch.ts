/**
 * The kill switch: when AWS Budgets says the account's actual spend crossed the budget, stop the platform.
 *
 *   budget topic ─▶ parse the notification ─▶ is it our budget, an ACTUAL alert at/over the kill threshold?
 *                 ─▶ DescribeBudget: is actual spend really ≥ that threshold?   (a forged or stale message
 *                                                                                 changes nothing)
 *                 ─▶ mark active (once) ─▶ open the platform circuit (until acknowledged)
 *                 ─▶ suspend every active key, page by page, N at a time (statusChangedBy 'kill-switch')
 *                 ─▶ report to the alerts topic
 *
 * The same path also runs on the ledger's own figures ({@link checkLedgerSpend}, every minute from the sweeper):
 * platform-wide spend recorded by the gateway — every provider, OpenAI and Anthropic included, which the AWS bill
 * never shows — reaching `ledgerPercent` (95) of the platform's limit (its own, or the default $1,000 a day)
 * stops the platform within a minute, with the same acknowledgement and resume.
 *
 * Idempotent: a second notification finds the switch active and completed, and changes nothing; one that
 * finds an unfinished pass (a timeout) finishes it. `resume` restores exactly the keys the kill switch
 * suspended (setStatus with onlyIfActor 'kill-switch'), never keys an operator suspended by hand.
 */
import { randomUUID } from 'node:crypto';
import type { Clock } from '../clock';
import { type AuditSink, auditEntry } from '../audit';
import type { Logger } from '../log';
import { displayUsd, humanUsd, type MicroUsd, usdToMicros } from '../money';
import type { Acknowledgement, Alert, GuardrailStore, KeyStatusBatch, KeyStore, KillSwitchState, Ledger } from '../stores';
import { WINDOWS, windowBounds, windowKey } from '../windows';
import { type DefaultLimits, effectiveLimits } from './defaults';

/** What the kill switch needs from AWS Budgets: the budget's limit and actual spend right now. */
export interface BudgetReader {
  describe(budgetName: string): Promise<{ readonly limitMicros: MicroUsd; readonly actualMicros: MicroUsd } | undefined>;
}

/** Where the kill switch reports (the alerts topic). */
export interface KillSwitchReporter {
  report(alert: Alert): Promise<void>;
}

/** The parts of an AWS Budgets notification the kill switch uses. */
export interface BudgetNotification {
  readonly budgetName: string;
  readonly alertType: 'ACTUAL' | 'FORECASTED';
  /** The threshold the notification says was crossed. */
  readonly thresholdMicros?: MicroUsd;
  readonly actualMicros?: MicroUsd;
}

function dollars(text: string | undefined): MicroUsd | undefined {
  if (!text) return undefined;
  try {
    return usdToMicros(text.replace(/[$,\s]/g, ''));
  } catch {
    return undefined;
  }
}

/**
 * Parses the plain-text email-style body AWS Budgets publishes to SNS, e.g.
 * "You requested that we alert you when the ACTUAL Cost associated with your tollgate-prod-monthly budget is
 * greater than $80.00 for the current month. The ACTUAL Cost associated with this budget is $85.12." plus
 * the "Budget Name:" / "Alert Type:" / "Alert Threshold:" lines. Undefined when it is not one.
 */
export function parseBudgetNotification(message: string): BudgetNotification | undefined {
  const name =
    /^\s*Budget Name:\s*(\S+)\s*$/im.exec(message)?.[1] ?? /associated with your (\S+) budget/i.exec(message)?.[1];
  if (!name) return undefined;
  const typeLine = /^\s*Alert Type:\s*(ACTUAL|FORECASTED)\s*$/im.exec(message)?.[1];
  const typeSentence = /alert you when the (ACTUAL|FORECASTED) Cost/i.exec(message)?.[1];
  const alertType = (typeLine ?? typeSentence)?.toUpperCase();
  if (alertType !== 'ACTUAL' && alertType !== 'FORECASTED') return undefined;
  const threshold =
    /^\s*Alert Threshold:\s*>\s*(\$[\d,]+(?:\.\d+)?)\s*$/im.exec(message)?.[1] ??
    /budget is (?:forecasted to be )?greater than (\$[\d,]+(?:\.\d+)?)/i.exec(message)?.[1];
  const actual =
    /^\s*ACTUAL Amount:\s*(\$[\d,]+(?:\.\d+)?)\s*$/im.exec(message)?.[1] ??
    /ACTUAL Cost associated with this budget is (\$[\d,]+(?:\.\d+)?)/i.exec(message)?.[1];
  const thresholdMicros = dollars(threshold);
  const actualMicros = dollars(actual);
  return {
    budgetName: name,
    alertType,
    ...(thresholdMicros === undefined ? {} : { thresholdMicros }),
    ...(actualMicros === undefined ? {} : { actualMicros }),
  };
}

/** Status changes of many keys in few round trips (conditional, like KeyStore.setStatus with onlyIf…). */
export type BulkStatusChanger = KeyStatusBatch;

export interface KillSwitchOptions {
  readonly keys: KeyStore;
  /** Batched status changes (DynamoDB: 100 per transaction); without it keys are changed one by one. */
  readonly bulk?: BulkStatusChanger;
  readonly store: GuardrailStore;
  readonly budgets: BudgetReader;
  readonly reporter: KillSwitchReporter;
  /** Where the activation is recorded as an administrative change (actor `kill-switch`). */
  readonly audit?: AuditSink;
  readonly clock: Clock;
  readonly log: Logger;
  /** The budget this deployment watches; notifications about any other are ignored. */
  readonly budgetName: string;
  /** Actual spend must reach this percent of the budget's limit. @default 100 */
  readonly thresholdPercent?: number;
  /** Keys suspended (or restored) at once. @default 50 */
  readonly concurrency?: number;
  /** Stops starting new pages when this returns less than ~10 s (the Lambda's remaining time); SNS retries. */
  readonly remainingMs?: () => number;
}

/** What one notification did. */
export type KillSwitchResult =
  | { readonly action: 'ignored'; readonly reason: string }
  | { readonly action: 'unchanged'; readonly reason: string }
  | { readonly action: 'activated' | 'resumed-pass'; readonly suspendedKeys: number; readonly completed: boolean };

export class KillSwitch {
  private readonly thresholdPercent: number;
  private readonly concurrency: number;

  constructor(private readonly o: KillSwitchOptions) {
    this.thresholdPercent = o.thresholdPercent ?? 100;
    this.concurrency = o.concurrency ?? 50;
  }

  /** Handles one message from the budget topic. */
  async handle(message: string): Promise<KillSwitchResult> {
    const n = parseBudgetNotification(message);
    if (!n) return this.ignore('not an AWS Budgets notification');
    if (n.budgetName !== this.o.budgetName) return this.ignore(`notification is about budget "${n.budgetName}", not "${this.o.budgetName}"`);
    if (n.alertType !== 'ACTUAL') return this.ignore('forecasts never stop the platform');

    // The message is only a hint: what counts is what AWS Budgets says now.
    const budget = await this.o.budgets.describe(this.o.budgetName);
    if (!budget) return this.ignore(`budget "${this.o.budgetName}" not found`);
    const killAt = Math.ceil((budget.limitMicros * this.thresholdPercent) / 100);
    if (n.thresholdMicros !== undefined && n.thresholdMicros < killAt) {
      return this.ignore(`notification threshold ${displayUsd(n.thresholdMicros)} is below the kill threshold ${displayUsd(killAt)}`);
    }
    if (budget.actualMicros < killAt) {
      return this.ignore(
        `actual spend ${displayUsd(budget.actualMicros)} is below the kill threshold ${displayUsd(killAt)} (forged or stale notification)`,
        'warn',
      );
    }

    return this.stopPlatform({ source: this.o.budgetName, what: `AWS budget ${this.o.budgetName}`, actualMicros: budget.actualMicros, thresholdMicros: killAt });
  }

  /**
   * Stops the platform: marks the kill switch active (once), opens the platform circuit until acknowledged,
   * suspends every active key and reports. Shared by the AWS Budgets path and the ledger check.
   */
  async stopPlatform(trigger: { readonly source: string; readonly what: string; readonly actualMicros: MicroUsd; readonly thresholdMicros: MicroUsd }): Promise<KillSwitchResult> {
    const now = this.o.clock.now();
    const state = await this.o.store.activateKillSwitch({ at: now, budgetName: trigger.source, actualMicros: trigger.actualMicros, thresholdMicros: trigger.thresholdMicros });
    if (state === 'already-active') {
      this.o.log.log('info', 'kill switch already active; notification changes nothing', { budget: trigger.source });
      return { action: 'unchanged', reason: 'already active' };
    }
    await this.auditActivation(state, now, trigger);
    await this.o.store.openCircuit({
      scope: 'platform',
      cause: 'kill-switch',
      openedAt: now,
      reason: `kill switch: ${trigger.what} at ${displayUsd(trigger.actualMicros)}`,
    });
    const before = state === 'incomplete' ? (await this.o.store.getKillSwitch()).suspendedKeys : 0;
    const { suspended, completed } = await this.suspendAll(before, trigger.what);
    const total = before + suspended;
    await this.o.store.recordKillSwitchProgress({ suspendedKeys: total, completed });
    const summary =
      `Kill switch ${completed ? 'activated' : 'partly activated (will resume)'}: ${trigger.what} actual spend ` +
      `${displayUsd(trigger.actualMicros)} ≥ ${displayUsd(trigger.thresholdMicros)}; platform circuit open, ${total} keys suspended`;
    this.o.log.log('error', 'kill switch activated', { budget: trigger.source, actualMicros: trigger.actualMicros, suspendedKeys: total, completed, metric: 'KillSwitchActivated' });
    await this.o.reporter.report({
      id: randomUUID(),
      at: this.o.clock.now(),
      type: 'kill-switch',
      severity: 'critical',
      scope: 'platform',
      summary,
      details: {
        budget: trigger.source,
        actual: displayUsd(trigger.actualMicros),
        threshold: displayUsd(trigger.thresholdMicros),
        suspended: total,
        completed,
      },
    });
    return { action: state === 'incomplete' ? 'resumed-pass' : 'activated', suspendedKeys: total, completed };
  }

  /**
   * The activation in the audit log, once per activation (its time is the change id, so the pass that
   * finishes an interrupted one writes the same entry again, harmlessly). Never stops the kill switch: an
   * audit write that fails is logged.
   */
  private async auditActivation(state: 'activated' | 'incomplete', now: number, trigger: { readonly source: string; readonly what: string; readonly actualMicros: MicroUsd; readonly thresholdMicros: MicroUsd }): Promise<void> {
    if (!this.o.audit) return;
    try {
      const at = state === 'incomplete' ? ((await this.o.store.getKillSwitch()).activatedAt ?? now) : now;
      await this.o.audit.record(
        auditEntry(
          {
            actor: 'kill-switch',
            via: 'kill-switch',
            action: 'killswitch.activate',
            target: 'platform',
            changeId: `kill-switch-${at}`,
            at,
            before: { killSwitch: 'off' },
            after: { killSwitch: 'on', platformCircuit: 'open', activeKeys: 'suspended' },
            reason: `${trigger.what} actual spend ${humanUsd(trigger.actualMicros)} ≥ ${humanUsd(trigger.thresholdMicros)}`,
            details: { budget: trigger.source, actualMicros: trigger.actualMicros, thresholdMicros: trigger.thresholdMicros },
          },
          this.o.clock,
        ),
      );
    } catch (err) {
      this.o.log.log('error', 'kill switch activation not audited', { error: err instanceof Error ? err.name : 'error' });
    }
  }

  /** Current state (admin CLI `killswitch status`). */
  status(): Promise<KillSwitchState> {
    return this.o.store.getKillSwitch();
  }

  /**
   * Restores service: every key the kill switch suspended becomes active again (others are untouched), the
   * platform circuit closes, and the acknowledgement is recorded. Returns how many keys were restored.
   */
  async resume(ack: Omit<Acknowledgement, 'at'>): Promise<{ restoredKeys: number; wasActive: boolean }> {
    if (!ack.reason.trim()) throw new RangeError('resuming needs a reason (--ack "…")');
    const at = this.o.clock.now();
    let restored = 0;
    const suspended: string[] = [];
    for await (const page of this.o.keys.listAll({ status: 'suspended' })) {
      for (const k of page) if (k.statusChangedBy === 'kill-switch') suspended.push(k.keyId);
    }
    restored = await this.changeAll(suspended, {
      status: 'active',
      actor: 'operator',
      reason: `resumed after kill switch: ${ack.reason}`,
      onlyIfStatus: 'suspended',
      onlyIfActor: 'kill-switch',
    });
    await this.o.store.resetCircuit('platform', { ...ack, at });
    const wasActive = await this.o.store.deactivateKillSwitch({ ...ack, at }, restored);
    this.o.log.log('warn', 'kill switch resumed', { by: ack.by, reason: ack.reason, restoredKeys: restored });
    return { restoredKeys: restored, wasActive };
  }

  /**
   * Suspends every active key. The ids are listed first (paging an index while its items leave it is not
   * reliable), then changed 1,000 at a time; stops early (completed false) when time runs short.
   */
  private async suspendAll(alreadySuspended: number, what: string): Promise<{ suspended: number; completed: boolean }> {
    const ids: string[] = [];
    for await (const page of this.o.keys.listAll({ status: 'active' })) ids.push(...page.map((k) => k.keyId));
    let suspended = 0;
    for (let i = 0; i < ids.length; i += 1_000) {
      const n = await this.changeAll(ids.slice(i, i + 1_000), {
        status: 'suspended',
        actor: 'kill-switch',
        reason: `kill switch: ${what} exceeded`,
        onlyIfStatus: 'active',
      });
      suspended += n;
      if (this.o.remainingMs && this.o.remainingMs() < 10_000 && i + 1_000 < ids.length) {
        await this.o.store.recordKillSwitchProgress({ suspendedKeys: alreadySuspended + suspended, completed: false });
        return { suspended, completed: false };
      }
    }
    return { suspended, completed: true };
  }

  /** Applies one conditional status change to many keys, in batches (or one by one), N at a time. */
  private async changeAll(ids: readonly string[], change: Parameters<BulkStatusChanger['setStatusMany']>[1]): Promise<number> {
    const batchSize = this.o.bulk ? 100 : 1;
    const batches: string[][] = [];
    for (let i = 0; i < ids.length; i += batchSize) batches.push(ids.slice(i, i + batchSize));
    let changed = 0;
    let next = 0;
    const worker = async () => {
      while (next < batches.length) {
        const batch = batches[next++]!;
        // Not `changed += await …`: that reads `changed` before the await and loses other workers' counts.
        const n = this.o.bulk ? await this.o.bulk.setStatusMany(batch, change) : (await this.o.keys.setStatus(batch[0]!, change)) ? 1 : 0;
        changed += n;
      }
    };
    const workers = this.o.bulk ? Math.max(1, Math.ceil(this.concurrency / 10)) : this.concurrency;
    await Promise.all(Array.from({ length: Math.min(workers, batches.length) }, worker));
    return changed;
  }

  private ignore(reason: string, level: 'info' | 'warn' = 'info'): KillSwitchResult {
    this.o.log.log(level, 'kill switch: notification ignored', { reason });
    return { action: 'ignored', reason };
  }
}

/** What {@link checkLedgerSpend} needs. */
export interface LedgerSpendCheckOptions {
  readonly ledger: Pick<Ledger, 'readCounters' | 'getLimitSettings'>;
  readonly defaults: DefaultLimits;
  /** Percent of the platform's limit that platform spend must reach. */
  readonly percent: number;
  readonly now: number;
}

/**
 * The kill switch on the ledger's figures: reads the platform's spend in every window (all shards, every
 * provider) and, when one has reached `percent` of the platform's limit (its own or the default), stops the
 * platform through {@link KillSwitch.stopPlatform}. The hard platform budget refuses requests shard by shard
 * near 100 %, so the total can stop just short of the limit: hence a percentage below 100 by default.
 * Undefined when no window is over (the common case: one BatchGet of a few items a minute).
 */
export async function checkLedgerSpend(killSwitch: KillSwitch, o: LedgerSpendCheckOptions): Promise<KillSwitchResult | undefined> {
  const stored = (await o.ledger.getLimitSettings(['platform'])).get('platform');
  const limits = effectiveLimits('platform', stored, o.defaults);
  const windows = WINDOWS.filter((w) => limits[w] !== undefined);
  if (windows.length === 0) return undefined;
  const values = await o.ledger.readCounters(
    windows.map((w) => ({ scope: 'platform' as const, window: w, windowKey: windowKey(w, o.now), windowEnd: windowBounds(w, o.now).end, shard: 0 })),
  );
  for (const v of values) {
    const limit = limits[v.ref.window]!;
    const threshold = Math.ceil((limit * o.percent) / 100);
    if (v.spent < threshold) continue;
    return killSwitch.stopPlatform({
      source: `ledger:platform/${v.ref.window}`,
      what: `platform ${v.ref.window} spend in the ledger (limit ${displayUsd(limit)})`,
      actualMicros: v.spent,
      thresholdMicros: threshold,
    });
  }
  return undefined;
}
