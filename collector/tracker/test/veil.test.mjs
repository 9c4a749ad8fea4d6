// veil.js in headless Chromium against a running Veil: pageview, SPA navigation, custom event,
// outbound click, file download, time-on-page ping, screen/processor class, and silence under
// GPC, DNT and the opt-out switch. Also the /opt-out page and the tracker's size budget.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startVeil, pageServer, launch, rows, sql, root } from "../../../testing/browser/harness.mjs";

let veil, pages, chrome;

const page = (body) => (veilUrl) => `<!doctype html><html><head><title>t</title>
<script defer src="${veilUrl}/js/veil.js" data-domain="example.com"></script></head>
<body style="height:3000px">${body}</body></html>`;

before(async () => {
  veil = await startVeil(["--site", "example.com", "--min-visitors", "2"]);
  const html = page(`
    <a id="out" href="https://external.example/path?secret=1">out</a>
    <a id="dl" href="/files/report.pdf">pdf</a>
    <button id="signup" onclick="veil('signup', {plan: 'pro'})">signup</button>
    <button id="spa" onclick="history.pushState({}, '', '/spa/2')">next</button>
    <script>document.addEventListener('click', e => { if (e.target.tagName === 'A') e.preventDefault(); }, true);</script>`)(veil.url);
  pages = await pageServer({ "*": html });
  chrome = await launch(chromium);
});

after(async () => {
  await chrome?.close();
  await pages?.close();
  await veil?.stop();
});

// Headless Chromium announces itself as HeadlessChrome, which Veil drops as a bot: present a
// desktop Chrome user agent instead.
const DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

test("veil.js records pageviews, SPA navigation, events, outbound links, downloads and time on page", async () => {
  const ctx = await chrome.newContext({ userAgent: DESKTOP });
  await ctx.clock.install(); // the page's time runs, and jumps when told: no real-time wait
  const p = await ctx.newPage();
  await p.goto(pages.origin + "/shop?email=a@b.example&utm_source=newsletter");
  await p.waitForFunction(() => typeof window.veil === "function");
  await p.click("#signup");
  await p.click("#out");
  await p.click("#dl");
  await p.click("#spa");
  await p.clock.fastForward(1200); // visible time on /spa/2
  await p.close({ runBeforeUnload: true }); // pagehide: the engagement beacon

  // The browser stays up until the beacon is stored: closing it at once can cancel the
  // request still in flight (seen once in a CI rehearsal: no engagement row after 15 s).
  const got = await rows(veil, "SELECT name, pathname, utm_source, engagement_ms, screen_class, processor_class, prop_keys, prop_values FROM veil.events WHERE site = 'example.com' ORDER BY timestamp", 7);
  await ctx.close();
  const by = (name, path) => got.filter((r) => r.name === name && (!path || r.pathname === path));
  assert.equal(by("pageview", "/shop").length, 1, JSON.stringify(got));
  assert.equal(by("pageview", "/shop")[0].utm_source, "newsletter");
  assert.equal(by("pageview", "/spa/2").length, 1, "SPA navigation is a pageview");
  const signup = by("signup")[0];
  assert.deepEqual([signup.prop_keys, signup.prop_values], [["plan"], ["pro"]]);
  assert.deepEqual(by("Outbound Link: Click")[0].prop_values, ["https://external.example/path"]);
  assert.deepEqual(by("File Download")[0].prop_values, ["/files/report.pdf"]);
  const engaged = by("engagement", "/spa/2");
  assert.ok(engaged.length >= 1 && engaged[0].engagement_ms >= 1000, "time on page: " + JSON.stringify(engaged));
  assert.ok(got.every((r) => ["mobile", "tablet", "laptop", "desktop"].includes(r.screen_class)));
  assert.ok(got.every((r) => r.processor_class !== ""));
  assert.ok(!JSON.stringify(got).includes("a@b.example"), "query strings never stored");
});

test("an iPad in desktop mode (a Mac user agent with a touch screen) is counted as an iPad", async () => {
  const MAC_SAFARI = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15";
  const ctx = await chrome.newContext({ userAgent: MAC_SAFARI });
  await ctx.addInitScript(() => Object.defineProperty(Navigator.prototype, "maxTouchPoints", { get: () => 5 }));
  const p = await ctx.newPage();
  await p.goto(pages.origin + "/ipad-desktop-mode");
  await p.waitForFunction(() => typeof window.veil === "function");
  // The context stays open until the pageview is stored: closing it could cancel the request.
  const got = await rows(veil, "SELECT os, device FROM veil.events WHERE pathname = '/ipad-desktop-mode' AND name = 'pageview'", 1);
  await ctx.close();
  assert.deepEqual(got, [{ os: "iPadOS", device: "tablet" }]);
});

for (const [label, init] of [
  ["Global Privacy Control", () => Object.defineProperty(Navigator.prototype, "globalPrivacyControl", { get: () => true })],
  ["Do Not Track", () => Object.defineProperty(Navigator.prototype, "doNotTrack", { get: () => "1" })],
  ["the opt-out switch", () => localStorage.setItem("veil_ignore", "true")],
]) {
  test(`veil.js sends nothing under ${label}`, async () => {
    const ctx = await chrome.newContext({ userAgent: DESKTOP });
    await ctx.addInitScript(init);
    const p = await ctx.newPage();
    const sent = [];
    p.on("request", (r) => { if (r.url().includes("/api/event")) sent.push(r.url()); });
    const path = "/silent-" + label.replace(/\W+/g, "-");
    await p.goto(pages.origin + path);
    await p.waitForFunction(() => typeof window.veil === "function");
    await p.click("#signup");
    // A close with runBeforeUnload returns at once: the page's pagehide handlers (and any
    // request they made) have run only when it is closed.
    const closed = p.waitForEvent("close");
    await p.close({ runBeforeUnload: true });
    await closed;
    await ctx.close();
    assert.deepEqual(sent, []);
    const stored = await sql(veil, `SELECT count() AS n FROM veil.events WHERE pathname = '${path}'`);
    assert.equal(Number(stored[0].n), 0);
  });
}

test("the /opt-out page explains without JavaScript and toggles the switch with it", async () => {
  const res = await fetch(veil.url + "/opt-out");
  assert.equal(res.status, 200);
  const html = await res.text();
  assert.match(html, /Global Privacy Control/);
  assert.match(res.headers.get("content-security-policy"), /script-src 'self'/);
  const ctx = await chrome.newContext();
  const p = await ctx.newPage();
  await p.goto(veil.url + "/opt-out");
  await p.click("#toggle");
  assert.equal(await p.evaluate(() => localStorage.getItem("veil_ignore")), "true");
  assert.match(await p.textContent("#state"), /opted out/);
  await p.click("#toggle");
  assert.equal(await p.evaluate(() => localStorage.getItem("veil_ignore")), null);
  await ctx.close();
});

test("veil.js is under 1.5 KB gzipped, cached with an ETag, and veil.min.js is built from veil.js", async () => {
  const res = await fetch(veil.url + "/js/veil.js");
  assert.equal(res.status, 200);
  assert.match(res.headers.get("cache-control"), /max-age=86400/);
  const etag = res.headers.get("etag");
  const body = Buffer.from(await res.arrayBuffer());
  assert.ok(gzipSync(body, { level: 9 }).length < 1536, `gzipped size ${gzipSync(body).length}`);
  const again = await fetch(veil.url + "/js/veil.js", { headers: { "if-none-match": etag } });
  assert.equal(again.status, 304);
  const dir = join(root, "collector/tracker");
  const built = execFileSync(join(dir, "node_modules/.bin/terser"),
    ["veil.js", "--compress", "passes=2", "--mangle", "--ecma", "2017", "--comments", "false"], { cwd: dir });
  assert.equal(built.toString().trim(), readFileSync(join(dir, "veil.min.js"), "utf8").trim(),
    "veil.min.js is stale: run `make tracker`");
});
