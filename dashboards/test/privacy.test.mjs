// Differential privacy on screen (issue 15), in headless Chromium against a real `veil up`:
// - on the default flags (`--privacy dp`, ε 0.5 a question, 50 a day per credential) and the
//   generated site of `--demo` (big enough for breakdown rows to pass the noisy threshold), the
//   first screen writes every number "≈ N", a count's ± of its 95 % interval shows on hover and
//   focus and is in the title and the screen-reader text, the footer shows the credential's
//   budget, and each number equals the API's answer to the same question asked afterwards
//   (asked again the same day and hour: the same noisy answer, free);
// - a site key and a shared link have budgets of their own; a click filters in dp; funnels and
//   realtime are approximate too; the App view's crash-free sessions and version adoption
//   chart are computed from, and list, only what the API published;
// - with a small budget (`--epsilon-day 2`) the panels asked after it ran out show the API's
//   "budget is spent" message (never retried), the footer says it is spent, the questions
//   answered before are answered again for free, and a realtime view shows the message and
//   stops refreshing.
// The exact mode's footer warning is checked in dashboard.test.mjs (which runs `--privacy exact`).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startVeil, seed, browser, open, screenshot, settled, api, waitFor, SITE, ADMIN } from "./fixture.mjs";

/** The site `veil up --demo` generates (cli/src/config.rs, DEMO_SITE). */
const DEMO = "demo.veil.local";
const nf = new Intl.NumberFormat("en-US");
const str = (v) => (v === null || v === undefined ? "null" : String(v));
/** The title (and screen-reader text) of a noisy count and of a noisy rate or mean. */
const COUNT_TITLE = /^≈ [\d,.]+ ± [\d,.]+ \(95 % interval, differential privacy\)$/;
const RATE_TITLE = /^≈ .+ \(noisy: differential privacy\)$/;
const FOOTER = /^Privacy: differential privacy, ε [\d,.]+ of 50 used today \(renews 00:00 UTC\)\.$/;

let veil, chrome;

before(async () => {
  // The default privacy flags: nothing added.
  veil = await startVeil({ args: ["--demo"], log: "warn,veil=info" });
  const log = await waitFor(() => veil.log(), (l) => /rollups rebuilt|rollup job failed/.test(l),
    { ms: 240_000, every: 200, what: (l) => "the rollup job did not report:\n" + l.slice(-3000) });
  assert.doesNotMatch(log, /rollup job failed/, log.slice(-3000));
  const site = await api(veil, `/api/v1/sites/${DEMO}`);
  const settings = { ...(site.settings || site), goals: [{ name: "Signup", event_name: "Signup" }, { name: "Purchase", event_name: "Purchase" }],
    funnels: [{ name: "Buy", steps: ["Signup", "Purchase"] }] };
  delete settings.domain;
  delete settings.source;
  await api(veil, `/api/v1/sites/${DEMO}`, { method: "PUT", body: settings });
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await veil?.stop();
});

/**
 * Runs `fn` again (at most twice more) when a UTC hour began while it ran: a question about today
 * is keyed by the hour, so across the hour the page and the API would be asked two questions
 * with two noises. Assertions follow on what it returns.
 */
async function withinOneHour(fn) {
  for (let i = 0; ; i++) {
    const hour = new Date().toISOString().slice(0, 13);
    const out = await fn();
    if (new Date().toISOString().slice(0, 13) === hour || i >= 2) return out;
  }
}

/** A Stats API question about the demo site over the last 7 days, as the page asks it. */
function ask(q, token = ADMIN) {
  return api(veil, "/api/v2/query", { body: { site_id: DEMO, date_range: "7d", filters: [], ...q }, token });
}

/** Every number element of the page (stat values, table cells): what it shows and says. */
function numbers(page, scope = "#view-body") {
  return page.$$eval(`${scope} .value[data-value], ${scope} td.n[data-value]`, (els) => els.map((e) => ({
    id: e.closest("[id]")?.id, metric: e.dataset.metric, value: e.dataset.value, ci: e.dataset.ci ?? null,
    approx: e.classList.contains("approx"), title: e.title,
    visible: [...e.querySelectorAll('[aria-hidden="true"]')].map((x) => x.textContent).join("") || e.textContent,
    sr: e.querySelector(".sr-only")?.textContent ?? null, bubble: e.querySelector(".ci")?.textContent ?? null,
  })));
}

/** Asserts `n` (from `numbers`) is written as a noisy number of the answer whose privacy is `priv`. */
function assertApprox(n, priv, ciKey = n.metric) {
  const what = JSON.stringify(n);
  if (n.value === "null") return;
  assert.ok(n.approx, what);
  assert.match(n.visible, /^≈ /, what);
  assert.equal(n.sr, n.title, what);
  const ci = priv ? priv.interval95[ciKey] : null;
  if (ci === null || ci === undefined) {
    assert.match(n.title, RATE_TITLE, what);
    assert.equal(n.ci, "null", what);
    assert.equal(n.bubble, null, what);
  } else {
    assert.match(n.title, COUNT_TITLE, what);
    assert.equal(n.ci, String(ci), what);
    assert.ok(n.title.includes(" ± " + nf.format(ci) + " "), what);
    assert.equal(n.bubble, "± " + nf.format(ci), what);
  }
}

async function footer(page) {
  return page.$eval("#privacy-note", (e) => ({ hidden: e.hidden, text: e.textContent, mode: e.dataset.mode, spent: e.dataset.spent,
    warn: e.classList.contains("warn") }));
}

/** Whether the interval bubble of `selector` (an element holding one .approx) is shown. */
function bubbleShown(page, selector) {
  return page.$eval(`${selector} .ci`, (e) => getComputedStyle(e).display !== "none" && e.getBoundingClientRect().width > 0);
}

const PANELS = {
  pages: [["visitors", "pageviews"], "event:page"],
  sources: [["visitors", "visits"], "visit:source"],
  locations: [["visitors"], "visit:country"],
  devices: [["visitors"], "visit:browser"],
  events: [["visitors", "events"], "event:name", [["is_not", "event:name", ["pageview", "engagement"]]]],
  goals: [["visitors", "events", "conversion_rate"], "event:goal"],
};
const STATS = [["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], ["time_on_page"]];

test("dp on the default flags: the first screen writes every number ≈ with its 95 % interval, the footer the budget; numbers are the API's", async () => {
  const page = await open(chrome);
  const run = () => withinOneHour(async () => {
    await page.goto(`${veil.url}/site/${DEMO}?period=7d`);
    await settled(page);
    const shown = await numbers(page);
    const want = { stats: await Promise.all(STATS.map((metrics) => ask({ metrics, dimensions: [] }))), panels: {} };
    for (const [id, [metrics, dim, filters]] of Object.entries(PANELS)) {
      want.panels[id] = await ask({ metrics, dimensions: [dim], filters: filters || [], pagination: { limit: 10, offset: 0 },
        include: { total_rows: true } });
    }
    want.chart = await ask({ metrics: ["visitors"], dimensions: ["time:day"], include: { time_labels: true } });
    want.filtered = await api(veil, `/api/v1/sites/${DEMO}/filtered-traffic?date_range=7d`);
    return { shown, want, footer: await footer(page) };
  });
  const { shown, want, footer: foot } = await run();
  await screenshot(page, "dp-dashboard");

  // Every question the test asked is one the page asked already: repeated, free, the same answer.
  const answers = [...want.stats, ...Object.values(want.panels), want.chart];
  for (const a of answers) {
    assert.equal(a.meta.privacy.mode, "dp");
    assert.deepEqual([a.meta.privacy.repeated, a.meta.privacy.epsilon], [true, 0], JSON.stringify(a.query));
  }
  assert.deepEqual([want.filtered.privacy.repeated, want.filtered.privacy.epsilon], [true, 0]);

  // Top stats: the API's numbers, each "≈", counts with ±, rates and means without.
  const statOf = (m) => shown.find((n) => n.id === "stats" && n.metric === m);
  STATS.forEach((metrics, g) => metrics.forEach((m, i) => {
    const n = statOf(m);
    assert.ok(n, m);
    assert.equal(n.value, str(want.stats[g].results[0].metrics[i]), m);
    assertApprox(n, want.stats[g].meta.privacy);
  }));
  assert.ok(Number(statOf("visitors").ci) > 0, "a count has an interval");
  assert.equal(statOf("bounce_rate").ci, "null", "a rate has none");

  // Panels: the API's rows, every cell "≈" with the interval of its metric.
  let cells = 0;
  for (const [id, [metrics]] of Object.entries(PANELS)) {
    const rows = await page.$$eval(`#panel-${id} tbody tr`, (trs) => trs.filter((tr) => tr.querySelector("td[data-value]"))
      .map((tr) => [tr.querySelector("th").dataset.raw, [...tr.querySelectorAll("td[data-value]")].map((td) => td.dataset.value)]));
    const w = want.panels[id];
    assert.deepEqual(rows, w.results.map((r) => [str(r.dimensions[0]), r.metrics.map(str)]), id);
    for (const n of shown.filter((x) => x.id === "tp-" + id)) { assertApprox(n, w.meta.privacy); cells++; }
    if (w.results.length === 0) {
      assert.match(await page.$eval(`#panel-${id} tbody td.hint`, (e) => e.textContent),
        /^No row has enough visitors to be listed under differential privacy \(threshold: [\d,]+\)\.$/, id);
    }
  }
  // Filtered traffic: the API's reasons, noisy too.
  const reasons = await page.$$eval("#panel-filtered tbody[data-group=dropped] th[data-raw]", (ths) =>
    ths.map((th) => [th.dataset.raw, th.parentElement.querySelector("td").dataset.value]));
  assert.deepEqual(reasons, want.filtered.dropped.map((r) => [r.reason, str(r.events)]));
  for (const n of shown.filter((x) => x.id === "tp-filtered")) assertApprox(n, want.filtered.privacy);
  assert.ok(cells >= 4, `only ${cells} table numbers on the first screen`);
  assert.equal(await page.$$eval("#view-body .folded", (l) => l.length), 0, "no fold rows in dp");

  // The chart's table lists every day, each the API's noisy number with the series' interval.
  const chartRows = await page.$$eval("#chart-data tbody tr", (trs) => trs.map((tr) => [tr.dataset.time, tr.querySelector("td").dataset.value]));
  assert.deepEqual(chartRows.map((r) => r[0]), want.chart.meta.time_labels);
  const byDay = new Map(want.chart.results.map((r) => [r.dimensions[0], str(r.metrics[0])]));
  for (const [day, v] of chartRows) assert.equal(v, byDay.get(day), day);
  for (const n of shown.filter((x) => x.id === "chart-data")) assertApprox(n, want.chart.meta.privacy);

  // Hover and focus show the ± bubble; otherwise it is hidden.
  const visitors = '#stats .stat[data-stat="visitors"] .value';
  assert.equal(await bubbleShown(page, visitors), false);
  await page.hover('#stats .stat[data-stat="visitors"]');
  assert.equal(await bubbleShown(page, visitors), true, "hover shows the interval");
  await page.mouse.move(0, 0);
  await page.focus('#stats .stat[data-stat="visitors"] button');
  assert.equal(await bubbleShown(page, visitors), true, "focus shows the interval");
  const row = "#panel-sources tbody tr:first-child";
  await page.$eval("#panel-sources", (e) => e.scrollIntoView());
  await page.hover(row + " th");
  assert.equal(await bubbleShown(page, row + " td.n"), true, "hovering a row shows its intervals");
  await screenshot(page, "dp-hover");
  // The chart's tooltip writes the hovered day's number ≈ N ± I.
  await page.$eval("#chart", (e) => e.scrollIntoView());
  const box = await (await page.$("#chart .u-over")).boundingBox();
  await page.mouse.move(box.x + 5, box.y + 5);
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2, { steps: 5 });
  const tip = await waitFor(() => page.$eval("#chart-tip", (e) => (e.hidden ? "" : e.innerText)),
    (t) => t !== "", { ms: 5_000, what: "the tooltip shows no hovered value" });
  assert.match(tip.split("\n")[1], new RegExp(`: ≈ [\\d,]+ ± ${nf.format(want.chart.meta.privacy.interval95.visitors)}$`), tip);

  // The footer: this credential's budget after the page's questions, as the API counts it.
  assert.equal(foot.hidden, false);
  assert.equal(foot.mode, "dp");
  assert.match(foot.text, FOOTER);
  assert.equal(foot.spent, String(want.chart.meta.privacy.budget.spent));
  assert.ok(Number(foot.spent) >= 0.5 * 10, `the first screen asks at least ten questions: ${foot.spent}`);
  assert.equal(foot.warn, false);
  assert.match(await page.$eval("#k-note", (e) => e.textContent), /^Numbers marked ≈ carry differential-privacy noise/);
  assert.deepEqual(page.problems, []);
  await page.close_all();

  // Phone width and dark mode: the "≈" numbers fit (no sideways scrolling), the bubble reads well.
  const dark = await open(chrome, { viewport: { width: 375, height: 800 }, colorScheme: "dark" });
  await dark.goto(`${veil.url}/site/${DEMO}?period=7d`);
  await settled(dark);
  assert.ok(await dark.evaluate(() => document.documentElement.scrollWidth) <= 376, "no sideways scrolling at 375 px");
  await dark.focus('#stats .stat[data-stat="pageviews"] button');
  const sel = '#stats .stat[data-stat="pageviews"] .value';
  assert.equal(await bubbleShown(dark, sel), true);
  const contrast = await dark.$eval(`${sel} .ci`, (e) => {
    const rgb = (c) => c.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
    const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
      .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
    const [a, b] = [lum(rgb(getComputedStyle(e).color)), lum(rgb(getComputedStyle(e).backgroundColor))].sort((x, y) => y - x);
    return (a + 0.05) / (b + 0.05);
  });
  assert.ok(contrast >= 4.5, `bubble contrast ${contrast}`);
  await screenshot(dark, "dp-phone-dark");
  assert.deepEqual(dark.problems, []);
  await dark.close_all();

  // The site list writes its visitors ≈ too.
  const list = await open(chrome);
  const { n, w } = await withinOneHour(async () => {
    await list.goto(veil.url + "/");
    await list.waitForSelector(`#site-list li[data-site="${DEMO}"] .n[data-value]`);
    return { n: await list.$eval(`#site-list li[data-site="${DEMO}"] .n`, (e) => ({ value: e.dataset.value, title: e.title,
      approx: e.classList.contains("approx") })), w: await ask({ metrics: ["visitors"], include: { comparisons: { mode: "previous_period" } } }) };
  });
  assert.equal(w.meta.privacy.repeated, true);
  assert.deepEqual(n, { value: str(w.results[0].metrics[0]), title: `≈ ${nf.format(w.results[0].metrics[0])} ± ` +
    `${nf.format(w.meta.privacy.interval95.visitors)} (95 % interval, differential privacy)`, approx: true });
  assert.deepEqual(list.problems, []);
  await list.close_all();
});

test("dp: the \"Show all\" dialog writes its rows as the panels do (≈ with the interval), the API's answer to a question already asked", async () => {
  // Cities over 30 days: the demo's breakdown with many more rows over the noisy threshold than
  // a panel lists (its 11th city has about 1 000 visitors against a threshold near 220, noise
  // ± 43: never under). Over 7 days the 11th to 13th cities sit at the threshold, so whether a
  // "Show all" button appears there is a coin flip of the noise.
  const [metrics, dim, period] = [["visitors"], "visit:city_name", "30d"];
  const page = await open(chrome, { viewport: { width: 390, height: 844 } });
  const got = await withinOneHour(async () => {
    await page.goto(`${veil.url}/site/${DEMO}?period=${period}&t.locations=city`);
    await settled(page);
    // The panel's own question (asked already: the same rows and total the page got).
    const panel = await ask({ date_range: period, metrics, dimensions: [dim], pagination: { limit: 10, offset: 0 },
      include: { total_rows: true } });
    const more = await page.$("#panel-locations button.more");
    if (!more) return { panel, more: false };
    await more.click();
    await page.waitForSelector("#more-dialog[open] #more-info:has-text('Rows 1–')");
    return { panel, more: true, shown: await numbers(page, "#more-dialog"),
      rows: await page.$$eval("#more-dialog tbody th[data-raw]", (ths) => ths.map((th) => th.dataset.raw)),
      info: await page.textContent("#more-info"),
      want: await ask({ date_range: period, metrics, dimensions: [dim], pagination: { limit: 100, offset: 0 }, include: { total_rows: true } }) };
  });
  // The page offers "Show all" exactly when the API says there are more rows than it lists.
  assert.equal(got.panel.meta.privacy.repeated, true);
  assert.ok(got.panel.meta.total_rows > 10, "the demo's 30-day cities have more than 10 rows over the threshold: " +
    JSON.stringify(got.panel.meta));
  assert.ok(got.more, `the Cities tab lists 10 of ${got.panel.meta.total_rows} rows but has no "Show all" button`);
  // The panel's question asked again with another limit: repeated, free (order, limit and
  // offset are not part of a question).
  assert.equal(got.want.meta.privacy.repeated, true);
  assert.ok(got.want.results.length > 10, JSON.stringify(got.want.meta));
  assert.equal(got.want.meta.total_rows, got.panel.meta.total_rows);
  assert.equal(got.info, `Rows 1–${got.want.results.length} of ${got.want.meta.total_rows}`);
  assert.deepEqual(got.rows, got.want.results.map((r) => str(r.dimensions[0])));
  assert.equal(got.shown.length, got.want.results.length * metrics.length);
  got.shown.forEach((n, j) => {
    assert.equal(n.value, str(got.want.results[Math.floor(j / metrics.length)].metrics[j % metrics.length]));
    assertApprox(n, got.want.meta.privacy);
  });
  await screenshot(page, "dp-more-phone");
  await page.keyboard.press("Escape");
  await waitFor(() => page.$("#more-dialog"), (d) => d === null, { what: "dialog closed" });
  assert.match(await page.evaluate(() => document.activeElement.textContent), /^Show all /);
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

test("dp: a site key and a shared link spend budgets of their own; a click filters; funnels and realtime are approximate", async () => {
  const key = (await api(veil, `/api/v1/sites/${DEMO}/keys`, { body: { name: "dp-reader" } })).key;
  assert.match(key, /^vk_/);
  const page = await open(chrome, { token: key });
  const adminSpent = async () => (await ask({ metrics: STATS[0], dimensions: [] })).meta.privacy.budget.spent;
  const { foot, stats, adminBefore, adminAfter } = await withinOneHour(async () => {
    const adminBefore = await adminSpent();
    await page.goto(`${veil.url}/site/${DEMO}?period=7d`);
    await settled(page);
    return { foot: await footer(page), stats: await ask({ metrics: STATS[0], dimensions: [] }, key), adminBefore, adminAfter: await adminSpent() };
  });
  // The key's own budget: only its own questions are counted, none of them on the admin token's.
  assert.match(foot.text, FOOTER);
  assert.equal(stats.meta.privacy.repeated, true);
  assert.equal(foot.spent, String(stats.meta.privacy.budget.spent));
  assert.ok(Number(foot.spent) >= 5, foot.text);
  assert.equal(adminAfter, adminBefore, "the key's questions were not charged to the admin token");
  // Outside Realtime the current visitors are a link to it, not a question spending budget.
  await page.waitForSelector("#current #current-link");
  assert.equal(await page.$eval("#current", (e) => e.dataset.value), undefined);

  // A click on a source filters every panel; the numbers stay approximate and are the API's.
  await page.click('#panel-sources button.row:text-is("Google")');
  await page.waitForURL(/f=is~visit:source~Google/);
  const filtered = await withinOneHour(async () => {
    await settled(page);
    const shown = await numbers(page, "#stats");
    return { shown, want: await ask({ metrics: STATS[0], dimensions: [], filters: [["is", "visit:source", ["Google"]]] }, key) };
  });
  assert.equal(filtered.want.meta.privacy.repeated, true);
  STATS[0].forEach((m, i) => {
    const n = filtered.shown.find((x) => x.metric === m);
    assert.equal(n.value, str(filtered.want.results[0].metrics[i]), m);
    assertApprox(n, filtered.want.meta.privacy);
  });
  assert.equal(await page.$$eval(".error", (l) => l.length), 0, await page.$$eval(".error", (l) => l.map((e) => e.textContent).join("; ")));

  // A comparison: this period's numbers as before; the earlier period's and the changes "≈"
  // without an interval (the API sends none for them).
  const cmp = await withinOneHour(async () => {
    await page.goto(`${veil.url}/site/${DEMO}?period=7d&compare=previous_period`);
    await settled(page);
    return {
      shown: await page.$$eval("#stats .stat", (lis) => lis.map((li) => ({ metric: li.dataset.stat, value: li.querySelector(".value").dataset.value,
        prev: li.querySelector(".prev")?.dataset.prev, prevText: li.querySelector(".prev")?.textContent,
        change: li.querySelector(".change")?.dataset.change ?? null, changeText: li.querySelector(".change")?.textContent }))),
      want: await ask({ metrics: STATS[0], dimensions: [], include: { comparisons: { mode: "previous_period" } } }, key),
    };
  });
  assert.equal(cmp.want.meta.privacy.repeated, true);
  assert.equal(cmp.want.meta.privacy.epsilon, 0);
  STATS[0].forEach((m, i) => {
    const n = cmp.shown.find((x) => x.metric === m);
    const c = cmp.want.results[0].comparison;
    assert.deepEqual([n.value, n.prev, n.change], [cmp.want.results[0].metrics[i], c.metrics[i], c.change[i]].map((v, j) =>
      (j === 2 && (v === null || v === undefined) ? null : str(v))), m);
    if (c.metrics[i] !== null) assert.match(n.prevText, /^was ≈ /, m);
    if (c.change[i] !== null) assert.match(n.changeText, /^[↑↓→] ≈ /, m);
  });

  // Funnels: visitors per step with their interval; rates and drop-offs "≈" without one.
  const { funnel, steps } = await withinOneHour(async () => {
    await page.goto(`${veil.url}/site/${DEMO}?period=7d&t.goals=funnel`);
    await settled(page);
    // On a timeout, the failure says what the panel shows instead (a hint, an error).
    await page.waitForSelector("#panel-goals tbody tr td[data-value]").catch(async (e) => {
      throw new Error(`no funnel rows; the panel shows: ${await page.$eval("#panel-goals", (p) => p.innerText)}\n${e.message}`);
    });
    const steps = await numbers(page, "#panel-goals");
    return { steps, funnel: await api(veil, "/api/v2/funnel", { body: { site_id: DEMO, funnel: "Buy", date_range: "7d", filters: [] }, token: key }) };
  });
  assert.equal(funnel.meta.privacy.mode, "dp");
  assert.equal(funnel.meta.privacy.repeated, true);
  assert.equal(steps.length, funnel.steps.length * 4);
  funnel.steps.forEach((s, i) => {
    const [v, cr, step, drop] = steps.slice(i * 4, i * 4 + 4);
    assert.deepEqual([v.value, cr.value, step.value, drop.value], [s.visitors, s.conversion_rate, s.conversion_rate_step, s.dropoff].map(str));
    assertApprox(v, funnel.meta.privacy, "visitors");
    for (const n of [cr, step, drop]) assertApprox(n, funnel.meta.privacy, "none");
  });
  await page.$eval("#panel-goals", (e) => e.scrollIntoView());
  await screenshot(page, "dp-funnel");

  // Realtime: the page shows the API's noisy numbers (windows end at five-minute marks, so the
  // page, refreshing every 2 s, catches up with the API within one refresh of a new window).
  await page.goto(`${veil.url}/site/${DEMO}?view=realtime&refresh=2`);
  await page.waitForSelector("#rt-visitors[data-value]");
  const rt = await waitFor(async () => {
    const d = await api(veil, `/api/v1/sites/${DEMO}/realtime?only=visitors_5m`, { token: key });
    const shown = await page.$eval("#rt-visitors", (e) => ({ value: e.dataset.value, title: e.title }));
    return { d, shown };
  }, ({ d, shown }) => shown.value === str(d.visitors_5m), { ms: 20_000, every: 300, what: "realtime never showed the API's number" });
  assert.equal(rt.d.privacy.length, 1);
  // The per-minute chart: 30 noisy minutes (noisy zeros included), each "≈ N ± I".
  await page.waitForFunction(() => document.querySelectorAll("#rt-chart-data tbody td[data-metric=visitors]").length === 30);
  const minutes = await page.$$eval("#rt-chart-data tbody td[data-metric=visitors]", (tds) => tds.map((td) => [td.classList.contains("approx"), td.dataset.ci]));
  assert.ok(minutes.every(([approx, ci]) => approx && Number(ci) > 0), JSON.stringify(minutes));
  if (rt.d.visitors_5m !== null) {
    assert.equal(rt.shown.title, `≈ ${nf.format(rt.d.visitors_5m)} ± ${nf.format(rt.d.privacy[0].interval95.visitors)} (95 % interval, differential privacy)`);
  }
  assert.match((await footer(page)).text, FOOTER);
  // The test's own API calls share the key's rate limit (10/s, burst 30) with the page, so a
  // panel may be refused once and retried (dashboard.test.mjs tests the retry); Chromium logs
  // each refused load. The numbers above are the retried answers.
  assert.deepEqual(page.problems.filter((p) => !/status of 429/.test(p)), []);
  await page.close_all();

  // A shared link: its own budget, and the same approximate numbers.
  const link = await api(veil, `/api/v1/sites/${DEMO}/shared-links`, { body: { name: "dp-board" } });
  const url = new URL(link.url, veil.url);
  const token = new URLSearchParams(url.hash.slice(1)).get("auth");
  const shared = await open(chrome, { token: null });
  const sh = await withinOneHour(async () => {
    await shared.goto(veil.url + url.pathname + url.hash);
    await settled(shared);
    return { shown: await numbers(shared, "#stats"), want: await ask({ metrics: STATS[0], dimensions: [] }, token), foot: await footer(shared) };
  });
  assert.equal(sh.want.meta.privacy.repeated, true);
  STATS[0].forEach((m, i) => {
    const n = sh.shown.find((x) => x.metric === m);
    assert.equal(n.value, str(sh.want.results[0].metrics[i]), m);
    assertApprox(n, sh.want.meta.privacy);
  });
  assert.match(sh.foot.text, FOOTER);
  assert.equal(sh.foot.spent, String(sh.want.meta.privacy.budget.spent));
  await screenshot(shared, "dp-shared-link");
  assert.deepEqual(shared.problems.filter((p) => !/status of 429/.test(p)), []);
  await shared.close_all();
});

test("dp: a panel's CSV download carries each count's 95 % interval: the API's rows, columns named as the panel names them; the export downloads", async () => {
  const page = await open(chrome);
  const { csv, want } = await withinOneHour(async () => {
    await page.goto(`${veil.url}/site/${DEMO}?period=30d`);
    await settled(page);
    const [dl] = await Promise.all([page.waitForEvent("download"), page.click('#panel-pages button[data-csv]')]);
    const stream = await dl.createReadStream();
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    // The same question through the API: asked already, so the same noisy rows, for free.
    const want = await api(veil, "/api/v2/query.csv", { body: { site_id: DEMO, date_range: "30d", filters: [], metrics: ["visitors", "pageviews"],
      dimensions: ["event:page"], pagination: { limit: 10000, offset: 0 }, include: { total_rows: true } } });
    return { csv: Buffer.concat(chunks).toString("utf8"), want };
  });
  // The API's rows; the header as the panel names the columns, each count's interval too.
  const header = csv.split("\r\n")[0].split(",");
  assert.deepEqual(header, ["Page", "Unique visitors", "Total pageviews", "Unique visitors ± (95 % interval)", "Total pageviews ± (95 % interval)"]);
  assert.deepEqual(want.split("\r\n")[0].split(","), ["event:page", "visitors", "pageviews", "visitors_ci95", "pageviews_ci95"]);
  assert.deepEqual(csv.split("\r\n").slice(1), want.split("\r\n").slice(1));
  // Every row the API published carries its intervals. Over 30 days the demo's top page has
  // about 11 800 visitors (a visitor-day counts in at most 5 pages) against a threshold near
  // 2 340 (± 420: two metrics, each with half the question's ε; a visitor counts in at most 7
  // days whatever the range). Over 7 days it had about 2 900 against the same threshold, and
  // about 1 % of runs drew noise that left no row at all. If it had none, the message says so
  // rather than failing on a missing line.
  const rows = want.split("\r\n").slice(1).filter((l) => l !== "");
  assert.ok(rows.length >= 1, "the API published no page of the demo's last 30 days: " + want.slice(0, 300));
  for (const line of rows) {
    // The last two columns (a page's path may be quoted and hold commas).
    const [visitorsCi, pageviewsCi] = line.split(",").slice(-2).map(Number);
    assert.ok(visitorsCi > 0 && pageviewsCi > 0, line);
  }
  const [zip] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
  const stream = await zip.createReadStream();
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  assert.equal(Buffer.concat(chunks).subarray(0, 2).toString(), "PK", "a zip archive");
  await page.close_all();
});

// The demo app's App view under differential privacy (the app is a site of its own, with a
// budget of its own): the crash-free sessions card is computed from the noisy crashes and
// sessions the page was sent, written "≈" as a rate; the version adoption table lists the rows
// the API published (each "≈" with its interval) and the note says the others are missing.
test("dp: the App view's crash-free sessions are ≈ 100 × (1 − crashes ÷ sessions) of the noisy cards; the adoption table is the API's published rows, the note says the rest are missing", async () => {
  const APP = "demo-app.veil.local";
  const page = await open(chrome);
  const got = await withinOneHour(async () => {
    await page.goto(`${veil.url}/site/${APP}?view=app&period=30d`);
    await waitFor(() => page.evaluate(() => document.querySelectorAll("#stats .stat .value[data-value]").length === 10 &&
      document.querySelector("#adoption-data table, #adoption .error") !== null), (ok) => ok, { ms: 30_000, what: "the App view did not draw" });
    const q = (body) => api(veil, "/api/v2/query", { body: { site_id: APP, date_range: "30d", filters: [], ...body } });
    // The page's questions asked again: the same noisy answers, for free.
    return { cards: await numbers(page, "#stats"), table: await numbers(page, "#adoption-data"),
      rows: await page.$$eval("#adoption-data tbody tr[data-version]", (trs) => trs.map((tr) => [tr.dataset.time, tr.dataset.version])),
      note: await page.textContent("#adoption-note"),
      cardTitle: await page.getAttribute('#stats [data-stat="crash_free_sessions"] .static', "title"),
      users: await q({ metrics: ["visitors", "visits", "sessions_per_user", "dau"], include: { imports: true } }),
      perf: await q({ metrics: ["launch_time_p50", "launch_time_p95", "latency_p50", "latency_p95", "crashes"], include: { imports: true } }),
      perDay: await q({ metrics: ["visitors"], dimensions: ["time:day", "visit:app_version"], include: { imports: true, time_labels: true } }) };
  });
  const { cards, table, rows, note, cardTitle, users, perf, perDay } = got;
  for (const a of [users, perf, perDay]) assert.equal(a.meta.privacy.repeated, true, "the page asked the same questions: " + JSON.stringify(a.meta.privacy));
  const card = cards.find((n) => n.metric === "crash_free_sessions");
  const crashes = perf.results[0].metrics[4], sessions = users.results[0].metrics[1];
  const want = Math.min(100, Math.max(0, 100 * (1 - crashes / sessions)));
  assert.ok(Math.abs(Number(card.value) - want) < 1e-9, `crash-free: page ${card.value}, API ${crashes} crashes in ${sessions} sessions`);
  assertApprox(card, null);
  assert.equal(card.visible, `≈ ${Math.round(want * 10) / 10}%`);
  // Its title names the noisy numbers it comes from, with their intervals.
  for (const [label, v, ci] of [["Crashes", crashes, perf.meta.privacy.interval95.crashes], ["Sessions", sessions, users.meta.privacy.interval95.visits]]) {
    assert.ok(cardTitle.includes(`${label} ≈ ${nf.format(v)} ± ${nf.format(ci)}`), `${label} in the title: ${cardTitle}`);
  }
  // The table: the rows the API published, in its order, each count with its interval.
  assert.deepEqual(rows, perDay.results.map((r) => [r.dimensions[0], r.dimensions[1]]));
  const counts = table.filter((n) => n.metric === "visitors");
  assert.deepEqual(counts.map((n) => n.value), perDay.results.map((r) => str(r.metrics[0])));
  assert.ok(counts.length > 0, "the API published some (day, version) rows");
  for (const n of counts) assertApprox(n, perDay.meta.privacy);
  for (const n of table.filter((n) => n.metric === "version_share")) assertApprox(n, null);
  assert.ok(note.includes("Under differential privacy") && note.includes(`(${nf.format(perDay.meta.privacy.threshold)})`) &&
    note.includes("missing"), note);
  assert.deepEqual(page.problems, [], "console errors, page errors or dialogs");
  await page.close_all();
});

test("a small budget (--epsilon-day 2): later panels show the API's budget-spent message, never retried; answered questions stay free", async () => {
  // A Veil of its own with ε 2 a day, ε 0.5 a question: four releases, then 429s.
  const small = await startVeil({ args: ["--epsilon-day", "2", "--epsilon-query", "0.5"] });
  try {
    await seed(small);
    const page = await open(chrome);
    const calls = [];
    page.on("response", async (r) => {
      const u = new URL(r.url());
      if (!u.pathname.startsWith("/api/v2/") && !u.pathname.endsWith("/filtered-traffic")) return;
      let body = null;
      try { body = await r.json(); } catch { /* not JSON */ }
      calls.push({ key: u.pathname + u.search + " " + (r.request().postData() || ""), status: r.status(), body,
        retryAfter: r.headers()["retry-after"] });
    });
    const load = async () => {
      calls.length = 0;
      await page.goto(`${small.url}/site/${SITE}?period=7d`);
      await settled(page);
      // Every question of the first screen has its answer (the listener runs after the page drew
      // it): top stats (2), chart, five panels and filtered traffic — the goals panel asks
      // nothing on a site without goals.
      await waitFor(() => calls.length, (n) => n >= 9, { ms: 10_000, what: "fewer answers than questions" });
      return {
        calls: [...calls],
        budget: await page.$$eval("[data-budget=spent]", (l) => l.map((e) => [e.closest("[id]")?.id, e.textContent])),
        errors: await page.$$eval(".error:not([data-budget])", (l) => l.map((e) => e.textContent)),
        foot: await footer(page),
      };
    };
    // Realtime (new questions: the budget is spent) shows the message and stops refreshing.
    const realtime = async () => {
      await page.goto(`${small.url}/site/${SITE}?view=realtime&refresh=2`);
      await page.waitForSelector("#panel-pages [data-budget=spent]");
      await page.waitForFunction(() => /^Stopped/.test(document.querySelector("#rt-updated").textContent));
      return { pages: await page.$eval("#panel-pages .panel-body", (e) => e.textContent), updated: await page.$eval("#rt-updated", (e) => e.textContent) };
    };
    // The budget is the UTC day's, and "7d" ends yesterday: within one UTC day the second load
    // asks the same questions as the first, whatever the hour. A midnight during the loads
    // gives a whole new budget (and "7d" new dates: new questions), so then they are all made
    // again on the new day (midnight passes once).
    const today = () => new Date().toISOString().slice(0, 10);
    let first, again, rt;
    for (let i = 0; ; i++) {
      const day = today();
      first = await load();
      await screenshot(page, "dp-budget-spent");
      again = await load();
      rt = await realtime().catch((e) => { if (today() === day) throw e; return null; });
      if (today() === day || i >= 1) break;
    }
    const answered = first.calls.filter((c) => c.status === 200);
    const refused = first.calls.filter((c) => c.status === 429);
    const ctx = JSON.stringify(first.calls.map((c) => [c.status, c.key.slice(0, 160)]));
    assert.ok(answered.length >= 1 && refused.length >= 1, ctx);
    assert.equal(answered.length + refused.length, first.calls.length, ctx);
    // Each answer spent from the budget; together exactly what the day allows.
    const spent = answered.reduce((s, c) => s + (c.body.meta?.privacy ?? c.body.privacy).epsilon, 0);
    assert.equal(spent, 2, ctx);
    for (const c of refused) {
      assert.match(c.body.error, /privacy budget .* is spent .* renews at /, c.key);
      assert.equal(c.body.budget.left, 0);
      assert.ok(Number(c.retryAfter) > 0, c.key);
    }
    // No retry: every refused question was asked once, and its panel already shows the message.
    const keys = first.calls.map((c) => c.key);
    assert.equal(new Set(keys).size, keys.length, "a question was sent twice: " + ctx);
    assert.equal(first.budget.length, refused.length, JSON.stringify(first.budget));
    for (const [, text] of first.budget) {
      assert.match(text, /^(.*: )?The privacy budget of this credential for today is spent \(ε 2\.00 of 2\.00 used; .*\); it renews at \d{4}-\d{2}-\d{2}T00:00:00\+00:00/);
      assert.doesNotMatch(text, /HTTP 429/);
    }
    assert.deepEqual(first.errors, [], "no other error");
    assert.equal(first.foot.text, "Privacy: differential privacy, ε 2 of 2 used today (renews 00:00 UTC): today's budget is spent, " +
      "new questions wait until then.");

    // Again, the same day: the questions answered before are answered again (free, the same
    // answers) and the others refused. None of them reaches into today, so an hour turning in
    // between changes nothing (a question about today would be a new one each hour).
    const ok = (r) => r.calls.filter((c) => c.status === 200).map((c) => c.key).sort();
    assert.deepEqual(ok(again), ok(first));
    for (const c of again.calls.filter((x) => x.status === 200)) {
      const priv = c.body.meta?.privacy ?? c.body.privacy;
      assert.deepEqual([priv.repeated, priv.epsilon], [true, 0], c.key);
      const before = first.calls.find((x) => x.key === c.key);
      assert.deepEqual(c.body.results ?? c.body.dropped, before.body.results ?? before.body.dropped, c.key);
    }
    assert.equal(again.budget.length, again.calls.length - ok(again).length);
    // Realtime: the message, and no more refreshing.
    assert.match(rt.pages, /^The privacy budget of this credential for today is spent/);
    assert.equal(rt.updated, "Stopped refreshing: today's privacy budget is spent.");
    assert.deepEqual(page.problems.filter((p) => !/status of 429/.test(p)), []);
    await page.close_all();
  } finally {
    await small.stop();
  }
});
