// Drives Debian's Chromium (headless, through playwright-core) against a
// running gitgate whose logins are TokenReviewed: without a token the
// dashboard answers 401 with a login form; a forged token and a token with
// no role are refused; the admin signs in, an app row shows its target
// commit, a denied change appears without a reload, and the links from a
// denial lead to the file, the commit and the audit log; then a read-only
// user signs in, sees one project only, and is refused another project's
// file, a `List` of Secrets and a secretGenerator input.
//
// Run by tests/dashboard_browser.rs, which starts gitgate and passes:
//   GITGATE_URL      https://127.0.0.1:PORT
//   NODE_EXTRA_CA_CERTS  gitgate's CA (this script's own requests verify TLS)
//   EXPECT_APP, EXPECT_COMMIT   the app and the full commit Git is at
//   OTHER_APP        an app of a project the reader may not see
//   REVIEW_FILE      an AdmissionReview (a hand edit) that gitgate denies
//   EXPECT_DENIAL    a piece of the denial's message
//   ADMIN_TOKEN, READER_TOKEN, NOBODY_TOKEN, FORGED_TOKEN   bearer tokens
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
const other = env("OTHER_APP");
const commit = env("EXPECT_COMMIT");
const review = readFileSync(env("REVIEW_FILE"), "utf8");
const expectDenial = env("EXPECT_DENIAL");
const tokens = {
  admin: env("ADMIN_TOKEN"), reader: env("READER_TOKEN"), nobody: env("NOBODY_TOKEN"), forged: env("FORGED_TOKEN"),
};
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

// Signs in through the login form; answers the page's response status.
async function signIn(page, token) {
  await page.locator("form#login input[name=token]").fill(token);
  const [res] = await Promise.all([
    page.waitForNavigation(),
    page.click("form#login button[type=submit]"),
  ]);
  return res ? res.status() : 0;
}

let code = 0;
try {
  // gitgate's certificate is signed by its own development CA; the browser
  // is told to accept it (this script's own POST below verifies it).
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1400, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));

  // 1. Without a token: 401 and the login form; a forged token and a
  //    token with no role are refused.
  let res = await page.goto(`${base}/ui`);
  check(res && res.status() === 401, "GET /ui without a token answers 401");
  check(await page.locator("form#login").isVisible(), "the 401 is the login page");
  if (shots) await page.screenshot({ path: `${shots}/login.png`, fullPage: true });
  const forged = await signIn(page, tokens.forged);
  check(forged === 401, `a forged token is refused (401, got ${forged})`);
  check((await page.locator("#login-error").innerText()).includes("did not accept"), "the login page says why");
  check((await signIn(page, tokens.nobody)) === 403, "a valid token with no role is refused (403)");
  check((await page.locator("#no-project").innerText()).includes("no project"), "the page says no project grants read");
  await Promise.all([page.waitForNavigation(), page.click("form.signout button")]);
  check(await page.locator("form#login").isVisible(), "signing out leads back to the login page");
  const cookies = await context.cookies();
  check(!cookies.some((c) => c.name === "gitgate_token"), "signing out drops the cookie");

  // 2. The admin signs in: the overview, and the app's row shows Git's commit.
  check((await signIn(page, tokens.admin)) === 200, "the admin signs in with a token");
  const cookie = (await context.cookies()).find((c) => c.name === "gitgate_token");
  check(cookie && cookie.httpOnly && cookie.secure && cookie.sameSite === "Strict", "the login cookie is HttpOnly, Secure, SameSite=Strict");
  check((await page.locator("#who").innerText()).includes("all projects"), "the header says the admin sees all projects");
  const row = page.locator(`tr[data-app="${app}"]`);
  await row.waitFor({ timeout: 30000 });
  const target = row.locator("td.target a.commit");
  check((await target.getAttribute("title")) === commit, `the ${app} row links its target commit ${commit}`);
  check((await target.innerText()).trim() === commit.slice(0, 7), "the row shows the short commit");
  check((await page.locator(`tr[data-app="${other}"]`).count()) === 1, `the admin also sees ${other}`);
  check((await page.locator("tr.denial").count()) === 0, "no denial is listed before one is made");
  if (shots) await page.screenshot({ path: `${shots}/overview-before.png`, fullPage: true });

  // 3. A hand edit is denied by /validate (a 200 AdmissionReview saying no).
  const answer = await fetch(`${base}/validate`, {
    method: "POST", headers: { "content-type": "application/json" }, body: review,
  });
  check(answer.status === 200, "POST /validate answers 200");
  const body = await answer.json();
  check(body.response && body.response.allowed === false, "the hand edit is denied");
  const message = body.response.status.message;
  check(message.includes(expectDenial), `the denial says ${JSON.stringify(expectDenial)}`);

  // 4. The open page shows it without a reload (live refresh, with the cookie).
  const denial = page.locator("tr.denial").first();
  await denial.waitFor({ timeout: 15000 });
  const text = await denial.innerText();
  check(text.includes(expectDenial), "the denied change appears on the open page, with its message");
  check(text.includes(commit.slice(0, 7)), "the denial names the owning commit");
  if (shots) await page.screenshot({ path: `${shots}/overview-after.png`, fullPage: true });

  // 5. From the denial to the file in Git, at the tracked revision.
  await denial.locator("a.file").click();
  await page.waitForURL(/\/ui\/files\//);
  const file = await page.locator("pre.file").innerText();
  check(/kind:\s*Deployment/.test(file), "the denial links to the manifest at the tracked revision");

  // 6. The commit page.
  await page.locator("a.commit").first().click();
  await page.waitForURL(/\/ui\/commits\//);
  check((await page.locator("dd code").first().innerText()).trim() === commit, "the commit page shows the full ID");

  // 7. The app's resource tree.
  await page.goto(`${base}/ui/apps/${encodeURIComponent(app)}`);
  check((await page.locator("tr.object").count()) > 0, "the app page lists its resources");
  check((await page.locator("tr.kind").count()) > 0, "resources are grouped by kind");
  if (shots) await page.screenshot({ path: `${shots}/app.png`, fullPage: true });

  // 8. The audit log, filtered to denials through the form.
  await page.goto(`${base}/ui/audit`);
  check((await page.locator("tr.record.decision-allow").count()) >= 1, "the admin's audit log also lists allowed changes");
  await page.selectOption("select[name=decision]", "deny");
  await Promise.all([page.waitForURL(/decision=deny/), page.click("form.filters button")]);
  check((await page.locator("tr.record").count()) >= 1, "the audit log filtered to denials lists the denial");
  check((await page.locator("tr.record.decision-allow").count()) === 0, "the filter keeps only denials");
  if (shots) await page.screenshot({ path: `${shots}/audit.png`, fullPage: true });

  // 9. A read-only user of one project.
  await Promise.all([page.waitForNavigation(), page.click("form.signout button")]);
  check((await signIn(page, tokens.reader)) === 200, "the reader signs in");
  check((await page.locator("#who").innerText()).includes("project frontend"), "the header names the reader's one project");
  check((await page.locator(`tr[data-app="${app}"]`).count()) === 1, `the reader sees ${app}`);
  check((await page.locator(`tr[data-app="${other}"]`).count()) === 0, `the reader does not see ${other}`);
  check((await page.locator("tr.denial").count()) >= 1, "the reader sees the denial on their app");
  if (shots) await page.screenshot({ path: `${shots}/reader.png`, fullPage: true });
  await page.goto(`${base}/ui/audit`);
  check((await page.locator("tr.record.decision-deny").count()) >= 1, "the reader's audit log lists their app's denial");
  check((await page.locator("tr.record.decision-allow").count()) === 0, "and not the record no app of theirs owns");

  // 10. What the reader may not read.
  res = await page.goto(`${base}/ui/apps/${other}`);
  check(res.status() === 404, `the ${other} app page is not found for the reader`);
  res = await page.goto(`${base}/ui/files/apps/${other}/deploy.yaml`);
  check(res.status() === 404, "another project's file is not found");
  res = await page.goto(`${base}/ui/files/apps/web/bundle.yaml`);
  check(res.status() === 403, "a List holding a Secret is refused");
  check(!(await page.content()).includes("list-secret-value"), "its value is nowhere on the page");
  res = await page.goto(`${base}/ui/files/apps/web-config/db.env`);
  check(res.status() === 403, "a secretGenerator input is refused");
  check(!(await page.content()).includes("generator-secret-value"), "its value is nowhere on the page");
  res = await page.goto(`${base}/api/v1/apps`);
  const apps = JSON.parse(await page.locator("body").innerText()).apps.map((a) => a.name);
  check(res.status() === 200 && apps.includes(app) && !apps.includes(other), "the status API with the cookie lists the reader's apps only");

  check(errors.length === 0, `no script errors (${errors.join("; ")})`);
  console.log(JSON.stringify({ ok: true, steps }));
} catch (e) {
  code = 1;
  console.log(JSON.stringify({ ok: false, steps, error: String(e && e.message || e) }));
} finally {
  await browser.close();
}
process.exit(code);
