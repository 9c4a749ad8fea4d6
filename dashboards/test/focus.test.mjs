// The dashboard's first five minutes (issue 20, point 1, first part) in headless Chromium at
// desktop (1440×900) and phone (390×844) sizes, against a real `veil up --privacy exact` (k = 2)
// holding a dataset of its own: 130 pages of two visitors each (more rows than one page of the
// "show all" dialog), five visitors sending the tracker's internal `engagement` beacon, a custom
// event, and a previous period for comparisons.
// - a stat card's comparison line reads "↑ 5% · was 12" (spaces kept) or "no earlier data", and
//   its accessible name says it in words; choosing a card redraws the chart only, focus stays;
// - the custom events list leaves out `engagement`;
// - switching a panel's tab reloads that panel only (one API query, every other panel's node
//   kept), focus stays on the activated tab and the new content is announced ("Sources,
//   Channels: 3 rows"); choosing a row focuses the new filter chip; removing a chip keeps focus in
//   the filter bar;
// - "Show all N rows" opens a dialog that pages through every row (the API's, offset by offset),
//   searches, closes on Escape with focus back on its button, and filters from a row.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startVeil, browser, open, screenshot, settled, query, send, waitFor, SITE, UA } from "./fixture.mjs";
import { sql } from "../../testing/browser/harness.mjs";

const PAGES = 130;
const SIZES = { desktop: { width: 1440, height: 900 }, phone: { width: 390, height: 844 } };
let veil, chrome, stored = 0;

function iso(msAgo) { return new Date(Date.now() - msAgo).toISOString(); }
const HOUR = 3_600_000, DAY = 24 * HOUR;
const pageName = (i) => "/p-" + String(i).padStart(3, "0");

before(async () => {
  veil = await startVeil({ k: 2, args: ["--privacy", "exact"] });
  const ev = [];
  const ip = (n) => `198.18.${Math.floor(n / 250)}.${(n % 250) + 1}`;
  let n = 0;
  // A day and 3 hours ago: in the last 7 days, which end yesterday (as Plausible's do).
  for (let i = 0; i < PAGES; i++) {
    for (let j = 0; j < 2; j++, n++) {
      const referrer = ["https://www.google.com/", "https://news.ycombinator.com/", undefined][n % 3];
      ev.push({ site: SITE, name: "pageview", url: `https://${SITE}${pageName(i)}`, referrer, timestamp: iso(DAY + 3 * HOUR + n * 1000),
        ip: ip(n), user_agent: n % 2 ? UA.firefox : UA.chrome });
    }
  }
  // Five visitors with the tracker's engagement beacon, three of them also sending a custom event.
  for (let i = 0; i < 5; i++) {
    const base = { site: SITE, url: `https://${SITE}${pageName(i)}`, ip: ip(i * 2), user_agent: i % 2 ? UA.firefox : UA.chrome };
    ev.push({ ...base, name: "engagement", engagement_ms: 12_000, scroll_depth: 60, timestamp: iso(DAY + 3 * HOUR - 60_000 - i * 1000) });
    if (i < 3) ev.push({ ...base, name: "signup", timestamp: iso(DAY + 3 * HOUR - 90_000 - i * 1000) });
  }
  // The previous period: twelve visitors on "/".
  for (let i = 0; i < 12; i++) {
    ev.push({ site: SITE, name: "pageview", url: `https://${SITE}/`, timestamp: iso(9 * DAY + i * 1000), ip: `198.19.0.${i + 1}`,
      user_agent: UA.chrome });
  }
  await send(veil, ev);
  await waitFor(async () => Number((await sql(veil, `SELECT count() AS c FROM veil.events WHERE site = '${SITE}'`))[0].c),
    (c) => c >= ev.length, { ms: 30_000, every: 200, what: "events stored" });
  stored = ev.length;
  chrome = await browser();
});

after(async () => {
  await chrome?.close();
  await veil?.stop();
});

const dash = (qs = "") => `${veil.url}/site/${SITE}${qs ? "?" + qs : ""}`;
const nf = new Intl.NumberFormat("en-US");
const str = (v) => (v === null || v === undefined ? "null" : String(v));
function noProblems(page) { assert.deepEqual(page.problems, [], "console errors, page errors or dialogs"); }
/** What has focus: its tag, text, data-tab and the panel or dialog it is in. */
const focused = (page) => page.evaluate(() => {
  const e = document.activeElement;
  return { tag: e.tagName.toLowerCase(), text: e.textContent.trim(), tab: e.dataset.tab || null, selected: e.getAttribute("aria-selected"),
    panel: e.closest("article.panel")?.id || null, dialog: !!e.closest("dialog"), chip: e.classList.contains("chip-text") };
});
const announced = (page) => page.$eval("#announce", (e) => e.textContent);
/** The rows of a table as [raw label, numbers…]. */
const tableRows = (page, sel) => page.$$eval(`${sel} tbody tr`, (trs) => trs.map((tr) => {
  const th = tr.querySelector("th");
  return th ? [th.dataset.raw, ...[...tr.querySelectorAll("td.n")].map((td) => td.dataset.value)] : null;
}).filter(Boolean));

for (const [size, viewport] of Object.entries(SIZES)) {
  test(`${size}: a stat card's comparison line is spaced and worded, and its accessible name says it in words`, async () => {
    assert.ok(stored > 0);
    const page = await open(chrome, { viewport });
    await page.goto(dash("period=7d&compare=previous_period"));
    await settled(page);
    const metrics = ["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"];
    const want = await query(veil, { metrics, include: { comparisons: { mode: "previous_period" } } });
    const cmp = want.results[0].comparison;
    // What the eye reads: the line without its screen-reader sentence.
    const cards = await page.$$eval("#stats .stat", (lis) => lis.map((li) => {
      const cmp = li.querySelector(".cmp");
      return { metric: li.dataset.stat, text: cmp ? [...cmp.children].filter((c) => !c.classList.contains("sr-only") && !c.hidden)
        .map((c) => c.textContent).join("").replace(/\s+/g, " ").trim() : null };
    }));
    for (const c of cards) {
      assert.ok(c.text, c.metric);
      // Never a word glued to a number ("14%was", "comparisonwas"), never "no comparison" next to "was —".
      assert.doesNotMatch(c.text, /[\d%—a-z](was|no)\b/, c.metric + ": " + c.text);
      assert.doesNotMatch(c.text, /no comparison|was —/, c.metric + ": " + c.text);
      assert.match(c.text, /^([↑↓→] [\d,.]+( pp|%) · was .+|was .+|no earlier data)$/, c.metric + ": " + c.text);
    }
    const i = metrics.indexOf("visitors");
    const change = cmp.change[i];
    assert.ok(change > 0, JSON.stringify(cmp));
    const card = cards.find((c) => c.metric === "visitors").text;
    assert.equal(card, `↑ ${nf.format(Math.abs(Math.round(change * 10) / 10))}% · was ${nf.format(cmp.metrics[i])}`);
    // The accessible name: one sentence, in words.
    const name = `Unique visitors ${nf.format(want.results[0].metrics[i])} up ${nf.format(Math.abs(Math.round(change * 10) / 10))}% ` +
      `against the previous period, was ${nf.format(cmp.metrics[i])}`;
    assert.equal(await page.getByRole("button", { name, exact: true }).count(), 1,
      "no button named " + JSON.stringify(name) + " in:\n" + await page.locator("#stats").ariaSnapshot());
    const snap = await page.locator("#stats").ariaSnapshot();
    assert.doesNotMatch(snap, /[↑↓→]|%was|comparisonwas/, snap);
    await screenshot(page, `focus-stats-${size}`);
    // Choosing a card (keyboard) redraws the chart only: one question, the cards kept, focus on the card.
    await page.evaluate(() => { window.__kept = ["stats", "panel-pages", "panel-sources"].map((id) => document.getElementById(id)); });
    const asked = [];
    page.on("request", (r) => { if (new URL(r.url()).pathname.startsWith("/api/")) asked.push(r.postData() || r.url()); });
    await page.focus('#stats .stat[data-stat="pageviews"] button');
    await page.keyboard.press("Enter");
    await page.waitForURL(/metric=pageviews/);
    await page.waitForSelector("#chart-data table", { state: "attached" });
    assert.equal(await page.textContent("#chart-title"), "Total pageviews by day");
    assert.equal(await announced(page), "Chart: Total pageviews by day");
    assert.deepEqual(await page.evaluate(() => ({ stat: document.activeElement.closest(".stat")?.dataset.stat,
      pressed: document.activeElement.getAttribute("aria-pressed"), kept: window.__kept.every((e) => e.isConnected),
      current: [...document.querySelectorAll('#stats .stat[aria-current="true"]')].map((e) => e.dataset.stat) })),
    { stat: "pageviews", pressed: "true", kept: true, current: ["pageviews"] });
    assert.equal(asked.length, 1, asked.join("\n"));
    const chart = await query(veil, { metrics: ["pageviews"], dimensions: ["time:day"], include: { time_labels: true, comparisons: { mode: "previous_period" } } });
    const rows = await page.$$eval("#chart-data tbody tr", (trs) => trs.map((tr) => [tr.dataset.time, tr.querySelector("td").dataset.value]));
    const byDay = new Map(chart.results.map((r) => [r.dimensions[0], str(r.metrics[0])]));
    for (const [day, v] of rows) assert.equal(v, byDay.get(day) ?? "0", day);
    assert.ok(await page.$("#chart canvas"), "uPlot drew the chart");
    noProblems(page);
    await page.close_all();
  });
}

test("the custom events list leaves out the tracker's internal engagement event", async () => {
  const page = await open(chrome, { viewport: SIZES.desktop });
  await page.goto(dash("period=7d"));
  await settled(page);
  // The API lists it (visitors, no events): the dashboard is what leaves it out.
  const all = await query(veil, { metrics: ["visitors", "events"], dimensions: ["event:name"], filters: [["is_not", "event:name", ["pageview"]]] });
  assert.ok(all.results.some((r) => r.dimensions[0] === "engagement"), JSON.stringify(all));
  const rows = await tableRows(page, "#panel-events");
  assert.ok(rows.some((r) => r[0] === "signup"), JSON.stringify(rows));
  assert.ok(!rows.some((r) => r[0] === "engagement"), JSON.stringify(rows));
  const want = await query(veil, { metrics: ["visitors", "events"], dimensions: ["event:name"],
    filters: [["is_not", "event:name", ["pageview", "engagement"]]], pagination: { limit: 10, offset: 0 } });
  assert.deepEqual(rows, want.results.map((r) => [str(r.dimensions[0]), ...r.metrics.map(str)]));
  noProblems(page);
  await page.close_all();
});

for (const [size, viewport] of Object.entries(SIZES)) {
  test(`${size}: a panel's tab reloads that panel only, keeps focus on the tab and is announced; row and chip keep focus`, async () => {
    const page = await open(chrome, { viewport });
    await page.goto(dash("period=7d"));
    await settled(page);
    await page.evaluate(() => { window.__kept = ["stats", "chart", "panel-pages", "panel-locations", "panel-events"].map((id) => document.getElementById(id)); });
    const asked = [];
    page.on("request", (r) => { if (new URL(r.url()).pathname.startsWith("/api/")) asked.push(r.postData() || r.url()); });
    // Keyboard: focus the Channels tab of Sources and press Enter.
    await page.focus('#panel-sources [role="tab"][data-tab="channel"]');
    await page.keyboard.press("Enter");
    await page.waitForURL(/t\.sources=channel/);
    const channels = await query(veil, { metrics: ["visitors", "visits"], dimensions: ["visit:channel"], include: { total_rows: true } });
    const said = `Sources, Channels: ${nf.format(channels.meta.total_rows)} ${channels.meta.total_rows === 1 ? "row" : "rows"}`;
    await waitFor(() => announced(page), (t) => t === said, { what: "announcement" });
    assert.deepEqual(await focused(page), { tag: "button", text: "Channels", tab: "channel", selected: "true", panel: "panel-sources",
      dialog: false, chip: false });
    assert.equal(await page.evaluate(() => window.__kept.every((e) => e.isConnected)), true, "other panels were redrawn");
    assert.equal(asked.length, 1, "one API question for one panel: " + asked.join("\n"));
    assert.match(asked[0], /visit:channel/);
    assert.deepEqual((await tableRows(page, "#panel-sources")).map((r) => r[0]), channels.results.map((r) => str(r.dimensions[0])));
    assert.equal(await page.$eval("#panel-sources .panel-body", (e) => e.getAttribute("role")), "tabpanel");
    // Arrow keys move between tabs; Enter on another one: focus again stays on the activated tab.
    await page.keyboard.press("ArrowRight");
    await page.keyboard.press("Enter");
    await page.waitForURL(/t\.sources=referrer/);
    await waitFor(() => announced(page), (t) => t.startsWith("Sources, Referrers: "), { what: "announcement" });
    assert.equal((await focused(page)).tab, "referrer");

    // Choosing a row (keyboard) filters the dashboard and focuses the new chip.
    await page.focus(`#panel-pages button.row:text-is("${pageName(7)}")`);
    await page.keyboard.press("Enter");
    await page.waitForURL(/f=is~event:page~\/p-007/);
    await settled(page);
    assert.deepEqual(await focused(page), { tag: "span", text: "Page is /p-007", tab: null, selected: null, panel: null, dialog: false, chip: true });
    assert.equal(await announced(page), "Filter added: Page is /p-007");
    // A second filter (the Add filter form), then removing the first chip: focus goes to the remaining chip's button.
    await page.click("#filter-add summary");
    await page.selectOption("#filter-dim", "visit:browser");
    await page.fill('#filter-form input[name="value"]', "Firefox");
    await page.press('#filter-form input[name="value"]', "Enter");
    await page.waitForURL(/f=is~visit:browser~Firefox/);
    assert.equal((await focused(page)).text, "Browser is Firefox");
    await page.focus('#filter-list li[data-filter="event:page"] button');
    await page.keyboard.press("Enter");
    await waitFor(() => page.url(), (u) => !/event:page/.test(u), { what: "the page filter removed" });
    const f1 = await page.evaluate(() => ({ label: document.activeElement.getAttribute("aria-label"), chips: document.querySelectorAll("#filter-list li").length }));
    assert.deepEqual(f1, { label: "Remove filter: Browser is Firefox", chips: 1 });
    assert.equal(await announced(page), "Filter removed: Page is /p-007");
    // The last chip removed: focus goes to "Add filter".
    await page.keyboard.press("Enter");
    await waitFor(() => page.url(), (u) => !/f=/.test(u), { what: "no filter left" });
    assert.deepEqual(await page.evaluate(() => document.activeElement.tagName + " " + document.activeElement.textContent), "SUMMARY Add filter");
    await settled(page);
    noProblems(page);
    await page.close_all();
  });
}

for (const [size, viewport] of Object.entries(SIZES)) {
  test(`${size}: "Show all" opens a dialog that pages through every row, searches, closes on Escape and filters from a row`, async () => {
    const page = await open(chrome, { viewport });
    await page.goto(dash("period=7d"));
    await settled(page);
    const ms = ["visitors", "pageviews"];
    const all = await query(veil, { metrics: ms, dimensions: ["event:page"], include: { total_rows: true } });
    const total = all.meta.total_rows;
    assert.ok(total > 100, JSON.stringify(all.meta));
    const more = page.locator("#panel-pages button.more");
    assert.equal(await more.textContent(), `Show all ${nf.format(total)} rows`);
    assert.equal(await more.getAttribute("aria-haspopup"), "dialog");
    await more.focus();
    await page.keyboard.press("Enter");
    await page.waitForSelector("#more-dialog[open] #more-info:has-text('Rows 1–100')");
    assert.equal(await page.$eval("#more-dialog", (d) => d.matches(":modal")), true);
    assert.equal((await focused(page)).dialog, true);
    assert.equal(await page.textContent("#more-info"), `Rows 1–100 of ${nf.format(total)}`);
    const shown = await tableRows(page, "#more-dialog");
    assert.equal(await page.$eval("#more-prev", (b) => b.disabled), true);
    // Next until the last row: every row the API has, in its order, with its numbers.
    for (let offset = 100; offset < total; offset += 100) {
      await page.click("#more-next");
      await page.waitForSelector(`#more-info:has-text('Rows ${nf.format(offset + 1)}–')`);
      shown.push(...await tableRows(page, "#more-dialog"));
    }
    assert.equal(await page.$eval("#more-next", (b) => b.disabled), true);
    assert.ok(await page.evaluate(() => document.activeElement.id === "more-prev"), "focus stays on a paging button");
    assert.deepEqual(shown, all.results.map((r) => [str(r.dimensions[0]), ...r.metrics.map(str)]));
    assert.equal(shown.length, total);
    if (size === "phone") {
      const box = await page.$eval("#more-dialog", (d) => { const r = d.getBoundingClientRect(); return [r.left, r.right]; });
      assert.ok(box[0] >= 0 && box[1] <= 390, JSON.stringify(box));
    }
    await screenshot(page, `focus-more-${size}`);
    // Search: the API's rows containing "P-12" (any case).
    await page.fill("#more-dialog input[type=search]", "P-12");
    await page.press("#more-dialog input[type=search]", "Enter");
    await page.waitForSelector("#more-info:has-text('matching')");
    const found = await query(veil, { metrics: ms, dimensions: ["event:page"], filters: [["contains", "event:page", ["P-12"], { case_sensitive: false }]] });
    assert.ok(found.results.length >= 10, JSON.stringify(found));
    assert.deepEqual(await tableRows(page, "#more-dialog"), found.results.map((r) => [str(r.dimensions[0]), ...r.metrics.map(str)]));
    // Escape closes it; focus is back on "Show all".
    await page.keyboard.press("Escape");
    await waitFor(() => page.$("#more-dialog"), (d) => d === null, { what: "dialog closed" });
    assert.match((await focused(page)).text, /^Show all /);
    // A row of the dialog filters the dashboard, closes it and focuses the new chip.
    await page.keyboard.press("Enter");
    await page.waitForSelector("#more-dialog[open] #more-info:has-text('Rows 1–100')");
    await page.click("#more-next");
    await page.waitForSelector("#more-info:has-text('Rows 101–')");
    const raw = (await tableRows(page, "#more-dialog"))[0][0];
    await page.click(`#more-dialog button.row:text-is("${raw}")`);
    await page.waitForURL(new RegExp("f=is~event:page~" + raw.replace(/[/-]/g, "\\$&")));
    await settled(page);
    assert.equal(await page.$("#more-dialog"), null);
    assert.deepEqual(await focused(page), { tag: "span", text: "Page is " + raw, tab: null, selected: null, panel: null, dialog: false, chip: true });
    noProblems(page);
    await page.close_all();
  });
}

test("keyboard shortcuts: ? lists them, Escape closes the list, W and C change the period and the comparison, / opens the filter builder; typing in a field is left alone", async () => {
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${SITE}?period=day`);
  await settled(page);
  await page.keyboard.press("?");
  await page.waitForSelector("#keys-dialog[open]");
  const listed = await page.$$eval("#keys-dialog kbd", (ks) => ks.map((k) => k.textContent));
  for (const k of ["D", "W", "T", "M", "C", "R", "/", "?"]) assert.ok(listed.includes(k), `${k} in ${listed}`);
  await page.keyboard.press("Escape");
  await waitFor(() => page.$("#keys-dialog"), (d) => d === null, { what: "the list closed" });
  await page.keyboard.press("w");
  await page.waitForURL(/period=7d/);
  await settled(page);
  await page.keyboard.press("c");
  await page.waitForURL(/compare=previous_period/);
  await settled(page);
  await page.keyboard.press("/");
  assert.equal(await page.evaluate(() => document.activeElement.id), "filter-dim");
  assert.equal(await page.$eval("#filter-add", (d) => d.open), true);
  // In a field, letters are typed, not shortcuts.
  await page.focus('#filter-form input[name="value"]');
  await page.keyboard.type("dm");
  assert.match(page.url(), /period=7d/);
  assert.equal(await page.$eval('#filter-form input[name="value"]', (i) => i.value), "dm");
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

test("the filter builder suggests the dimension's values from the data: the API's rows, the value it takes with its name beside it", async () => {
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${SITE}?period=7d`);
  await settled(page);
  await page.click("#filter-add summary");
  await page.selectOption("#filter-dim", "visit:browser");
  const want = await query(veil, { metrics: ["visitors"], dimensions: ["visit:browser"], pagination: { limit: 50, offset: 0 } });
  const values = want.results.map((r) => r.dimensions[0]).filter((v) => v && !/^\(other/.test(v));
  assert.ok(values.length >= 1, JSON.stringify(want));
  await waitFor(() => page.$$eval("#filter-values option", (os) => os.map((o) => o.value)),
    (got) => JSON.stringify(got) === JSON.stringify(values), { what: (got) => `suggested ${JSON.stringify(got)}, the API has ${JSON.stringify(values)}` });
  // A suggestion chosen filters by it.
  await page.fill('#filter-form input[name="value"]', values[0]);
  await page.click('#filter-form button[type="submit"]');
  await page.waitForURL((u) => u.searchParams.getAll("f").includes(`is~visit:browser~${values[0]}`));
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

test("a filter of several values (a|b in the builder, as Plausible's URLs write them) is one `is` with both values; its chip says 'or'", async () => {
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${SITE}?period=7d`);
  await settled(page);
  await page.click("#filter-add summary");
  await page.selectOption("#filter-dim", "visit:browser");
  await page.fill('#filter-form input[name="value"]', "Chrome|Firefox");
  await page.click('#filter-form button[type="submit"]');
  await page.waitForURL((u) => u.searchParams.getAll("f").includes("is~visit:browser~Chrome|Firefox"));
  await settled(page);
  assert.equal(await page.$eval("#filter-list .chip-text", (e) => e.textContent), "Browser is Chrome or Firefox");
  const both = await query(veil, { metrics: ["visitors"], filters: [["is", "visit:browser", ["Chrome", "Firefox"]]] });
  const one = await query(veil, { metrics: ["visitors"], filters: [["is", "visit:browser", ["Chrome"]]] });
  assert.ok(both.results[0].metrics[0] > one.results[0].metrics[0], JSON.stringify([both.results, one.results]));
  assert.equal(await page.$eval('#stats .value[data-metric="visitors"]', (e) => e.dataset.value), String(both.results[0].metrics[0]));
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

test("a country typed by its name in the filter builder ('germany', 'France|germany') filters by its code, as the API takes it", async () => {
  const page = await open(chrome);
  await page.goto(`${veil.url}/site/${SITE}?period=7d`);
  await settled(page);
  for (const [typed, want, chip] of [["germany", "DE", "Country is Germany (DE)"], ["France|germany", "FR|DE", "Country is France (FR) or Germany (DE)"]]) {
    await page.click("#filter-add summary");
    await page.selectOption("#filter-dim", "visit:country");
    await page.fill('#filter-form input[name="value"]', typed);
    await page.click('#filter-form button[type="submit"]');
    await page.waitForURL((u) => u.searchParams.getAll("f").includes(`is~visit:country~${want}`), { timeout: 10_000 });
    await settled(page);
    assert.equal(await page.$eval("#filter-list .chip-text", (e) => e.textContent), chip);
    assert.equal(await page.$$eval(".error", (l) => l.length), 0, "the API took the filter");
    await page.goto(`${veil.url}/site/${SITE}?period=7d`);
    await settled(page);
  }
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

test("the filter builder offers the web view web fields and the app view app fields", async () => {
  const page = await open(chrome);
  const fields = async (view) => {
    await page.goto(`${veil.url}/site/${SITE}?period=7d&view=${view}`);
    await settled(page);
    return page.$$eval("#filter-dim option", (os) => os.map((o) => o.value));
  };
  const web = await fields("web");
  assert.ok(web.includes("event:page") && web.includes("visit:utm_source"), JSON.stringify(web));
  assert.ok(!web.includes("visit:app_version") && !web.includes("visit:install_source"), JSON.stringify(web));
  const app = await fields("app");
  assert.ok(app.includes("visit:app_version") && app.includes("visit:install_source") && app.includes("visit:country"), JSON.stringify(app));
  assert.ok(!app.includes("event:page") && !app.includes("visit:utm_source"), JSON.stringify(app));
  assert.deepEqual(page.problems, []);
  await page.close_all();
});
