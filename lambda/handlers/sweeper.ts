/**
 * Scheduled every minute: releases budget holds whose invocation crashed before settling (expired holds).
 * Windows themselves never need a job: a new window is a new counter key.
 */
import middy from '@middy/core';
import { loadConfig } from '../config';
import { jsonLogger } from '../core/log';
import { createDynamoDbClient } from '../store/dynamodb/client';
import { DynamoDbLedger } from '../store/dynamodb/ledger';

const config = loadConfig();
const log = jsonLogger();
const ledger = new DynamoDbLedger(createDynamoDbClient({ region: config.region }), {
  tables: config.tables,
  platformShards: config.platformShards,
  usageRetentionDays: config.usageRetentionDays,
});

export const handler = middy().handler(async (): Promise<{ released: number }> => {
  const released = await ledger.sweepExpired(Date.now());
  if (released > 0) log.log('warn', 'released expired budget holds', { released });
  return { released };
});
