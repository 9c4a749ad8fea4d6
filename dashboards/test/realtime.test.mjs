// The Realtime view in headless Chromium against a real `veil up --privacy exact` (k = 2):
// "N current visitors" at the top of every view, the per-minute chart of the last 30 whole
// minutes (one point a minute, 0 for a minute of nobody, "—" only for a minute of fewer than k
// visitors), the usual panels over the same 30 minutes, and a refresh that redraws them in
// place with focus kept. Events are sent through the collector with timestamps a minute and a
// half, 20 and 25 minutes back, so every number is known; the test decides by polling with a
// deadline, never after a fixed sleep.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startVeil, browser, open, screenshot, api, send, waitFor, waitForEvents, UA, SITE } from "./fixture.mjs";

let veil, chrome, sentAt;
const MIN = 60_000;
const minuteLabel = (ms) => new Date(ms - (ms % MIN)).toISOString().replace("T", " ").slice(0, 19);

before(async () => {
  veil = await startVeil({ k: 2, args: ["--privacy", "exact"] });
  sentAt = Date.now();
  const at = (ago) => new Date(sentAt - ago).toISOString();
  const ev = [];
  // 24 visitors now (90 s ago: inside the last 5 whole minutes for 3.5 minutes), two on each of
  // twelve pages; 3 twenty minutes ago; 1 alone twenty-five minutes ago (under k).
  for (let i = 0; i < 24; i++) {
    ev.push({ site: SITE, name: "pageview", url: `https://${SITE}/rt-${(i % 12) + 1}`, timestamp: at(90_000),
      ip: `198.51.100.${i + 1}`, user_agent: UA.chrome });
  }
  for (let i = 0; i < 3; i++) {
    ev.push({ site: SITE, name: "pageview", url: `https://${SITE}/older`, timestamp: at(20 * MIN),
      ip: `198.51.100.${100 + i}`, user_agent: UA.firefox });
  }
  ev.push({ site: SITE, name: "pageview", url: `https://${SITE}/lone`, timestamp: at(25 * MIN), ip: "198.51.100.200", user_agent: UA.safari });
  await send(veil, ev);
  await waitForEvents(veil, ev.length);
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await veil?.stop();
});

const dash = (qs = "") => `${veil.url}/site/${SITE}${qs ? "?" + qs : ""}`;

test("realtime: current visitors, 30 points a minute, the last 30 minutes' panels, and a refresh keeps focus", async () => {
  assert.ok(Date.now() - sentAt < 3 * MIN, "the data was sent more than 3 minutes ago: its minute may have left the 5-minute window");
  const page = await open(chrome);
  // Every 2 s (the URL's `refresh`; 30 s by default).
  await page.goto(dash("view=realtime&refresh=2"));
  await page.waitForSelector("#rt-chart[data-points] #rt-chart-data tbody tr", { state: "attached" });
  await page.waitForSelector("#rt-visitors[data-value]");

  // Current visitors: the 24 of a minute and a half ago, the same as the API's number, in the
  // view and beside the site's name.
  const cur = await api(veil, `/api/v1/sites/${SITE}/realtime?only=visitors_5m`);
  assert.equal(cur.visitors_5m, 24, JSON.stringify(cur));
  assert.equal(await page.$eval("#rt-visitors", (e) => e.dataset.value), "24");
  await page.waitForFunction(() => document.querySelector("#current")?.dataset.value === "24");
  assert.equal(await page.$eval("#current", (e) => e.textContent.trim()), "24 current visitors");

  // The chart: one point a minute for the 30 whole minutes before the current one.
  const chart = await page.evaluate(() => ({
    points: document.querySelector("#rt-chart").dataset.points,
    canvas: !!document.querySelector("#rt-chart canvas"),
    rows: [...document.querySelectorAll("#rt-chart-data tbody tr")].map((tr) => ({
      time: tr.dataset.time, cells: [...tr.querySelectorAll("td")].map((td) => ({ v: td.dataset.value, text: td.textContent, title: td.title })),
    })),
  }));
  assert.equal(chart.points, "30");
  assert.ok(chart.canvas, "uPlot drew the chart");
  assert.equal(chart.rows.length, 30);
  const now = minuteLabel(sentAt - 90_000), twenty = minuteLabel(sentAt - 20 * MIN), lone = minuteLabel(sentAt - 25 * MIN);
  const row = (t) => chart.rows.find((r) => r.time === t);
  assert.deepEqual(row(now)?.cells.map((c) => c.v), ["24", "24"], JSON.stringify(chart.rows));
  assert.deepEqual(row(twenty)?.cells.map((c) => c.v), ["3", "3"]);
  // One visitor is under k: withheld, and the cell says why.
  assert.deepEqual(row(lone)?.cells.map((c) => [c.v, c.text, c.title]), [["null", "—", "Hidden: fewer than k visitors"], ["null", "—", "Hidden: fewer than k visitors"]]);
  // Every other minute counted nobody: 0, not "—".
  for (const r of chart.rows.filter((x) => ![now, twenty, lone].includes(x.time))) {
    assert.deepEqual(r.cells.map((c) => [c.v, c.text]), [["0", "0"], ["0", "0"]], r.time);
  }
  // Minutes in order, one apart, the last one before the minute under way.
  for (let i = 1; i < 30; i++) assert.equal(Date.parse(chart.rows[i].time + "Z") - Date.parse(chart.rows[i - 1].time + "Z"), MIN);
  assert.ok(Date.parse(chart.rows[29].time + "Z") < Date.now() - (Date.now() % MIN) + 1, chart.rows[29].time);

  // The 30 minutes' totals and the usual panels over them.
  assert.equal(await page.$eval("#rt-30-visitors", (e) => e.dataset.value), "28");
  assert.equal(await page.$eval("#rt-30-pageviews", (e) => e.dataset.value), "28");
  await page.waitForSelector("#panel-pages tbody th[data-raw='/older']");
  const pages = await page.$$eval("#panel-pages tbody th[data-raw]", (ths) => ths.map((t) => t.dataset.raw));
  assert.equal(pages.length, 10, JSON.stringify(pages));
  assert.equal(pages[0], "/older");
  for (const id of ["sources", "locations", "devices"]) await page.waitForSelector(`#panel-${id} tbody th[data-raw]`);
  // Devices → Browsers: Chrome's 24 and Firefox's 3; Safari's one visitor is under k, not listed.
  const browsers = await page.$$eval("#panel-devices tbody th[data-raw]", (ths) => ths.map((t) => [t.dataset.raw, t.closest("tr").querySelector("td").dataset.value]));
  assert.deepEqual(browsers, [["Chrome", "24"], ["Firefox", "3"]]);
  await screenshot(page, "realtime-minutes");

  // A refresh redraws the panels in place: the "Show all 13 rows" button focused before one is
  // a new button after it, and it has the focus.
  const more = page.locator("#panel-pages button.more");
  assert.equal(await more.textContent(), "Show all 13 rows");
  await more.focus();
  const before = await page.evaluate(() => { window.__focused = document.activeElement; return Number(document.querySelector("#rt-updated").dataset.refreshes || 0); });
  await waitFor(() => page.evaluate(() => ({ n: Number(document.querySelector("#rt-updated").dataset.refreshes || 0), old: window.__focused.isConnected })),
    (s) => s.n >= before + 1 && !s.old, { ms: 20_000, what: (s) => "no refresh redrew the panel: " + JSON.stringify(s) });
  const focus = await page.evaluate(() => ({ text: document.activeElement.textContent, inPages: !!document.activeElement.closest("#panel-pages"),
    same: document.activeElement === window.__focused }));
  assert.deepEqual(focus, { text: "Show all 13 rows", inPages: true, same: false });
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

test("current visitors show at the top of the web view too (exact mode: asked, not a link)", async () => {
  const page = await open(chrome);
  await page.goto(dash("period=30d"));
  await page.waitForFunction(() => document.querySelector("#current")?.dataset.value === "24");
  assert.equal(await page.$eval("#current", (e) => e.textContent.trim()), "24 current visitors");
  assert.equal(await page.$("#current-link"), null, "exact mode asks; no link instead");
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

test("dp: Realtime refreshes for free within a five-minute window and pauses once less than half of the day's budget is left", async () => {
  // A Veil of its own under differential privacy with ε 6 a day, 0.5 a question: the Realtime
  // view's first screen asks 7 (3.5), leaving less than half.
  const small = await startVeil({ args: ["--epsilon-day", "6", "--epsilon-query", "0.5"] });
  try {
    // Not near a five-minute mark: the questions below must all fall in one realtime window.
    await waitFor(() => Date.now() % (5 * MIN), (ms) => ms > 2_000 && ms < 4 * MIN, { ms: 80_000, every: 250, what: "no quiet moment" });
    const page = await open(chrome);
    const asked = [];
    page.on("request", (r) => {
      const u = new URL(r.url());
      if (u.pathname.startsWith("/api/v2/query") || u.pathname.endsWith("/realtime")) asked.push(u.pathname + u.search);
    });
    await page.goto(`${small.url}/site/${SITE}?view=realtime&refresh=2`);
    await page.waitForFunction(() => /^Refresh paused: less than half of today's privacy budget is left/.test(document.querySelector("#rt-updated")?.textContent || ""),
      null, { timeout: 30_000 });
    const state = () => page.evaluate(() => ({
      ticks: Number(document.querySelector("#rt-updated").dataset.ticks), refreshes: Number(document.querySelector("#rt-updated").dataset.refreshes || 0),
      spent: document.querySelector("#privacy-note").dataset.spent, again: !document.querySelector("#rt-again").hidden,
    }));
    const paused = await state();
    assert.equal(paused.spent, "3.5", JSON.stringify(paused));
    assert.ok(paused.again, "a Refresh now button");
    assert.equal(asked.length, 7, JSON.stringify(asked));
    // Three more turns of the timer ask nothing.
    await waitFor(state, (s) => s.ticks >= paused.ticks + 3, { ms: 20_000, what: (s) => "the timer stopped: " + JSON.stringify(s) });
    assert.equal(asked.length, 7, JSON.stringify(asked));
    // By hand: the same questions of the same window again, answered for free.
    await page.click("#rt-again");
    const after = await waitFor(state, (s) => s.refreshes > paused.refreshes, { ms: 20_000, what: (s) => "Refresh now did nothing: " + JSON.stringify(s) });
    assert.equal(asked.length, 14, JSON.stringify(asked));
    assert.equal(after.spent, "3.5", JSON.stringify(after));
    assert.equal(await page.$$eval("#rt-chart-data tbody tr", (trs) => trs.length), 30);
    assert.deepEqual(page.problems, []);
    await page.close_all();
  } finally {
    await small.stop();
  }
});
