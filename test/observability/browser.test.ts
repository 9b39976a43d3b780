/**
 * The browser the dashboard test drives comes from `npm install`: without a system Chromium the one
 * `@sparticuz/chromium` ships launches and renders; with neither, the failure names the install step.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromiumExecutable, launchBrowser } from '../support/browser';

const MISSING_SYSTEM = join(tmpdir(), 'tollgate-no-such-dir', 'chromium');
const TIMEOUT_MS = 240_000;

describe('launchBrowser', () => {
  it('when the machine has no system Chromium, the one the npm install shipped renders a page headless', async () => {
    const executable = await chromiumExecutable({ systemPath: MISSING_SYSTEM });
    expect(executable).not.toBe(MISSING_SYSTEM);
    const profile = mkdtempSync(join(tmpdir(), 'tollgate-chromium-'));
    const context = await launchBrowser(profile, { systemPath: MISSING_SYSTEM, timeout: TIMEOUT_MS });
    try {
      const page = await context.newPage();
      await page.setContent('<p id="x">tollgate</p><script>document.getElementById("x").textContent += " ok"</script>');
      expect(await page.textContent('#x')).toBe('tollgate ok');
      expect(await page.evaluate(() => navigator.userAgent)).toMatch(/Chrome\/\d+/);
    } finally {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    }
  });

  it('when neither a system Chromium nor the package is there, the failure names the install step', async () => {
    await expect(
      chromiumExecutable({ systemPath: MISSING_SYSTEM, bundledPackage: '@tollgate-test/no-such-chromium' }),
    ).rejects.toThrow(/is absent and @tollgate-test\/no-such-chromium did not provide one .*Run `npm install` \(or `npm ci`\)/s);
  });

  it('when a system Chromium is present, it is preferred', async () => {
    expect(await chromiumExecutable({ systemPath: process.execPath })).toBe(process.execPath);
  });
});
