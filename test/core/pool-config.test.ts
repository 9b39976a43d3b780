/**
 * Quiet keys' pools as an operator who sets nothing gets them, and as the two env variables change them
 * (README, "Configuration"): on, 60 s epochs, a 10 s warm-up before a key's first grant; `0` turns either off.
 */
import { ConfigError, loadConfig } from '../../lambda/config';

const ENV = { TOLLGATE_STAGE: 'pool-config' };

describe("quiet keys' pools in the gateway's configuration", () => {
  it('when nothing is set, quiet pools are on with 60 s epochs and a 10 s warm-up', () => {
    expect(loadConfig(ENV).pools).toMatchObject({ quietEpochMs: 300_000, quietWarmupMs: 10_000 });
  });

  it('when TOLLGATE_QUIET_POOL_EPOCH_MS=0 and TOLLGATE_QUIET_POOL_WARMUP_MS=0, quiet pools are off and a pool would be granted at the first request', () => {
    expect(loadConfig({ ...ENV, TOLLGATE_QUIET_POOL_EPOCH_MS: '0', TOLLGATE_QUIET_POOL_WARMUP_MS: '0' }).pools).toMatchObject({ quietEpochMs: 0, quietWarmupMs: 0 });
  });

  it('when the warm-up is not a whole number of ms from 0 to 600000, the configuration is refused naming the variable', () => {
    for (const bad of ['-1', '1.5', 'soon', '600001']) {
      expect(() => loadConfig({ ...ENV, TOLLGATE_QUIET_POOL_WARMUP_MS: bad })).toThrow(ConfigError);
      expect(() => loadConfig({ ...ENV, TOLLGATE_QUIET_POOL_WARMUP_MS: bad })).toThrow(/TOLLGATE_QUIET_POOL_WARMUP_MS/);
    }
  });
});
