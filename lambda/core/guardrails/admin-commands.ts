/**
 * The guardrails' admin CLI groups (`npm run admin -- …`), kept out of lambda/admin/cli.ts so that file only
 * dispatches to them:
 *
 *   circuits list [--json]                         open circuits, why and until when
 *   circuits reset SCOPE --ack "<reason>" [--by W]  closes one; who and why are recorded
 *   alerts [--since-hours N] [--json]               recorded alerts (default: the last 24 hours)
 *   killswitch status [--json]
 *   killswitch resume --ack "<reason>" [--by W]     restores exactly the keys the kill switch suspended
 *   loopguard set KEY_ID [--max-repeats N|none] [--max-failures N|none] | loopguard show KEY_ID
 */
import { userInfo } from 'node:os';
import { type AuditSink, audited } from '../audit';
import type { Clock } from '../clock';
import { silentLogger } from '../log';
import { humanUsd as displayUsd } from '../money';
import type { GuardrailStore, KeyStore, Ledger } from '../stores';
import { parseScope } from '../types';
import { type BulkStatusChanger, KillSwitch } from './kill-switch';

export interface GuardrailCommandDeps {
  readonly keys: KeyStore;
  readonly ledger: Ledger;
  readonly guardrails: GuardrailStore;
  readonly bulk?: BulkStatusChanger;
  readonly clock: Clock;
  /** Where changes (reset, resume, loop guard limits) are audited; without one they are refused. */
  readonly audit?: AuditSink;
  /** Who runs the command (`--actor`, else the OS user). */
  readonly actor?: string;
}

export interface GuardrailCommandArgs {
  readonly group: string;
  readonly action?: string;
  readonly rest: readonly string[];
  readonly ack?: string;
  readonly by?: string;
  readonly json: boolean;
  readonly sinceHours?: string;
  readonly maxRepeats?: string;
  readonly maxFailures?: string;
}

/** The command groups this module serves. */
export const GUARDRAIL_GROUPS = ['circuits', 'alerts', 'killswitch', 'loopguard'] as const;

function who(by: string | undefined): string {
  if (by) return by;
  try {
    return userInfo().username;
  } catch {
    return 'unknown';
  }
}

function needAck(ack: string | undefined, what: string): string {
  if (!ack || !ack.trim()) throw new RangeError(`${what} needs --ack "<reason>" (recorded with who acknowledged it)`);
  return ack.trim();
}

/** A time for people: local `YYYY-MM-DD HH:MM:SS` (JSON output keeps epoch milliseconds). */
function iso(ms: number | undefined): string {
  if (ms === undefined) return '';
  const d = new Date(ms);
  const p = (n: number) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

function limitArg(name: string, value: string | undefined): number | null | undefined {
  if (value === undefined) return undefined;
  if (value === 'none') return null;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`--${name} must be a positive whole number or "none"`);
  return n;
}

/** Runs one guardrails command; `print(human, json)` writes the result. */
export async function runGuardrailCommand(
  args: GuardrailCommandArgs,
  deps: GuardrailCommandDeps,
  print: (human: string, json: unknown) => void,
  table: (rows: readonly Record<string, string | number>[]) => string,
): Promise<void> {
  const now = deps.clock.now();
  if (args.group === 'circuits') {
    if (args.action === 'list' || args.action === undefined) {
      const open = await deps.guardrails.listCircuits(now);
      print(
        table(open.map((c) => ({ scope: c.scope, cause: c.cause, opened: iso(c.openedAt), closes: c.closesAt === undefined ? 'on ack' : iso(c.closesAt), reason: c.reason }))),
        open,
      );
      return;
    }
    if (args.action === 'reset') {
      const scope = parseScope(args.rest[0] ?? '');
      const reason = needAck(args.ack, 'circuits reset');
      const by = who(args.by ?? deps.actor);
      const open = (await deps.guardrails.listCircuits(now)).find((c) => c.scope === scope);
      const closed = await audited(
        deps.audit,
        {
          actor: by,
          via: 'cli',
          action: 'circuits.reset',
          target: scope,
          before: open ? { circuit: 'open', cause: open.cause, openedAt: iso(open.openedAt) } : { circuit: 'closed' },
          after: { circuit: 'closed' },
          reason,
        },
        deps.clock,
        () => deps.guardrails.resetCircuit(scope, { by, reason, at: now }),
      );
      print(closed ? `${scope}: circuit closed (acknowledged by ${by}: ${reason})` : `${scope}: no open circuit`, { scope, closed, by, reason });
      return;
    }
    throw new RangeError(`unknown circuits command "${args.action}"`);
  }
  if (args.group === 'alerts') {
    const hours = args.sinceHours === undefined ? 24 : Number(args.sinceHours);
    if (!(hours > 0)) throw new RangeError('--since-hours must be a positive number');
    const alerts = await deps.guardrails.listAlerts(now - hours * 3_600_000);
    print(table(alerts.map((a) => ({ at: iso(a.at), severity: a.severity, type: a.type, scope: a.scope, summary: a.summary }))), alerts);
    return;
  }
  if (args.group === 'killswitch') {
    const killSwitch = new KillSwitch({
      keys: deps.keys,
      ...(deps.bulk ? { bulk: deps.bulk } : {}),
      store: deps.guardrails,
      budgets: { describe: async () => undefined },
      reporter: { report: async () => undefined },
      clock: deps.clock,
      log: silentLogger,
      budgetName: '',
    });
    if (args.action === 'status' || args.action === undefined) {
      const s = await killSwitch.status();
      const lines = [
        `active:     ${s.active ? 'YES — platform stopped' : 'no'}`,
        ...(s.activatedAt ? [`activated:  ${iso(s.activatedAt)} (budget ${s.budgetName}, actual ${displayUsd(s.actualMicros ?? 0)} ≥ ${displayUsd(s.thresholdMicros ?? 0)})`] : []),
        `suspended:  ${s.suspendedKeys} keys${s.completed ? '' : ' (pass incomplete)'}`,
        ...(s.resumed ? [`resumed:    ${iso(s.resumed.at)} by ${s.resumed.by}: ${s.resumed.reason} (${s.resumed.restoredKeys} keys restored)`] : []),
      ];
      print(lines.join('\n'), s);
      return;
    }
    if (args.action === 'resume') {
      const reason = needAck(args.ack, 'killswitch resume');
      const by = who(args.by ?? deps.actor);
      const before = await killSwitch.status();
      const result = await audited(
        deps.audit,
        {
          actor: by,
          via: 'cli',
          action: 'killswitch.resume',
          target: 'platform',
          before: { killSwitch: before.active ? 'on' : 'off', suspendedKeys: before.suspendedKeys },
          after: { killSwitch: 'off', platformCircuit: 'closed' },
          reason,
        },
        deps.clock,
        () => killSwitch.resume({ by, reason }),
      );
      print(`${result.restoredKeys} keys restored, platform circuit closed (acknowledged by ${by}: ${reason})`, { ...result, by, reason });
      return;
    }
    throw new RangeError(`unknown killswitch command "${args.action}"`);
  }
  if (args.group === 'loopguard') {
    const keyId = args.rest[0];
    if (!keyId) throw new RangeError(`loopguard ${args.action ?? ''} needs a key id`);
    if (args.action === 'set') {
      const maxRepeats = limitArg('max-repeats', args.maxRepeats);
      const maxFailures = limitArg('max-failures', args.maxFailures);
      const before = (await deps.ledger.getLoopOverrides([keyId])).get(keyId) ?? {};
      const show = (v: number | null | undefined) => (v === undefined || v === null ? 'default' : v);
      await audited(
        deps.audit,
        {
          actor: who(deps.actor),
          via: 'cli',
          action: 'loopguard.set',
          target: keyId,
          before: { maxRepeats: show(before.maxRepeats), maxFailures: show(before.maxFailures) },
          after: {
            maxRepeats: maxRepeats === undefined ? show(before.maxRepeats) : maxRepeats === null ? 'default' : maxRepeats,
            maxFailures: maxFailures === undefined ? show(before.maxFailures) : maxFailures === null ? 'default' : maxFailures,
          },
        },
        deps.clock,
        () =>
          deps.ledger.setLoopOverrides(keyId, {
            ...(maxRepeats === undefined ? {} : { maxRepeats }),
            ...(maxFailures === undefined ? {} : { maxFailures }),
          }),
      );
    } else if (args.action !== 'show') {
      throw new RangeError(`unknown loopguard command "${args.action}"`);
    }
    const overrides = (await deps.ledger.getLoopOverrides([keyId])).get(keyId) ?? {};
    print(`${keyId}: max repeats ${overrides.maxRepeats ?? 'default'}, max failures ${overrides.maxFailures ?? 'default'}`, { keyId, ...overrides });
    return;
  }
  throw new RangeError(`unknown command group "${args.group}"`);
}
