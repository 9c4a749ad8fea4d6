// The marketer dashboard in headless Chromium against a real `veil up` holding a known dataset
// (fixture.mjs, on the shared testing/browser/harness.mjs): the numbers on screen are the Stats
// API's, a click filters everything, the URL round-trips, comparisons, CSV and export downloads,
// shared links without a key, realtime refresh, the XSS corpus stays text, no console errors,
// the footer's warning that privacy protection is down to exact numbers (k-anonymity only);
// one screenshot per page under target/screenshots/, and the payload / first-paint measurement
// (dashboards/README.md).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { gzipSync } from "node:zlib";
import { writeFileSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import {
  startVeil, seed, browser, open, screenshot, settled, query, api, send, sql, waitFor, XSS, UA, SITE, ADMIN, shots,
} from "./fixture.mjs";
import { pageServer, root } from "../../testing/browser/harness.mjs";

let veil, chrome;

before(async () => {
  // Exact numbers (`--privacy exact`): these tests need the known dataset's exact counts, the
  // k-anonymity fold row and "fewer than k" cells, which differential privacy (the default) has
  // not (its noise on 30 visitors is wider than the counts). privacy.test.mjs drives dp mode.
  veil = await startVeil({ k: 5, args: ["--privacy", "exact"] });
  await seed(veil);
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await veil?.stop();
});

const dash = (qs = "") => `${veil.url}/site/${SITE}${qs ? "?" + qs : ""}`;
const nf = new Intl.NumberFormat("en-US");

/** The rows of a panel's table as {raw, label, values[]}. */
async function panelRows(page, panelId) {
  return page.$$eval(`#panel-${panelId} tbody tr`, (trs) => trs.map((tr) => {
    const th = tr.querySelector("th");
    return { raw: th?.dataset.raw, label: th?.textContent, values: [...tr.querySelectorAll("td.n")].map((td) => td.dataset.value) };
  }).filter((r) => r.raw !== undefined));
}

async function statValues(page) {
  return page.$$eval("#stats .value", (els) => Object.fromEntries(els.map((e) => [e.dataset.metric, e.dataset.value])));
}


/** Text contrast (WCAG AA, 4.5:1) of body text, muted text, links, row labels and the footer's privacy line on their backgrounds. */
async function assertContrast(page) {
  const pairs = await page.evaluate(() => {
    const rgb = (c) => c.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
    const bgOf = (e) => { for (; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor; if (!/rgba\(0, 0, 0, 0\)|transparent/.test(c)) return c; } return "rgb(255,255,255)"; };
    return ["body", ".hint", "thead th", "#panel-pages button.row", ".views a:not([aria-current])", ".stat .label", ".tabs button", "#privacy-note"]
      .map((sel) => { const e = document.querySelector(sel); return [sel, rgb(getComputedStyle(e).color), rgb(bgOf(e))]; });
  });
  const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
    .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
  for (const [sel, fg, bgc] of pairs) {
    const [a, b] = [lum(fg), lum(bgc)].sort((x, y) => y - x);
    assert.ok((a + 0.05) / (b + 0.05) >= 4.5, `${sel}: contrast ${((a + 0.05) / (b + 0.05)).toFixed(2)}`);
  }
}

const str = (v) => (v === null || v === undefined ? "null" : String(v));
/** A shared link's token: the `auth` value of its URL's fragment. */
const linkToken = (url) => new URLSearchParams(new URL(url, veil.url).hash.slice(1)).get("auth");

function noProblems(page) {
  assert.deepEqual(page.problems, [], "console errors, page errors or dialogs");
}

test("pages are served with a strict CSP, and the whole dashboard fits the 300 KB gzip budget", async () => {
  for (const path of ["/", `/site/${SITE}`, `/site/${SITE}/settings`, `/share/${SITE}?auth=x`]) {
    const res = await fetch(veil.url + path);
    assert.equal(res.status, 200, path);
    const csp = res.headers.get("content-security-policy");
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /style-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.match(csp, /frame-ancestors 'none'/);
  }
  const page = await open(chrome);
  const assets = new Map();
  page.on("response", async (r) => {
    const u = new URL(r.url());
    if (!u.pathname.startsWith("/api/") && r.request().method() === "GET") {
      try { assets.set(u.pathname, (await r.body()).length); } catch { /* redirects have no body */ }
    }
  });
  const started = Date.now();
  await page.goto(dash(), { waitUntil: "load" });
  const fcp = await page.evaluate(() => performance.getEntriesByName("first-contentful-paint")[0]?.startTime);
  await settled(page);
  const complete = Date.now() - started;
  let raw = 0, gz = 0;
  const files = {};
  for (const path of assets.keys()) {
    const body = Buffer.from(await (await fetch(veil.url + path)).arrayBuffer());
    raw += body.length;
    gz += gzipSync(body, { level: 9 }).length;
    files[path] = { bytes: body.length, gzip: gzipSync(body, { level: 9 }).length };
  }
  assert.ok(assets.has("/app.js") && assets.has("/vendor/uPlot.iife.min.js"), [...assets.keys()].join(" "));
  assert.ok(gz < 300 * 1024, `dashboard payload ${gz} B gzipped`);
  assert.ok(fcp > 0 && fcp < 2000, `first contentful paint ${fcp} ms`);
  mkdirSync(shots, { recursive: true });
  writeFileSync(join(shots, "payload.json"), JSON.stringify({ raw, gzip: gz, files, first_contentful_paint_ms: fcp,
    all_panels_drawn_ms: complete }, null, 2));
  console.log(`payload: ${raw} B raw, ${gz} B gzipped; first contentful paint ${Math.round(fcp)} ms; all panels ${complete} ms`);
  noProblems(page);
  await page.close_all();
});

test("login asks for a token, keeps it in sessionStorage only, and lists the sites with the API's numbers", async () => {
  const page = await open(chrome, { token: null });
  await page.goto(veil.url + "/");
  await page.waitForSelector("#login:not([hidden])");
  await screenshot(page, "login");
  // The probe that found no token is the one expected error.
  page.problems = page.problems.filter((p) => !/401/.test(p));
  await page.fill("#token", ADMIN);
  await page.press("#token", "Enter");
  await page.waitForSelector(`#site-list li[data-site="${SITE}"] .n[data-value]`);
  const shown = await page.$eval(`#site-list li[data-site="${SITE}"] .n`, (e) => e.dataset.value);
  const api7d = await query(veil, { metrics: ["visitors"], include: { comparisons: { mode: "previous_period" } } });
  assert.equal(shown, str(api7d.results[0].metrics[0]));
  // Beside it, the change against the 7 days before and a line of the days: the API's.
  const change = await page.waitForSelector(`#site-list li[data-site="${SITE}"] .site-change .change[data-change]`);
  assert.equal(await change.evaluate((e) => e.dataset.change), str(api7d.results[0].comparison.change[0]));
  const days = await query(veil, { metrics: ["visitors"], dimensions: ["time:day"], include: { time_labels: true } });
  const want = days.meta.time_labels.map((l) => { const r = days.results.find((x) => x.dimensions[0] === l); return r && r.metrics[0] !== null ? String(r.metrics[0]) : ""; });
  await waitFor(() => page.$eval(`#site-list li[data-site="${SITE}"] .spark`, (e) => e.dataset.points ?? null), (p) => p !== null,
    { what: "no sparkline drawn" });
  assert.equal(await page.$eval(`#site-list li[data-site="${SITE}"] .spark`, (e) => e.dataset.points), want.join(","));
  assert.ok(await page.$(`#site-list li[data-site="${SITE}"] .spark canvas`), "the sparkline is a chart");
  assert.equal(want.length, 7);
  assert.ok(want.filter(Boolean).length >= 1, "the known dataset has visitors in the 7 days: " + want);
  const storage = await page.evaluate(() => ({ session: sessionStorage.getItem("veil-token"), local: localStorage.length, cookie: document.cookie }));
  assert.deepEqual(storage, { session: ADMIN, local: 0, cookie: "" });
  await screenshot(page, "sites");
  noProblems(page);
  await page.close_all();
});

test("numbers on screen equal the API's: top stats, every panel, the chart, folded rows labelled as sent", async () => {
  const page = await open(chrome);
  await page.goto(dash("period=7d"));
  await settled(page);
  await screenshot(page, "dashboard");
  const metrics = ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration", "time_on_page"];
  const totals = await query(veil, { metrics });
  const shown = await statValues(page);
  metrics.forEach((m, i) => assert.equal(shown[m], str(totals.results[0].metrics[i]), m));
  assert.equal(await page.$eval('#stats .value[data-metric="visitors"]', (e) => e.textContent), nf.format(totals.results[0].metrics[0]));

  const panels = { pages: ["event:page", ["visitors", "pageviews"]], sources: ["visit:source", ["visitors", "visits"]],
    devices: ["visit:browser", ["visitors"]], events: ["event:name", ["visitors", "events"], [["is_not", "event:name", ["pageview", "engagement"]]]],
    locations: ["visit:country", ["visitors"]] };
  for (const [id, [dim, ms, filters]] of Object.entries(panels)) {
    const want = await query(veil, { metrics: ms, dimensions: [dim], filters: filters || [], pagination: { limit: 10, offset: 0 } });
    const got = await panelRows(page, id);
    assert.deepEqual(got.map((r) => [r.raw, r.values]), want.results.map((r) => [str(r.dimensions[0]), r.metrics.map(str)]), id);
  }
  // The six single-visitor pages are one folded row, labelled exactly as the API sent it.
  const pages = await query(veil, { metrics: ["visitors"], dimensions: ["event:page"] });
  const folded = pages.results.find((r) => /^\(other: /.test(r.dimensions[0]));
  assert.ok(folded, JSON.stringify(pages));
  const foldedShown = await page.$eval("#panel-pages .folded", (e) => e.textContent);
  assert.equal(foldedShown, folded.dimensions[0]);
  assert.equal(await page.$$eval("#panel-pages button.row", (bs) => bs.filter((b) => /^\(other/.test(b.textContent)).length), 0,
    "a folded row is not a filter");

  const chart = await query(veil, { metrics: ["visitors"], dimensions: ["time:day"], include: { time_labels: true } });
  const rows = await page.$$eval("#chart-data tbody tr", (trs) => trs.map((tr) => [tr.dataset.time, tr.querySelector("td").dataset.value]));
  const byDay = new Map(chart.results.map((r) => [r.dimensions[0], str(r.metrics[0])]));
  assert.ok(rows.length >= 7, JSON.stringify(rows));
  for (const [day, v] of rows) assert.equal(v, byDay.get(day) ?? "0", day);
  assert.ok(await page.$("#chart canvas"), "uPlot drew the chart");
  // Exact mode: numbers as they are, and the footer warns that privacy protection is turned down.
  assert.equal(await page.$$eval("#view-body .approx", (l) => l.length), 0);
  assert.doesNotMatch(await page.$eval("#view-body", (e) => e.textContent), /≈/);
  const note = await page.$eval("#privacy-note", (e) => ({ hidden: e.hidden, mode: e.dataset.mode, warn: e.classList.contains("warn"),
    text: e.textContent, height: e.getBoundingClientRect().height }));
  assert.deepEqual({ ...note, height: note.height > 0 }, { hidden: false, mode: "exact", warn: true, height: true,
    text: "Privacy protection turned down: the operator runs Veil with exact numbers (--privacy exact), protected by " +
      "k-anonymity only (k = 5), not by differential privacy." });
  assert.equal(totals.meta.privacy.mode, "exact");
  await assertContrast(page);
  noProblems(page);
  await page.close_all();
});

test("clicking a row filters the whole dashboard; filters, period and comparison round-trip through the URL", async () => {
  const page = await open(chrome);
  await page.goto(dash("period=7d"));
  await settled(page);
  await page.click('#panel-sources button.row:text-is("Google")');
  await page.waitForURL(/f=is~visit:source~Google/);
  await settled(page);
  const filters = [["is", "visit:source", ["Google"]]];
  const want = await query(veil, { metrics: ["visitors", "visits", "pageviews"], filters });
  const got = await statValues(page);
  assert.equal(got.visitors, str(want.results[0].metrics[0]));
  assert.equal(got.pageviews, str(want.results[0].metrics[2]));
  const pagesWant = await query(veil, { metrics: ["visitors", "pageviews"], dimensions: ["event:page"], filters, pagination: { limit: 10, offset: 0 } });
  assert.deepEqual((await panelRows(page, "pages")).map((r) => r.values), pagesWant.results.map((r) => r.metrics.map(str)));
  assert.equal(await page.$eval("#filter-list li", (e) => e.textContent.replace("×", "").trim()), "Source is Google");

  // Period and comparison through the controls, then the URL opened afresh shows the same view.
  await page.selectOption("#period", "30d");
  await page.waitForURL(/period=30d/);
  await page.selectOption("#compare", "previous_period");
  await page.waitForURL(/compare=previous_period/);
  await settled(page);
  const url = page.url();
  const before = await statValues(page);
  const page2 = await open(chrome);
  await page2.goto(url);
  await settled(page2);
  assert.deepEqual(await statValues(page2), before);
  assert.equal(await page2.$eval("#period", (e) => e.value), "30d");
  assert.equal(await page2.$eval("#compare", (e) => e.value), "previous_period");
  assert.equal(await page2.$$eval("#filter-list li", (l) => l.length), 1);
  // Back in history drops the comparison; removing the chip drops the filter.
  await page.goBack();
  await settled(page);
  assert.equal(await page.$eval("#compare", (e) => e.value), "");
  await page.click('#filter-list button[aria-label^="Remove filter"]');
  await settled(page);
  assert.doesNotMatch(page.url(), /f=/);
  noProblems(page);
  noProblems(page2);
  await page.close_all();
  await page2.close_all();
});

test("comparison with the previous period: change badges, each panel row's change and the chart's comparison line are the API's", async () => {
  const page = await open(chrome);
  await page.goto(dash("period=7d&compare=previous_period"));
  await settled(page);
  const metrics = ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration", "time_on_page"];
  const want = await query(veil, { metrics, include: { comparisons: { mode: "previous_period" } } });
  const cmp = want.results[0].comparison;
  assert.ok(cmp, JSON.stringify(want));
  const changes = await page.$$eval("#stats .change", (els) => els.map((e) => e.dataset.change ?? null));
  assert.deepEqual(changes, cmp.change.map((c) => (c === null || c === undefined ? null : String(c))));
  const prev = await page.$$eval("#stats .prev", (els) => els.map((e) => e.dataset.prev));
  assert.deepEqual(prev, cmp.metrics.map(str));
  const chart = await query(veil, { metrics: ["visitors"], dimensions: ["time:day"], include: { time_labels: true, comparisons: { mode: "previous_period" } } });
  const rows = await page.$$eval("#chart-data tbody tr", (trs) => trs.map((tr) => [tr.dataset.time, [...tr.querySelectorAll("td")].map((t) => t.dataset.value)]));
  for (const r of chart.results) {
    const shown = rows.find(([t]) => t === r.dimensions[0]);
    assert.ok(shown, r.dimensions[0]);
    assert.deepEqual(shown[1], [str(r.metrics[0]), str(r.comparison?.metrics?.[0])]);
  }
  // Each row of a panel has its change against the previous period: the API's for that row.
  for (const [panel, dim, pm] of [["pages", "event:page", ["visitors", "pageviews"]], ["sources", "visit:source", ["visitors", "visits"]]]) {
    const api = await query(veil, { metrics: pm, dimensions: [dim], pagination: { limit: 10, offset: 0 }, include: { comparisons: { mode: "previous_period" } } });
    const shown = await page.$$eval(`#panel-${panel} tbody tr`, (trs) => trs.map((tr) => [tr.querySelector("th")?.dataset.raw,
      tr.querySelector("td.row-change .change")?.dataset.change ?? null]).filter(([raw]) => raw !== undefined));
    assert.deepEqual(shown, api.results.map((r) => [r.dimensions[0], r.comparison?.change?.[0] === null || r.comparison?.change?.[0] === undefined
      ? null : String(r.comparison.change[0])]), panel);
    assert.ok(shown.some(([, c]) => c !== null), `${panel}: some row has a change`);
    assert.equal(await page.$eval(`#panel-${panel} thead tr`, (tr) => tr.lastElementChild.textContent), "Change");
  }
  await screenshot(page, "dashboard-comparison");

  // "Match day of week" (Plausible's option): over 30 days the previous period starts two
  // weekdays off; ticked, the comparison starts on the same weekday — the API's numbers for it.
  await page.goto(dash("period=30d&compare=previous_period"));
  await settled(page);
  await page.check("#match-day");
  await page.waitForURL(/match=1/);
  await settled(page);
  const matched = await query(veil, { metrics, date_range: "30d", include: { comparisons: { mode: "previous_period", match_day_of_week: true } } });
  const plain = await query(veil, { metrics, date_range: "30d", include: { comparisons: { mode: "previous_period" } } });
  assert.notDeepEqual(matched.meta.comparison_date_range, plain.meta.comparison_date_range);
  const weekday = (d) => new Date(d + "T00:00:00Z").getUTCDay();
  assert.equal(weekday(matched.meta.comparison_date_range[0]), weekday(matched.query.date_range[0].slice(0, 10)));
  assert.deepEqual(await page.$$eval("#stats .prev", (els) => els.map((e) => e.dataset.prev)),
    matched.results[0].comparison.metrics.map(str));
  await page.reload();
  await settled(page);
  assert.equal(await page.$eval("#match-day", (e) => e.checked), true, "kept in the URL");
  await page.selectOption("#compare", "");
  await settled(page);
  assert.equal(await page.$eval("#match-day-l", (e) => e.hidden), true, "no comparison, no option");
  noProblems(page);
  await page.close_all();
});

test("the chart's tooltip shows the bucket under a hovering mouse, and under a tapping finger on a phone: the API's number", async () => {
  const chartRows = await query(veil, { metrics: ["visitors"], dimensions: ["time:day"], include: { time_labels: true } });
  const valueOf = (t) => str(chartRows.results.find((r) => r.dimensions[0] === t)?.metrics[0] ?? 0);
  for (const [how, opts] of [["mouse", {}], ["finger", { viewport: { width: 390, height: 844 }, touch: true }]]) {
    const page = await open(chrome, opts);
    await page.goto(dash("period=7d"));
    await settled(page);
    await page.$eval("#chart", (e) => e.scrollIntoView());
    const box = await page.$eval("#chart .u-over", (e) => { const r = e.getBoundingClientRect(); return { x: r.x, y: r.y, w: r.width, h: r.height }; });
    assert.equal(await page.$eval("#chart-tip", (e) => e.hidden), true, "no tooltip before");
    for (const at of [0.3, 0.8]) {
      const x = box.x + box.w * at, y = box.y + box.h / 2;
      if (how === "mouse") await page.mouse.move(x, y); else await page.touchscreen.tap(x, y);
      await page.waitForSelector("#chart-tip:not([hidden])");
      const tip = await page.$eval("#chart-tip", (e) => ({ time: e.dataset.time, value: e.dataset.value, text: e.innerText }));
      assert.equal(tip.value, valueOf(tip.time), how + " " + JSON.stringify(tip));
      assert.match(tip.text, new RegExp("^" + tip.time + "[^\\n]*\\nUnique visitors: "), how);
      // The tooltip stays inside the chart.
      const t = await page.$eval("#chart-tip", (e) => { const r = e.getBoundingClientRect(); return { l: r.left, r: r.right }; });
      assert.ok(t.l >= box.x - 1 && t.r <= box.x + box.w + 1, how + " " + JSON.stringify([t, box]));
    }
    noProblems(page);
    await page.close_all();
  }
});

test("notes on the charts: a note added in settings marks its day on the chart, in the tooltip and the list under it, as text; deleted, it goes", async () => {
  const day = new Date(Date.now() - 3 * 86_400_000).toISOString().slice(0, 10);
  const text = "Launched v2 <b>bold</b>";
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${SITE}/settings`);
  await page.waitForSelector("#annotation-form");
  await page.fill('#annotation-form input[name="date"]', day);
  await page.fill('#annotation-form input[name="text"]', text);
  await page.click('#annotation-form button[type="submit"]');
  await waitFor(() => page.$eval("#annotation-list", (e) => e.textContent), (t) => t.includes(text), { what: (t) => "list: " + t });
  const site = await api(veil, `/api/v1/sites/${SITE}`);
  assert.deepEqual((site.settings || site).annotations, [{ date: day, text }]);

  await page.goto(dash("period=7d"));
  await settled(page);
  await page.waitForSelector("#chart-notes li");
  assert.deepEqual(await page.$$eval("#chart-notes li", (l) => l.map((e) => [e.dataset.time, e.textContent])), [[day, `${day} — ${text}`]]);
  assert.equal(await page.$$eval("#chart-notes b", (l) => l.length), 0, "shown as text");
  // The tooltip of that day says the note.
  const times = await page.$$eval("#chart-data tbody tr", (trs) => trs.map((tr) => tr.dataset.time));
  const i = times.indexOf(day);
  assert.ok(i >= 0, JSON.stringify(times));
  await page.$eval("#chart", (e) => e.scrollIntoView());
  const box = await page.$eval("#chart .u-over", (e) => { const r = e.getBoundingClientRect(); return { x: r.x, y: r.y, w: r.width, h: r.height }; });
  await page.mouse.move(box.x + (box.w * i) / Math.max(1, times.length - 1), box.y + box.h / 2);
  const tip = await waitFor(() => page.$eval("#chart-tip", (e) => ({ time: e.dataset.time, text: e.innerText, hidden: e.hidden })),
    (t) => !t.hidden && t.time === day, { what: (t) => "tooltip: " + JSON.stringify(t) });
  assert.match(tip.text, new RegExp("Note: " + text.replace(/[<>/]/g, (c) => "\\" + c)));
  // By month, the note marks its month.
  await page.goto(dash("period=12mo&interval=month"));
  await settled(page);
  const months = await page.$$eval("#chart-notes li", (l) => l.map((e) => e.dataset.time.slice(0, 7)));
  assert.ok(months.length === 0 || months[0] === day.slice(0, 7), JSON.stringify(months));

  // Deleted in settings: no note on the chart.
  await page.goto(`${veil.url}/site/${SITE}/settings`);
  await page.waitForSelector("#annotation-list li");
  await page.click(`#annotation-list button[aria-label^="Delete note of ${day}"]`);
  await waitFor(() => page.$$eval("#annotation-list li", (l) => l.length), (n) => n === 0, { what: (n) => n + " notes left" });
  await page.goto(dash("period=7d"));
  await settled(page);
  assert.equal(await page.$("#chart-notes"), null);
  noProblems(page);
  await page.close_all();
});

test("segments: the filters shown saved as a segment, applied by choosing it (the API's numbers for its filters), chosen off, deleted", async () => {
  const page = await open(chrome);
  await page.goto(dash("period=7d&f=is~visit:country~DE"));
  await settled(page);
  const filtered = (await statValues(page)).visitors;
  await page.click("#segment-save summary");
  await page.fill('#segment-form input[name="name"]', "From Germany");
  assert.equal(await page.$eval("#segment-type", (e) => e.value), "site", "the admin token keeps site segments");
  await page.click('#segment-form button[type="submit"]');
  await waitFor(() => page.url(), (u) => /seg=[0-9a-f]{16}/.test(u),
    { what: (u) => "no segment in the URL: " + u });
  await settled(page);
  const url = new URL(page.url());
  assert.deepEqual(url.searchParams.getAll("f"), [], "the segment stands for the filters");
  const id = url.searchParams.get("seg");
  const listed = await api(veil, `/api/v1/sites/${SITE}/segments`);
  assert.deepEqual(listed.segments.map((s) => [s.id, s.name, s.type, s.filters]), [[id, "From Germany", "site", [["is", "visit:country", ["DE"]]]]]);
  assert.equal(await page.$eval("#segment", (e) => e.selectedOptions[0].textContent), "From Germany");
  const want = await query(veil, { metrics: ["visitors"], filters: [["is", "visit:country", ["DE"]]] });
  const stats = await statValues(page);
  assert.equal(stats.visitors, str(want.results[0].metrics[0]));
  assert.equal(stats.visitors, filtered);
  // Every panel answers under the segment.
  assert.equal(await page.$$eval(".panel-body .error", (l) => l.length), 0);
  // Chosen off: the whole site again; chosen again from the list: filtered.
  await page.selectOption("#segment", "");
  await settled(page);
  const all = await query(veil, { metrics: ["visitors"] });
  assert.equal((await statValues(page)).visitors, str(all.results[0].metrics[0]));
  await page.selectOption("#segment", id);
  await settled(page);
  assert.equal((await statValues(page)).visitors, filtered);
  // Deleted: gone from the list and the URL.
  await page.click("#segment-delete");
  await page.waitForURL((u) => !new URL(u).searchParams.has("seg"));
  await settled(page);
  assert.deepEqual((await api(veil, `/api/v1/sites/${SITE}/segments`)).segments, []);
  assert.equal(await page.$eval("#segment-l", (e) => e.hidden), true);
  noProblems(page);
  await page.close_all();
});

test("date picker: a custom range and hourly buckets are the API's, and the export takes the range", async () => {
  const page = await open(chrome);
  await page.goto(dash("period=7d"));
  await settled(page);
  await page.selectOption("#period", "custom");
  await page.waitForURL(/period=custom&from=\d{4}-\d{2}-\d{2}&to=\d{4}-\d{2}-\d{2}/);
  await settled(page);
  const u = new URL(page.url());
  const range = [u.searchParams.get("from"), u.searchParams.get("to")];
  const want = await query(veil, { metrics: ["visitors", "pageviews"], date_range: range });
  const got = await statValues(page);
  assert.equal(got.visitors, str(want.results[0].metrics[0]));
  assert.equal(got.pageviews, str(want.results[0].metrics[1]));
  const [zip] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
  assert.equal((await readDownload(zip, true)).subarray(0, 2).toString(), "PK");
  assert.match(zip.suggestedFilename(), new RegExp(range.join(".")));

  // Today is drawn up to the current hour (the site's zone is UTC), as Plausible's dashboard
  // does; the API's labels cover the whole day.
  const hourNow = () => new Date().toISOString().slice(0, 13).replace("T", " ") + ":00:00";
  const before = hourNow();
  await page.goto(dash("period=day&interval=hour"));
  await settled(page);
  const after = hourNow();
  const hours = await query(veil, { metrics: ["visitors"], date_range: "day", dimensions: ["time:hour"], include: { time_labels: true } });
  assert.equal(hours.meta.time_labels.length, 24);
  const rows = await page.$$eval("#chart-data tbody tr", (trs) => trs.map((tr) => [tr.dataset.time, tr.querySelector("td").dataset.value]));
  const upTo = (h) => hours.meta.time_labels.filter((l) => l <= h);
  assert.ok([upTo(before), upTo(after)].some((want) => JSON.stringify(want) === JSON.stringify(rows.map((r) => r[0]))),
    JSON.stringify(rows.map((r) => r[0])));
  const byHour = new Map(hours.results.map((r) => [r.dimensions[0], str(r.metrics[0])]));
  for (const [t, v] of rows) assert.equal(v, byHour.get(t) ?? "0", t);
  // The current hour is not over: marked (dashed on the chart, "so far" in its table row) —
  // when there is a line to draw, i.e. from 01:00 UTC on (at 00:xx the day has one bucket).
  const last = rows.at(-1)[0];
  if (rows.length >= 2) {
    assert.equal(await page.$eval("#chart", (f) => f.dataset.unfinished), last);
    assert.equal(await page.$eval(`#chart-data tr[data-time="${last}"] th`, (t) => t.textContent), `${last} (so far)`);
  } else {
    assert.equal(await page.$eval("#chart", (f) => f.dataset.unfinished ?? null), null);
  }
  // A range that ended (the last 7 days end yesterday) has nothing unfinished.
  await page.goto(dash("period=7d"));
  await settled(page);
  assert.equal(await page.$eval("#chart", (f) => f.dataset.unfinished ?? null), null);
  noProblems(page);
  await page.close_all();
});

test("CSV download per panel: the API's rows under the panel's column names (Page, Unique visitors), and the full export downloads", async () => {
  const page = await open(chrome);
  await page.goto(dash("period=7d"));
  await settled(page);
  const [dl] = await Promise.all([page.waitForEvent("download"), page.click('#panel-pages button[data-csv]')]);
  const csv = await readDownload(dl);
  const want = await api(veil, "/api/v2/query.csv", { body: { site_id: SITE, date_range: "7d", filters: [], metrics: ["visitors", "pageviews"],
    dimensions: ["event:page"], pagination: { limit: 10000, offset: 0 }, include: { total_rows: true } } });
  // The rows are the API's; the header names the columns as the panel does.
  const [head, ...rows] = csv.split("\r\n");
  assert.equal(head, "Page,Unique visitors,Total pageviews");
  assert.equal(want.split("\r\n")[0], "event:page,visitors,pageviews");
  assert.deepEqual(rows, want.split("\r\n").slice(1));
  assert.ok(rows.length > 1, csv);
  assert.match(dl.suggestedFilename(), /\.csv$/);
  const [zip] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
  const bytes = Buffer.from(await readDownload(zip, true));
  assert.equal(bytes.subarray(0, 2).toString(), "PK", "a zip archive");
  assert.match(zip.suggestedFilename(), /\.zip$/);
  noProblems(page);
  await page.close_all();
});

async function readDownload(dl, binary = false) {
  const stream = await dl.createReadStream();
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  const b = Buffer.concat(chunks);
  return binary ? b : b.toString("utf8");
}

test("a shared link opens the dashboard read-only without a key; its token stays in the fragment, never sent", async () => {
  const link = await api(veil, `/api/v1/sites/${SITE}/shared-links`, { body: { name: "board" } });
  const url = new URL(link.url, veil.url);
  const token = linkToken(link.url);
  assert.ok(token, JSON.stringify(link));
  assert.equal(url.search, "", "no token in the query string: " + link.url);
  const page = await open(chrome, { token: null });
  // Every request the page makes, with what a server sees of it: its URL (no fragment) and Referer.
  const seen = [];
  page.on("request", (r) => { const u = new URL(r.url()); u.hash = ""; seen.push(u.href + " " + (r.headers().referer || "")); });
  await page.goto(veil.url + url.pathname + url.hash);
  await settled(page);
  assert.equal(await page.$eval("#login", (e) => e.hidden), true);
  assert.equal(await page.$eval("#settings-link", (e) => e.hidden), true, "no settings on a shared link");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  const want = await query(veil, { metrics: ["visitors", "pageviews"] }, token);
  const got = await statValues(page);
  assert.equal(got.visitors, str(want.results[0].metrics[0]));
  assert.equal(got.pageviews, str(want.results[0].metrics[1]));
  // Filters keep the link's token in the URL's fragment, never in its query string.
  await page.click('#panel-pages button.row:text-is("/pricing")');
  await page.waitForURL(/f=/);
  assert.equal(new URL(page.url()).hash, "#auth=" + token);
  assert.doesNotMatch(new URL(page.url()).search, /auth=/);
  await settled(page);
  await screenshot(page, "shared-link");
  noProblems(page);
  assert.ok(seen.length > 3, seen.join("\n"));
  assert.deepEqual(seen.filter((s) => s.includes(token)), [], "the token reached a server in a URL or Referer");
  await page.close_all();
  // An old link with the token in the query string still opens; the token moves into the fragment.
  const old = await open(chrome, { token: null });
  await old.goto(veil.url + url.pathname + "?period=7d&auth=" + token);
  await settled(old);
  assert.equal(new URL(old.url()).hash, "#auth=" + token);
  assert.equal(new URL(old.url()).search, "?period=7d");
  assert.equal((await statValues(old)).visitors, got.visitors);
  noProblems(old);
  await old.close_all();
  // A link with a password asks for it, then opens; a wrong one is refused.
  const locked = await api(veil, `/api/v1/sites/${SITE}/shared-links`, { body: { name: "locked", password: "correct horse" } });
  const lp = await open(chrome, { token: null });
  await lp.goto(veil.url + locked.url);
  await lp.waitForSelector("#password:not([hidden])");
  await lp.fill("#link-password", "wrong password");
  await lp.press("#link-password", "Enter");
  await lp.waitForFunction(() => !document.querySelector("#password").hidden && document.querySelector("#status").textContent.length > 0);
  await lp.fill("#link-password", "correct horse");
  await lp.press("#link-password", "Enter");
  await settled(lp);
  const lockedWant = await api(veil, "/api/v2/query", { body: { site_id: SITE, date_range: "7d", metrics: ["visitors"] },
    token: linkToken(locked.url), headers: { "X-Veil-Link-Password": "correct horse" } });
  assert.equal((await statValues(lp)).visitors, str(lockedWant.results[0].metrics[0]));
  // The refused requests (no password, then a wrong one) are the only console errors.
  assert.deepEqual(lp.problems.filter((p) => !/status of 401/.test(p)), []);
  await lp.close_all();

  // Revoked, the link opens nothing.
  const id = link.id ?? (await api(veil, `/api/v1/sites/${SITE}/shared-links`)).shared_links?.[0]?.id;
  if (id !== undefined) {
    await api(veil, `/api/v1/sites/${SITE}/shared-links/${encodeURIComponent(id)}`, { method: "DELETE" });
    const r = await api(veil, "/api/v2/query", { body: { site_id: SITE, metrics: ["visitors"], date_range: "7d" }, token, raw: true });
    assert.equal(r.status, 401);
  }
});

test("an embedded shared link: made in settings with the host page's origin, it opens in that page's iframe with the API's numbers; a link without that origin is refused", async () => {
  const pages = {};
  const host = await pageServer(pages);
  try {
    // Made in settings, with the origin of the page that will embed it: the embed code shows.
    const admin = await open(chrome);
    await admin.goto(`${veil.url}/site/${SITE}/settings`);
    await admin.waitForSelector("#shared_links-form");
    await admin.fill('#shared_links-form input[name="name"]', "blog embed");
    await admin.fill('#shared_links-form input[name="embed_origins"]', host.origin);
    await admin.click('#shared_links-form button[type="submit"]');
    await admin.waitForSelector("#shared_links-embed");
    const code = await admin.$eval("#shared_links-embed", (e) => e.textContent);
    const src = code.match(/src="([^"]+)"/)[1];
    assert.ok(src.startsWith(`${veil.url}/share/${SITE}?embed=`), code);
    assert.match(await admin.$eval("#shared_links-list", (e) => e.textContent), new RegExp(`blog embed .*may be embedded in ${host.origin}`));
    assert.ok(await admin.$('button[aria-label="Copy: embed code"]'));
    noProblems(admin);
    await admin.close_all();

    // The server frames the embed page for that origin only; every other page stays unframeable.
    const head = async (url) => { const r = await fetch(url); await r.arrayBuffer(); return r.headers; };
    const embedded = await head(src.split("#")[0]);
    assert.match(embedded.get("content-security-policy"), new RegExp(`frame-ancestors ${host.origin}(;|$)`));
    assert.equal(embedded.get("x-frame-options"), null);
    const plainLink = await api(veil, `/api/v1/sites/${SITE}/shared-links`, { body: { name: "not for embedding" } });
    for (const url of [`${veil.url}${plainLink.url.split("#")[0]}?embed=${plainLink.id}`, `${veil.url}/share/other.example?embed=${new URL(src).searchParams.get("embed")}`,
      `${veil.url}/site/${SITE}`]) {
      const h = await head(url);
      assert.match(h.get("content-security-policy"), /frame-ancestors 'none'/, url);
      assert.equal(h.get("x-frame-options"), "DENY", url);
    }

    // The host page: the embedded link opens inside it; the other link is refused by the browser.
    pages["/"] = `<!doctype html><html lang="en"><head><title>Our numbers</title><link rel="icon" href="data:,"></head><body><h1>Our numbers</h1>${code}` +
      `<iframe id="plain" title="plain" src="${veil.url}${plainLink.url}"></iframe></body></html>`;
    const page = await open(chrome, { token: null });
    await page.goto(host.origin + "/");
    const frame = await waitFor(() => page.frames().find((f) => f.url().includes("?embed=")), (f) => !!f, { what: () => "no embedded frame" });
    await settled(frame);
    const want = await api(veil, "/api/v2/query", { body: { site_id: SITE, date_range: "7d", metrics: ["visitors"] }, token: linkToken(src) });
    assert.equal((await statValues(frame)).visitors, str(want.results[0].metrics[0]));
    assert.equal(await frame.$eval("header.top", (e) => getComputedStyle(e).display), "none", "no top bar when embedded");
    // A change of period inside the frame keeps the embed id (the server frames by it).
    await frame.selectOption("#period", "30d");
    await settled(frame);
    assert.match(frame.url(), /\?embed=[0-9a-f]+&.*period=30d/);
    assert.equal(new URL(frame.url()).hash, "#auth=" + linkToken(src));
    const refused = await waitFor(() => page.problems, (l) => l.some((p) => /frame-ancestors 'none'/.test(p)),
      { what: (l) => "the plain link was not refused: " + JSON.stringify(l) });
    assert.deepEqual(refused.filter((p) => !/frame-ancestors 'none'/.test(p)), []);
    await page.close_all();
  } finally {
    await host.close();
  }
});

test("the realtime view refreshes by itself after a new event", async () => {
  const page = await open(chrome);
  await page.goto(dash("view=realtime&refresh=2"));
  await page.waitForSelector("#rt-visitors[data-value]");
  const before = await page.$eval("#rt-visitors", (e) => e.dataset.value);
  const now = new Date().toISOString();
  await send(veil, Array.from({ length: 7 }, (_, i) => ({ site: SITE, name: "pageview", url: `https://${SITE}/live`,
    timestamp: now, ip: `192.0.2.${i + 1}`, user_agent: UA.chrome })));
  // The realtime window ends at the start of the current minute (so two queries within a
  // minute cannot be subtracted): new visitors show once that minute is over.
  const api5m = await waitFor(async () => (await api(veil, `/api/v1/sites/${SITE}/realtime`)).visitors_5m,
    (v) => v !== null && str(v) !== before, { ms: 90_000, every: 300, what: "the API never saw the new visitors" });
  await page.waitForFunction((v) => document.querySelector("#rt-visitors").dataset.value === v, str(api5m), { timeout: 10_000 });
  await page.waitForSelector('#panel-pages th[data-raw="/live"]');
  await screenshot(page, "realtime");
  noProblems(page);
  await page.close_all();
});

test("the XSS corpus, sent as paths, referrers, UTM values, props and event names, is shown as text and never runs", async () => {
  const page = await open(chrome);
  const views = ["t.pages=page", "t.sources=referrer", "t.sources=utm_campaign", "t.events=props&prop=x", "t.events=name"];
  const seen = new Set();
  for (const v of views) {
    await page.goto(dash("period=7d&" + v));
    await settled(page);
    // Any image the corpus slipped into the page has loaded or failed (and run its onerror).
    await page.waitForFunction(() => [...document.images].every((i) => i.complete));
    const raws = await page.$$eval("tbody th[data-raw]", (ths) => ths.map((t) => t.textContent));
    for (const x of XSS) if (raws.some((r) => r.includes(x))) seen.add(v + " " + x);
    assert.equal(await page.evaluate(() => window.__xss), undefined, v);
    assert.equal(await page.$$eval("tbody img, tbody script, tbody svg", (l) => l.length), 0, v);
  }
  // Each corpus string reached the screen as text in every field it was sent in.
  for (const v of views) for (const x of XSS) {
    if (v === "t.sources=referrer" && x.startsWith("javascript")) continue;
    assert.ok([...seen].some((s) => s.startsWith(v) && s.endsWith(x)) || !(await rawInApi(v, x)), `${v}: ${x} not shown`);
  }
  // Filtering by a corpus value puts it in the URL and the chip, still as text.
  await page.goto(dash("period=7d&t.pages=page"));
  await settled(page);
  await page.locator("#panel-pages button.row").filter({ hasText: XSS[0] }).click();
  await page.waitForURL(/f=/);
  await settled(page);
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  assert.ok((await page.$eval("#filter-list", (e) => e.textContent)).includes(XSS[0]));
  await screenshot(page, "xss-corpus");
  noProblems(page);
  await page.close_all();
});

async function rawInApi(view, x) {
  const dim = { "t.pages=page": "event:page", "t.sources=referrer": "visit:referrer", "t.sources=utm_campaign": "visit:utm_campaign",
    "t.events=props&prop=x": "event:props:x", "t.events=name": "event:name" }[view];
  const r = await query(veil, { metrics: ["visitors"], dimensions: [dim] });
  return r.results.some((row) => String(row.dimensions[0]).includes(x));
}

test("settings: goals and funnels saved through the admin API feed the goals panel; keys, ingest keys and shared links are created and listed", async () => {
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${SITE}/settings`);
  await page.waitForSelector("#goal-form");
  // The goal form suggests the custom events the site receives (the API's event:name rows).
  await waitFor(() => page.$$eval("#seen-events option", (os) => os.map((o) => o.value)), (v) => v.includes("signup"),
    { what: (v) => "suggested events: " + JSON.stringify(v) });
  await page.fill('#goal-form input[name="name"]', "Signup");
  await page.selectOption('#goal-form select[name="kind"]', "event_name");
  await page.fill('#goal-form input[name="value"]', "signup");
  await page.fill('#goal-form input[name="currency"]', "eur");
  await page.click('#goal-form button[type="submit"]');
  await page.waitForSelector('#goal-list li:has-text("Signup, revenue in EUR")');
  await page.fill('#goal-form input[name="name"]', "Pricing");
  await page.selectOption('#goal-form select[name="kind"]', "page_path");
  await page.fill('#goal-form input[name="value"]', "/pricing");
  await page.click('#goal-form button[type="submit"]');
  await page.waitForSelector('#goal-list li:has-text("Pricing")');
  await page.fill('#funnel-form input[name="name"]', "Buy");
  await page.fill('#funnel-form textarea[name="steps"]', "Pricing\nSignup");
  await page.click('#funnel-form button[type="submit"]');
  await page.waitForSelector('#funnel-list li:has-text("Buy")');
  await page.fill('#keys-form input[name="name"]', "reporting");
  await page.click('#keys-form button[type="submit"]');
  await page.waitForSelector("#keys-new");
  const key = await page.$eval("#keys-new", (e) => e.textContent);
  assert.match(key, /^vk_/);
  await page.waitForSelector('#keys-list li:has-text("reporting")');
  // An ingest key: write-only, shown once, listed by name; the Stats API takes it for nothing.
  await page.fill('#ingest_keys-form input[name="name"]', "backend");
  await page.click('#ingest_keys-form button[type="submit"]');
  await page.waitForSelector("#ingest_keys-new");
  const ingest = await page.$eval("#ingest_keys-new", (e) => e.textContent);
  assert.match(ingest, /^vi_[0-9a-f]{64}$/);
  await page.waitForSelector('#ingest_keys-list li:has-text("backend")');
  const asReader = await api(veil, "/api/v2/query", { body: { site_id: SITE, metrics: ["visitors"], date_range: "7d" }, token: ingest, raw: true });
  assert.equal(asReader.status, 401);
  await page.fill('#shared_links-form input[name="name"]', "team");
  await page.click('#shared_links-form button[type="submit"]');
  await page.waitForSelector("#shared_links-new");
  assert.match(await page.$eval("#shared_links-new", (e) => e.textContent), new RegExp(`/share/${SITE.replace(".", "\\.")}#auth=vl_`));
  await screenshot(page, "settings");
  // Revoking the link in the list: it disappears and its token no longer reads anything.
  const teamUrl = new URL(await page.$eval("#shared_links-new", (e) => e.textContent));
  const teamToken = linkToken(teamUrl.href);
  assert.equal((await api(veil, "/api/v2/query", { body: { site_id: SITE, metrics: ["visitors"], date_range: "7d" }, token: teamToken, raw: true })).status, 200);
  await page.click('#shared_links-list button[aria-label="Revoke team"]');
  await page.waitForFunction(() => ![...document.querySelectorAll("#shared_links-list li")].some((li) => li.textContent.includes("team")));
  const refused = await api(veil, "/api/v2/query", { body: { site_id: SITE, metrics: ["visitors"], date_range: "7d" }, token: teamToken, raw: true });
  assert.equal(refused.status, 401);
  const site = await api(veil, `/api/v1/sites/${SITE}`);
  const settings = site.settings || site;
  assert.deepEqual(settings.goals.map((g) => [g.name, g.currency]), [["Signup", "EUR"], ["Pricing", undefined]]);
  assert.deepEqual(settings.funnels, [{ name: "Buy", steps: ["Pricing", "Signup"] }]);

  // The goals panel and the funnel, as the API computes them.
  await page.goto(dash("period=7d"));
  await settled(page);
  const goals = await query(veil, { metrics: ["visitors", "events", "conversion_rate"], dimensions: ["event:goal"], pagination: { limit: 10, offset: 0 } });
  assert.deepEqual((await panelRows(page, "goals")).map((r) => [r.raw, r.values]), goals.results.map((r) => [r.dimensions[0], r.metrics.map(str)]));
  // With the goal as a filter, every breakdown adds each row's own conversion rate ("CR", the
  // API's group_conversion_rate), as Plausible's dashboard does.
  await page.goto(dash("period=7d&f=is~event:goal~Signup"));
  await settled(page);
  // (Chrome and Firefox each send 5 of the 10 sign-ups: rows at k.)
  const byBrowser = await query(veil, { metrics: ["visitors", "group_conversion_rate"], dimensions: ["visit:browser"],
    filters: [["is", "event:goal", ["Signup"]]], pagination: { limit: 10, offset: 0 } });
  assert.ok(byBrowser.results.length >= 2, JSON.stringify(byBrowser));
  assert.ok(byBrowser.results.every((r) => r.metrics[1] > 0 && r.metrics[1] < 100), JSON.stringify(byBrowser));
  assert.deepEqual((await panelRows(page, "devices")).map((r) => [r.raw, r.values]), byBrowser.results.map((r) => [r.dimensions[0], r.metrics.map(str)]));
  assert.deepEqual((await page.$$eval("#panel-devices thead th", (ths) => ths.map((t) => t.textContent.trim()))).slice(-1), ["CR"]);
  await page.goto(dash("period=7d&t.goals=funnel"));
  await settled(page);
  await page.waitForSelector("#panel-goals tbody tr");
  const funnel = await api(veil, "/api/v2/funnel", { body: { site_id: SITE, funnel: "Buy", date_range: "7d", filters: [] } });
  const steps = await page.$$eval("#panel-goals tbody tr", (trs) => trs.map((tr) => tr.querySelector("td").dataset.value));
  assert.deepEqual(steps, funnel.steps.map((s) => str(s.visitors)));
  await screenshot(page, "funnel");

  // The new site key reads the dashboard (no admin extras).
  const reader = await open(chrome, { token: key });
  await reader.goto(dash("period=7d"));
  await settled(reader);
  assert.equal(await reader.$eval("#settings-link", (e) => e.hidden), true);
  const want = await query(veil, { metrics: ["visitors"] }, key);
  assert.equal((await statValues(reader)).visitors, str(want.results[0].metrics[0]));
  noProblems(page);
  await page.close_all();
  await reader.close_all();
});

test("app view: active users, versions, install sources and performance percentiles come from the API", async () => {
  const page = await open(chrome);
  await page.goto(dash("period=7d&view=app"));
  await settled(page);
  const metrics = ["visitors", "visits", "sessions_per_user", "dau", "launch_time_p50", "launch_time_p95", "latency_p50", "latency_p95", "crashes"];
  // The API serves percentiles apart from visit metrics: two queries, as the page makes them.
  const users = await query(veil, { metrics: metrics.slice(0, 4) });
  const perf = await query(veil, { metrics: metrics.slice(4) });
  const want = [...users.results[0].metrics, ...perf.results[0].metrics];
  const got = await statValues(page);
  metrics.forEach((m, i) => assert.equal(got[m], str(want[i]), m));
  assert.equal(await page.$eval('#stats .stat[data-stat="visitors"] .label', (e) => e.textContent), "Active users");
  assert.equal(await page.$eval('#stats .stat[data-stat="visits"] .label', (e) => e.textContent), "Sessions");
  assert.ok(Number(got.launch_time_p50) > 0 && Number(got.crashes) === 1, JSON.stringify(got));
  // The one crash of the seeded sessions: 100 × (1 − 1 ÷ sessions) of them were crash-free.
  assert.equal(got.crash_free_sessions, String(100 * (1 - 1 / want[1])), JSON.stringify(got));
  const versions = await query(veil, { metrics: ["visitors", "visits"], dimensions: ["visit:app_version"], pagination: { limit: 10, offset: 0 } });
  const rows = await panelRows(page, "app_versions");
  assert.deepEqual(rows.map((r) => [r.raw, r.values]), versions.results.map((r) => [r.dimensions[0], r.metrics.map(str)]));
  assert.ok(rows.some((r) => r.raw === "1.3.0"), JSON.stringify(rows));
  await screenshot(page, "app-view");
  noProblems(page);
  await page.close_all();
});

test("phone width and dark mode: no sideways scrolling, dark colours, keyboard reaches the filters", async () => {
  const page = await open(chrome, { viewport: { width: 375, height: 800 }, colorScheme: "dark" });
  await page.goto(dash("period=7d"));
  await settled(page);
  const { scroll, bg } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, bg: getComputedStyle(document.body).backgroundColor }));
  assert.ok(scroll <= 376, `page is ${scroll} px wide at 375`);
  assert.equal(bg, "rgb(17, 20, 24)");
  await assertContrast(page);
  // Every control has an accessible name.
  const unnamed = await page.$$eval("button, select, input, a[href]", (els) => els.filter((e) => {
    if (e.offsetParent === null) return false;
    const name = e.getAttribute("aria-label") || e.textContent.trim() || e.labels?.[0]?.textContent.trim() || e.title;
    return !name;
  }).map((e) => e.outerHTML.slice(0, 80)));
  assert.deepEqual(unnamed, []);
  // Keyboard: Tab to the first row button and press Enter to filter.
  await page.focus("#panel-pages button.row");
  await page.keyboard.press("Enter");
  await page.waitForURL(/f=/);
  await settled(page);
  assert.equal(await page.$$eval("#filter-list li", (l) => l.length), 1);
  await screenshot(page, "phone-dark");
  noProblems(page);
  await page.close_all();
});

test("a child-directed site added through the admin API shows page views and event counts only, without errors", async () => {
  const kids = "kids.example";
  // Added on the sites page, made child-directed on its settings page.
  const admin = await open(chrome);
  await admin.goto(veil.url + "/");
  await admin.waitForSelector("#add-site:not([hidden])");
  await admin.fill('#add-site input[name="domain"]', kids);
  await admin.click('#add-site button[type="submit"]');
  await admin.waitForSelector(`#site-list li[data-site="${kids}"]`);
  await admin.click(`#site-list li[data-site="${kids}"] a`);
  await admin.waitForSelector("#settings-link:not([hidden])");
  await admin.click("#settings-link");
  await admin.waitForSelector("#general-form");
  await admin.check('#general-form input[name="child_directed"]');
  await admin.click('#general-form button[type="submit"]');
  await admin.waitForFunction(() => document.querySelector("#status").textContent === "Settings saved.");
  assert.equal((await api(veil, `/api/v1/sites/${kids}`)).child_directed, true);
  noProblems(admin);
  await admin.close_all();
  const ev = (i, path) => ({ site: kids, name: "pageview", url: `https://${kids}${path}`, ip: `192.0.2.${100 + i}`, user_agent: UA.chrome });
  const events = [...Array.from({ length: 8 }, (_, i) => ev(i, "/")), ...Array.from({ length: 6 }, (_, i) => ev(i, "/games"))];
  // The collector knows the new site within one registry refresh; until then it ignores the
  // events (accepted 0, stored nowhere). The first event goes alone until it is accepted, then
  // the rest once: each event is sent to be stored exactly once (a resend of an accepted batch
  // would store a second copy, and a page and an API answer a moment apart could differ), and
  // the page opens once all of them are stored.
  await waitFor(() => send(veil, events.slice(0, 1)), (n) => n === 1,
    { ms: 20_000, every: 500, what: "the collector never accepted the new site" });
  assert.equal(await send(veil, events.slice(1)), events.length - 1);
  const stored = async () => Number((await sql(veil, `SELECT count() AS c FROM veil.events WHERE site = '${kids}'`))[0].c);
  await waitFor(stored, (n) => n >= events.length, { ms: 15_000, every: 200, what: "events stored" });
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${kids}?period=7d`);
  await settled(page);
  const want = await api(veil, "/api/v2/query", { body: { site_id: kids, date_range: "7d", metrics: ["pageviews", "events"] } });
  const got = await statValues(page);
  assert.deepEqual(got, { pageviews: str(want.results[0].metrics[0]), events: str(want.results[0].metrics[1]) });
  const pages = await api(veil, "/api/v2/query", { body: { site_id: kids, date_range: "7d", metrics: ["pageviews", "events"], dimensions: ["event:page"], pagination: { limit: 10, offset: 0 } } });
  assert.deepEqual((await panelRows(page, "pages")).map((r) => [r.raw, r.values]), pages.results.map((r) => [r.dimensions[0], r.metrics.map(str)]));
  assert.equal(await page.$$eval(".error", (l) => l.length), 0, await page.$$eval(".error", (l) => l.map((e) => e.textContent).join("; ")));
  assert.equal(await page.$eval("#view-app", (e) => e.hidden), true);
  await screenshot(page, "child-site");
  noProblems(page);
  await page.close_all();
});

test("a row of every panel tab filters the whole dashboard without an API error", async () => {
  const page = await open(chrome);
  const tabs = ["pages=page", "pages=entry", "pages=exit", "pages=host", "sources=source", "sources=channel", "sources=referrer",
    "sources=utm_source", "sources=utm_campaign", "locations=country", "devices=browser", "devices=browser_version", "devices=os",
    "devices=os_version", "devices=device", "events=name", "goals=goal"];
  const panelOf = (t) => t.split("=")[0];
  let filtered = 0;
  for (const t of tabs) {
    await page.goto(dash(`period=7d&t.${t}`));
    await settled(page);
    const row = page.locator(`#panel-${panelOf(t)} tbody button.row`).first();
    if (!(await row.count())) continue;
    const label = await row.textContent();
    await row.click();
    await page.waitForURL(/f=/);
    await settled(page);
    const errors = await page.$$eval(".error", (l) => l.map((e) => e.textContent));
    assert.deepEqual(errors, [], `${t} → ${label}`);
    // A version row names its browser or OS too ("Chrome 124"), and filters by both.
    assert.equal(await page.$$eval("#filter-list li", (l) => l.length), t.endsWith("_version") ? 2 : 1, t);
    filtered++;
  }
  assert.ok(filtered >= 14, `only ${filtered} tabs had a row to click`);
  // Two filters at once, and a "contains" filter from the form.
  await page.goto(dash("period=7d&f=is~visit:source~Google"));
  await settled(page);
  await page.click("#filter-add summary");
  await page.selectOption("#filter-dim", "event:page");
  await page.selectOption('#filter-form select[name="op"]', "contains");
  await page.fill('#filter-form input[name="value"]', "pric");
  await page.click('#filter-form button[type="submit"]');
  await page.waitForURL(/f=contains~event:page~pric/);
  await settled(page);
  const want = await query(veil, { metrics: ["visitors"], filters: [["is", "visit:source", ["Google"]], ["contains", "event:page", ["pric"]]] });
  assert.equal((await statValues(page)).visitors, str(want.results[0].metrics[0]));
  noProblems(page);
  await page.close_all();
});

test("the Exit pages tab shows each exit page's exit rate, as the API answers it (Plausible's exit_rate)", async () => {
  const page = await open(chrome);
  await page.goto(dash("period=7d&t.pages=exit"));
  await settled(page);
  const headers = await page.$$eval("#panel-pages thead th", (ths) => ths.map((t) => t.textContent));
  assert.ok(headers.includes("Exit rate"), JSON.stringify(headers));
  const want = await query(veil, { metrics: ["visitors", "visits", "exit_rate"], dimensions: ["visit:exit_page"], pagination: { limit: 10, offset: 0 } });
  const rows = await panelRows(page, "pages");
  assert.deepEqual(rows.map((r) => [r.raw, r.values]), want.results.map((r) => [r.dimensions[0], r.metrics.map(str)]));
  // The seed's visits that go on to /pricing end there: its rate is a share of its pageviews.
  const rate = Object.fromEntries(want.results.map((r) => [r.dimensions[0], r.metrics[2]]));
  assert.ok(rate["/pricing"] > 0 && rate["/pricing"] <= 100, JSON.stringify(want.results));
  const shown = await page.$$eval("#panel-pages tbody td.n", (tds) => tds.map((td) => td.textContent));
  assert.ok(shown.some((t) => /^\d+(\.\d)?%$/.test(t.trim())), JSON.stringify(shown));
  noProblems(page);
  await page.close_all();
});

test("the devices panel speaks Plausible's vocabulary: Chrome, Windows, GNU/Linux, Mac, Desktop; clicking one filters by it", async () => {
  // The seed's Chrome (Windows NT 10.0), Firefox (X11; Linux) and Safari (Macintosh) user agents,
  // stored in the collector's words (Windows 10, Linux, Mac OSX, desktop), are shown as Plausible names them.
  const page = await open(chrome);
  const labels = async (tab) => {
    await page.goto(dash(`period=7d&t.devices=${tab}`));
    await settled(page);
    return (await panelRows(page, "devices")).map((r) => r.label);
  };
  const browsers = await labels("browser");
  for (const b of ["Chrome", "Firefox", "Safari"]) assert.ok(browsers.includes(b), `${b} in ${browsers}`);
  const oses = await labels("os");
  for (const o of ["Windows", "GNU/Linux", "Mac"]) assert.ok(oses.includes(o), `${o} in ${oses}`);
  assert.ok(!oses.includes("Mac OSX") && !oses.includes("Linux"), `no stored words: ${oses}`);
  // A version is shown with its OS (issue 20: "browser versions show 130 without the name").
  const versions = await labels("os_version");
  assert.ok(versions.includes("Windows 10") && versions.includes("Mac 10.15"), `Windows 10 and macOS 10.15: ${versions}`);
  const bversions = await labels("browser_version");
  assert.ok(bversions.includes("Chrome 124") && bversions.includes("Firefox 126"), `browser versions: ${bversions}`);
  const devices = await labels("device");
  assert.ok(devices.includes("Desktop") && !devices.includes("desktop"), `${devices}`);
  // The panel's rows are the API's, and a click filters by Plausible's word.
  const want = await query(veil, { metrics: ["visitors"], dimensions: ["visit:device"], pagination: { limit: 10, offset: 0 } });
  assert.deepEqual(devices, want.results.map((r) => r.dimensions[0]));
  await page.goto(dash("period=7d&t.devices=os"));
  await settled(page);
  await page.click('#panel-devices button.row:text-is("GNU/Linux")');
  await page.waitForURL(/f=is~visit:os~GNU/);
  await settled(page);
  const linux = await query(veil, { metrics: ["visitors"], filters: [["is", "visit:os", ["GNU/Linux"]]] });
  assert.ok(linux.results[0].metrics[0] > 0, JSON.stringify(linux));
  assert.equal((await statValues(page)).visitors, str(linux.results[0].metrics[0]));
  assert.equal(await page.$eval("#filter-list li", (e) => e.textContent.replace("×", "").trim()), "OS is GNU/Linux");
  noProblems(page);
  await page.close_all();
});

/**
 * The UTC date of hits sent now and the next: a period that holds them when read later (a
 * midnight before they are counted or read moves "day" to a day without them).
 */
function sentDays() {
  const day = new Date().toISOString().slice(0, 10);
  return [day, new Date(Date.parse(day) + 864e5).toISOString().slice(0, 10)];
}

test("filtered traffic: bots by reason and opt-outs are the API's numbers, reasons under k are not listed, filters do not apply", async () => {
  const GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
  const [day, next] = sentDays();
  const now = new Date().toISOString();
  const hit = (ip, user_agent, extra = {}) => ({ site: SITE, name: "pageview", url: `https://${SITE}/filtered`, timestamp: now, ip, user_agent, ...extra });
  const events = [
    ...Array.from({ length: 6 }, (_, i) => hit(`203.0.113.${50 + i}`, GOOGLEBOT)),
    ...Array.from({ length: 5 }, (_, i) => hit(`203.0.113.${70 + i}`, UA.firefox, { opt_out: true })),
    ...Array.from({ length: 2 }, (_, i) => hit(`203.0.113.${90 + i}`, "curl/8.5.0")),
  ];
  const res = await fetch(veil.url + "/v1/events", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(events) });
  assert.deepEqual(await res.json(), { accepted: 0, ignored: events.length, rejected: [] }, "every hit is filtered, none stored");
  // Collectors flush their counts every 5 s. The hits are today's (7d ends yesterday): the
  // explicit days they were sent on, which a midnight while the test runs does not move.
  const period = `period=custom&from=${day}&to=${next}`;
  const path = `/api/v1/sites/${SITE}/filtered-traffic?date_range=${day},${next}`;
  const want = await waitFor(() => api(veil, path), (w) => w.dropped.reduce((n, r) => n + (r.events || 0), 0) >= 11,
    { ms: 30_000, every: 500, what: "the counts never arrived" });
  // The two curl hits are under k: not listed.
  assert.deepEqual(want.dropped, [{ reason: "bot_crawler", events: 6 }, { reason: "consent", events: 5 }]);
  assert.equal(want.min_visitors, 5);

  const shownRows = (page) => page.$$eval("#panel-filtered tbody[data-group=dropped] th[data-raw]", (ths) => ths.map((th) => {
    const td = th.parentElement.querySelector("td");
    return [th.dataset.raw, th.textContent, td.dataset.value, td.textContent];
  }));
  const label = { bot_crawler: "Crawlers", consent: "Opted out (GPC/DNT)", bot_library: "HTTP libraries" };
  const expected = (doc) => doc.dropped.map((r) => [r.reason, label[r.reason], str(r.events),
    r.events === null ? `fewer than ${doc.min_visitors}` : nf.format(r.events)]);
  const page = await open(chrome);
  await page.goto(dash(period));
  await settled(page);
  assert.deepEqual(await shownRows(page), expected(want));
  assert.equal(await page.$$eval('#panel-filtered td[data-value="null"]', (l) => l.length), 0);
  assert.match(await page.$eval("#filtered-note", (e) => e.textContent), /filters do not apply.*fewer than k events are not listed/);
  assert.equal(await page.$$eval("#panel-filtered tbody[data-group=stored_bots]", (l) => l.length), 0, "no kept bots on this site");
  await page.$eval("#panel-filtered", (e) => e.scrollIntoView());
  await screenshot(page, "filtered-traffic");

  // Filters leave the panel as it is (the endpoint takes none); a custom range is sent as FROM,TO.
  await page.goto(dash(`${period}&f=is~visit:source~Google`));
  await settled(page);
  assert.deepEqual(await shownRows(page), expected(want));
  const to = new Date().toISOString().slice(0, 10);
  const from = new Date(Date.now() - 2 * 864e5).toISOString().slice(0, 10);
  await page.goto(dash(`period=custom&from=${from}&to=${to}`));
  await settled(page);
  const custom = await api(veil, `/api/v1/sites/${SITE}/filtered-traffic?date_range=${from},${to}`);
  assert.deepEqual(custom.date_range, [from, to]);
  assert.deepEqual(await shownRows(page), expected(custom));
  // An older range has nothing filtered, and says so.
  await page.goto(dash("period=custom&from=2020-01-01&to=2020-01-31"));
  await settled(page);
  assert.equal(await page.$eval("#panel-filtered tbody[data-group=dropped] td", (e) => e.textContent), "Nothing filtered in this period.");
  noProblems(page);
  await page.close_all();
});

test("filtered traffic: a site that keeps bots shows them as \"Kept bots (flagged)\", the API's numbers", async () => {
  const site = "bots.example";
  await api(veil, "/api/v1/sites", { body: { domain: site, timezone: "UTC", keep_bots: true } });
  assert.equal((await api(veil, `/api/v1/sites/${site}`)).keep_bots, true);
  const GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
  const events = Array.from({ length: 7 }, (_, i) => ({ site, name: "pageview", url: `https://${site}/`, ip: `203.0.113.${110 + i}`,
    user_agent: GOOGLEBOT }));
  // The collector knows the new site (and its keep_bots) within one registry refresh; until then
  // the hits are dropped as for an unknown domain (and counted nowhere). The first hit goes alone
  // until it is accepted, then the rest once, so each is stored exactly once.
  const deadline = Date.now() + 30_000;
  const [day, next] = sentDays();
  const post = async (batch) => {
    const res = await fetch(veil.url + "/v1/events", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(batch) });
    assert.equal(res.status, 202);
    return (await res.json()).accepted;
  };
  await waitFor(() => post(events.slice(0, 1)), (n) => n === 1,
    { ms: deadline - Date.now(), every: 1000, what: "the collector never accepted the new site" });
  assert.equal(await post(events.slice(1)), events.length - 1);
  // Stored now: today's (7d ends yesterday), asked as the explicit days they were sent on.
  const want = await waitFor(() => api(veil, `/api/v1/sites/${site}/filtered-traffic?date_range=${day},${next}`),
    (w) => w.stored_bots.some((r) => r.events === events.length),
    { ms: deadline - Date.now(), every: 300, what: "the kept bots never reached the API" });
  assert.deepEqual(want.stored_bots, [{ reason: "bot_crawler", events: events.length }]);
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${site}?period=custom&from=${day}&to=${next}`);
  await settled(page);
  const group = await page.$eval("#panel-filtered tbody[data-group=stored_bots]", (tb) => ({
    title: tb.querySelector("tr.group th").textContent,
    rows: [...tb.querySelectorAll("th[data-raw]")].map((th) => [th.dataset.raw, th.textContent, th.parentElement.querySelector("td").dataset.value]),
  }));
  assert.deepEqual(group, { title: "Kept bots (flagged)", rows: want.stored_bots.map((r) => [r.reason, r.reason === "bot_crawler" ? "Crawlers" : r.reason, str(r.events)]) });
  noProblems(page);
  await page.close_all();
});

test("onboarding: a new site's settings show its snippets; the install check turns green when the copied snippet's page is opened", async () => {
  const fresh = "fresh-install.example";
  await api(veil, "/api/v1/sites", { body: { domain: fresh } });
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${fresh}/settings`);
  await page.waitForSelector('#install-check[data-state="waiting"]');
  assert.match(await page.$eval("#install-check", (e) => e.textContent), /No event yet/);
  const snippet = await page.$eval("#snippet-0", (e) => e.textContent);
  assert.equal(snippet, `<script defer src="${veil.url}/js/veil.js" data-domain="${fresh}"></script>`);
  // The snippet as copied, on a page of the site (another origin), in a browser that is not
  // announced as headless (Veil drops those as bots).
  const site = await pageServer({ "/": `<!doctype html><html><head><title>Fresh</title>${snippet}</head><body>Hello</body></html>` });
  const ctx = await chrome.newContext({ userAgent: UA.chrome });
  try {
    const visitor = await ctx.newPage();
    await visitor.goto(site.origin + "/");
    // Polled every 3 s by the page; green once the event is stored.
    await page.waitForSelector('#install-check[data-state="receiving"]', { timeout: 30_000 });
    assert.match(await page.$eval("#install-check", (e) => e.textContent), /Receiving events/);
    assert.deepEqual(await api(veil, `/api/v1/sites/${fresh}/install-check`), { site: fresh, receiving: true });
  } finally {
    await ctx.close();
    await site.close();
  }
  await screenshot(page, "settings-install");
  // The time zone is chosen from the zones the browser knows; saved, the API has it.
  assert.equal(await page.$eval('#general-form select[name="timezone"]', (s) => s.value), "UTC");
  await page.selectOption('#general-form select[name="timezone"]', "Europe/Berlin");
  await page.click('#general-form button[type="submit"]');
  await waitFor(async () => (await api(veil, `/api/v1/sites/${fresh}`)).settings?.timezone ?? (await api(veil, `/api/v1/sites/${fresh}`)).timezone,
    (tz) => tz === "Europe/Berlin", { what: (tz) => "timezone " + tz });
  // A shop's revenue bound (differential privacy's noise on revenue is sized for it): set,
  // the API has it; emptied, the server's default again.
  const bound = async () => { const d = await api(veil, `/api/v1/sites/${fresh}`); return (d.settings || d).revenue_bound ?? null; };
  await page.fill('#general-form input[name="revenue_bound"]', "49");
  await page.click('#general-form button[type="submit"]');
  await waitFor(bound, (b) => b === 49, { what: (b) => "revenue_bound " + b });
  await page.fill('#general-form input[name="revenue_bound"]', "");
  await page.click('#general-form button[type="submit"]');
  await waitFor(bound, (b) => b === null, { what: (b) => "revenue_bound " + b });
  // Its dashboard says there is no goal yet and links to where one is set up.
  await page.goto(`${veil.url}/site/${fresh}?period=day`);
  await page.waitForSelector("#no-goals a");
  assert.equal(await page.$eval("#no-goals a", (a) => new URL(a.href).pathname), `/site/${fresh}/settings`);
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

test("imported history: with a Plausible export imported, the numbers include it (the API's, include.imports) until the reader turns it off", async () => {
  // The fixture export (testing/plausible/make_export.py): 2026-11-18 to 2026-11-20.
  const zip = readFileSync(join(root, "testing/plausible/export.zip"));
  const res = await fetch(`${veil.url}/api/v1/sites/${SITE}/imports?source=plausible&file=export.zip`, {
    method: "POST", headers: { Authorization: "Bearer " + ADMIN, "Content-Type": "application/zip" }, body: zip });
  assert.ok(res.status === 200 || res.status === 201, `${res.status} ${await res.text()}`);
  const range = { period: "custom", from: "2026-11-18", to: "2026-11-20" };
  const q = (imports) => query(veil, { date_range: [range.from, range.to], metrics: ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"],
    include: imports ? { imports: true } : {} });
  const [withImports, without] = [await q(true), await q(false)];
  assert.equal(withImports.meta.imports_included, true, JSON.stringify(withImports.meta));
  assert.ok(withImports.results[0].metrics[0] > 0, JSON.stringify(withImports));
  const page = await open(chrome);
  await page.goto(dash(`period=custom&from=${range.from}&to=${range.to}`));
  await settled(page);
  await page.waitForSelector("#imports-l:not([hidden])");
  assert.equal(await page.$eval("#imports", (e) => e.checked), true);
  assert.equal((await statValues(page)).visitors, str(withImports.results[0].metrics[0]));
  // Turned off: Veil's own numbers, and the URL keeps the choice.
  await page.click("#imports");
  await page.waitForURL(/imports=0/);
  await settled(page);
  assert.equal((await statValues(page)).visitors, str(without.results[0].metrics[0]));
  assert.equal(await page.$eval("#imports-l", (e) => e.hidden), false);
  noProblems(page);
  await page.close_all();
  // Deleted, the history is gone from the answers (and the other tests' numbers are as seeded).
  const list = await api(veil, `/api/v1/sites/${SITE}/imports`);
  for (const i of list.imports) await api(veil, `/api/v1/sites/${SITE}/imports/${i.id}`, { method: "DELETE" });
  assert.equal((await q(true)).meta.imports_included, false);
});

test("the filter builder filters by a custom property (its key typed) and by a regular expression", async () => {
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${SITE}?period=7d`);
  await settled(page);
  await page.click("#filter-add summary");
  await page.selectOption("#filter-dim", "props");
  await page.waitForSelector("#filter-prop-l:not([hidden])");
  await page.fill('#filter-form input[name="prop"]', "plan");
  await page.selectOption('#filter-form select[name="op"]', "matches");
  await page.fill('#filter-form input[name="value"]', "^pro$");
  await page.click('#filter-form button[type="submit"]');
  await page.waitForURL((u) => u.searchParams.getAll("f").includes("matches~event:props:plan~^pro$"));
  await settled(page);
  assert.equal(await page.$eval("#filter-list .chip-text", (e) => e.textContent), "Property plan matches ^pro$");
  const want = await query(veil, { metrics: ["visitors"], filters: [["matches", "event:props:plan", ["^pro$"]]] });
  assert.ok(want.results[0].metrics[0] >= 5, JSON.stringify(want));
  assert.equal(await page.$eval('#stats .value[data-metric="visitors"]', (e) => e.dataset.value), String(want.results[0].metrics[0]));
  assert.deepEqual(await page.$$eval(".error", (l) => l.map((e) => e.textContent)), []);
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

test("a report refused once (429 with Retry-After) and answered on its retry shows the answer, not the refusal", async () => {
  const page = await open(chrome);
  let refused = 0;
  await page.route("**/api/v2/query", async (route) => {
    const body = route.request().postDataJSON();
    if (refused === 0 && body && Array.isArray(body.dimensions) && body.dimensions[0] === "visit:source") {
      refused++;
      return route.fulfill({ status: 429, headers: { "Retry-After": "1", "Content-Type": "application/json" },
        body: JSON.stringify({ error: "this credential already has 6 report requests under way; retry in 1 s" }) });
    }
    return route.continue();
  });
  await page.goto(dash("period=7d"));
  await settled(page);
  assert.equal(refused, 1);
  const want = await query(veil, { metrics: ["visitors", "visits"], dimensions: ["visit:source"], pagination: { limit: 10, offset: 0 } });
  assert.ok(want.results.length >= 2, JSON.stringify(want));
  assert.deepEqual((await panelRows(page, "sources")).map((r) => [r.raw, r.values]), want.results.map((r) => [r.dimensions[0], r.metrics.map(str)]));
  await page.close_all();
});
