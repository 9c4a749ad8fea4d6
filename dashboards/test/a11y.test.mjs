// Accessibility of the dashboard's newer views (issue 20, "Done when": no WCAG A/AA violation),
// each at desktop (1440×900) and phone (390×844, a touch screen) sizes, in light and dark mode,
// against a real `veil up --demo --privacy exact`:
// - the countries map (Locations → Map) of the generated demo site demo.veil.local;
// - the App view of the demo app demo-app.veil.local;
// - the Realtime view of the demo site, with visitors sent a minute and a half ago.
// In each: axe-core (WCAG 2.0/2.1/2.2 A and AA rules) finds no violation; on the phone nothing
// overflows sideways (scrollWidth ≤ innerWidth) and every control of the view is at least
// 44×44 CSS px; the map and the Realtime chart have a name and a table of their numbers that a
// screen reader reaches. Each test waits for what it checks by polling with a deadline.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { startVeil, browser, open, screenshot, send, waitFor, UA } from "./fixture.mjs";

/** `veil up --demo`'s web site and app (cli/src/config.rs). */
const DEMO = "demo.veil.local";
const APP = "demo-app.veil.local";
const SIZES = { desktop: { width: 1440, height: 900 }, phone: { width: 390, height: 844 } };
const SCHEMES = ["light", "dark"];
/** axe-core's rules for WCAG 2.0, 2.1 and 2.2 at levels A and AA. */
const WCAG = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"];
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

let veil, chrome;

before(async () => {
  veil = await startVeil({ args: ["--demo", "--privacy", "exact"], log: "warn,veil=info" });
  await waitFor(() => veil.log(), (l) => /rollups rebuilt|rollup job failed/.test(l),
    { ms: 60_000, every: 200, what: (l) => "the rollup job did not report:\n" + l.slice(-3000) });
  // Realtime: twelve visitors on four pages a minute and a half ago, so its chart and panels have rows.
  const at = new Date(Date.now() - 90_000).toISOString();
  await send(veil, Array.from({ length: 12 }, (_, i) => ({ site: DEMO, name: "pageview", url: `https://${DEMO}/rt-${i % 4}`,
    referrer: i % 2 ? "https://www.google.com/" : undefined, timestamp: at, ip: `198.51.100.${i + 1}`, user_agent: i % 3 ? UA.chrome : UA.firefox })));
  chrome = await browser();
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

const VIEWS = {
  map: {
    url: () => `${veil.url}/site/${DEMO}?period=7d&t.locations=map`,
    ready: () => document.querySelectorAll("#world-map svg path.has-data").length > 0 && document.querySelector("#chart-data table") !== null,
  },
  app: {
    url: () => `${veil.url}/site/${APP}?period=30d&view=app`,
    ready: () => document.querySelector('#view-app[aria-current="page"]') !== null && document.querySelector("#chart-data table, #chart .error") !== null &&
      document.querySelectorAll("#stats .stat").length > 0,
  },
  realtime: {
    url: () => `${veil.url}/site/${DEMO}?view=realtime`,
    ready: () => document.querySelector("#rt-chart[data-points] canvas") !== null && document.querySelector("#rt-visitors[data-value]") !== null &&
      document.querySelectorAll("#rt-chart-data tbody tr").length === 30,
  },
};

/** Opens `view` and waits until it and all its panels are drawn. */
async function openView(name, viewport, colorScheme) {
  const phone = viewport.width < 600;
  const page = await open(chrome, { viewport, colorScheme, touch: phone });
  await page.goto(VIEWS[name].url());
  const ready = VIEWS[name].ready;
  await waitFor(() => page.evaluate(`(${ready})() && (${panelsDone})()`), (ok) => ok,
    { ms: 30_000, every: 100, what: `${name} not drawn within 30 s` });
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
  test(`${name}, phone: nothing overflows sideways and every control of the view is at least 44×44 px`, async () => {
    const page = await openView(name, SIZES.phone, "light");
    const width = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: window.innerWidth }));
    assert.ok(width.scroll <= width.inner, `the page is ${width.scroll} px wide in a ${width.inner} px window`);
    // The view's controls: its navigation, tabs, buttons, links, summaries and form fields
    // (a country's shape is a shortcut for its row in the table under the map, which is counted).
    const small = await page.evaluate(() => {
      const sel = "a[href], button, summary, select, input, [role='tab'], [tabindex]:not([tabindex='-1'])";
      const scope = [...document.querySelectorAll(".dash-head, #view-body")];
      return scope.flatMap((s) => [...s.querySelectorAll(sel)]).filter((e) => {
        const r = e.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== "hidden" && (r.width < 44 || r.height < 44);
      }).map((e) => {
        const r = e.getBoundingClientRect();
        return `${e.tagName.toLowerCase()}${e.id ? "#" + e.id : ""}${e.className && typeof e.className === "string" ? "." + e.className.trim().split(/\s+/).join(".") : ""}` +
          ` "${e.textContent.trim().slice(0, 30)}": ${Math.round(r.width)}×${Math.round(r.height)}`;
      });
    });
    assert.deepEqual(small, [], "controls under 44×44 px on a touch screen");
    assert.deepEqual(page.problems, []);
    await page.close_all();
  });
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
