/**
 * Scheduled every minute: releases budget holds whose invocation crashed before settling (expired holds),
 * then checks the platform's spend in the ledger against the platform limit — the kill switch that sees
 * provider spend (core/guardrails/kill-switch.ts `checkLedgerSpend`), so a runaway is stopped within a minute
 * instead of when the AWS bill catches up. Its report goes to the alerts outbox (the dispatcher publishes it).
 * Windows themselves never need a job: a new window is a new counter key.
 */
import middy from '@middy/core';
import { loadConfig } from '../config';
import { systemClock } from '../core/clock';
import { checkLedgerSpend, KillSwitch } from '../core/guardrails/kill-switch';
import { jsonLogger } from '../core/log';
import { circuitOpenedRecorder, recordGuardrailEvent } from '../observability/guardrail-events';
import { GUARDRAIL_METRICS } from '../observability/metric-names';
import { DynamoDbAuditLog } from '../store/dynamodb/audit-store';
import { createDynamoDbClient } from '../store/dynamodb/client';
import { DynamoDbGuardrailStore } from '../store/dynamodb/guardrails-store';
import { DynamoDbKeyStore } from '../store/dynamodb/key-store';
import { DynamoDbKeyStatusBatch } from '../store/dynamodb/key-status-batch';
import { DynamoDbLedger } from '../store/dynamodb/ledger';

const config = loadConfig();
const log = jsonLogger();
const dynamodb = createDynamoDbClient({ region: config.region });
const ledger = new DynamoDbLedger(dynamodb, {
  tables: config.tables,
  platformShards: config.platformShards,
  usageRetentionDays: config.usageRetentionDays,
});
// The ledger's kill switch opens the platform circuit: that writes the CircuitOpened metric the alarm watches.
const store = new DynamoDbGuardrailStore(dynamodb, { tables: config.tables, platformShards: config.platformShards, onCircuitOpened: circuitOpenedRecorder(config.stage) });
const killSwitch = new KillSwitch({
  keys: new DynamoDbKeyStore(dynamodb, config.tables),
  bulk: new DynamoDbKeyStatusBatch(dynamodb, config.tables),
  store,
  // The ledger path never consults AWS Budgets.
  budgets: { describe: async () => undefined },
  reporter: { report: async (alert) => void (await store.recordAlert(alert, { dedupeKey: `kill-switch#${alert.id}`, dedupeUntil: alert.at + 86_400_000 })) },
  // The activation is an administrative change by `kill-switch`: it goes to the audit log.
  ...(config.tables.audit ? { audit: new DynamoDbAuditLog(dynamodb, { table: config.tables.audit, retentionDays: config.usageRetentionDays }) } : {}),
  clock: systemClock,
  log,
  budgetName: config.killSwitch.budgetName ?? '',
});

export const handler = middy().handler(async (): Promise<{ released: number; killSwitch?: string }> => {
  const now = Date.now();
  const released = await ledger.sweepExpired(now);
  if (released > 0) log.log('warn', 'released expired budget holds', { released });
  const stopped = await checkLedgerSpend(killSwitch, { ledger, defaults: config.defaults, percent: config.killSwitch.ledgerPercent, now });
  if (stopped?.action === 'activated') {
    recordGuardrailEvent(GUARDRAIL_METRICS.killSwitchActivated, { stage: config.stage, metadata: { suspendedKeys: String(stopped.suspendedKeys), source: 'ledger' } });
  }
  if (stopped && 'completed' in stopped && !stopped.completed) throw new Error('kill switch pass incomplete; the next run finishes it');
  return { released, ...(stopped ? { killSwitch: stopped.action } : {}) };
});
