// The weekly report by e-mail, from the dashboard (issue 20 point 3), against a real SMTP
// server (aiosmtpd, testing/smtp/server.py, installed by scripts/install-deps.sh --test):
// an invitation is e-mailed and its link, followed in Chromium, makes the account; on the
// site's dashboard that person ticks "E-mail me a weekly report", the operator sends the week's
// digest and it arrives addressed to them, with its chart of visitors per day inside (the
// inline PNG its HTML shows by cid:, loaded in Chromium at 560×160); unticked, the next one
// does not. The monthly report
// and a traffic-spike alert are set the same way: the month's digest arrives when sent, and a
// spike of current visitors at the threshold e-mails the reader by itself (the scheduler checks
// every second here, --mail-check-secs 1).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as harness from "../../testing/browser/harness.mjs";
import { browser, open, api, send, settled, waitFor, SITE, ADMIN } from "./fixture.mjs";

const READER = { email: "reader@example.org", password: "reader-password-1" };
let veil, chrome, smtp, inbox;

/** Every message the SMTP server received so far (its JSON files, in order). */
function messages() {
  return readdirSync(inbox).filter((f) => f.endsWith(".json")).sort()
    .map((f) => JSON.parse(readFileSync(join(inbox, f), "utf8")));
}
const text = (m) => (m.parts.find((p) => p.type === "text/plain") || { body: "" }).body;

before(async () => {
  inbox = mkdtempSync(join(tmpdir(), "veil-smtp-"));
  const port = await harness.freePort();
  const python = process.env.VEIL_TEST_SMTPD_PYTHON || join(harness.root, "var/smtp-venv/bin/python");
  smtp = spawn(python, [join(harness.root, "testing/smtp/server.py"), String(port), inbox], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  smtp.stdout.on("data", (b) => { out += b; });
  smtp.stderr.on("data", (b) => { out += b; });
  await waitFor(() => out, (o) => o.includes("ready") || smtp.exitCode !== null, { ms: 30_000, what: () => "SMTP server: " + out });
  assert.ok(out.includes("ready"), out);
  veil = await harness.startVeil(["--site", SITE, "--api-token", ADMIN, "--privacy", "exact", "--min-visitors", "2",
    "--max-event-age", "30d", "--rate-limit-ip", "0", "--metrics-listen", "127.0.0.1:0",
    "--smtp-url", `smtp://127.0.0.1:${port}`, "--smtp-from", "veil@veil.test", "--mail-check-secs", "1"], { publicUrl: true });
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await veil?.stop();
  smtp?.kill();
  if (inbox) rmSync(inbox, { recursive: true, force: true });
});

test("an e-mailed invitation makes the account; its weekly report is ticked on the dashboard, arrives by e-mail, and stops when unticked", async () => {
  // Traffic on the Wednesday of the week the digest reports: the last full week (Monday to
  // Sunday, the site in UTC), the one before it until Monday 08:00.
  const now = new Date();
  const monday = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() - (now.getUTCDay() + 6) % 7));
  const early = now.getUTCDay() === 1 && now.getUTCHours() < 8;
  const day = new Date(monday.getTime() - (early ? 14 : 7) * 86_400_000 + 2.5 * 86_400_000).toISOString();
  await send(veil, Array.from({ length: 4 }, (_, i) => ({ site: SITE, name: "pageview", url: `https://${SITE}/welcome`,
    timestamp: day, ip: `198.51.100.${200 + i}`, user_agent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36" })));

  const inv = await api(veil, `/api/v1/sites/${SITE}/people`, { body: { email: READER.email, role: "viewer" } });
  assert.equal(inv.emailed, true, JSON.stringify(inv));
  const mails = await waitFor(messages, (l) => l.some((m) => m.rcpt_tos.includes(READER.email)), { ms: 30_000, what: () => "no invitation e-mail" });
  const invitation = mails.find((m) => m.rcpt_tos.includes(READER.email));
  const link = text(invitation).match(/http:\/\/127\.0\.0\.1:\d+\/invite#token=\S+/);
  assert.ok(link, text(invitation));
  assert.equal(new URL(link[0]).origin, veil.url);

  const page = await open(chrome, { token: null });
  await page.goto(link[0]);
  await page.waitForSelector("#invite-form:not([hidden])");
  await page.fill("#invite-password", READER.password);
  await page.click("#invite-submit");
  await page.waitForSelector("#sites:not([hidden])");
  assert.equal(await page.textContent("#whoami"), READER.email);

  // The dashboard offers the weekly report (the server sends e-mail); ticked, it holds.
  await page.goto(`${veil.url}/site/${SITE}?period=7d`);
  await settled(page);
  await page.waitForSelector("#digest-l:not([hidden])");
  assert.equal(await page.$eval("#digest", (e) => e.checked), false);
  await page.check("#digest");
  await waitFor(() => page.textContent("#status"), (t) => /weekly report by e-mail/.test(t), { what: (t) => "status: " + t });
  await page.reload();
  await page.waitForSelector("#digest-l:not([hidden])");
  assert.equal(await page.$eval("#digest", (e) => e.checked), true);

  // The operator sends last week's digests now: one arrives for the reader, multipart.
  const before = messages().length;
  const sent = await api(veil, `/api/v1/sites/${SITE}/digest/send`, { method: "POST", body: {} });
  assert.equal(sent.sent, 1, JSON.stringify(sent));
  const digest = (await waitFor(messages, (l) => l.length > before, { ms: 30_000, what: () => "no digest e-mail" })).at(-1);
  assert.deepEqual(digest.rcpt_tos, [READER.email]);
  assert.equal(digest.content_type, "multipart/alternative");
  assert.match(text(digest), new RegExp(SITE.replace(/\./g, "\\.")));

  // It carries last week's visitors per day as a chart inside the e-mail: the HTML's cid: names
  // the inline PNG part. Shown as a mail client shows it (the cid: resolved to the part's bytes),
  // the image loads at its stated size, with an alt text that says the numbers.
  assert.deepEqual(digest.structure, ["multipart/alternative", "text/plain", "multipart/related", "text/html", "image/png"]);
  const png = digest.parts.find((p) => p.type === "image/png");
  assert.equal(png.disposition, "inline");
  const cid = png.content_id.replace(/^<|>$/g, "");
  const html = digest.parts.find((p) => p.type === "text/html").body;
  assert.ok(html.includes(`src="cid:${cid}"`), html);
  assert.match(text(digest), /Visitors per day: (\d+, ){6}\d+\r?\nThe week before: (\d+, ){6}\d+\r?\n/);
  const viewer = await open(chrome, { token: null });
  const dataUrl = "data:image/png;base64," + readFileSync(join(inbox, png.file)).toString("base64");
  await viewer.setContent(html.replace(`cid:${cid}`, dataUrl));
  const img = await viewer.waitForFunction(() => {
    const i = document.querySelector("img");
    return i && i.complete && i.naturalWidth > 0 &&
      { natural: [i.naturalWidth, i.naturalHeight], shown: [i.width, i.height], alt: i.alt };
  }, null, { timeout: 10_000 }).then((h) => h.jsonValue());
  assert.deepEqual(img.natural, [1120, 320]);
  assert.deepEqual(img.shown, [560, 160]);
  assert.match(img.alt, /^Visitors per day, (rising|falling|about level|one day): \d+ on \d{4}-\d\d-\d\d, .*highest 4 on /);
  await viewer.close_all();

  // Unticked: the next send has nobody to write to.
  await page.uncheck("#digest");
  await waitFor(() => page.textContent("#status"), (t) => /No more weekly reports/.test(t), { what: (t) => "status: " + t });
  await page.reload();
  await page.waitForSelector("#digest-l:not([hidden])");
  assert.equal(await page.$eval("#digest", (e) => e.checked), false);
  const again = await api(veil, `/api/v1/sites/${SITE}/digest/send`, { method: "POST", body: {} });
  assert.equal(again.sent, 0, JSON.stringify(again));

  // The monthly report: ticked, it holds and the month's digest comes to the reader.
  await page.check("#digest-monthly");
  await waitFor(() => page.textContent("#status"), (t) => /monthly report by e-mail/.test(t), { what: (t) => "status: " + t });
  await page.reload();
  await page.waitForSelector("#digest-monthly-l:not([hidden])");
  assert.equal(await page.$eval("#digest-monthly", (e) => e.checked), true);
  assert.equal(await page.$eval("#digest", (e) => e.checked), false, "the weekly one stays off");
  const n = messages().length;
  const month = await api(veil, `/api/v1/sites/${SITE}/digest/send?period=month`, { method: "POST", body: {} });
  assert.equal(month.sent, 1, JSON.stringify(month));
  const monthly = (await waitFor(messages, (l) => l.length > n, { ms: 30_000, what: () => "no monthly digest" })).at(-1);
  assert.deepEqual(monthly.rcpt_tos, [READER.email]);
  assert.match(monthly.headers.Subject, /your month of /);
  assert.match(text(monthly), /^Veil monthly digest: /);

  // A spike alert from 3 current visitors: set on the dashboard, nothing until they come.
  await page.fill("#digest-spike", "3");
  await page.dispatchEvent("#digest-spike", "change");
  await waitFor(() => page.textContent("#status"), (t) => /when 3 or more visitors/.test(t), { what: (t) => "status: " + t });
  await page.reload();
  await page.waitForSelector("#digest-spike-l:not([hidden])");
  assert.equal(await page.$eval("#digest-spike", (e) => e.value), "3");
  const quiet = messages().length;
  const recent = new Date(Date.now() - 90_000).toISOString();
  await send(veil, Array.from({ length: 3 }, (_, i) => ({ site: SITE, name: "pageview", url: `https://${SITE}/launch`,
    timestamp: recent, ip: `198.51.100.${10 + i}`, user_agent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36" })));
  const spike = (await waitFor(messages, (l) => l.slice(quiet).some((m) => /Traffic spike/.test(m.headers.Subject)),
    { ms: 60_000, what: () => "no spike e-mail" })).slice(quiet).find((m) => /Traffic spike/.test(m.headers.Subject));
  assert.deepEqual(spike.rcpt_tos, [READER.email]);
  assert.equal(spike.headers.Subject, `Traffic spike on ${SITE}: 3 current visitors`);
  assert.match(text(spike), /\/launch: 3 visitors/);
  // The alert's link unsubscribes from the site's e-mails: the dashboard shows every box off.
  const unsub = spike.headers["List-Unsubscribe"].replace(/^<|>$/g, "");
  const r = await fetch(unsub, { method: "POST", headers: { origin: veil.url } });
  assert.equal(r.status, 200, await r.text());
  await page.reload();
  await page.waitForSelector("#digest-spike-l:not([hidden])");
  assert.deepEqual(await page.$$eval("#digest, #digest-monthly", (l) => l.map((e) => e.checked)), [false, false]);
  assert.equal(await page.$eval("#digest-spike", (e) => e.value), "");
  assert.deepEqual(page.problems, []);
  await page.close_all();
});
