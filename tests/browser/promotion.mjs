// Drives Debian's Chromium (headless, through playwright-core) against a
// running gitgate on a real apiserver (issue 17): an app waits for
// approval; a reader's Approve is refused with the reason; an approver
// sees the Deployment's live ReplicaSet and Pods on the app page, clicks
// Approve, and the page turns Synced without a reload.
//
// Run by tests/e2e/promotion.rs, which passes:
//   GITGATE_URL          https://127.0.0.1:PORT
//   EXPECT_APP           the app waiting for approval
//   EXPECT_COMMIT        the full commit that waits
//   LIVE_WORKLOAD        `namespace/Deployment/name` of a live Deployment of the app
//   APPROVER_TOKEN, READER_TOKEN   bearer tokens (sync; read only)
//   SCREENSHOT_DIR       optional: where to leave PNGs of the pages
// Prints one JSON line; exits 0 when every check held, 1 otherwise.
import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("GITGATE_URL");
const app = env("EXPECT_APP");
const commit = env("EXPECT_COMMIT");
const workload = env("LIVE_WORKLOAD");
const tokens = { approver: env("APPROVER_TOKEN"), reader: env("READER_TOKEN") };
const shots = process.env.SCREENSHOT_DIR;
const steps = [];

function check(cond, what) {
  if (!cond) throw new Error(`check failed: ${what}`);
  steps.push(what);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});

async function signedIn(token) {
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  await page.goto(`${base}/ui`);
  await page.locator("form#login input[name=token]").fill(token);
  const [res] = await Promise.all([page.waitForNavigation(), page.click("form#login button[type=submit]")]);
  check(res && res.status() === 200, "signed in");
  return page;
}

async function waitFor(page, what, f, ms = 30000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await f()) return;
    await page.waitForTimeout(250);
  }
  throw new Error(`timed out: ${what}`);
}

let code = 0;
try {
  const url = `${base}/ui/apps/${encodeURIComponent(app)}`;
  // 1. A reader sees the waiting commit; their Approve is refused.
  const reader = await signedIn(tokens.reader);
  await reader.goto(url);
  check((await reader.locator("h1").innerText()).includes("WaitingApproval"), "the app page says WaitingApproval");
  const approve = reader.locator("button.promote[data-action=approve]");
  check((await approve.getAttribute("data-commit")) === commit, "Approve names the waiting commit");
  await approve.click();
  await waitFor(reader, "the refusal", async () => (await reader.evaluate(() => document.body.dataset.action)) === "refused");
  check((await reader.locator(".action-result").innerText()).includes("may not approve"), "a reader's approval is refused, saying who may");

  // 2. The approver sees the rollout's tree: the Deployment's ReplicaSet and Pods.
  const page = await signedIn(tokens.approver);
  await page.goto(url);
  const rs = page.locator(`tr.live[data-parent="${workload}"][data-kind=ReplicaSet]`);
  const pod = page.locator(`tr.live[data-parent="${workload}"][data-kind=Pod]`);
  await waitFor(page, "the live ReplicaSet and Pods", async () => {
    await page.reload();
    return (await rs.count()) > 0 && (await pod.count()) > 0;
  });
  check((await rs.count()) >= 1, "the Deployment's ReplicaSet is under it");
  check((await pod.count()) >= 1, "its Pods are under the ReplicaSet");
  check((await page.locator(`tr.event[data-parent="${workload}"]`).count()) >= 1, "the workload's last events are shown");
  if (shots) await page.screenshot({ path: `${shots}/promotion-waiting.png`, fullPage: true });

  // 3. Approve: done, and the open page turns Synced by itself.
  await page.locator("button.promote[data-action=approve]").click();
  await waitFor(page, "the approval", async () => (await page.evaluate(() => document.body.dataset.action)) === "done");
  await waitFor(page, "Synced on the open page", async () => (await page.locator("h1").innerText()).includes("Synced"), 60000);
  check(true, "the approved commit is synced, shown without a reload");
  if (shots) await page.screenshot({ path: `${shots}/promotion-synced.png`, fullPage: true });
} catch (e) {
  code = 1;
  console.log(JSON.stringify({ ok: false, error: String(e), steps }));
}
await browser.close();
if (code === 0) console.log(JSON.stringify({ ok: true, steps }));
process.exit(code);
