// Drives Debian's Chromium (headless, through playwright-core) against a
// running gitgate: the page loads, an app row shows its target commit, a
// denied change appears without a reload (the page refreshes itself), and
// the links from a denial lead to the commit, the file and the audit log.
//
// Run by tests/dashboard_browser.rs, which starts gitgate and passes:
//   GITGATE_URL      https://127.0.0.1:PORT
//   NODE_EXTRA_CA_CERTS  gitgate's CA (this script's own requests verify TLS)
//   EXPECT_APP, EXPECT_COMMIT   the app and the full commit Git is at
//   REVIEW_FILE      an AdmissionReview (a hand edit) that gitgate denies
//   EXPECT_DENIAL    a piece of the denial's message
//   SCREENSHOT_DIR   optional: where to leave PNGs of the pages
// Prints one JSON line; exits 0 when every check held, 1 otherwise.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const base = env("GITGATE_URL");
const app = env("EXPECT_APP");
const commit = env("EXPECT_COMMIT");
const review = readFileSync(env("REVIEW_FILE"), "utf8");
const expectDenial = env("EXPECT_DENIAL");
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
let code = 0;
try {
  // gitgate's certificate is signed by its own development CA; the browser
  // is told to accept it (this script's own POST below verifies it).
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => { if (m.type() === "error") errors.push(m.text()); });

  // 1. The overview loads and the app's row shows Git's commit.
  const res = await page.goto(`${base}/ui`);
  check(res && res.status() === 200, "GET /ui answers 200");
  const row = page.locator(`tr[data-app="${app}"]`);
  await row.waitFor({ timeout: 30000 });
  const target = row.locator("td.target a.commit");
  check((await target.getAttribute("title")) === commit, `the ${app} row links its target commit ${commit}`);
  check((await target.innerText()).trim() === commit.slice(0, 7), "the row shows the short commit");
  check((await page.locator("tr.denial").count()) === 0, "no denial is listed before one is made");
  if (shots) await page.screenshot({ path: `${shots}/overview-before.png`, fullPage: true });

  // 2. A hand edit is denied by /validate (a 200 AdmissionReview saying no).
  const answer = await fetch(`${base}/validate`, {
    method: "POST", headers: { "content-type": "application/json" }, body: review,
  });
  check(answer.status === 200, "POST /validate answers 200");
  const body = await answer.json();
  check(body.response && body.response.allowed === false, "the hand edit is denied");
  const message = body.response.status.message;
  check(message.includes(expectDenial), `the denial says ${JSON.stringify(expectDenial)}`);

  // 3. The open page shows it without a reload (live refresh).
  const denial = page.locator("tr.denial").first();
  await denial.waitFor({ timeout: 15000 });
  const text = await denial.innerText();
  check(text.includes(expectDenial), "the denied change appears on the open page, with its message");
  check(text.includes(commit.slice(0, 7)), "the denial names the owning commit");
  if (shots) await page.screenshot({ path: `${shots}/overview-after.png`, fullPage: true });

  // 4. From the denial to the file in Git, at the commit.
  await denial.locator("a.file").click();
  await page.waitForURL(/\/ui\/files\//);
  const file = await page.locator("pre.file").innerText();
  check(/kind:\s*Deployment/.test(file), "the denial links to the manifest at its commit");

  // 5. The commit page.
  await page.locator("a.commit").first().click();
  await page.waitForURL(/\/ui\/commits\//);
  check((await page.locator("dd code").first().innerText()).trim() === commit, "the commit page shows the full ID");

  // 6. The app's resource tree.
  await page.goto(`${base}/ui/apps/${encodeURIComponent(app)}`);
  const objects = page.locator("tr.object");
  check((await objects.count()) > 0, "the app page lists its resources");
  check((await page.locator("tr.kind").count()) > 0, "resources are grouped by kind");
  if (shots) await page.screenshot({ path: `${shots}/app.png`, fullPage: true });

  // 7. The audit log, filtered to denials through the form.
  await page.goto(`${base}/ui/audit`);
  check((await page.locator("tr.record.decision-allow").count()) >= 1, "the unfiltered audit log also lists allowed changes");
  await page.selectOption("select[name=decision]", "deny");
  await Promise.all([page.waitForURL(/decision=deny/), page.click("form.filters button")]);
  const records = page.locator("tr.record");
  check((await records.count()) >= 1, "the audit log filtered to denials lists the denial");
  check((await page.locator("tr.record.decision-allow").count()) === 0, "the filter keeps only denials");
  if (shots) await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });

  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
  console.log(JSON.stringify({ ok: true, steps }));
} catch (e) {
  code = 1;
  console.log(JSON.stringify({ ok: false, steps, error: String(e && e.message || e) }));
} finally {
  await browser.close();
}
process.exit(code);
