// Veil dashboard: a client of the Stats API only (GET /api/v1/sites, POST /api/v2/query).
// Every string from the data is untrusted: it is written with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "veil-token";

async function api(path, body) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const res = await fetch(path, body ? { method: "POST", headers, body: JSON.stringify(body) } : { headers });
  if (res.status === 401) { showLogin(); throw new Error("An API token is required."); }
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || ("HTTP " + res.status));
  return data;
}

function showLogin() { $("login").hidden = false; $("report").hidden = true; }

function fmt(v) { return v === null || v === undefined ? "< k" : Number(v).toLocaleString(); }

function fillTable(table, rows, label) {
  table.replaceChildren();
  const max = Math.max(1, ...rows.map((r) => Number(r.metrics[0]) || 0));
  if (rows.length === 0) {
    const td = table.insertRow().insertCell();
    td.textContent = "No data for this period.";
    td.className = "hint";
    return;
  }
  for (const r of rows) {
    const tr = table.insertRow();
    const name = tr.insertCell();
    name.textContent = label(r.dimensions[0]);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * (Number(r.metrics[0]) || 0) / max).toFixed(1) + "%";
    name.appendChild(bar);
    const n = tr.insertCell();
    n.className = "n";
    n.textContent = fmt(r.metrics[0]);
  }
}

async function load() {
  const site = $("site").value;
  const period = $("period").value;
  if (!site) return;
  const url = new URL(location.href);
  url.searchParams.set("site", site);
  url.searchParams.set("period", period);
  history.replaceState(null, "", url);
  $("status").textContent = "Loading…";
  const q = (metrics, dimensions, limit) => api("/api/v2/query", {
    site_id: site, metrics, date_range: period, dimensions, pagination: { limit: limit || 10 },
  });
  try {
    const [totals, days, pages, sources, browsers, os, devices, channels, countries] = await Promise.all([
      q(["visitors", "visits", "pageviews", "events"], []),
      q(["visitors"], ["time:day"], 400),
      q(["visitors"], ["event:page"]),
      q(["visitors"], ["visit:source"]),
      q(["visitors"], ["visit:browser"]),
      q(["visitors"], ["visit:os"]),
      q(["visitors"], ["visit:device"]),
      q(["visitors"], ["visit:channel"]),
      q(["visitors"], ["visit:country"]),
    ]);
    const dl = $("totals");
    dl.replaceChildren();
    const names = ["Visitors", "Visits", "Pageviews", "Events"];
    const values = (totals.results[0] || { metrics: [0, 0, 0, 0] }).metrics;
    names.forEach((n, i) => {
      const d = document.createElement("div");
      const dt = document.createElement("dt"); dt.textContent = n;
      const dd = document.createElement("dd"); dd.textContent = fmt(values[i]);
      d.append(dt, dd); dl.appendChild(d);
    });
    fillTable($("t-days"), days.results, (d) => d);
    fillTable($("t-pages"), pages.results, (d) => d);
    fillTable($("t-sources"), sources.results, (d) => d || "Direct / none");
    fillTable($("t-browsers"), browsers.results, (d) => d || "Unknown");
    fillTable($("t-os"), os.results, (d) => d || "Unknown");
    fillTable($("t-devices"), devices.results, (d) => d || "Unknown");
    fillTable($("t-channels"), channels.results, (d) => d || "Direct");
    fillTable($("t-countries"), countries.results, (d) => d || "Unknown");
    $("k-note").textContent = "Rows describing fewer than " + totals.meta.min_visitors +
      " visitors are folded into “(other)” or shown as “< k”.";
    $("report").hidden = false;
    $("login").hidden = true;
    $("status").textContent = "";
  } catch (e) {
    $("status").textContent = e.message;
  }
}

async function init() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value);
    init();
  });
  $("site").onchange = load;
  $("period").onchange = load;
  try {
    const { sites } = await api("/api/v1/sites");
    const params = new URLSearchParams(location.search);
    const sel = $("site");
    sel.replaceChildren();
    for (const s of sites) {
      const o = document.createElement("option");
      o.value = s; o.textContent = s;
      sel.appendChild(o);
    }
    if (sites.length === 0) { $("status").textContent = "No sites yet: start Veil with --site example.com."; return; }
    if (params.get("site") && sites.includes(params.get("site"))) sel.value = params.get("site");
    if (params.get("period")) $("period").value = params.get("period");
    await load();
  } catch (e) {
    $("status").textContent = e.message;
  }
}

document.addEventListener("DOMContentLoaded", init);
