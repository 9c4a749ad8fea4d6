// Accessibility of the dashboard (issue 20, "Done when": no WCAG A/AA violation), each page at
// desktop (1440×900) and phone (390×844, a touch screen) sizes, in light and dark mode, against a
// real `veil up --demo --privacy exact`:
// - the web view of the generated demo site demo.veil.local as a logged-in admin of it, with every
//   report control showing: a custom range (its date fields), a comparison ("Match day of week"),
//   a filter chip, a saved segment chosen ("Delete segment"), "Add filter" and "Save as segment"
//   opened, the header's e-mail link and "Log out";
// - the countries map (Locations → Map) of the demo site;
// - the App view of the demo app demo-app.veil.local, its version adoption table opened;
// - the Realtime view of the demo site, with visitors sent a minute and a half ago;
// - the other pages (`PAGES`): the sites list, a site's settings (its install snippets), the
//   person's account, a read-only shared link, and the login page.
// In each: axe-core (WCAG 2.0/2.1/2.2 A and AA rules) finds no violation; on the phone nothing
// overflows sideways (scrollWidth ≤ innerWidth) and every visible interactive element of the
// whole page (header, report controls, filter bar, views, panels and their tabs, rows, CSV and
// "Show all" buttons, the "Show all" dialog, the footer) is at least 44×44 CSS px (WCAG 2.5.5),
// but for the two exceptions `smallTargets` names; the map and the Realtime chart have a name
// and a table of their numbers that a screen reader reaches. Each test waits for what it checks
// by polling with a deadline.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { startVeil, browser, open, screenshot, send, waitFor, api, UA } from "./fixture.mjs";

/** `veil up --demo`'s web site and app (cli/src/config.rs). */
const DEMO = "demo.veil.local";
const APP = "demo-app.veil.local";
const SIZES = { desktop: { width: 1440, height: 900 }, phone: { width: 390, height: 844 } };
const SCHEMES = ["light", "dark"];
/** axe-core's rules for WCAG 2.0, 2.1 and 2.2 at levels A and AA. */
const WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

let veil, chrome;
/** The web view's state: the filter (a source of the demo site), the segment, and the session cookie of its admin. */
let webState, session;

before(async () => {
  veil = await startVeil({ args: ["--demo", "--privacy", "exact"], log: "warn,veil=info" });
  await waitFor(() => veil.log(), (l) => /rollups rebuilt|rollup job failed/.test(l),
    { ms: 240_000, every: 200, what: (l) => "the rollup job did not report:\n" + l.slice(-3000) });
  // Realtime: twelve visitors on four pages a minute and a half ago, so its chart and panels have rows.
  const at = new Date(Date.now() - 90_000).toISOString();
  await send(veil, Array.from({ length: 12 }, (_, i) => ({ site: DEMO, name: "pageview", url: `https://${DEMO}/rt-${i % 4}`,
    referrer: i % 2 ? "https://www.google.com/" : undefined, timestamp: at, ip: `198.51.100.${i + 1}`, user_agent: i % 3 ? UA.chrome : UA.firefox })));
  chrome = await browser();
  // The web view's report controls all showing: a filter on the demo site's first source (so its
  // panels have rows), a segment saved for the site (so the segment list shows), a custom range
  // (so the date fields show) and a comparison (so "Match day of week" shows).
  const top = await api(veil, "/api/v2/query", { body: { site_id: DEMO, date_range: "7d", metrics: ["visitors"], dimensions: ["visit:source"] } });
  const source = top.results.find((r) => r.dimensions[0] && !r.dimensions[0].startsWith("("))?.dimensions[0];
  assert.ok(source, "the demo site has a source: " + JSON.stringify(top.results).slice(0, 300));
  const seg = await api(veil, `/api/v1/sites/${DEMO}/segments`, { body: { name: "Phone visitors", type: "site", filters: [["is", "visit:device", ["Mobile"]]] } });
  const day = (n) => new Date(Date.now() - n * 86_400_000).toISOString().slice(0, 10);
  webState = { source, segment: seg.id, from: day(14), to: day(1) };
  // A person with the admin role on the demo site, logged in once: its session cookie is given to each page of the web view.
  const inv = await api(veil, `/api/v1/sites/${DEMO}/people`, { body: { email: "a11y@example.org", role: "admin" } });
  const page = await open(chrome, { token: null });
  await page.goto(veil.url + "/login");
  const accepted = await page.evaluate(async (token) => {
    const r = await fetch("/api/v1/auth/accept", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token, password: "correct horse battery staple" }) });
    return r.status + " " + (await r.text());
  }, new URL(inv.url, veil.url).hash.replace(/^#token=/, ""));
  assert.match(accepted, /^200 /, "accepting the invitation");
  session = await page.context().cookies();
  assert.ok(session.length > 0, "the session cookie");
  await page.close_all();
  shareUrl = (await api(veil, `/api/v1/sites/${DEMO}/shared-links`, { body: { name: "a11y" } })).url;
  assert.match(shareUrl, /^\/share\//, "the shared link's URL");
});

after(async () => {
  await chrome?.close();
  await veil?.stop();
});

/** Every panel of the view has answered (no "Loading…" left). */
const panelsDone = () => {
  const bodies = [...document.querySelectorAll("#view-body .panel-body")];
  return bodies.length > 0 && bodies.every((b) => !b.textContent.includes("Loading…"));
};

/** Controls every view of a site shows (the sweep must have measured them): the header's, the views, the footer's links. */
const PAGE_CONTROLS = [".skip", "#brand", "#crumbs a", "#logout", ".views a", "footer a"];
/** The report controls above the web and App views (the Realtime view has none: its period is fixed, it takes no filter). */
const REPORT_CONTROLS = ["#period", "#compare", "#interval", "#export", "#filter-add > summary"];

const VIEWS = {
  web: {
    session: true,
    controls: [...REPORT_CONTROLS, "#whoami", "#from", "#to", "#match-day", "#segment", "#segment-delete", "#filter-list button", "#filter-dim",
      "#filter-form button", "#segment-save > summary", "#segment-type", "#stats button", "#chart-data > summary",
      "#chart button[data-csv]", "#view-body [role='tab']", "#view-body button[data-csv]", "#view-body button.row", "#view-body button.more"],
    url: () => `${veil.url}/site/${DEMO}?period=custom&from=${webState.from}&to=${webState.to}&compare=previous_period` +
      `&seg=${encodeURIComponent(webState.segment)}&f=${encodeURIComponent("is~visit:source~" + webState.source)}`,
    ready: () => document.querySelectorAll("#filter-list li button").length > 0 && !document.getElementById("segment-l").hidden &&
      !document.getElementById("segment-delete").hidden && !document.getElementById("whoami").hidden &&
      document.querySelector("#chart-data table, #chart .error") !== null && document.querySelectorAll("#stats .stat").length > 0,
    // "Add filter" and "Save as segment" opened: their forms are report controls too.
    prepare: async (page) => {
      for (const id of ["filter-add", "segment-save"]) await page.click(`#${id} > summary`);
      await waitFor(() => page.evaluate(() => document.getElementById("filter-add").open && document.getElementById("segment-save").open), (ok) => ok,
        { what: "Add filter and Save as segment not open" });
    },
  },
  map: {
    controls: [...REPORT_CONTROLS, "#world-map path.has-data", "#world-map-table button.row"],
    url: () => `${veil.url}/site/${DEMO}?period=7d&t.locations=map`,
    ready: () => document.querySelectorAll("#world-map svg path.has-data").length > 0 && document.querySelector("#chart-data table") !== null,
  },
  app: {
    controls: [...REPORT_CONTROLS, "#view-body [role='tab']", "#view-body button[data-csv]", "#chart-data > summary",
      "#adoption-data > summary", "#adoption button[data-csv]"],
    url: () => `${veil.url}/site/${APP}?period=30d&view=app`,
    ready: () => document.querySelector('#view-app[aria-current="page"]') !== null && document.querySelector("#chart-data table, #chart .error") !== null &&
      document.querySelector("#adoption-data table, #adoption .error") !== null && document.querySelectorAll("#stats .stat").length > 0,
    // The version adoption chart's table opened: axe checks it, and on a phone it must fit too.
    prepare: async (page) => {
      await page.click("#adoption-data > summary");
      await waitFor(() => page.evaluate(() => document.getElementById("adoption-data").open), (ok) => ok, { what: "the adoption table did not open" });
    },
  },
  realtime: {
    controls: ["#rt-chart-summary", "#view-body [role='tab']"],
    url: () => `${veil.url}/site/${DEMO}?view=realtime`,
    ready: () => document.querySelector("#rt-chart[data-points] canvas") !== null && document.querySelector("#rt-visitors[data-value]") !== null &&
      document.querySelectorAll("#rt-chart-data tbody tr").length === 30,
  },
};

/**
 * The dashboard's other pages, each opened as its reader would: the admin's sites list and a
 * site's settings, the account page of the logged-in admin person (its session), a shared
 * link's read-only dashboard and the login page (no credential).
 */
const PAGES = {
  sites: { url: () => `${veil.url}/`, ready: () => !document.getElementById("sites").hidden && document.querySelectorAll("#site-list li").length > 0 },
  settings: { url: () => `${veil.url}/site/${DEMO}/settings`,
    ready: () => !document.getElementById("settings").hidden && document.querySelectorAll("#settings-body pre.snippet").length > 0 },
  account: { session: true, url: () => `${veil.url}/account`,
    ready: () => !document.getElementById("account").hidden && document.getElementById("account-email") !== null },
  share: { anonymous: true, url: () => veil.url + shareUrl,
    ready: () => !document.getElementById("dash").hidden && document.querySelectorAll("#stats .stat").length > 0 &&
      [...document.querySelectorAll("#view-body .panel-body")].every((b) => !b.textContent.includes("Loading…")) },
  login: { anonymous: true, url: () => `${veil.url}/login`, ready: () => !document.getElementById("login").hidden },
};
/** The shared link's URL (its token in the fragment), made in `before`. */
let shareUrl;

/** Opens the page `name` of `PAGES` and waits until it is drawn. */
async function openPage(name, viewport, colorScheme) {
  const p = PAGES[name];
  const page = await open(chrome, { viewport, colorScheme, touch: viewport.width < 600, ...(p.session || p.anonymous ? { token: null } : {}) });
  if (p.session) await page.context().addCookies(session);
  await page.goto(p.url());
  await waitFor(() => page.evaluate(`(${p.ready})()`), (ok) => ok, { ms: 30_000, every: 100, what: `${name} not drawn within 30 s` });
  return page;
}

for (const name of Object.keys(PAGES)) {
  test(`${name} page, desktop and phone, light and dark: no WCAG A/AA violation (axe-core); on the phone nothing overflows and every control is at least 44×44 px`, async () => {
    for (const [size, viewport] of Object.entries(SIZES)) {
      for (const scheme of SCHEMES) {
        const page = await openPage(name, viewport, scheme);
        assert.deepEqual(await axeViolations(page), [], `${size}, ${scheme}`);
        if (size === "phone") await assertPhoneFit(page, `${name}, ${scheme}`, [".skip"]);
        assert.deepEqual(page.problems, [], `${size}, ${scheme}: console errors, page errors or dialogs`);
        await page.close_all();
      }
    }
  });
}

/** Opens `view` and waits until it and all its panels are drawn. */
async function openView(name, viewport, colorScheme) {
  const phone = viewport.width < 600;
  const view = VIEWS[name];
  const page = await open(chrome, { viewport, colorScheme, touch: phone, ...(view.session ? { token: null } : {}) });
  if (view.session) await page.context().addCookies(session);
  await page.goto(view.url());
  await waitFor(() => page.evaluate(`(${view.ready})() && (${panelsDone})()`), (ok) => ok,
    { ms: 30_000, every: 100, what: `${name} not drawn within 30 s` });
  if (view.prepare) await view.prepare(page);
  return page;
}

/** axe-core's WCAG A/AA violations on the page, one line each with the elements concerned. */
async function axeViolations(page) {
  await page.evaluate(AXE);
  const res = await page.evaluate((tags) => window.axe.run(document, { runOnly: { type: "tag", values: tags } }), WCAG);
  // axe looked at the view: it checked the contrast of its text, the names of its controls and images.
  const checked = new Map(res.passes.map((r) => [r.id, r.nodes.length]));
  for (const rule of ["color-contrast", "button-name", "aria-allowed-attr"]) assert.ok(checked.get(rule) > 0, `axe checked no node for ${rule}`);
  return res.violations.map((v) => `${v.id} (${v.impact}): ${v.help}\n` + v.nodes.slice(0, 6).map((n) => `  ${n.target.join(" ")}: ${n.failureSummary.replace(/\s+/g, " ")}`).join("\n"));
}

for (const name of Object.keys(VIEWS)) {
  for (const [size, viewport] of Object.entries(SIZES)) {
    for (const scheme of SCHEMES) {
      test(`${name}, ${size}, ${scheme}: no WCAG A/AA violation (axe-core)`, async () => {
        const page = await openView(name, viewport, scheme);
        assert.deepEqual(await axeViolations(page), []);
        if (scheme === "light") await screenshot(page, `a11y-${name}-${size}`);
        assert.deepEqual(page.problems, [], "console errors, page errors or dialogs");
        await page.close_all();
      });
    }
  }
  test(`${name}, phone, light and dark: nothing overflows sideways and every interactive element of the page is at least 44×44 px`, async () => {
    for (const scheme of SCHEMES) {
      const page = await openView(name, SIZES.phone, scheme);
      await assertPhoneFit(page, `${name}, ${scheme}`, [...PAGE_CONTROLS, ...VIEWS[name].controls]);
      if (name === "web") {
        // The "Show all N rows" dialog of the first panel that has one: its search, pager, rows and "Close".
        await page.click("#view-body button.more");
        await waitFor(() => page.evaluate(() => document.querySelectorAll("dialog.more-dialog[open] tbody tr").length), (n) => n > 0,
          { what: "the Show all dialog has no rows" });
        assert.deepEqual(await smallTargets(page, "dialog.more-dialog[open]", ["input", "#more-next", "#more-close", "button.row"]), [], `${scheme}: controls of the Show all dialog under 44×44 px`);
      }
      assert.deepEqual(page.problems, [], scheme);
      await page.close_all();
    }
  });
}

test("web, phone: every tab of every panel, once chosen, shows controls of at least 44×44 px", async () => {
  const page = await openView("web", SIZES.phone, "light");
  const tabs = await page.$$eval("#view-body [role='tab']", (ts) => ts.map((t) => t.closest("article").id + " " + t.textContent.trim()));
  assert.ok(tabs.length > 10, "the panels' tabs: " + tabs.join(", "));
  const small = [];
  for (let i = 0; i < tabs.length; i++) {
    const [panel] = tabs[i].split(" ");
    await page.locator("#view-body [role='tab']").nth(i).click();
    await waitFor(() => page.evaluate((id) => !document.querySelector(`#${id} .panel-body`).textContent.includes("Loading…"), panel), (ok) => ok,
      { what: `${tabs[i]} not drawn` });
    small.push(...(await smallTargets(page, `#${panel}`, ["[role='tab']"])).map((s) => tabs[i] + ": " + s));
  }
  assert.deepEqual([...new Set(small)], [], "controls under 44×44 px on a touch screen");
  assert.deepEqual(page.problems, []);
  await page.close_all();
});

/** On the phone: the page is no wider than the window, and no interactive element of it is under 44×44 px. */
async function assertPhoneFit(page, what, must) {
  const width = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
  assert.ok(width.scroll <= width.inner, `${what}: the page is ${width.scroll} px wide in a ${width.inner} px window`);
  assert.deepEqual(await smallTargets(page, null, must), [], `${what}: interactive elements under 44×44 px on a touch screen`);
}

/**
 * The visible interactive elements of the page (or of the element `scope` selects) smaller than
 * 44×44 CSS px, one line each ("tag#id.class "text": W×H"). Interactive: links, buttons,
 * summaries, form fields, ARIA widgets (button, link, tab, checkbox, switch, option, menuitem),
 * anything in the tab order, and anything else with the pointer cursor that is not inside one of
 * those (so a clickable element without a role is not missed). An element counts whatever its
 * position (the "Skip to content" link waits off-screen until focused), unless it takes no room
 * or is not rendered (display: none, a closed <details>, visibility: hidden).
 * A checkbox or radio button inside its <label> is measured as the label: a tap anywhere on the
 * label toggles it (HTML's label activation), so the label is its target.
 * Two exceptions, both WCAG 2.5.8's (2.5.5 has the same two):
 * - "Inline": a link displayed inline inside running text (its nearest block holds at least three
 *   words outside any control, as the footer's sentence about GeoLite2 and DB-IP does): its
 *   height is the sentence's line height. Breadcrumbs, lists of links or a link alone on its
 *   line are not in a sentence and must be 44×44 px.
 * - "Equivalent": a country's shape on the map (`#world-map path`) filters by that country, and
 *   so does that country's row in the table under the map (the first ten, counted here) or
 *   "Add filter" → Country (counted here): the same function, from a control of 44×44 px.
 */
async function smallTargets(page, scope = null, must = []) {
  const { small, missing } = await page.evaluate(([scope, must]) => {
    const SEL = "a[href], button, summary, select, input:not([type='hidden']), textarea, [role='button'], [role='link'], [role='tab']," +
      " [role='checkbox'], [role='switch'], [role='option'], [role='menuitem'], [tabindex]:not([tabindex='-1']), [contenteditable='true'], [contenteditable='']";
    const root = scope ? document.querySelector(scope) : document.body;
    if (!root) return { small: [], missing: [scope] };
    const found = new Set(root.querySelectorAll(SEL));
    for (const e of root.querySelectorAll("*")) {
      const parent = e.parentElement;
      if (getComputedStyle(e).cursor === "pointer" && !(parent && getComputedStyle(parent).cursor === "pointer") && !(parent && parent.closest(SEL))) found.add(e);
    }
    const words = (block) => {
      const walk = document.createTreeWalker(block, NodeFilter.SHOW_TEXT);
      let text = "";
      for (let n; (n = walk.nextNode());) if (!n.parentElement.closest(SEL)) text += " " + n.data;
      return (text.match(/\p{L}+/gu) || []).length;
    };
    const inSentence = (e) => {
      if (e.tagName !== "A" || getComputedStyle(e).display !== "inline") return false;
      let block = e.parentElement;
      while (block.parentElement && getComputedStyle(block).display === "inline") block = block.parentElement;
      return words(block) >= 3;
    };
    const out = [], counted = new Set();
    for (const e of found) {
      if (!e.checkVisibility({ visibilityProperty: true })) continue;
      const box = /^(checkbox|radio)$/.test(e.type) && e.closest("label") ? e.closest("label") : e;
      const r = box.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      counted.add(e);
      if (e.closest("#world-map") && e.tagName.toLowerCase() === "path") continue; // "Equivalent": see the doc above
      if ((r.width >= 44 && r.height >= 44) || inSentence(e)) continue;
      const cls = typeof e.className === "string" && e.className.trim() ? "." + e.className.trim().split(/\s+/).join(".") : "";
      out.push(`${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}${cls}${box !== e ? " (its label)" : ""} "${(e.textContent || e.value || "").trim().slice(0, 30)}": ${Math.round(r.width)}×${Math.round(r.height)}`);
    }
    return { small: out, missing: must.filter((sel) => ![...root.querySelectorAll(sel)].some((e) => counted.has(e))) };
  }, [scope, must]);
  // The sweep saw the controls this page is known to show (a selector it missed would make it pass for nothing).
  assert.deepEqual(missing, [], "controls not found among the visible interactive elements");
  return small;
}

test("the countries map has a name and a table of countries with the map's numbers", async () => {
  const page = await openView("map", SIZES.desktop, "light");
  const map = page.getByRole("img", { name: /by country on a world map/ });
  assert.equal(await map.count(), 1);
  // The map points to the table that lists its numbers (aria-details), and that table is in the accessibility tree.
  const alt = await page.evaluate(() => {
    const svg = document.querySelector("#world-map svg");
    const ids = (svg.getAttribute("aria-details") || "").split(/\s+/).filter(Boolean);
    const table = ids.map((id) => document.getElementById(id)).find((e) => e && e.closest("table"))?.closest("table");
    const shaded = new Map([...document.querySelectorAll("#world-map path.has-data")].map((p) => [p.dataset.country, p.dataset.value]));
    const rows = table ? [...table.querySelectorAll("tbody tr")].map((tr) => [tr.querySelector("th")?.dataset.raw, tr.querySelector("td")?.dataset.value]) : [];
    return { described: ids.length > 0, table: !!table, rows, shaded: [...shaded.entries()] };
  });
  assert.ok(alt.described && alt.table, JSON.stringify(alt).slice(0, 500));
  assert.equal(alt.rows.length, 10, JSON.stringify(alt.rows));
  const shaded = new Map(alt.shaded);
  for (const [code, v] of alt.rows) if (shaded.has(code)) assert.equal(shaded.get(code), v, code);
  const tableName = await page.getByRole("table", { name: /Locations/ }).count();
  assert.ok(tableName >= 1, "the table under the map has a name");
  await page.close_all();
});

test("the Realtime chart has a name, a description, and a table of its 30 minutes that a screen reader reaches", async () => {
  const page = await openView("realtime", SIZES.desktop, "light");
  const chart = page.getByRole("img", { name: /per minute, last 30 minutes/ });
  assert.equal(await chart.count(), 1);
  const desc = await page.evaluate(() => {
    const plot = document.querySelector("#rt-chart [role='img']");
    return (plot.getAttribute("aria-describedby") || "").split(/\s+/).map((id) => document.getElementById(id)?.textContent.trim() || "").join(" ");
  });
  assert.match(desc, /From \d\d:\d\d to \d\d:\d\d/, "the description says which minutes");
  // The table: behind "Chart data as a table", opened by keyboard.
  await page.focus("#rt-chart-summary");
  await page.keyboard.press("Enter");
  const table = page.getByRole("table", { name: "Per minute, last 30 minutes" });
  await waitFor(() => table.locator("tbody tr").count(), (n) => n === 30, { what: (n) => `${n} rows of 30 reachable` });
  const shown = await page.$$eval("#rt-chart-data tbody td", (tds) => tds.map((td) => td.dataset.value));
  assert.ok(shown.some((v) => Number(v) > 0), "the minute of the sent visitors is in the table");
  await page.close_all();
});

test("the countries map, light and dark: a country with data is told from one without by an outline of at least 3:1 (WCAG 1.4.11)", async () => {
  for (const scheme of SCHEMES) {
    const page = await openView("map", SIZES.desktop, scheme);
    const c = await page.evaluate(() => {
      const rgb = (s) => s.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
      const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
        .reduce((a, v, i) => a + v * [0.2126, 0.7152, 0.0722][i], 0);
      const ratio = (x, y) => { const [a, b] = [lum(rgb(x)), lum(rgb(y))].sort((p, q) => q - p); return (a + 0.05) / (b + 0.05); };
      const data = getComputedStyle(document.querySelector("#world-map path.has-data"));
      const none = getComputedStyle(document.querySelector("#world-map path:not(.has-data)"));
      const card = getComputedStyle(document.querySelector("#panel-locations")).backgroundColor;
      return { width: parseFloat(data.strokeWidth), againstNoData: ratio(data.stroke, none.fill), againstCard: ratio(data.stroke, card) };
    });
    assert.ok(c.width > 0, scheme + " " + JSON.stringify(c));
    assert.ok(c.againstNoData >= 3 && c.againstCard >= 3, scheme + " " + JSON.stringify(c));
    await page.close_all();
  }
});
