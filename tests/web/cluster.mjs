// Drives Debian's Chromium (headless, through playwright-core) against `apiary operator --web`
// for crates/apiary-cli/tests/web.rs. The Rust test made three simulated nodes (the last without
// an agent) and an application selecting them; this script checks the grid and asks the test,
// over stdout/stdin, to change the cluster:
//   stdout "STEP start"    -> the test starts the last node's agent, then writes a line to stdin
//   stdout "STEP rollout"  -> the test changes the application's global data (a staged rollout
//                             that pauses after its first node), then writes a line
//   stdout "DONE"          -> every check passed (the exit status is 0)
// Environment: APIARY_WEB_URL, APIARY_WEB_TESTS_DIR, APIARY_WEB_SHOTS, APIARY_WEB_APP (the
// application's name), APIARY_WEB_NODES (its nodes, comma-separated; the last has no agent).
import { env, shot, ask, check, withPage } from './harness.mjs';

const url = env('APIARY_WEB_URL');
const app = env('APIARY_WEB_APP');
const nodes = env('APIARY_WEB_NODES').split(',');
const WAIT = { timeout: 60000, polling: 200 };
const ROW = `tr[data-app="${app}"]`;
// The cell states of the application's row, in the order of `nodes`.
const statesAre = (page, want) => page.waitForFunction(({ row, nodes, want }) => {
  const r = document.querySelector(row);
  if (!r) return false;
  return nodes.every((n, i) => {
    const c = r.querySelector(`td.cell[data-node="${n}"]`);
    return c && c.dataset.state === want[i];
  });
}, { row: ROW, nodes, want }, WAIT);

await withPage({ width: 1280, height: 480 }, 'cluster-failed.png', async (page) => {
  await page.goto(url);

  // 1. Two nodes ready, the third without agent: its cell and column say so on hover.
  const noAgent = nodes[nodes.length - 1];
  await statesAre(page, nodes.map((n) => (n === noAgent ? 'no-agent' : 'ready')));
  const title = await page.$eval(`${ROW} td.cell[data-node="${noAgent}"]`, (c) => c.title);
  check(title.includes('no apiary agent'), `hover of ${noAgent}: ${title}`);
  const head = await page.$eval(`th.node-col[data-node="${noAgent}"]`, (h) => h.className);
  check(head.includes('no-agent'), `column of ${noAgent}: ${head}`);
  const sum = await page.$eval(`${ROW} td.sum-col`, (t) => t.textContent);
  check(sum === `${nodes.length - 1}/${nodes.length}`, `ready column ${sum}`);
  await page.evaluate(() => { window.apiaryMark = 'same page'; });
  await page.screenshot({ path: shot('5-cluster.png'), fullPage: true });

  // 2. The agent starts: its cell turns ready in place.
  await ask('start');
  await statesAre(page, nodes.map(() => 'ready'));
  await page.waitForFunction((row) => document.querySelector(`${row} td.sum-col`)?.textContent.split('/')[0]
    === document.querySelector(`${row} td.sum-col`)?.textContent.split('/')[1], ROW, WAIT);

  // 3. A staged rollout: its phase and progress appear, one node on the new revision.
  await ask('rollout');
  await page.waitForFunction((row) => {
    const r = document.querySelector(`${row} td[data-testid="rollout"]`);
    return r && r.querySelector('.phase')?.textContent === 'Progressing'
      && /^1\/\d+ on [0-9a-f]+$/.test(r.querySelector('.meta')?.textContent || '');
  }, ROW, WAIT);
  const progress = await page.$eval(`${ROW} td[data-testid="rollout"] .meta`, (m) => m.textContent);
  console.error(`rollout: ${progress}`);
  check(progress.startsWith(`1/${nodes.length} `), `rollout progress ${progress}`);
  const revisions = await page.$$eval(`${ROW} td.cell`, (cs) => cs.map((c) => c.title));
  check(revisions.some((t) => t.includes('(revision ')), `no revision on hover: ${revisions}`);
  check(await page.evaluate(() => window.apiaryMark) === 'same page', 'the page was reloaded');
  await page.screenshot({ path: shot('6-rollout.png'), fullPage: true });
});
