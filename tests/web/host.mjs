// Drives Debian's Chromium (headless, through playwright-core) against `apiary serve --web` for
// crates/apiary-cli/tests/web.rs. The Rust test set up a chain of three XDP programs; this script
// checks what the page shows and asks the test, over stdout/stdin, for traffic and an unload:
//   stdout "STEP ping"       -> the test pings, then writes a line to stdin
//   stdout "STEP unload ID"  -> the test unloads program ID, then writes a line to stdin
//   stdout "DONE"            -> every check passed (the exit status is 0)
// Environment: APIARY_WEB_URL, APIARY_WEB_TESTS_DIR (where playwright-core is installed),
// APIARY_WEB_SHOTS (screenshot directory), APIARY_WEB_IFACE, APIARY_WEB_IDS (the chain's
// program ids in run order, comma-separated).
import { env, shot, ask, check, withPage } from './harness.mjs';

const url = env('APIARY_WEB_URL');
const iface = env('APIARY_WEB_IFACE');
const ids = env('APIARY_WEB_IDS').split(',').map(Number);
// Generous: a loaded machine may be slow; nothing here measures time.
const WAIT = { timeout: 30000, polling: 100 };
const ROW = `.iface[data-iface="${iface}"] .hook-row[data-hook="xdp"]`;

await withPage({ width: 1280, height: 720 }, 'host-failed.png', async (page) => {
  await page.goto(url);

  // 1. The chain's three boxes, in run order.
  const boxIds = () => page.$$eval(`${ROW} .prog`, (bs) => bs.map((b) => Number(b.dataset.programId)));
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 3, `${ROW} .prog`, WAIT);
  const order = await boxIds();
  check(JSON.stringify(order) === JSON.stringify(ids), `boxes in order ${order}, expected ${ids}`);
  const priorities = await page.$$eval(`${ROW} .prog .meta`, (ms) => ms.map((m) => m.textContent));
  console.error(`boxes: ${JSON.stringify(priorities)}`);
  check(priorities.every((m, i) => m.startsWith(`${i + 1}.`)), `positions: ${priorities}`);
  // A mark on the window: it survives only if the page is never reloaded.
  await page.evaluate(() => { window.apiaryMark = 'same page'; });
  const handles = await page.$$(`${ROW} .prog`);
  const runs0 = await page.$$eval(`${ROW} .prog`, (bs) => bs.map((b) => Number(b.dataset.runs)));
  await page.screenshot({ path: shot('1-chain.png'), fullPage: true });

  // 2. Traffic: every box's counter rises, in place.
  await ask('ping');
  await page.waitForFunction(({ sel, before }) => {
    const bs = Array.from(document.querySelectorAll(sel));
    return bs.length === before.length && bs.every((b, i) => Number(b.dataset.runs) > before[i]);
  }, { sel: `${ROW} .prog`, before: runs0 }, WAIT);
  const runs1 = await page.$$eval(`${ROW} .prog`, (bs) => bs.map((b) => Number(b.dataset.runs)));
  console.error(`runs before ${runs0}, after ${runs1}`);
  check(await page.evaluate(() => window.apiaryMark) === 'same page', 'the page was reloaded');
  for (const h of handles) {
    check(await h.evaluate((n) => n.isConnected), 'a box was replaced instead of updated');
  }
  const shown = await handles[0].$eval('.runs b', (b) => b.textContent);
  check(Number(shown.replace(/,/g, '')) === runs1[0], `box shows ${shown}, data says ${runs1[0]}`);
  const pass = await handles[0].$eval('.verdict[data-verdict="pass"]', (v) => Number(v.dataset.count));
  check(pass > 0, `pass verdicts ${pass}`);
  await page.screenshot({ path: shot('2-counters.png'), fullPage: true });

  // 3. A program's details, and a map's decoded contents.
  await handles[0].click();
  await page.waitForFunction((id) => {
    const h = document.querySelector('#detail-body h3');
    return h && h.textContent.includes(`#${id}`);
  }, ids[0], WAIT);
  await page.waitForSelector('#detail-body .maplink[data-map-id]', WAIT);
  const mapName = 'hits';
  await page.locator('#detail-body .maplink').filter({ hasText: /^hits$/ }).click();
  await page.waitForSelector('#map-body table.entries tr.entry', WAIT);
  const entries = await page.$$eval('#map-body tr.entry td', (tds) => tds.map((t) => t.textContent));
  console.error(`map ${mapName}: ${JSON.stringify(entries.slice(0, 4))}`);
  check(entries.length >= 2, `map ${mapName} shows no entry`);
  // The counter map holds how many packets the program saw, decoded as a number.
  const counted = Number(entries[1]);
  check(Number.isInteger(counted) && counted > 0, `decoded counter value ${entries[1]}`);
  await page.screenshot({ path: shot('3-details.png'), fullPage: true });

  // 4. Unloading the middle program removes its box; the others stay, in order.
  await ask(`unload ${ids[1]}`);
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 2, `${ROW} .prog`, WAIT);
  const after = await boxIds();
  check(JSON.stringify(after) === JSON.stringify([ids[0], ids[2]]), `after unload: ${after}`);
  check(await page.evaluate(() => window.apiaryMark) === 'same page', 'the page was reloaded');
  await page.screenshot({ path: shot('4-unloaded.png'), fullPage: true });
});
