// The dashboard on a generated site, clicked as a marketer would (issue 21's "Done when"):
// `veil up --demo` fills demo.veil.local with 30 days of generated traffic (schemas/src/gen:
// 200 000 events over a few hundred pages, a dozen sources, 32 countries, desktop/mobile/tablet,
// Signup and Purchase events) with goals for them and a funnel, and runs the rollup job at
// start. The test clicks a page in Top Pages, then a source, then the demo's Signup goal; after each
// click every panel (top stats, chart, pages, sources, locations, devices, custom events, goals,
// filtered traffic) answers with numbers or an explicit "no data" / k-anonymity message, never
// an error; the chip names the filter; the filtered visitors are the API's, more than 0 and at
// most the unfiltered ones; removing the chip brings the unfiltered numbers back. Every failed
// API call is reported with its request and answer. Each step's time (click to every panel
// drawn) is printed.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startVeil, browser, open, screenshot, api, waitFor } from "./fixture.mjs";

/** The site `veil up --demo` generates (cli/src/config.rs, DEMO_SITE). */
const DEMO = "demo.veil.local";
/** The dashboard's period: the last 7 days (about a quarter of the events); `VEIL_GENERATED_PERIOD=30d` reads all 30 days. */
const PERIOD = process.env.VEIL_GENERATED_PERIOD || "7d";
/** The web view's panels, in order (dashboards/web/app.js WEB_PANELS, then filtered traffic). */
const PANELS = ["pages", "sources", "locations", "devices", "events", "goals", "filtered"];
const STATS = ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration", "time_on_page"];
/** What a panel may say instead of rows (dashboards/web/app.js). */
const NO_ROWS = /^(No data for this period\.|Fewer than k visitors: hidden\.|Nothing filtered in this period\.)$/;
const ERROR_TEXT = /fail|error|exception|memory|HTTP 5\d\d/i;
/** A number as the dashboard writes it in data-value, or "null" (hidden under k). */
const VALUE = /^(null|-?\d+(\.\d+)?(e[+-]?\d+)?)$/;

let veil, chrome;

before(async () => {
  const t0 = Date.now();
  // Exact numbers (`--privacy exact`): the clicks need rows (/pricing in Top Pages, the Signup
  // goal) that a 7-day breakdown of this dataset does not lift over differential privacy's noisy
  // threshold, and "removing the chip brings the same numbers back" must not depend on the hour
  // (dp noise about today changes with it). privacy.test.mjs drives the same site in dp mode.
  veil = await startVeil({ args: ["--demo", "--privacy", "exact"], log: "warn,veil=info" });
  const t1 = Date.now();
  // The rollup job's first run starts once the demo data is written; it logs when it is done.
  const log = await waitFor(() => veil.log(), (l) => /rollups rebuilt|rollup job failed/.test(l),
    { ms: 240_000, every: 200, what: (l) => "the rollup job did not report:\n" + l.slice(-3000) });
  assert.doesNotMatch(log, /rollup job failed/, log.slice(-3000));
  console.log(`veil up --demo: ${t1 - t0} ms; rollups: ${Date.now() - t1} ms`);
  // The demo comes with its goals and funnel (cli/src/gen.rs demo_settings), none saved here.
  const site = await api(veil, `/api/v1/sites/${DEMO}`);
  assert.deepEqual((site.settings || site).goals.map((g) => g.name), ["Signup", "Purchase", "Outbound Link: Click", "Visit /pricing"]);
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await veil?.stop();
});

/** What the dashboard shows now: top stats, chart, panels, chips, messages. */
function shown(page) {
  return page.evaluate(() => {
    const text = (e) => (e ? e.textContent.trim() : "");
    const stats = document.querySelector("#stats");
    const notice = document.querySelector("#notice");
    return {
      stats: stats ? [...stats.children].map((li) => {
        const v = li.querySelector(".value");
        return v ? [v.dataset.metric, v.dataset.value] : ["error", text(li)];
      }) : [],
      chart: document.querySelector("#chart-data table")
        ? [...document.querySelectorAll("#chart-data tbody td")].map((td) => td.dataset.value) : null,
      chartError: text(document.querySelector("#chart .error")),
      panels: [...document.querySelectorAll("#view-body .panel")].map((p) => {
        const body = p.querySelector(".panel-body");
        return {
          id: p.id.replace(/^panel-/, ""),
          loading: text(body).includes("Loading…"),
          rows: [...body.querySelectorAll("tbody tr")].filter((tr) => tr.querySelector("td[data-value]")).map((tr) => ({
            raw: tr.querySelector("th")?.dataset.raw, values: [...tr.querySelectorAll("td[data-value]")].map((td) => td.dataset.value),
          })),
          hints: [...body.querySelectorAll(".hint")].map(text),
          errors: [...body.querySelectorAll(".error")].map(text),
        };
      }),
      chips: [...document.querySelectorAll("#filter-list li span")].map(text),
      notice: notice.hidden ? "" : text(notice),
      status: text(document.querySelector("#status")),
      text: text(document.querySelector("#view-body")),
    };
  });
}

/**
 * Waits until every panel has answered, then asserts each answer is numbers or an explicit
 * "no data" / k message and nothing reads like an error. `failed` holds the failed API calls.
 */
async function everyPanelAnswers(page, what, failed) {
  const s = await waitFor(() => shown(page),
    (v) => v.stats.length > 0 && (v.chart !== null || v.chartError !== "") && v.panels.length > 0 && v.panels.every((p) => !p.loading),
    { ms: 30_000, every: 100, what: (v) => `${what}: still loading after 30 s: ` +
      [v.stats.length ? null : "top stats", v.chart !== null || v.chartError ? null : "chart", ...v.panels.filter((p) => p.loading).map((p) => p.id)]
        .filter(Boolean).join(", ") + (failed.length ? "\nfailed API calls:\n" + failed.join("\n") : "") });
  const ctx = `${what}\nfailed API calls:\n${failed.join("\n") || "none"}\nshown: ${JSON.stringify(s)}`;
  assert.deepEqual(failed, [], `${what}: API calls failed`);
  assert.deepEqual(s.stats.map(([m]) => m), STATS, `${what}: top stats\n${ctx}`);
  for (const [m, v] of s.stats) assert.match(v, VALUE, `${what}: top stat ${m}\n${ctx}`);
  assert.equal(s.chartError, "", `${what}: chart\n${ctx}`);
  assert.ok(s.chart.length > 0 && s.chart.every((v) => VALUE.test(v)), `${what}: chart values\n${ctx}`);
  assert.deepEqual(s.panels.map((p) => p.id), PANELS, `${what}: panels\n${ctx}`);
  for (const p of s.panels) {
    assert.deepEqual(p.errors, [], `${what}: panel ${p.id} shows an error\n${ctx}`);
    if (p.rows.length > 0) {
      for (const r of p.rows) assert.ok(r.values.length > 0 && r.values.every((v) => VALUE.test(v)), `${what}: panel ${p.id} row ${r.raw}\n${ctx}`);
    } else {
      assert.ok(p.hints.some((t) => NO_ROWS.test(t)), `${what}: panel ${p.id} has neither rows nor a "no data" message\n${ctx}`);
    }
  }
  assert.doesNotMatch(s.text + " " + s.notice + " " + s.status, ERROR_TEXT, `${what}: error text on the page\n${ctx}`);
  return s;
}

const stat = (s, m) => s.stats.find(([k]) => k === m)?.[1];

test("on a generated site, a click on a page, a source and a goal filters every panel, and every panel answers", async () => {
  const page = await open(chrome);
  const failed = [];
  // Each report query's time and source (the API's meta.source), printed per step, slowest first.
  let timed = [];
  const started = new Map();
  page.on("request", (r) => started.set(r, Date.now()));
  page.on("response", async (r) => {
    const url = new URL(r.url());
    if (!url.pathname.startsWith("/api/")) return;
    let body = "";
    try { body = await r.text(); } catch { /* the page moved on */ }
    const ms = Date.now() - (started.get(r.request()) ?? Date.now());
    if (r.status() >= 400) failed.push(`${r.status()} ${url.pathname} ${r.request().postData() || ""} → ${body.slice(0, 500)}`);
    if (url.pathname === "/api/v2/query") {
      const q = JSON.parse(r.request().postData() || "{}");
      let source = "?";
      try { source = JSON.parse(body).meta?.source ?? "?"; } catch { /* an error's text */ }
      timed.push({ ms, what: `${(q.dimensions || []).join(",") || "totals"} [${(q.metrics || []).join(",")}] ${source}` });
    }
  });
  const slowest = () => {
    const out = timed.sort((a, b) => b.ms - a.ms).slice(0, 3).map((t) => `${t.ms} ms ${t.what}`).join("; ");
    timed = [];
    return out;
  };
  const dash = `${veil.url}/site/${DEMO}?period=${PERIOD}`;
  let t0 = Date.now();
  await page.goto(dash);
  const base = await everyPanelAnswers(page, "unfiltered", failed);
  console.log(`unfiltered, ${PERIOD}: every panel in ${Date.now() - t0} ms; slowest: ${slowest()}`);
  const baseVisitors = Number(stat(base, "visitors"));
  assert.ok(baseVisitors > 1000, `the generated site has visitors: ${JSON.stringify(base.stats)}`);
  assert.deepEqual(base.chips, []);

  const clicks = [
    { panel: "pages", label: "/pricing", dim: "event:page", chip: "Page is /pricing" },
    { panel: "sources", label: "Google", dim: "visit:source", chip: "Source is Google" },
    { panel: "goals", label: "Signup", dim: "event:goal", chip: "Goal is Signup" },
  ];
  for (const { panel, label, dim, chip } of clicks) {
    t0 = Date.now();
    await page.click(`#panel-${panel} button.row:text-is("${label}")`);
    await page.waitForURL((u) => u.searchParams.getAll("f").includes(`is~${dim}~${label}`));
    const s = await everyPanelAnswers(page, chip, failed);
    console.log(`${chip}: every panel in ${Date.now() - t0} ms; visitors ${stat(s, "visitors")} of ${baseVisitors}; slowest: ${slowest()}`);
    await screenshot(page, "generated-" + panel);
    assert.deepEqual(s.chips, [chip]);
    const visitors = Number(stat(s, "visitors"));
    assert.ok(visitors > 0 && visitors <= baseVisitors, `${chip}: ${visitors} visitors of ${baseVisitors}`);
    const want = await api(veil, "/api/v2/query", { body: { site_id: DEMO, date_range: PERIOD, metrics: ["visitors"],
      filters: [["is", dim, [label]]] } });
    assert.equal(stat(s, "visitors"), String(want.results[0].metrics[0]), `${chip}: the API's visitors`);
    // The panel clicked in now shows the chosen row.
    assert.ok(s.panels.find((p) => p.id === panel).rows.some((r) => r.raw === label), `${chip}: ${panel} lists ${label}`);

    await page.click('#filter-list button[aria-label^="Remove filter"]');
    await page.waitForURL((u) => u.searchParams.getAll("f").length === 0);
    t0 = Date.now();
    const again = await everyPanelAnswers(page, `${chip} removed`, failed);
    console.log(`${chip} removed: every panel in ${Date.now() - t0} ms`);
    timed = [];
    assert.deepEqual(again.chips, []);
    assert.equal(stat(again, "visitors"), stat(base, "visitors"), `${chip} removed: the unfiltered visitors again`);
  }
  assert.deepEqual(page.problems, [], "console errors, page errors or dialogs");
  await page.close_all();
});

test("locations speak Plausible's place vocabulary: region and city names shown, ISO 3166-2 codes and GeoNames ids in the API, a click filters by the city", async () => {
  // The generator stores places as the collector does (`DE-BY|Bavaria`, `2867714|Munich`,
  // schemas/src/places.rs); the panel shows names, the API's visit:region and visit:city answer
  // codes and ids (issue 17, point 2), and both select the same visitors.
  const page = await open(chrome);
  const failed = [];
  page.on("response", async (r) => {
    if (new URL(r.url()).pathname.startsWith("/api/") && r.status() >= 400) failed.push(`${r.status()} ${r.url()}`);
  });
  const tab = async (t) => {
    await page.goto(`${veil.url}/site/${DEMO}?period=${PERIOD}&t.locations=${t}`);
    const s = await everyPanelAnswers(page, `locations: ${t}`, failed);
    return s.panels.find((p) => p.id === "locations").rows.map((r) => r.raw);
  };
  const regions = await tab("region");
  for (const r of ["California", "Bavaria", "England"]) assert.ok(regions.includes(r), `${r} in ${regions}`);
  assert.ok(regions.every((r) => !r.includes("|") && !/^[A-Z]{2}-/.test(r)), `names, not stored values or codes: ${regions}`);
  const cities = await tab("city");
  for (const c of ["San Francisco", "Munich", "London"]) assert.ok(cities.includes(c), `${c} in ${cities}`);
  assert.ok(cities.every((c) => !c.includes("|") && !/^\d+$/.test(c)), `names, not ids: ${cities}`);

  const ask = (body) => api(veil, "/api/v2/query", { body: { site_id: DEMO, date_range: PERIOD, metrics: ["visitors"], ...body } });
  const byRegion = await ask({ dimensions: ["visit:region", "visit:region_name"] });
  assert.ok(byRegion.results.some((r) => r.dimensions[0] === "DE-BY" && r.dimensions[1] === "Bavaria"), JSON.stringify(byRegion.results));
  const byCity = await ask({ dimensions: ["visit:city", "visit:city_name"] });
  assert.ok(byCity.results.some((r) => r.dimensions[0] === 2867714 && r.dimensions[1] === "Munich"), JSON.stringify(byCity.results));

  await page.click('#panel-locations button.row:text-is("Munich")');
  await page.waitForURL((u) => u.searchParams.getAll("f").includes("is~visit:city_name~Munich"));
  const s = await everyPanelAnswers(page, "City is Munich", failed);
  assert.deepEqual(s.chips, ["City is Munich"]);
  const byId = await ask({ filters: [["is", "visit:city", [2867714]]] });
  const byName = await ask({ filters: [["is", "visit:city_name", ["Munich"]]] });
  assert.ok(byId.results[0].metrics[0] > 0, JSON.stringify(byId));
  assert.equal(byId.results[0].metrics[0], byName.results[0].metrics[0]);
  assert.equal(stat(s, "visitors"), String(byId.results[0].metrics[0]));
  assert.deepEqual(page.problems, [], "console errors, page errors or dialogs");
  await page.close_all();
});

// The demo app (`veil up --demo` fills demo-app.veil.local with 30 days of an iOS and Android
// app's events: schemas/src/gen/app.rs) in the App view and in Realtime, as its owner would
// look at it: the top stats are the API's (active users, sessions, launch times, crashes) and
// the crash-free sessions card is 100 × (1 − crashes ÷ sessions) of them; the version adoption
// chart's table is the API's users per day and version with their shares of the day's users,
// 2.4.x rising over the month; the panels list the rolling-out versions, iOS and Android, device
// models and install sources, and Realtime shows people using the app now.
test("the demo app: the App view shows its versions and their adoption, OS, devices, install sources, launch times, crashes and crash-free sessions; Realtime shows it live", async () => {
  const APP = "demo-app.veil.local";
  const page = await open(chrome);
  const failed = [];
  page.on("response", async (r) => {
    if (!new URL(r.url()).pathname.startsWith("/api/") || r.status() < 400) return;
    let body = "";
    try { body = await r.text(); } catch { /* the page moved on */ }
    failed.push(`${r.status()} ${new URL(r.url()).pathname} ${r.request().postData() || ""} → ${body.slice(0, 500)}`);
  });
  const settledView = (what) => waitFor(() => shown(page),
    (v) => v.stats.length > 0 && v.stats.every(([, x]) => x !== undefined) && v.panels.length > 0 && v.panels.every((p) => !p.loading),
    { ms: 30_000, every: 100, what: (v) => `${what}: still loading after 30 s: ${JSON.stringify(v).slice(0, 2000)}\n${failed.join("\n")}` });
  const rowsOf = (s, id) => s.panels.find((p) => p.id === id).rows;
  const q = (body) => api(veil, "/api/v2/query", { body: { site_id: APP, date_range: "30d", ...body } });
  const str = (v) => (v === null || v === undefined ? "null" : String(v));

  // Realtime first: the generated sessions end at the start of `veil up`, minutes ago.
  await page.goto(`${veil.url}/site/${APP}?view=realtime`);
  const rt = await waitFor(() => page.evaluate(() => ({
    visitors: document.querySelector("#rt-visitors")?.dataset.value,
    pages: [...document.querySelectorAll("#panel-pages tbody th")].map((th) => th.dataset.raw).filter(Boolean),
    updated: document.querySelector("#rt-updated")?.textContent || "",
  })), (v) => v.visitors !== undefined && v.updated !== "", { ms: 20_000, what: "realtime did not answer" });
  const live = await api(veil, `/api/v1/sites/${APP}/realtime`);
  console.log(`demo app realtime: page ${rt.visitors} users in the last 5 minutes, API ${live.visitors_5m}; screens ${rt.pages.join(", ")}`);
  assert.ok(Number(rt.visitors) > 0, `Realtime shows the app in use: ${JSON.stringify(rt)} (API: ${JSON.stringify(live)})`);
  assert.ok(Number(live.visitors_5m) > 0, JSON.stringify(live));
  // Screens in use (rarer ones may be folded into an "(other: N rows under k)" row).
  assert.ok(rt.pages.includes("/home") && rt.pages.includes("/"), `screens used now: ${JSON.stringify(rt)}`);
  assert.doesNotMatch(rt.updated, /fail/i, rt.updated);

  // The App view over the 30 days.
  await page.goto(`${veil.url}/site/${APP}?view=app&period=30d`);
  let s = await settledView("app view");
  assert.deepEqual(failed, [], "API calls failed");
  const metrics = ["visitors", "visits", "sessions_per_user", "dau", "launch_time_p50", "launch_time_p95", "latency_p50", "latency_p95", "crashes"];
  assert.deepEqual(s.stats.map(([m]) => m), [...metrics, "crash_free_sessions"]);
  // The API serves percentiles apart from visit metrics: two questions, as the page asks them.
  const users = await q({ metrics: metrics.slice(0, 4) });
  const perf = await q({ metrics: metrics.slice(4) });
  const want = [...users.results[0].metrics, ...perf.results[0].metrics].map(str);
  // Counts and rates exactly; the percentiles within 5 %: ClickHouse's `quantile` samples a
  // reservoir of 8192 values, and the month has tens of thousands of launches, so two
  // identical questions may get slightly different medians.
  s.stats.slice(0, metrics.length).forEach(([m, v], i) => {
    if (/_p(50|95)$/.test(m)) {
      assert.ok(Math.abs(Number(v) - Number(want[i])) <= 0.05 * Number(want[i]), `${m}: page ${v}, API ${want[i]}`);
    } else {
      assert.equal(v, want[i], `${m}: the API's`);
    }
  });
  const stat = Object.fromEntries(s.stats);
  console.log(`demo app, 30 days: ${JSON.stringify(stat)}`);
  assert.ok(Number(stat.visitors) > 10_000 && Number(stat.sessions_per_user) > 1, JSON.stringify(stat));
  assert.ok(Number(stat.launch_time_p50) >= 300 && Number(stat.launch_time_p50) <= 1200, `launch time p50 ${stat.launch_time_p50}`);
  assert.ok(Number(stat.launch_time_p95) > Number(stat.launch_time_p50), JSON.stringify(stat));
  assert.ok(Number(stat.crashes) > 0, `the odd crash: ${stat.crashes}`);
  const labels = await page.$$eval("#stats .label", (els) => els.map((e) => e.textContent));
  assert.ok(labels.includes("Active users") && labels.includes("Sessions") && labels.includes("Launch time p50") &&
    labels.includes("Crashes") && labels.includes("Crash-free sessions"), JSON.stringify(labels));

  // Crash-free sessions: each crash is reported once, on the launch after it (`crash` = 1), so
  // 100 × (1 − crashes ÷ sessions), from the API's two numbers; the month's few crashes leave
  // most sessions crash-free.
  const crashes = perf.results[0].metrics[metrics.indexOf("crashes") - 4];
  const sessions = users.results[0].metrics[metrics.indexOf("visits")];
  const crashFree = 100 * (1 - crashes / sessions);
  assert.ok(Math.abs(Number(stat.crash_free_sessions) - crashFree) < 1e-9, `crash-free: page ${stat.crash_free_sessions}, API ${crashes} crashes in ${sessions} sessions`);
  assert.ok(crashFree > 95 && crashFree < 100, `crash-free sessions ${crashFree}`);
  assert.equal(await page.textContent('#stats [data-stat="crash_free_sessions"] .value'), `${Math.round(crashFree * 10) / 10}%`);

  // Version adoption: the table under the chart is the API's answer to the same question (users
  // per day and version), each row with its share of the users listed that day; lines for the
  // five versions, named under the chart; 2.4.0 (ten days before the end) and its hotfix 2.4.1
  // (four days before) take over the last days of the month.
  await page.waitForSelector("#adoption-data table", { state: "attached" });
  const adoption = await page.$$eval("#adoption-data tbody tr", (trs) => trs.map((tr) => ({ time: tr.dataset.time, version: tr.dataset.version,
    users: tr.querySelector('td[data-metric="visitors"]')?.dataset.value, share: tr.querySelector('td[data-metric="version_share"]')?.dataset.value,
    text: tr.textContent })));
  const perDay = await q({ metrics: ["visitors"], dimensions: ["time:day", "visit:app_version"], include: { time_labels: true } });
  const days = perDay.meta.time_labels;
  assert.deepEqual(adoption.filter((r) => r.version !== undefined).map((r) => [r.time, r.version, r.users]),
    perDay.results.map((r) => [r.dimensions[0], r.dimensions[1], str(r.metrics[0])]), "the adoption table is the API's answer");
  assert.deepEqual([...new Set(adoption.map((r) => r.time))], days, "a row for every day");
  const dayUsers = (d) => perDay.results.filter((r) => r.dimensions[0] === d);
  const shareOf = (d, prefix) => {
    const rows = dayUsers(d), all = rows.reduce((a, r) => a + r.metrics[0], 0);
    return 100 * rows.filter((r) => r.dimensions[1].startsWith(prefix)).reduce((a, r) => a + r.metrics[0], 0) / all;
  };
  for (const d of [days[0], days[days.length - 8], days[days.length - 1]]) {
    for (const r of dayUsers(d)) {
      const row = adoption.find((x) => x.time === d && x.version === r.dimensions[1]);
      assert.ok(Math.abs(Number(row.share) - shareOf(d, r.dimensions[1])) < 1e-9, `${d} ${r.dimensions[1]}: share ${row.share}, API ${JSON.stringify(dayUsers(d))}`);
      assert.ok(row.text.includes(`${Math.round(Number(row.share) * 10) / 10}%`), `${d} ${r.dimensions[1]}: ${row.text}`);
    }
  }
  const rising = days.map((d) => shareOf(d, "2.4."));
  console.log(`demo app: 2.4.x share of each day's users: ${rising.map((x) => x.toFixed(1)).join(" ")}`);
  assert.ok(rising.slice(0, 15).every((x) => x === 0), `no 2.4.x in the first half of the month: ${rising}`);
  const n = days.length;
  assert.ok(rising[n - 1] > 60 && rising[n - 1] > rising[n - 4] && rising[n - 4] > rising[n - 7] && rising[n - 7] > 0,
    `2.4.x rising over the last days: ${rising}`);
  const legend = await page.$$eval("#adoption-legend li", (lis) => lis.map((li) => li.textContent));
  assert.deepEqual([...legend].sort(), ["2.2.3", "2.3.0", "2.3.1", "2.4.0", "2.4.1"], `lines named: ${legend}`);
  assert.match(await page.textContent("#adoption-note"), /share of the users listed.*fewer than 5 users in a day is not listed/s);
  assert.equal(await page.getAttribute("#adoption .plot", "role"), "img");
  assert.ok(await page.isVisible("#adoption canvas"), "the adoption chart is drawn");

  // Versions: the panel's rows are the API's; the month saw 2.3 and 2.4 releases.
  const versions = await q({ metrics: ["visitors", "visits"], dimensions: ["visit:app_version"], pagination: { limit: 10, offset: 0 } });
  assert.deepEqual(rowsOf(s, "app_versions").map((r) => [r.raw, r.values]),
    versions.results.map((r) => [r.dimensions[0], r.metrics.map(str)]), "versions are the API's");
  for (const v of ["2.4.1", "2.4.0", "2.3.1", "2.3.0"]) {
    assert.ok(rowsOf(s, "app_versions").some((r) => r.raw === v), `${v} listed: ${JSON.stringify(rowsOf(s, "app_versions"))}`);
  }

  // Each tab asked for in turn: OS, OS versions (with their OS), device models, install sources.
  const tab = async (panel, id) => {
    await page.click(`#panel-${panel} [role="tab"][data-tab="${id}"]`);
    await page.waitForURL((u) => u.searchParams.get(`t.${panel}`) === id);
    s = await settledView(`${panel}: ${id}`);
    return rowsOf(s, panel);
  };
  const os = await tab("app_versions", "os");
  assert.deepEqual(os.map((r) => r.raw).sort(), ["Android", "iOS"], JSON.stringify(os));
  const osVersions = await page.$$eval("#panel-app_versions tbody th", (ths) => ths.map((th) => th.textContent));
  await tab("app_versions", "os_version");
  const osVersionLabels = await page.$$eval("#panel-app_versions tbody th", (ths) => ths.map((th) => th.textContent.trim()));
  assert.ok(osVersionLabels.some((l) => l.startsWith("iOS 1")) && osVersionLabels.some((l) => l.startsWith("Android 1")),
    `OS versions with their OS: ${JSON.stringify(osVersionLabels)} (OS tab: ${JSON.stringify(osVersions)})`);
  const installs = await tab("install", "install_source");
  const want_sources = await q({ metrics: ["visitors"], dimensions: ["visit:install_source"], pagination: { limit: 10, offset: 0 } });
  assert.deepEqual(installs.map((r) => [r.raw, r.values]), want_sources.results.map((r) => [r.dimensions[0], r.metrics.map(str)]));
  for (const src of ["App Store", "Google Play", "TestFlight"]) {
    assert.ok(installs.some((r) => r.raw === src), `${src} listed: ${JSON.stringify(installs)}`);
  }
  const models = await tab("install", "device_model");
  assert.ok(models.length === 10 && models.some((r) => r.raw.startsWith("iPhone")) && models.some((r) => /^(SM-|Pixel)/.test(r.raw)),
    `device models: ${JSON.stringify(models)}`);
  const locales = await tab("install", "locale");
  assert.ok(locales.some((r) => r.raw === "en-US") && locales.some((r) => r.raw === "de-DE"), `locales: ${JSON.stringify(locales)}`);
  const events = rowsOf(s, "app_events").map((r) => r.raw);
  for (const e of ["app_started", "screen_view"]) assert.ok(events.includes(e), `${e} in App events: ${JSON.stringify(events)}`);
  await screenshot(page, "demo-app");
  assert.deepEqual(failed, [], "API calls failed");
  assert.deepEqual(page.problems, [], "console errors, page errors or dialogs");
  await page.close_all();
});

test("a countries map: every country with visitors shaded with the API's number, a click filters by it", async () => {
  const page = await open(chrome);
  const failed = [];
  page.on("response", async (r) => {
    if (new URL(r.url()).pathname.startsWith("/api/") && r.status() >= 400) failed.push(`${r.status()} ${r.url()}`);
  });
  await page.goto(`${veil.url}/site/${DEMO}?period=${PERIOD}&t.locations=map`);
  await everyPanelAnswers(page, "locations: map", failed);
  await page.waitForSelector("#world-map svg path[data-country='US']");
  const shaded = await page.$$eval("#world-map path", (ps) => ps.map((p) => ({ code: p.dataset.country, value: p.dataset.value,
    data: p.classList.contains("has-data"), title: p.querySelector("title").textContent, d: p.getAttribute("d") })));
  assert.ok(shaded.length > 150, `${shaded.length} countries drawn`);
  assert.ok(shaded.every((c) => c.d.startsWith("M")), "every country has a shape");
  const want = await api(veil, "/api/v2/query", { body: { site_id: DEMO, date_range: PERIOD, metrics: ["visitors"],
    dimensions: ["visit:country"], pagination: { limit: 300, offset: 0 } } });
  const byCode = new Map(want.results.map((r) => [r.dimensions[0], r.metrics[0]]));
  const withData = shaded.filter((c) => c.data);
  // The demo's 32 countries, each with the API's visitors (Singapore is too small for a
  // 1:110m shape, so it is listed in the table only).
  assert.ok(withData.length >= byCode.size - 2 && withData.length <= byCode.size, `${withData.length} of ${byCode.size}`);
  for (const c of withData) assert.equal(c.value, String(byCode.get(c.code)), c.code);
  const us = shaded.find((c) => c.code === "US");
  assert.match(us.title, new RegExp(`^United States \\(US\\): ${byCode.get("US").toLocaleString("en-US")}$`));
  assert.ok(shaded.filter((c) => !c.data).every((c) => c.value === "null" && /no data$/.test(c.title)));
  // The table under the map lists the first ten, as the Countries tab does.
  const rows = await page.$$eval("#panel-locations tbody th[data-raw]", (ths) => ths.map((th) => th.dataset.raw));
  assert.deepEqual(rows, want.results.slice(0, 10).map((r) => r.dimensions[0]));
  await page.click("#world-map path[data-country='DE']");
  await page.waitForURL((u) => u.searchParams.getAll("f").includes("is~visit:country~DE"));
  const s = await everyPanelAnswers(page, "Country is DE", failed);
  const de = await api(veil, "/api/v2/query", { body: { site_id: DEMO, date_range: PERIOD, metrics: ["visitors"],
    filters: [["is", "visit:country", ["DE"]]] } });
  assert.equal(stat(s, "visitors"), String(de.results[0].metrics[0]));
  await screenshot(page, "countries-map");
  assert.deepEqual(page.problems, [], "console errors, page errors or dialogs");
  await page.close_all();
});
