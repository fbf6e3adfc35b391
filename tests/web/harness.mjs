// What the browser scripts (host.mjs, cluster.mjs) share: their environment, Debian's Chromium
// through playwright-core, and the STEP protocol with the Rust test (stdout "STEP WHAT", then a
// line on stdin once the test acted).
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

export const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
export const shots = env('APIARY_WEB_SHOTS');
mkdirSync(shots, { recursive: true });
export const shot = (name) => path.join(shots, name);

// ES modules ignore NODE_PATH: resolve playwright-core from the cache it was installed into.
const require = createRequire(path.join(env('APIARY_WEB_TESTS_DIR'), 'package.json'));
const { chromium } = require('playwright-core');

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
export async function ask(step) {
  console.log(`STEP ${step}`);
  const r = await lines.next();
  if (r.done) throw new Error(`stdin closed while waiting for ${step}`);
}

export function check(cond, msg) {
  if (!cond) throw new Error(msg);
}

// Run `body(page, consoleErrors)` in a fresh headless Chromium page; exit 0 after "DONE" when it
// returns, 1 (with a screenshot `failName`) when it throws.
export async function withPage(viewport, failName, body) {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--no-first-run'],
  });
  let failed = false;
  let page;
  try {
    page = await browser.newPage({ viewport });
    const consoleErrors = [];
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
    await body(page, consoleErrors);
    check(!consoleErrors.length, `console errors: ${consoleErrors.join('\n')}`);
    console.log('DONE');
  } catch (e) {
    failed = true;
    console.error(e.stack || String(e));
    if (page) await page.screenshot({ path: shot(failName), fullPage: true }).catch(() => {});
  } finally {
    await browser.close();
  }
  process.exit(failed ? 1 : 0);
}
