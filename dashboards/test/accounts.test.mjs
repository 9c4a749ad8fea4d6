// People in the dashboard, in headless Chromium against one real `veil up` started WITHOUT an
// admin token, so the first-run setup is the real one: the page before setup says Veil has no
// owner yet; the setup link `veil up` printed makes the owner (e-mail + password) and lands
// logged in; logout and login (and a second factor, with a recovery code); the owner invites a
// viewer and an admin of site A, each accepting in a fresh browser context; what each role sees
// (viewer: dashboards and export only; admin: settings and people, no deleting the site, no
// audit log; owner: all of it); a viewer of A never sees site B; role changes and removal take
// effect on the next load; "Log out everywhere"; five wrong passwords lock the account and the
// page says so.
//
// The tests run in order and share the deployment and the people they make (one `veil up` per
// file keeps it near a minute). Waits poll (waitForSelector / waitFor), never sleep.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import * as harness from "../../testing/browser/harness.mjs";
import { browser, open, screenshot, settled, send, sql, waitFor } from "./fixture.mjs";

const A = "a.example";
const B = "b.example";
const OWNER = { email: "owner@example.org", password: "owner-password-1" };
const VIEWER = { email: "viewer@example.org", password: "viewer-password-1" };
const ADMIN = { email: "admin@example.org", password: "admin-password-1" };

let veil, chrome;
/** The owner's logged-in page (made by the setup test, used by the later ones). */
let owner;
const pages = [];

before(async () => {
  veil = await harness.startVeil(["--site", `${A},${B}`, "--min-visitors", "2", "--privacy", "exact", "--max-event-age", "30d",
    "--rate-limit-ip", "0", "--metrics-listen", "127.0.0.1:0"], { env: { VEIL_LOG: "warn" } });
  // Three visitors on each site, a day and 3 hours ago (inside "last 7 days").
  const t = new Date(Date.now() - 27 * 3600_000).toISOString();
  const ev = [];
  for (const site of [A, B]) {
    for (let i = 0; i < 3; i++) {
      ev.push({ site, name: "pageview", url: `https://${site}/`, timestamp: t, ip: `198.51.100.${site === A ? 10 + i : 20 + i}`,
        user_agent: "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0" });
    }
  }
  await send(veil, ev);
  const count = async () => Number((await sql(veil, "SELECT count() AS c FROM veil.events"))[0].c);
  await waitFor(count, (c) => c >= ev.length, { ms: 30_000, what: "events not stored" });
  chrome = await browser();
});

after(async () => {
  for (const p of pages) await p.close_all().catch(() => {});
  await chrome?.close();
  await veil?.stop();
});

/** A fresh browser context (no cookie, no token). */
async function fresh() {
  const p = await open(chrome, { token: null });
  pages.push(p);
  return p;
}

/** The TOTP code of a base32 `secret` now (RFC 6238: SHA-1, 6 digits, 30 s). */
function totp(secret) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secret.replace(/=+$/, "").toUpperCase()) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30_000)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const o = mac[mac.length - 1] & 0xf;
  return String((mac.readUInt32BE(o) & 0x7fffffff) % 1_000_000).padStart(6, "0");
}

async function login(page, who, code) {
  await page.goto(veil.url + "/");
  await page.waitForSelector("#login:not([hidden])");
  await page.fill("#login-email", who.email);
  await page.fill("#login-password", who.password);
  if (code) {
    await page.click("#account-form button[type=submit]");
    await page.waitForSelector("#login-code-box:not([hidden])");
    await page.fill("#login-code", code);
  }
  await page.click("#account-form button[type=submit]");
  await page.waitForSelector("#sites:not([hidden])");
}

async function siteList(page) {
  await page.waitForSelector("#sites:not([hidden])");
  return page.$$eval("#site-list li[data-site]", (lis) => lis.map((l) => l.dataset.site));
}

/** Invites `who` as `role` of A from the owner's settings page; resolves to the one-time link. */
async function invite(who, role) {
  await owner.goto(`${veil.url}/site/${A}/settings`);
  await owner.waitForSelector("#invite-person");
  await owner.fill('#invite-person input[name="email"]', who.email);
  await owner.selectOption('#invite-person select[name="role"]', role);
  await owner.click('#invite-person button[type="submit"]');
  const link = await (await owner.waitForSelector("#invite-link")).textContent();
  assert.match(link, new RegExp(`^${veil.url.replace(/\./g, "\\.")}/invite#token=\\S+$`));
  await owner.waitForSelector(`#invitation-list li[data-email="${who.email}"]`);
  return link;
}

/** Opens an invitation link in a fresh context and sets `who`'s password; resolves to the page. */
async function accept(link, who, offer) {
  const page = await fresh();
  await page.goto(link);
  await page.waitForSelector("#invite-form:not([hidden])");
  assert.equal(new URL(page.url()).hash, "", "the token leaves the address bar");
  assert.match(await page.textContent("#invite-offer"), offer);
  await page.fill("#invite-password", who.password);
  await page.click("#invite-submit");
  await page.waitForSelector("#sites:not([hidden])");
  assert.equal(await page.textContent("#whoami"), who.email);
  return page;
}

test("before setup every page says Veil has no owner yet and where the setup link is", async () => {
  const page = await fresh();
  for (const path of ["/", `/site/${A}`]) {
    await page.goto(veil.url + path);
    await page.waitForSelector("#setup-needed:not([hidden])");
    assert.match(await page.textContent("#setup-needed"), /no owner yet[\s\S]*setup link[\s\S]*veil user create/);
    assert.equal(await page.$eval("#login", (e) => e.hidden), true);
    assert.equal(await page.$eval("#dash", (e) => e.hidden), true);
  }
  await screenshot(page, "accounts-no-owner");
});

test("the setup link sets the owner's e-mail and password and lands logged in on the site list", async () => {
  const printed = await waitFor(() => veil.log().match(/No owner yet: open \S*(\/setup#token=\S+)/), Boolean,
    { what: () => "no setup link in veil up's output:\n" + veil.log() });
  const link = veil.url + printed[1];
  owner = await fresh();
  await owner.goto(link);
  await owner.waitForSelector("#invite-email-box:not([hidden])");
  assert.match(await owner.textContent("#invite-h"), /Set up Veil/);
  // The token is gone from the address bar (replaceState: the history entry is rewritten).
  assert.equal(owner.url(), veil.url + "/setup");
  assert.equal(await owner.evaluate(() => location.hash), "");
  await screenshot(owner, "accounts-setup");
  // A too short password is refused with the API's words.
  await owner.fill("#invite-email", OWNER.email);
  await owner.fill("#invite-password", "short");
  await owner.click("#invite-submit");
  await owner.waitForSelector("#invite-error:not([hidden])");
  assert.match(await owner.textContent("#invite-error"), /password.*10/);
  await owner.fill("#invite-password", OWNER.password);
  await owner.click("#invite-submit");
  assert.deepEqual(await siteList(owner), [A, B]);
  assert.equal(await owner.textContent("#whoami"), OWNER.email);
  assert.equal(await owner.$eval("#add-site", (e) => e.hidden), false, "the owner of every site may add one");
  assert.equal(await owner.evaluate(() => document.cookie + sessionStorage.length), "0", "the session cookie is HttpOnly; no token stored");
  // The link is used up: a second browser is told so.
  const again = await fresh();
  await again.goto(link);
  await again.waitForSelector("#invite-offer.form-error");
  assert.equal(await again.$eval("#invite-form", (e) => e.hidden), true);
});

test("log out, then a wrong password is refused and the right one logs in", async () => {
  await owner.click("#logout");
  await owner.waitForSelector("#login:not([hidden])");
  assert.equal(await owner.$eval("#whoami", (e) => e.hidden), true);
  await owner.fill("#login-email", OWNER.email);
  await owner.fill("#login-password", "not-the-password");
  await owner.click("#account-form button[type=submit]");
  await owner.waitForSelector("#login-error:not([hidden])");
  assert.match(await owner.textContent("#login-error"), /wrong e-mail address or password/i);
  await screenshot(owner, "accounts-login");
  await login(owner, OWNER);
  assert.deepEqual(await siteList(owner), [A, B]);
});

let viewer, admin;

test("the owner invites a viewer and an admin of A; each sets a password in a fresh browser", async () => {
  const vLink = await invite(VIEWER, "viewer");
  const aLink = await invite(ADMIN, "admin");
  await screenshot(owner, "accounts-people");
  viewer = await accept(vLink, VIEWER, /viewer@example\.org is invited as viewer of a\.example/);
  admin = await accept(aLink, ADMIN, /admin@example\.org is invited as admin of a\.example/);
  // Accepted invitations leave the list; the people are listed with their roles.
  await owner.reload();
  await waitFor(() => owner.$$eval("#people-list li[data-email]", (lis) => lis.map((l) => l.dataset.email).sort()),
    (v) => v.join() === [ADMIN.email, VIEWER.email].join(), { what: "people of A" });
  assert.equal(await owner.$$eval("#invitation-list li[data-email]", (l) => l.length), 0);
});

test("a viewer sees A's dashboard and export only, and never site B", async () => {
  assert.deepEqual(await siteList(viewer), [A]);
  assert.equal(await viewer.$eval("#add-site", (e) => e.hidden), true);
  await viewer.goto(`${veil.url}/site/${A}?period=7d`);
  await settled(viewer);
  assert.equal(await viewer.$eval('#stats .value[data-metric="visitors"]', (e) => e.dataset.value), "3");
  assert.equal(await viewer.$eval("#settings-link", (e) => e.hidden), true);
  assert.equal(await viewer.$eval("#export", (e) => e.hidden), false);
  await viewer.goto(`${veil.url}/site/${A}/settings`);
  await viewer.waitForSelector("#settings-refused");
  assert.equal(await viewer.$$eval("#settings-body form, #settings-body input", (l) => l.length), 0, "no edit forms");
  // B: an error where the numbers would be, and no number.
  await viewer.goto(`${veil.url}/site/${B}?period=7d`);
  await viewer.waitForSelector("#stats .error");
  assert.match(await viewer.textContent("#stats"), /not registered/);
  assert.equal(await viewer.$$eval("#stats .value, #view-body td.n", (l) => l.length), 0);
  await screenshot(viewer, "accounts-viewer-other-site");
  await viewer.goto(`${veil.url}/site/${B}/settings`);
  await viewer.waitForFunction(() => /not registered/.test(document.getElementById("status").textContent));
  assert.equal(await viewer.$eval("#settings", (e) => e.hidden), true);
});

test("an admin of A gets its settings and people, but cannot delete it or read the audit log", async () => {
  assert.deepEqual(await siteList(admin), [A]);
  assert.equal(await admin.$eval("#add-site", (e) => e.hidden), true);
  await admin.goto(`${veil.url}/site/${A}`);
  await admin.waitForSelector("#settings-link:not([hidden])");
  await admin.click("#settings-link");
  await admin.waitForSelector("#general-form");
  for (const id of ["goal-form", "funnel-form", "keys-form", "ingest_keys-form", "shared_links-form", "invite-person"]) {
    assert.ok(await admin.$("#" + id), id);
  }
  assert.equal(await admin.$("#delete-site"), null);
  assert.equal(await admin.$("#audit"), null);
  // An admin may invite viewers and admins, not owners.
  assert.deepEqual(await admin.$$eval('#invite-person select[name="role"] option', (o) => o.map((x) => x.value)), ["viewer", "admin"]);
});

test("the owner reads the audit log, may delete a site, and withdraws an invitation", async () => {
  await owner.goto(`${veil.url}/site/${A}/settings`);
  await owner.waitForSelector("#audit tbody tr[data-action]");
  const rows = await owner.$$eval("#audit tbody tr", (trs) => trs.map((tr) => [...tr.cells].map((c) => c.textContent)));
  assert.ok(rows.some((r) => r[1] === OWNER.email && /invit/.test(r[2])), JSON.stringify(rows));
  assert.ok(await owner.$("#delete-site"));
  await screenshot(owner, "accounts-owner-settings");
  // The page's writes pass because it sends the session's CSRF token: the same write from the
  // same logged-in page without it is refused.
  const bare = await owner.evaluate(async (site) => {
    const r = await fetch(`/api/v1/sites/${site}/people`, { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email: "csrf@example.org", role: "viewer" }) });
    return [r.status, (await r.json()).error];
  }, A);
  assert.equal(bare[0], 403);
  assert.match(bare[1], /X-Veil-CSRF/);
  const link = await invite({ email: "later@example.org" }, "viewer");
  assert.ok(link);
  await owner.click('#invitation-list li[data-email="later@example.org"] button');
  await owner.waitForSelector('#invitation-list li[data-email="later@example.org"]', { state: "detached" });
  // The withdrawn link opens nothing.
  const p = await fresh();
  await p.goto(link);
  await p.waitForSelector("#invite-offer.form-error");
});

test("a role change and a removal take effect on the person's next load", async () => {
  await owner.goto(`${veil.url}/site/${A}/settings`);
  const li = `#people-list li[data-email="${ADMIN.email}"]`;
  await owner.waitForSelector(li);
  await owner.selectOption(`${li} select`, "viewer");
  await owner.click(`${li} button:text("Change role")`);
  await owner.waitForSelector(`${li} .who:text("viewer")`);
  await admin.goto(`${veil.url}/site/${A}`);
  await settled(admin);
  assert.equal(await admin.$eval("#settings-link", (e) => e.hidden), true, "now a viewer");
  await owner.click(`${li} button:text("Remove")`);
  await owner.waitForSelector(li, { state: "detached" });
  // Removing a person from a site ends their sessions: the next load asks for a login.
  await admin.goto(veil.url + "/");
  await admin.waitForSelector("#login:not([hidden])");
});

test("a second factor: set up with the app's code, 10 recovery codes shown once, then needed at login", async () => {
  await owner.goto(veil.url + "/account");
  await owner.waitForSelector("#totp-setup");
  assert.equal(await owner.textContent("#account-email"), OWNER.email);
  await owner.click("#totp-setup");
  const secret = await (await owner.waitForSelector("#totp-secret")).textContent();
  assert.match(await owner.textContent("#totp-uri"), /^otpauth:\/\/totp\//);
  await owner.fill('#totp-enable input[name="code"]', totp(secret));
  await owner.click('#totp-enable button[type="submit"]');
  await owner.waitForSelector("#recovery-codes li");
  const codes = await owner.$$eval("#recovery-codes li", (l) => l.map((x) => x.textContent));
  assert.equal(codes.length, 10);
  await screenshot(owner, "accounts-second-factor");
  await owner.click("#logout");
  await owner.waitForSelector("#login:not([hidden])");
  // The password alone now asks for the code; a recovery code opens (the app's code of this
  // 30-second step may be the one just used to turn it on).
  await login(owner, OWNER, codes[0]);
  await owner.goto(veil.url + "/account");
  await owner.waitForSelector("#totp-disable");
  assert.match(await owner.textContent("#totp-state"), /9 recovery codes left/);
});

test("changing the password ends the other sessions; log out everywhere ends this one too", async () => {
  const second = await fresh();
  await login(second, VIEWER);
  await viewer.goto(veil.url + "/account");
  await viewer.waitForSelector("#password-change");
  const NEW = "viewer-password-2";
  await viewer.fill('#password-change input[name="current"]', VIEWER.password);
  await viewer.fill('#password-change input[name="new"]', NEW);
  await viewer.click('#password-change button[type="submit"]');
  await viewer.waitForFunction(() => /Password changed/.test(document.getElementById("status").textContent));
  VIEWER.password = NEW;
  await second.goto(veil.url + "/");
  await second.waitForSelector("#login:not([hidden])");
  await viewer.goto(veil.url + "/");
  assert.deepEqual(await siteList(viewer), [A], "this session outlives the change");
  await login(second, VIEWER);
  await viewer.goto(veil.url + "/account");
  await viewer.click("#logout-everywhere");
  await viewer.waitForSelector("#login:not([hidden])");
  await second.goto(veil.url + "/");
  await second.waitForSelector("#login:not([hidden])");
});

test("five wrong passwords lock the account, and the page says for how long", async () => {
  const page = viewer;
  await page.goto(veil.url + "/login");
  await page.waitForSelector("#login:not([hidden])");
  const attempt = async (password) => {
    await page.fill("#login-email", VIEWER.email);
    await page.fill("#login-password", password);
    const answer = page.waitForResponse((r) => r.url().endsWith("/api/v1/auth/login"));
    await page.click("#account-form button[type=submit]");
    const status = (await answer).status();
    await page.waitForFunction(() => !document.getElementById("login-error").hidden);
    return [status, await page.textContent("#login-error")];
  };
  for (let i = 1; i <= 4; i++) {
    const [code, msg] = await attempt("wrong-password-" + i);
    assert.equal(code, 401);
    assert.match(msg, /wrong e-mail address or password/i);
  }
  const [code, msg] = await attempt("wrong-password-5");
  assert.equal(code, 429);
  assert.match(msg, /locked for 15 more minute/);
  await screenshot(page, "accounts-locked");
  // Locked: the right password is refused too, with the same words.
  const [code2, msg2] = await attempt(VIEWER.password);
  assert.equal(code2, 429);
  assert.match(msg2, /locked for 1[45] more minute/);
  assert.equal(await page.$eval("#sites", (e) => e.hidden), true);
});

test("no page raised a script error", () => {
  const errors = pages.flatMap((p) => p.problems.filter((x) => x.startsWith("pageerror") || x.startsWith("dialog")));
  assert.deepEqual(errors, []);
});
