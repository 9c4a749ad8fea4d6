// The dashboard suite's fixture, on the shared browser-test harness
// (testing/browser/harness.mjs): a real `veil up` with an admin token, a known dataset sent
// through the collector's real /v1/events endpoint (an "ip" and "user_agent" per event, so
// visitors are distinct), an API client, pages in headless Debian Chromium (playwright-core),
// and screenshots under target/screenshots/.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import * as harness from "../../testing/browser/harness.mjs";
import { sql, waitFor, root } from "../../testing/browser/harness.mjs";

export { sql, waitFor };

export const ADMIN = "admin-" + "x".repeat(32);
export const SITE = "example.com";
/** The Aptabase app key naming the test site (`--site-alias`). */
export const APP_KEY = "A-SH-DASHTEST";
export const shots = join(root, "target/screenshots");

/**
 * `veil up` with k = `k`, an admin token, old timestamps accepted and no per-IP rate limit;
 * `args` are added, `log` is its VEIL_LOG filter. Its metrics listener takes a free port: on the
 * default one (127.0.0.1:9464) a second Veil (a test's own, or another suite's) would not start.
 */
export function startVeil({ k = 5, args = [], log = "warn" } = {}) {
  return harness.startVeil(["--site", SITE, "--min-visitors", String(k), "--max-event-age", "30d", "--rate-limit-ip", "0",
    "--api-token", ADMIN, "--site-alias", `${APP_KEY}=${SITE}`, "--metrics-listen", "127.0.0.1:0", ...args], { env: { VEIL_LOG: log } });
}

/** Waits until ClickHouse holds at least `n` events of the site. */
export async function waitForEvents(veil, n, ms = 30_000) {
  const count = async () => Number((await sql(veil, `SELECT count() AS c FROM veil.events WHERE site = '${SITE}'`))[0].c);
  return waitFor(count, (c) => c >= n, { ms, every: 200, what: (c) => `only ${c} of ${n} events stored` });
}

/** An API call as the admin (or with `token`); JSON in, JSON (or text for CSV) out. */
export async function api(veil, path, { body, token = ADMIN, method, headers = {}, raw = false } = {}) {
  const res = await fetch(veil.url + path, {
    method: method || (body !== undefined ? "POST" : "GET"),
    headers: { Authorization: "Bearer " + token, "Content-Type": "application/json", ...headers },
    body: body !== undefined ? JSON.stringify(body) : undefined,
  });
  if (raw) return res;
  const text = await res.text();
  if (!res.ok) throw new Error(`${path} → ${res.status}: ${text}`);
  try { return JSON.parse(text); } catch { return text; }
}

/** POST /api/v2/query for the test site. */
export function query(veil, q, token) {
  return api(veil, "/api/v2/query", { body: { site_id: SITE, date_range: "7d", ...q }, token });
}

export const UA = {
  chrome: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
  firefox: "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
  safari: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15",
};

/** The XSS corpus: each string is sent as a path, a referrer path, a UTM value, a prop value
 * and an event name. None may ever run: each would set `window.__xss`. */
export const XSS = [
  "<img src=x onerror=\"window.__xss='img'\">",
  "<script>window.__xss='script'</script>",
  "\"><svg onload=\"window.__xss='svg'\">",
  "javascript:window.__xss='js'",
];

function iso(msAgo) { return new Date(Date.now() - msAgo).toISOString(); }
const MIN = 60_000, HOUR = 60 * MIN, DAY = 24 * HOUR;

/** Sends events through /v1/events; resolves to the count accepted. */
export async function send(veil, events) {
  const res = await fetch(veil.url + "/v1/events", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(events),
  });
  const r = await res.json();
  if (res.status !== 202 || r.rejected?.length) throw new Error("seed rejected: " + JSON.stringify(r));
  return r.accepted;
}

/**
 * The known dataset (this period = the last 7 days, which end yesterday as Plausible's do; the
 * previous period before it). "A day ago" is 24 hours earlier still, so always in the period:
 * - 30 visitors a day and 3 hours ago: all see `/`; 20 go on to `/pricing` (a second pageview a minute
 *   later); 10 send `signup` {plan}; referrers Google / Hacker News / none by thirds; Chrome and
 *   Firefox by halves; visitors 20–29 land with utm_source=newsletter, utm_campaign=spring;
 * - 6 visitors each on their own page `/rare-N` (under k: folded into one "(other…)" row);
 * - 5 visitors sending the XSS corpus as paths, referrers, UTM values, props and event names;
 * - 12 visitors 9 days ago on `/` (the previous period, for comparisons);
 * - 6 visitors today on `/today` (half-way between UTC midnight and now: the "Today" view);
 * - 12 app installs a day and 2 hours ago through Aptabase's /api/v0/events: versions 1.2.0 and 1.3.0 by halves,
 *   launch and latency timings, one crash.
 */
export async function seed(veil) {
  const ev = [];
  const site = SITE;
  for (let i = 0; i < 30; i++) {
    const ip = `198.51.100.${i + 10}`;
    const ua = i % 2 ? UA.firefox : UA.chrome;
    const referrer = i % 3 === 0 ? "https://www.google.com/search" : i % 3 === 1 ? "https://news.ycombinator.com/item" : undefined;
    const utm = i >= 20 ? "?utm_source=newsletter&utm_campaign=spring" : "";
    const t0 = DAY + 3 * HOUR - i * 1000;
    ev.push({ site, name: "pageview", url: `https://${site}/${utm}`, referrer, timestamp: iso(t0), ip, user_agent: ua });
    if (i < 20) ev.push({ site, name: "pageview", url: `https://${site}/pricing`, referrer, timestamp: iso(t0 - MIN), ip, user_agent: ua });
    if (i < 10) ev.push({ site, name: "signup", url: `https://${site}/pricing`, props: { plan: i % 2 ? "pro" : "free" }, timestamp: iso(t0 - 90_000), ip, user_agent: ua });
  }
  for (let i = 0; i < 6; i++) {
    ev.push({ site, name: "pageview", url: `https://${site}/rare-${i + 1}`, timestamp: iso(DAY + 2 * HOUR + i * 1000),
      ip: `198.51.100.${100 + i}`, user_agent: UA.safari });
  }
  for (let i = 0; i < 5; i++) {
    const ip = `198.51.100.${150 + i}`;
    XSS.forEach((x, j) => {
      const t = iso(DAY + 90 * MIN - j * 1000 - i * 10);
      ev.push({ site, name: "pageview", url: `https://${site}/${encodeURIComponent(x)}?utm_campaign=${encodeURIComponent(x)}`,
        referrer: `https://evil.example/${encodeURIComponent(x)}`, timestamp: t, ip, user_agent: UA.chrome });
      ev.push({ site, name: x, url: `https://${site}/x`, props: { x }, timestamp: t, ip, user_agent: UA.chrome });
    });
  }
  const todayAgo = Math.floor((Date.now() % DAY) / 2);
  for (let i = 0; i < 6; i++) {
    ev.push({ site, name: "pageview", url: `https://${site}/today`, timestamp: iso(todayAgo),
      ip: `198.51.100.${180 + i}`, user_agent: UA.firefox });
  }
  for (let i = 0; i < 12; i++) {
    ev.push({ site, name: "pageview", url: `https://${site}/`, timestamp: iso(9 * DAY + i * 1000),
      ip: `198.51.100.${200 + i}`, user_agent: UA.chrome });
  }
  await send(veil, ev);
  for (let i = 0; i < 12; i++) {
    const res = await fetch(veil.url + "/api/v0/events", {
      method: "POST",
      headers: { "Content-Type": "application/json", "App-Key": APP_KEY, "X-Forwarded-For": `203.0.113.${i + 1}`,
        "User-Agent": "MyApp/1.0 CFNetwork/1490 Darwin/23.2.0" },
      body: JSON.stringify([0, 1].map((j) => ({
        timestamp: iso(DAY + 2 * HOUR + i * 1000 - j * 30_000), sessionId: String(1_700_000_000_000 + i), eventName: j ? "screen_view" : "app_started",
        systemProps: { locale: "en-US", osName: "iOS", osVersion: "17.1", appVersion: i % 2 ? "1.3.0" : "1.2.0", isDebug: false },
        props: j ? { latency_ms: 100 + i * 10, ...(i === 0 ? { crash: 1 } : {}) } : { launch_ms: 500 + i * 50 },
      }))),
    });
    if (!res.ok) throw new Error("aptabase seed: " + res.status + " " + (await res.text()));
  }
  await waitForEvents(veil, ev.length + 24);
  return ev.length + 24;
}

/** Headless Chromium. */
export function browser() {
  return harness.launch(chromium);
}

/**
 * A new page; `token` (if given) is put in sessionStorage before any script runs, as the login
 * form would. Console errors, page errors and dialogs are collected in `page.problems`.
 */
export async function open(chrome, { token = ADMIN, viewport, colorScheme, acceptDownloads = true, touch = false } = {}) {
  const ctx = await chrome.newContext({ viewport: viewport || { width: 1280, height: 900 }, colorScheme, acceptDownloads,
    ...(touch ? { hasTouch: true, isMobile: true } : {}) });
  if (token) await ctx.addInitScript((t) => { sessionStorage.setItem("veil-token", t); }, token);
  const page = await ctx.newPage();
  page.problems = [];
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") page.problems.push(m.type() + ": " + m.text()); });
  page.on("pageerror", (e) => page.problems.push("pageerror: " + e.message));
  page.on("dialog", (d) => { page.problems.push("dialog: " + d.message()); d.dismiss(); });
  page.close_all = () => ctx.close();
  return page;
}

/** Saves a full-page screenshot as target/screenshots/NAME.png. */
export async function screenshot(page, name) {
  mkdirSync(shots, { recursive: true });
  await page.screenshot({ path: join(shots, name + ".png"), fullPage: true });
}

/** Waits until the dashboard has drawn its top stats and every panel's table (or message). */
export async function settled(page) {
  await page.waitForFunction(() => {
    const stats = document.querySelectorAll("#stats .stat, #stats .error");
    const bodies = [...document.querySelectorAll(".panel-body")];
    const chart = document.querySelector("#chart-data table, #chart .error");
    return stats.length > 0 && chart && bodies.length > 0 &&
      bodies.every((b) => !b.textContent.includes("Loading…"));
  }, null, { timeout: 20_000 });
}
