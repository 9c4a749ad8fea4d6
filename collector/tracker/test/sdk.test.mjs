// The published SDKs, unchanged, pointed at a running Veil: Plausible's trackers
// (@plausible-analytics/tracker and the older plausible-tracker) in headless Chromium, and
// @umami/node and @aptabase/web from Node. What each sent is read back from ClickHouse.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startVeil, pageServer, launch, rows } from "../../../testing/browser/harness.mjs";
import { Umami } from "@umami/node";
import { init as aptabaseInit, trackEvent } from "@aptabase/web";

const UMAMI_ID = "1f2e3d4c-5b6a-4798-8877-665544332211";
const APP_KEY = "A-SH-4242424242";
const DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36";

let veil, pages, chrome;

before(async () => {
  veil = await startVeil(["--site", "example.com", "--min-visitors", "2", "--site", "sdk.example", "--site", "app.example",
    "--site-alias", `${UMAMI_ID}=sdk.example`, "--site-alias", `${APP_KEY}=app.example`]);
  const pa = `<!doctype html><html><body><button id="go">go</button><script type="module">
    import { init, track } from "/node_modules/@plausible-analytics/tracker/plausible.js";
    init({ domain: "sdk.example", endpoint: "${veil.url}/api/event", captureOnLocalhost: true });
    document.getElementById("go").onclick = () => {
      track("Signup", { props: { plan: "pro" } });
      track("Purchase", { revenue: { currency: "EUR", amount: 19.99 }, interactive: false });
    };
    window.ready = true;
  </script></body></html>`;
  const legacy = `<!doctype html><html><body><script type="module">
    import Plausible from "/node_modules/plausible-tracker/build/module/index.js";
    const p = Plausible({ domain: "sdk.example", apiHost: "${veil.url}", trackLocalhost: true });
    p.trackPageview();
    p.trackEvent("Legacy Event", { props: { via: "plausible-tracker" } });
    window.ready = true;
  </script></body></html>`;
  pages = await pageServer({ "/pa/landing": pa, "/legacy/page": legacy },
    { packageDir: fileURLToPath(new URL("..", import.meta.url)) });
  chrome = await launch(chromium);
});

after(async () => {
  await chrome?.close();
  await pages?.close();
  await veil?.stop();
});

test("@plausible-analytics/tracker: pageview, custom event with props, revenue, non-interactive event, engagement", async () => {
  const ctx = await chrome.newContext({ userAgent: DESKTOP });
  await ctx.clock.install(); // the page's time runs, and jumps when told: no real-time wait
  const p = await ctx.newPage();
  await p.goto(pages.origin + "/pa/landing?utm_campaign=launch");
  await p.waitForFunction(() => window.ready === true);
  await p.click("#go");
  await p.clock.fastForward(3500); // the tracker sends engagement after 3 s of visible time or on hide
  await p.close({ runBeforeUnload: true }); // pagehide: the engagement event

  // The browser stays up until the rows are stored: closing it at once can cancel the
  // engagement request still in flight (as in veil.test.mjs).
  const got = await rows(veil, "SELECT name, pathname, utm_campaign, engagement_ms, scroll_depth, prop_keys, prop_values, revenue_micros, revenue_currency, interactive FROM veil.events WHERE site = 'sdk.example' AND pathname = '/pa/landing'", 4);
  await ctx.close();
  const by = (n) => got.filter((r) => r.name === n);
  assert.equal(by("pageview").length, 1, JSON.stringify(got));
  assert.equal(by("pageview")[0].utm_campaign, "launch");
  assert.deepEqual([by("Signup")[0].prop_keys, by("Signup")[0].prop_values], [["plan"], ["pro"]]);
  const purchase = by("Purchase")[0];
  assert.deepEqual([Number(purchase.revenue_micros), purchase.revenue_currency, purchase.interactive], [19990000, "EUR", 0]);
  assert.equal(by("Signup")[0].interactive, 1);
  assert.ok(by("engagement").some((r) => r.engagement_ms >= 3000), JSON.stringify(got));
});

test("plausible-tracker (legacy package): pageview and event", async () => {
  const ctx = await chrome.newContext({ userAgent: DESKTOP });
  const p = await ctx.newPage();
  await p.goto(pages.origin + "/legacy/page");
  await p.waitForFunction(() => window.ready === true);
  // The context stays open until both events are stored: closing it could cancel a request.
  const got = await rows(veil, "SELECT name, prop_values FROM veil.events WHERE pathname = '/legacy/page'", 2);
  await ctx.close();
  assert.deepEqual(got.map((r) => r.name).sort(), ["Legacy Event", "pageview"]);
  assert.deepEqual(got.find((r) => r.name === "Legacy Event").prop_values, ["plausible-tracker"]);
});

test("@umami/node: pageview, event with data; identify stores nothing", async () => {
  const umami = new Umami();
  umami.init({ websiteId: UMAMI_ID, hostUrl: veil.url, userAgent: DESKTOP });
  for (const r of [
    await umami.track({ url: "/umami/home", hostname: "sdk.example", language: "fr-FR", screen: "390x844" }),
    await umami.track({ url: "/umami/cart", hostname: "sdk.example", name: "checkout", data: { items: 3 } }),
    await umami.identify({ email: "jane@example.org", userId: "u-42" }),
  ]) assert.equal(r.status, 200, await r.text());
  const got = await rows(veil, "SELECT name, pathname, locale, screen_class, prop_keys, prop_values FROM veil.events WHERE pathname LIKE '/umami/%' ORDER BY pathname", 2);
  assert.deepEqual(got.map((r) => [r.name, r.pathname]), [["checkout", "/umami/cart"], ["pageview", "/umami/home"]]);
  assert.equal(got[1].locale, "fr-FR");
  assert.equal(got[1].screen_class, "mobile");
  assert.deepEqual(got[0].prop_values, ["3"]);
  const all = JSON.stringify(await rows(veil, "SELECT * FROM veil.events", 0));
  assert.ok(!all.includes("jane@example.org") && !all.includes("u-42"), "identify data never stored");
});

test("@aptabase/web: events with system props from Node", async () => {
  aptabaseInit(APP_KEY, { host: veil.url, appVersion: "3.1.4" });
  await trackEvent("app_started", { cold: true });
  await trackEvent("screen_view", { name: "settings" });
  const got = await rows(veil, "SELECT name, device, app_version, sdk_version, prop_keys, prop_values FROM veil.events WHERE site = 'app.example' ORDER BY name", 2);
  assert.deepEqual(got.map((r) => r.name), ["app_started", "screen_view"]);
  assert.ok(got.every((r) => r.device === "app" && r.app_version === "3.1.4" && r.sdk_version.startsWith("aptabase-web@")), JSON.stringify(got));
  assert.deepEqual(got[1].prop_values, ["settings"]);
});
