// Veil dashboard: a client of Veil's HTTP API only — POST /api/v2/query (+ .csv), POST
// /api/v2/funnel, GET /api/v1/sites/{domain}/realtime?only=visitors_5m (current visitors),
// /filtered-traffic and /export, and the
// admin API under /api/v1/sites. No number is computed here: every figure on screen is a value the API sent,
// except two in the App view that are computed from the API's numbers alone (post-processing of
// what the privacy module published): the crash-free sessions card (100 × (1 − crashes ÷
// sessions)) and the version adoption chart's shares (a version's users over the users listed
// for that day).
// Under differential privacy (every answer's meta.privacy, mode "dp") each is written "≈ N" with
// the ± of its 95 % interval; the footer shows the credential's privacy budget for the day, or,
// in exact mode, a warning that privacy protection is down to k-anonymity.
//
// Security: every string from the data (paths, referrers, props, UTM values, site names) is
// untrusted. It is written with textContent or as an attribute value, never parsed as HTML, and
// never used as a link target. The page runs under a CSP without inline script or style.
//
// Pages (one HTML shell, routed on the path): / (sites), /site/{domain} (dashboard),
// /site/{domain}/settings (admin), /share/{domain}#auth=TOKEN (shared link, read-only: the token
// is in the fragment, which a browser never sends to a server nor puts in a Referer; an old link
// with ?auth=TOKEN still opens, and its token is moved into the fragment at once), /login,
// /setup#token=TOKEN and /invite#token=TOKEN (the first-run owner setup and invitations: the
// token is read from the fragment, then removed from the address and history), /account.
//
// Who is asking: GET /api/v1/me on every load. A person logs in with e-mail and password
// (POST /api/v1/auth/login); the session is an HttpOnly cookie this script never sees, and every
// change (not GET) sends the session's CSRF token (from login, accept or /me) as X-Veil-CSRF.
// The operator's admin token or a site key still opens the dashboard instead (kept in
// sessionStorage, sent as a Bearer token). What shows follows /me's roles (owner, admin or
// viewer, per site or on "*" = every site): settings for admins, people for admins, the audit
// log and deleting a site for owners. The API enforces all of it; the page only hides what would
// be refused.
// Dashboard state lives in the query string: period, from, to, compare, interval, metric, view,
// f (filters, repeatable: "op~dimension~value"), t.<panel> (selected tab), prop, refresh.
"use strict";
(function () {
  const TOKEN_KEY = "veil-token";
  const $ = (id) => document.getElementById(id);
  const nf = new Intl.NumberFormat("en-US");
  const regionNames = typeof Intl.DisplayNames === "function" ? new Intl.DisplayNames(["en"], { type: "region" }) : null;
  const FOLDED = /^\(other: \d+ rows? under k=\d+\)$/;

  const S = {
    page: "sites", site: "", share: false, shareToken: "", embed: "", password: "", settings: null, settingsError: null, me: null, csrf: "",
    generation: 0, timer: 0, liveTimer: 0, chart: null, resize: null, rtResize: null, privacy: null, adoption: null, adoptionResize: null,
  };

  // ---------- small DOM helpers (text only) ----------
  function h(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (k === "hidden") e.hidden = true;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) if (c !== null && c !== undefined && c !== false) e.append(c);
    return e;
  }
  function status(msg) { $("status").textContent = msg || ""; }

  // ---------- formatting ----------
  const PERCENT = new Set(["bounce_rate", "conversion_rate", "group_conversion_rate", "scroll_depth", "conversion_rate_step",
    "crash_free_sessions", "version_share", "exit_rate"]);
  const SECONDS = new Set(["visit_duration", "time_on_page"]);
  const MILLIS = new Set(["launch_time_p50", "launch_time_p95", "latency_p50", "latency_p95"]);
  const DECIMAL = new Set(["views_per_visit", "sessions_per_user", "dau", "wau", "mau", "total_revenue", "average_revenue"]);
  function duration(s) {
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
    return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
  }
  function fmt(metric, v) {
    if (v === null || v === undefined) return "—";
    const x = Number(v);
    if (!Number.isFinite(x)) return String(v);
    if (PERCENT.has(metric)) return (Math.round(x * 10) / 10) + "%";
    if (SECONDS.has(metric)) return duration(x);
    if (MILLIS.has(metric)) return nf.format(Math.round(x)) + " ms";
    if (DECIMAL.has(metric)) return nf.format(Math.round(x * 100) / 100);
    return nf.format(x);
  }

  // ---------- noisy numbers (differential privacy) ----------
  // Every answer carries meta.privacy (realtime: an array of three). In "dp" mode every number
  // is noisy: it is written "≈ N", and a count's ± half-width of its 95 % interval
  // (privacy.interval95[metric]; null for rates and means) shows in a small bubble while its row
  // or card is hovered or has focus, in the title, and in the screen-reader text. In "exact" mode
  // numbers are written as they are (k-anonymity only).
  function isDp(priv) { return !!priv && priv.mode === "dp"; }
  /** The ± half-width of `key`'s 95 % interval, or null (none, a rate or a mean, or exact mode). */
  function ciOf(priv, key) {
    const x = isDp(priv) && key && priv.interval95 ? priv.interval95[key] : null;
    return x === null || x === undefined || !Number.isFinite(Number(x)) ? null : Number(x);
  }
  /** "≈ 1,234 ± 12 (95 % interval, differential privacy)", or without ± when there is no interval. */
  function approxText(metric, v, ci) {
    return "≈ " + fmt(metric, v) + (ci === null ? " (noisy: differential privacy)" :
      " ± " + fmt(metric, ci) + " (95 % interval, differential privacy)");
  }
  /**
   * Writes the number `v` of `metric` into `el` (data-value: the API's value, "null" when hidden);
   * with dp `priv`, as "≈ N" with its interval (`ciKey`: the interval95 entry, null for none).
   */
  function putNumber(el, metric, v, priv, ciKey = metric) {
    const hidden = v === null || v === undefined;
    el.dataset.value = hidden ? "null" : String(v);
    el.replaceChildren();
    el.classList.remove("approx");
    if (hidden || !isDp(priv)) {
      el.textContent = fmt(metric, v);
      if (!hidden) el.removeAttribute("title");
      else if (isDp(priv) && (priv.withheld || []).includes(metric)) el.title = "Withheld: not published under differential privacy";
      else if (isDp(priv) && MILLIS.has(metric)) el.title = "Hidden: too few samples for differential privacy's noise";
      else el.title = "Hidden: fewer than k visitors";
      return el;
    }
    const ci = ciOf(priv, ciKey);
    const full = approxText(metric, v, ci);
    el.classList.add("approx");
    el.title = full;
    el.dataset.ci = ci === null ? "null" : String(ci);
    el.append(h("span", { "aria-hidden": "true" }, "≈ " + fmt(metric, v),
      ci === null ? null : h("span", { class: "ci", text: "± " + fmt(metric, ci) })), h("span", { class: "sr-only", text: full }));
    return el;
  }
  function numberCell(metric, v, priv, ciKey = metric) {
    const td = h("td", { class: "n" + (v === null || v === undefined ? " null" : ""), "data-metric": metric });
    return putNumber(td, metric, v, priv, ciKey);
  }
  function privacyOf(data) { return (data && data.meta && data.meta.privacy) || null; }

  const METRIC_LABELS = {
    visitors: "Unique visitors", visits: "Total visits", pageviews: "Total pageviews", views_per_visit: "Views per visit",
    bounce_rate: "Bounce rate", visit_duration: "Visit duration", time_on_page: "Time on page", events: "Events",
    conversion_rate: "Conversion rate", group_conversion_rate: "Conversion rate", scroll_depth: "Scroll depth", active_users: "Active users",
    sessions_per_user: "Sessions per user", dau: "Daily active", wau: "Weekly active", mau: "Monthly active",
    launch_time_p50: "Launch time p50", launch_time_p95: "Launch time p95", latency_p50: "Latency p50",
    latency_p95: "Latency p95", crashes: "Crashes", crash_free_sessions: "Crash-free sessions", exit_rate: "Exit rate",
  };
  const SHORT = { visitors: "Visitors", visits: "Visits", pageviews: "Pageviews", events: "Events",
    conversion_rate: "CR", group_conversion_rate: "CR", active_users: "Users" };
  // In the app view unique visitors are called active users, and visits sessions.
  const APP_LABELS = { visitors: ["Active users", "Users"], visits: ["Sessions", "Sessions"] };
  function metricLabel(m) { return S.view === "app" && APP_LABELS[m] ? APP_LABELS[m][0] : METRIC_LABELS[m] || m; }
  function shortLabel(m) { return S.view === "app" && APP_LABELS[m] ? APP_LABELS[m][1] : SHORT[m] || METRIC_LABELS[m] || m; }
  const LOWER_IS_BETTER = new Set(["bounce_rate", "launch_time_p50", "launch_time_p95", "latency_p50", "latency_p95", "crashes"]);

  const DIM_LABELS = {
    "event:page": "Page", "event:hostname": "Hostname", "event:name": "Event", "event:goal": "Goal",
    "visit:entry_page": "Entry page", "visit:exit_page": "Exit page", "visit:source": "Source",
    "visit:referrer": "Referrer", "visit:channel": "Channel", "visit:utm_source": "UTM source",
    "visit:utm_medium": "UTM medium", "visit:utm_campaign": "UTM campaign", "visit:utm_content": "UTM content",
    "visit:utm_term": "UTM term", "visit:country": "Country", "visit:region": "Region code", "visit:city": "City id",
    "visit:region_name": "Region", "visit:city_name": "City",
    "visit:isp": "ISP", "visit:browser": "Browser", "visit:browser_version": "Browser version", "visit:os": "OS",
    "visit:os_version": "OS version", "visit:device": "Device", "visit:screen": "Screen", "visit:processor": "Processor",
    "visit:app_version": "App version", "visit:install_source": "Install source", "visit:locale": "Locale",
    "visit:device_model": "Device model",
  };
  function dimLabel(dim) {
    if (dim.startsWith("event:props:")) return "Property " + dim.slice(12);
    return DIM_LABELS[dim] || dim;
  }
  /**
   * The API's values for what was typed in the filter builder: a value typed by its name
   * ("Germany", any case) is sent as the value the API takes ("DE") — a suggestion's name
   * first, then, for countries, every ISO 3166 code's English name; several values (a|b) one
   * by one. Anything else is sent as typed.
   */
  function typedValues(dim, typed) {
    const one = (t) => {
      const lc = t.trim().toLowerCase();
      if (!lc) return t;
      for (const o of $("filter-values").options) {
        const label = (o.label || "").toLowerCase();
        if (label === lc || label.startsWith(lc + " (")) return o.value;
      }
      if (dim === "visit:country") {
        if (/^[a-z]{2}$/.test(lc)) return lc.toUpperCase();
        for (let a = 65; regionNames && a <= 90; a++) {
          for (let b = 65; b <= 90; b++) {
            const code = String.fromCharCode(a, b);
            let name = null;
            // A deprecated code ("DD", East Germany, is named "Germany" too) canonicalizes to another.
            try { if (Intl.getCanonicalLocales("und-" + code)[0] === "und-" + code) name = regionNames.of(code); } catch { /* not a region code */ }
            if (name && name !== code && name.toLowerCase() === lc) return code;
          }
        }
      }
      return t;
    };
    return typed.split(/(?<!\\)\|/).map(one).join("|");
  }
  /** An axis tick of a time label: "14:00" for hours, "11-28" for days and weeks, "2026-11" for months. */
  function tickLabel(interval, l) {
    l = String(l || "");
    if (interval === "hour" && l.length >= 16) return l.slice(11, 16);
    if (interval === "month") return l.slice(0, 7);
    return /^\d{4}-\d{2}-\d{2}/.test(l) ? l.slice(5, 10) : l;
  }
  function valueLabel(dim, v) {
    if (v === null || v === undefined) return "—";
    v = String(v);
    if (FOLDED.test(v)) return v;
    if (v === "") return dim === "visit:source" || dim === "visit:channel" ? "Direct / None" : "(none)";
    if (dim === "visit:country" && regionNames && /^[A-Z]{2}$/.test(v)) {
      try { return regionNames.of(v) + " (" + v + ")"; } catch { return v; }
    }
    return v;
  }

  // ---------- API ----------
  class ApiError extends Error {
    // `budget`: the budget object of a 429 whose privacy budget is spent (else null); `data`: the
    // whole error body (setup_required, second_factor).
    constructor(message, status, budget, data) {
      super(message); this.status = status; this.budget = budget || null; this.data = data || {};
    }
  }
  function token() { return S.share ? S.shareToken : sessionStorage.getItem(TOKEN_KEY) || ""; }
  function parseJson(text) { try { return text ? JSON.parse(text) : null; } catch { return null; } }
  async function api(path, opts) {
    opts = opts || {};
    const headers = {};
    const t = token();
    if (t) headers.Authorization = "Bearer " + t;
    if (S.password) headers["X-Veil-Link-Password"] = S.password;
    if (opts.body !== undefined) headers["Content-Type"] = "application/json";
    if (opts.csv) headers.Accept = "text/csv";
    const method = opts.method || (opts.body !== undefined ? "POST" : "GET");
    if (S.csrf && method !== "GET") headers["X-Veil-CSRF"] = S.csrf;
    let res, text = null, data = null;
    // Site keys and shared links are rate-limited (429 + Retry-After): wait and retry, a few
    // times. A 429 whose JSON has "budget" is a spent privacy budget: it renews at UTC midnight
    // (Retry-After is hours), so it is never retried; the panel shows its message.
    for (let attempt = 0; ; attempt++) {
      // Each attempt's own answer: a retry that succeeds must not be read as the 429 before it.
      text = null;
      data = null;
      res = await fetch(path, {
        method,
        headers, body: opts.body !== undefined ? JSON.stringify(opts.body) : undefined, cache: "no-store",
      });
      if (res.status !== 429) break;
      text = await res.text();
      data = parseJson(text);
      // A locked account (or the login rate limit) waits minutes: say so at once.
      if ((data && data.budget) || opts.noRetry || attempt >= 4) break;
      // Up to half a second of jitter: a page's panels refused together do not come back
      // together (they would meet the same empty bucket again).
      const wait = Math.min(5, Math.max(1, Number(res.headers.get("Retry-After")) || 1));
      await new Promise((ok) => setTimeout(ok, wait * 1000 + Math.random() * 500));
    }
    if (opts.blob && res.ok) return res.blob();
    if (text === null) {
      text = await res.text();
      data = parseJson(text);
    }
    notePrivacy(data);
    if (!res.ok) {
      throw new ApiError((data && data.error) || ("HTTP " + res.status + " from " + path), res.status,
        res.status === 429 && data && data.budget ? data.budget : null, data);
    }
    return data;
  }

  // ---------- the privacy line in the footer ----------
  // dp: the budget left today for this credential, from the latest answer (answers may arrive
  // out of order: the one that spent the most of the latest day wins); exact: a warning that the
  // operator turned privacy protection down to exact numbers with k-anonymity only.
  function notePrivacy(data) {
    if (!data || typeof data !== "object") return;
    const list = [].concat(privacyOf(data) || data.privacy || []);
    if (data.budget && data.error) list.push({ mode: "dp", budget: data.budget });
    for (const p of list) {
      if (!p || typeof p !== "object") continue;
      if (p.mode === "exact") S.privacy = { mode: "exact", k: p.min_visitors };
      else if (p.mode === "dp" && p.budget) {
        const b = p.budget, cur = S.privacy && S.privacy.mode === "dp" ? S.privacy.budget : null;
        const later = !cur || String(b.resets_at) > String(cur.resets_at) ||
          (String(b.resets_at) === String(cur.resets_at) && Number(b.spent) >= Number(cur.spent));
        if (later) S.privacy = { mode: "dp", budget: b };
      }
    }
    drawPrivacy();
  }
  function eps(x) { return nf.format(Math.round(Number(x) * 100) / 100); }
  function drawPrivacy() {
    const el = $("privacy-note");
    const p = S.privacy;
    if (!el || !p) return;
    el.hidden = false;
    el.className = "privacy-note" + (p.mode === "exact" ? " warn" : "");
    el.dataset.mode = p.mode;
    if (p.mode === "exact") {
      el.textContent = "Privacy protection turned down: the operator runs Veil with exact numbers (--privacy exact), " +
        "protected by k-anonymity only (k = " + p.k + "), not by differential privacy.";
      delete el.dataset.spent;
      return;
    }
    const b = p.budget;
    const at = new Date(b.resets_at);
    const renews = Number.isNaN(at.getTime()) ? String(b.resets_at) : at.toISOString().slice(11, 16) + " UTC";
    el.dataset.spent = String(b.spent);
    el.dataset.epsilonDay = String(b.epsilon_day);
    el.dataset.left = String(b.left);
    el.textContent = "Privacy: differential privacy, ε " + eps(b.spent) + " of " + eps(b.epsilon_day) + " used today (renews " +
      renews + ")" + (Number(b.left) < 1e-9 ? ": today's budget is spent, new questions wait until then." : ".");
  }
  /** What a failed panel shows: the API's message; a spent privacy budget says so in its own words. */
  function failure(tag, e, extra) {
    if (e instanceof ApiError && e.budget) {
      const msg = e.message.charAt(0).toUpperCase() + e.message.slice(1);
      return h(tag, { class: "hint error budget", "data-budget": "spent" }, extra ? extra + ": " : "", msg);
    }
    return h(tag, { class: "hint error", text: (extra ? extra + ": " : "") + e.message });
  }
  function needsAuth(e) { return e instanceof ApiError && (e.status === 401 || e.status === 403); }
  function authFailed(e) {
    if (S.share) {
      if (/password/i.test(e.message)) { showOnly("password"); status(S.password ? e.message : ""); return; }
      showOnly(null);
      status("This shared link is not valid (revoked or expired?): " + e.message);
      return;
    }
    // A person who is logged in but may not do this: say so (the login form would not help).
    if (e.status === 403 && S.me && S.me.kind === "user") {
      showOnly(null);
      status(e.message);
      return;
    }
    if (e.data && e.data.setup_required) return showSetupNeeded();
    showLogin(sessionStorage.getItem(TOKEN_KEY) ? e.message : "");
  }
  function showSetupNeeded() {
    showOnly("setup-needed");
    status("");
    header();
    document.title = "Set up Veil";
  }
  function showLogin(msg) {
    S.me = null;
    S.csrf = "";
    showOnly("login");
    header();
    status(msg || "");
    document.title = "Log in · Veil";
    $("login-email").focus();
  }
  function download(blob, name) {
    const a = h("a", { href: URL.createObjectURL(blob), download: name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
  }
  function fileSafe(s) { return String(s).replace(/[^A-Za-z0-9._-]+/g, "_"); }
  // A CSV download with the column names the page shows ("Country", "Unique visitors",
  // "Unique visitors ± (95 % interval)") instead of the API's (`visit:country`, `visitors`,
  // `visitors_ci95`); every row stays the API's, byte for byte.
  const TIME_LABELS = { time: "Time", "time:hour": "Hour", "time:day": "Day", "time:week": "Week", "time:month": "Month" };
  function csvColumn(name) {
    const base = name.endsWith("_ci95") ? name.slice(0, -5) : "";
    if (base && METRIC_LABELS[base]) return metricLabel(base) + " ± (95 % interval)";
    if (METRIC_LABELS[name]) return metricLabel(name);
    if (TIME_LABELS[name]) return TIME_LABELS[name];
    return name.includes(":") ? dimLabel(name) : name;
  }
  function csvCells(line) {
    const out = [];
    let cur = "", quoted = false;
    for (let i = 0; i < line.length; i++) {
      const c = line[i];
      if (quoted) {
        if (c === '"' && line[i + 1] === '"') { cur += '"'; i++; } else if (c === '"') quoted = false; else cur += c;
      } else if (c === '"') quoted = true; else if (c === ",") { out.push(cur); cur = ""; } else cur += c;
    }
    out.push(cur);
    return out;
  }
  function csvCell(s) { return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; }
  async function humanCsv(blob) {
    const text = await blob.text();
    const cut = text.indexOf("\r\n");
    const head = cut < 0 ? text : text.slice(0, cut);
    const named = csvCells(head).map((n) => csvCell(csvColumn(n))).join(",");
    return new Blob([named + (cut < 0 ? "" : text.slice(cut))], { type: "text/csv;charset=utf-8" });
  }

  function showOnly(id) {
    for (const s of ["login", "setup-needed", "invite", "account", "password", "sites", "dash", "settings"]) $(s).hidden = s !== id;
  }

  // ---------- URL state ----------
  const PERIODS = ["day", "7d", "30d", "month", "6mo", "12mo", "year", "all", "custom"];
  const INTERVALS = ["hour", "day", "week", "month"];
  const COMPARES = ["", "previous_period", "year_over_year"];
  const OPS = ["is", "is_not", "contains", "contains_not", "matches", "matches_not"];
  const OP_TEXT = { is: "is", is_not: "is not", contains: "contains", contains_not: "does not contain",
    matches: "matches", matches_not: "does not match" };
  const DIM_RE = /^(event|visit):[a-z_]+(:[^~]+)?$/;
  const DATE_RE = /^\d{4}-\d{2}-\d{2}$/;
  function defaultInterval(period) {
    if (period === "day") return "hour";
    if (["6mo", "12mo", "year", "all"].includes(period)) return "month";
    return "day";
  }
  function readState() {
    const p = new URLSearchParams(location.search);
    const pick = (k, allowed, dflt) => (allowed.includes(p.get(k)) ? p.get(k) : dflt);
    const st = {
      period: pick("period", PERIODS, "7d"), from: p.get("from") || "", to: p.get("to") || "",
      compare: pick("compare", COMPARES, ""), view: pick("view", ["web", "app", "realtime"], "web"),
      metric: METRIC_LABELS[p.get("metric")] ? p.get("metric") : "", prop: p.get("prop") || "",
      refresh: Math.min(300, Math.max(2, Number(p.get("refresh")) || 30)), filters: [], tabs: {},
      imports: p.get("imports") !== "0", matchDay: p.get("match") === "1", segment: p.get("seg") || "",
    };
    if (st.period === "custom" && !(DATE_RE.test(st.from) && DATE_RE.test(st.to))) st.period = "7d";
    st.interval = pick("interval", INTERVALS, defaultInterval(st.period));
    for (const f of p.getAll("f")) {
      const i = f.indexOf("~"), j = f.indexOf("~", i + 1);
      if (i < 0 || j < 0) continue;
      const op = f.slice(0, i), dim = f.slice(i + 1, j), value = f.slice(j + 1);
      if (OPS.includes(op) && DIM_RE.test(dim)) st.filters.push({ op, dim, value });
    }
    for (const [k, v] of p) if (k.startsWith("t.")) st.tabs[k.slice(2)] = v;
    return st;
  }
  // Query strings stay readable (f=is~visit:source~Google): ":" "/" "~" and "," are left as they
  // are (legal in a query), everything else is percent-encoded; URLSearchParams reads it back.
  function qs(pairs) {
    const enc = (v) => encodeURIComponent(v).replace(/%3A/gi, ":").replace(/%2F/gi, "/").replace(/%2C/gi, ",");
    return pairs.map(([k, v]) => enc(k) + "=" + enc(v)).join("&");
  }
  function stateUrl(st) {
    const pairs = [];
    const p = { set: (k, v) => pairs.push([k, v]), append: (k, v) => pairs.push([k, v]) };
    if (S.share && S.embed) p.set("embed", S.embed);
    if (st.view !== "web") p.set("view", st.view);
    p.set("period", st.period);
    if (st.period === "custom") { p.set("from", st.from); p.set("to", st.to); }
    if (st.compare) p.set("compare", st.compare);
    if (st.compare && st.matchDay) p.set("match", "1");
    if (st.interval !== defaultInterval(st.period)) p.set("interval", st.interval);
    if (st.metric) p.set("metric", st.metric);
    if (st.imports === false) p.set("imports", "0");
    if (st.segment) p.set("seg", st.segment);
    for (const f of st.filters) p.append("f", f.op + "~" + f.dim + "~" + f.value);
    for (const [k, v] of Object.entries(st.tabs)) p.set("t." + k, v);
    if (st.prop) p.set("prop", st.prop);
    if (st.view === "realtime" && st.refresh !== 30) p.set("refresh", String(st.refresh));
    return location.pathname + "?" + qs(pairs) + shareFragment();
  }
  // A shared link's token rides in every page state's fragment (so a reload or a copied URL
  // still opens), never in the query string.
  function shareFragment() { return S.share ? "#auth=" + encodeURIComponent(S.shareToken) : ""; }
  // `after` runs once the page is rebuilt (its controls and filter chips are drawn at once):
  // it puts focus somewhere sensible instead of on <body>.
  function navigate(change, after) {
    const st = readState();
    change(st);
    history.pushState(null, "", stateUrl(st));
    renderDash();
    if (after) after();
  }
  // The Stats API's `include.comparisons` of a state: its mode, and Plausible's "match day of
  // week" (the comparison starts on the same weekday) when ticked.
  function comparisonOf(st) {
    return st.matchDay ? { mode: st.compare, match_day_of_week: true } : { mode: st.compare };
  }
  // The Realtime view asks the Stats API's `realtime` range (the 30 whole minutes before the
  // current one), without filters (its filter bar is hidden) or imported history (by day).
  function dateRange(st) { return st.view === "realtime" ? "realtime" : st.period === "custom" ? [st.from, st.to] : st.period; }
  // The state's filters as the Stats API takes them; a chosen segment is one more
  // (["is", "segment", [ID]]: the API answers as with the segment's own filters).
  function apiFilters(st) {
    if (st.view === "realtime") return [];
    const fs = st.filters.map((f) => [f.op, f.dim, filterValues(f.value)]);
    return st.segment ? [["is", "segment", [st.segment]], ...fs] : fs;
  }
  // A filter's values: `a|b` is a or b (as Plausible's URLs write them); `\|` is a `|` of the
  // value itself.
  function filterValues(v) {
    const out = [];
    let cur = "";
    for (let i = 0; i < v.length; i++) {
      if (v[i] === "\\" && v[i + 1] === "|") { cur += "|"; i++; } else if (v[i] === "|") { out.push(cur); cur = ""; } else cur += v[i];
    }
    out.push(cur);
    return out;
  }
  // "Today", "This month" and "This year" are whole periods in the API (Plausible's); like
  // Plausible's dashboard, the chart draws them up to now: buckets starting later are left out
  // (not drawn as zeros). A label's start is read in the site's zone, whose UTC offset the
  // answer's date range carries.
  function soFar(st, labels, echo) {
    if (!["day", "month", "year"].includes(st.period)) return labels;
    const first = echo && Array.isArray(echo.date_range) ? String(echo.date_range[0]) : "";
    const offset = /(?:[+-]\d{2}:\d{2}|Z)$/.exec(first);
    if (!offset) return labels;
    const now = Date.now();
    return labels.filter((l) => {
      const s = String(l);
      const t = Date.parse((s.length === 10 ? s + "T00:00:00" : s.replace(" ", "T")) + offset[0]);
      return Number.isNaN(t) || t <= now;
    });
  }

  function baseQuery(st) {
    return { site_id: S.site, date_range: dateRange(st), filters: apiFilters(st), include: withInclude(st, {}) };
  }
  // A query's `include`: `extra`, and imported history unless the reader turned it off
  // ("Include imported data", as Plausible's dashboard; the API merges it where it can and
  // says so in meta.imports_included / imports_skip_reason).
  function withInclude(st, extra) {
    return Object.assign(st.imports === false || st.view === "realtime" ? {} : { imports: true }, extra);
  }

  // ---------- panels ----------
  // With a goal filter every breakdown shows each row's own conversion rate ("CR": the
  // Stats API's group_conversion_rate, the row's converted visitors over all its visitors),
  // as Plausible's dashboard does; the goals breakdown keeps conversion_rate (over everyone).
  function withGoalRate(metrics, dim, st) {
    const goal = st.filters.some((f) => f.dim === "event:goal" && f.op === "is");
    if (!goal || isChild() || dim === "event:goal" || !dim.includes(":") || dim.startsWith("event:props:")) return metrics;
    return metrics.includes("group_conversion_rate") ? metrics : metrics.concat(["group_conversion_rate"]);
  }

  const WEB_PANELS = [
    { id: "pages", title: "Pages", metrics: ["visitors", "pageviews"], tabs: [
      { id: "page", label: "Top pages", dim: "event:page" },
      { id: "entry", label: "Entry pages", dim: "visit:entry_page", metrics: ["visitors", "visits"] },
      // Exit rate: the share of the page's pageviews that ended a visit (Plausible's).
      { id: "exit", label: "Exit pages", dim: "visit:exit_page", metrics: ["visitors", "visits", "exit_rate"] },
      { id: "host", label: "Hostnames", dim: "event:hostname" }] },
    { id: "sources", title: "Sources", metrics: ["visitors", "visits"], tabs: [
      { id: "source", label: "Sources", dim: "visit:source" },
      { id: "channel", label: "Channels", dim: "visit:channel" },
      { id: "referrer", label: "Referrers", dim: "visit:referrer" },
      { id: "utm_source", label: "UTM source", dim: "visit:utm_source" },
      { id: "utm_medium", label: "UTM medium", dim: "visit:utm_medium" },
      { id: "utm_campaign", label: "UTM campaign", dim: "visit:utm_campaign" },
      { id: "utm_content", label: "UTM content", dim: "visit:utm_content" },
      { id: "utm_term", label: "UTM term", dim: "visit:utm_term" }] },
    { id: "locations", title: "Locations", metrics: ["visitors"], tabs: [
      { id: "country", label: "Countries", dim: "visit:country" },
      { id: "map", label: "Map", dim: "visit:country", map: true },
      { id: "region", label: "Regions", dim: "visit:region_name" },
      { id: "city", label: "Cities", dim: "visit:city_name" },
      { id: "isp", label: "ISPs", dim: "visit:isp" }] },
    { id: "devices", title: "Devices", metrics: ["visitors"], tabs: [
      { id: "browser", label: "Browsers", dim: "visit:browser" },
      { id: "browser_version", label: "Browser versions", dim: "visit:browser_version", with: "visit:browser" },
      { id: "os", label: "OS", dim: "visit:os" },
      { id: "os_version", label: "OS versions", dim: "visit:os_version", with: "visit:os" },
      { id: "device", label: "Devices", dim: "visit:device" },
      { id: "screen", label: "Screens", dim: "visit:screen" },
      { id: "processor", label: "Processors", dim: "visit:processor" }] },
    { id: "events", title: "Custom events", metrics: ["visitors", "events"], tabs: [
      { id: "name", label: "Events", dim: "event:name", exclude: ["pageview", "engagement"] },
      { id: "props", label: "Properties", dim: "props" }] },
    { id: "goals", title: "Goals and funnels", metrics: ["visitors", "events", "conversion_rate"], tabs: [
      { id: "goal", label: "Goals", dim: "event:goal" },
      { id: "funnel", label: "Funnels", dim: "funnel" }] },
  ];
  // `engagement` is the tracker's internal beacon (time on page, scroll depth), not an event
  // anyone sent on purpose: the event lists leave it out (`exclude`; a goal is one the site set up).
  const APP_PANELS = [
    { id: "app_versions", title: "Versions", metrics: ["visitors", "visits"], tabs: [
      { id: "app_version", label: "App versions", dim: "visit:app_version" },
      { id: "os", label: "OS", dim: "visit:os" },
      { id: "os_version", label: "OS versions", dim: "visit:os_version", with: "visit:os" }] },
    { id: "install", title: "Installs", metrics: ["visitors"], tabs: [
      { id: "install_source", label: "Install sources", dim: "visit:install_source" },
      { id: "device_model", label: "Device models", dim: "visit:device_model" },
      { id: "locale", label: "Locales", dim: "visit:locale" }] },
    { id: "app_events", title: "App events", metrics: ["visitors", "events"], tabs: [
      { id: "name", label: "Events", dim: "event:name", exclude: ["engagement"] },
      { id: "country", label: "Countries", dim: "visit:country" }] },
  ];
  // Two questions, not one: visit metrics read the visit rollups, time on page reads
  // engagement events; asked together they would send the whole row to raw events.
  const WEB_STATS = [["visitors", "visits", "pageviews", "bounce_rate", "visit_duration"], ["time_on_page"]];
  // Active users are unique visitors (the API's "visitors", labelled for apps) and sessions are
  // visits; wau and mau are in the contract but not served yet. After the API's cards comes
  // "Crash-free sessions", computed from two of them (APP_DERIVED).
  const APP_STATS = [["visitors", "visits", "sessions_per_user", "dau"],
    ["launch_time_p50", "launch_time_p95", "latency_p50", "latency_p95", "crashes"]];
  const CHARTABLE = new Set(["visitors", "visits", "pageviews", "bounce_rate", "visit_duration", "time_on_page", "active_users",
    "crashes", "events"]);

  // `pair`: a dimension asked before `dim` (a browser before its versions), whose value leads
  // the row's label ("Chrome 124") and joins `dim`'s in the filter a click makes.
  function rowTable(dim, metrics, data, st, caption, clickable = true, pair = null) {
    const table = h("table", {}, h("caption", { class: "sr-only", text: caption }));
    const rows = data.results || [];
    // With a comparison, each row's change of its first number against the comparison period
    // (the API's `comparison.change`: rows match on their labels).
    const compared = rows.some((r) => r.comparison);
    table.append(h("thead", {}, h("tr", {}, h("th", { scope: "col", text: dimLabel(dim) }),
      metrics.map((m) => h("th", { scope: "col", class: "n", text: shortLabel(m) })),
      compared ? h("th", { scope: "col", class: "n", text: "Change" }) : null)));
    const tbody = h("tbody");
    const max = Math.max(1, ...rows.map((r) => Number(r.metrics[0]) || 0));
    if (rows.length === 0) {
      const priv = privacyOf(data);
      tbody.append(h("tr", {}, h("td", { colspan: metrics.length + 1 + (compared ? 1 : 0), class: "hint",
        text: data.meta && data.meta.too_few_visitors ? "Fewer than k visitors: hidden." :
          isDp(priv) && Number(priv.threshold) > 0 ? "No row has enough visitors to be listed under differential privacy " +
            "(threshold: " + nf.format(priv.threshold) + ")." : "No data for this period." })));
    }
    for (const r of rows) {
      const raw = pair ? r.dimensions[1] : r.dimensions[0];
      const lead = pair ? r.dimensions[0] : null;
      const th = h("th", { scope: "row", "data-dim": dim, "data-raw": String(raw) });
      if (pair) th.dataset.lead = String(lead);
      const bar = h("span", { class: "bar", "aria-hidden": "true" });
      bar.style.width = (100 * (Number(r.metrics[0]) || 0) / max).toFixed(1) + "%";
      const label = pair && !FOLDED.test(String(raw)) ? valueLabel(pair, lead) + " " + valueLabel(dim, raw) : valueLabel(dim, raw);
      let cell;
      if (!clickable || FOLDED.test(String(raw)) || raw === null || !dim.includes(":")) {
        cell = h("span", { class: "cell" + (FOLDED.test(String(raw)) ? " folded" : ""), text: label });
      } else {
        cell = h("button", { type: "button", class: "cell row", title: "Filter by " + dimLabel(dim) + " " + label,
          onclick: () => filterBy(dim, String(raw), pair ? { dim: pair, raw: String(lead) } : null) }, label);
      }
      th.append(bar, cell);
      const tr = h("tr", {}, th, metrics.map((m, i) => numberCell(m, r.metrics[i], privacyOf(data))));
      if (compared) {
        const change = r.comparison && r.comparison.change ? r.comparison.change[0] : null;
        tr.append(h("td", { class: "n row-change" }, change === null || change === undefined
          ? h("span", { class: "change flat", text: "—", title: "No earlier number to compare with" })
          : changeBadge(metrics[0], change, privacyOf(data))));
      }
      tbody.append(tr);
    }
    table.append(tbody);
    return table;
  }

  // ---------- countries map ----------
  // Countries shaded by the first metric (Natural Earth 1:110m via world-atlas, drawn with
  // d3-geo's Equal Earth projection; ids are ISO alpha-2 codes, scripts/vocab/world_map.py).
  // Each country with a number has a title ("Germany: ≈ 5,458") and filters the dashboard on a
  // click; the table under the map lists the same numbers for keyboards and screen readers.
  const SVGNS = "http://www.w3.org/2000/svg";
  let atlasLoad = null;
  function worldAtlas() {
    atlasLoad = atlasLoad || fetch("/vendor/countries-110m.json").then((r) => {
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json();
    });
    return atlasLoad;
  }
  async function worldMap(dim, metric, data, tableId) {
    const fig = h("figure", { class: "world-map", id: "world-map" });
    if (!window.d3 || typeof d3.geoPath !== "function" || !window.topojson) {
      fig.append(h("p", { class: "hint", text: "Map library unavailable; see the table." }));
      return fig;
    }
    let atlas;
    try { atlas = await worldAtlas(); } catch (e) {
      atlasLoad = null;
      fig.append(h("p", { class: "hint", text: "The map could not be loaded (" + e.message + "); see the table." }));
      return fig;
    }
    const priv = privacyOf(data);
    const values = new Map((data.results || []).filter((r) => r.metrics[0] !== null).map((r) => [String(r.dimensions[0]), Number(r.metrics[0])]));
    const max = Math.max(1, ...values.values());
    const features = topojson.feature(atlas, atlas.objects.countries).features.filter((f) => f.id !== "AQ");
    const [w, ht] = [960, 470];
    const projection = d3.geoEqualEarth().fitSize([w, ht], { type: "FeatureCollection", features });
    const path = d3.geoPath(projection);
    const svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + ht);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-label", metricLabel(metric) + " by country on a world map (" + values.size + " countries with data; the table below lists them)");
    svg.setAttribute("aria-details", tableId);
    for (const f of features) {
      const p = document.createElementNS(SVGNS, "path");
      p.setAttribute("d", path(f) || "");
      const code = f.id ? String(f.id) : "";
      p.dataset.country = code;
      const v = code ? values.get(code) : undefined;
      p.dataset.value = v === undefined ? "null" : String(v);
      const title = document.createElementNS(SVGNS, "title");
      if (v !== undefined) {
        p.setAttribute("class", "has-data");
        // Square root: a country with a quarter of the top one's visitors is half as dark.
        p.setAttribute("fill-opacity", (0.15 + 0.85 * Math.sqrt(v / max)).toFixed(3));
        const shown = (isDp(priv) ? "≈ " : "") + fmt(metric, v);
        title.textContent = valueLabel(dim, code) + ": " + shown;
        p.addEventListener("click", () => filterBy(dim, code));
      } else {
        title.textContent = code ? valueLabel(dim, code) + ": no data" : "no data";
      }
      p.append(title);
      svg.append(p);
    }
    fig.append(svg);
    return fig;
  }

  // A row chosen as a filter: the whole dashboard follows it (an open "more" dialog closes
  // first), then focus goes to the new filter chip and the change is announced.
  function filterBy(dim, raw, lead = null) {
    const d = $("more-dialog");
    if (d) d.close();
    const one = (v) => v.replace(/\|/g, "\\|"); // a row is one value, `|` and all
    const f = { op: "is", dim, value: one(raw) };
    const fs = lead ? [{ op: "is", dim: lead.dim, value: one(lead.raw) }, f] : [f];
    navigate((s) => {
      s.filters = s.filters.filter((x) => !(fs.some((y) => y.dim === x.dim) && x.op === "is"));
      s.filters.push(...fs);
    }, () => focusChip(f, "Filter added: "));
  }
  function chipText(f) {
    return dimLabel(f.dim) + " " + OP_TEXT[f.op] + " " + filterValues(f.value).map((v) => valueLabel(f.dim, v)).join(" or ");
  }
  function focusChip(f, said) {
    const li = [...$("filter-list").children].find((x) => x.dataset.filter === f.dim && x.dataset.op === f.op && x.dataset.value === f.value);
    const text = li && li.querySelector(".chip-text");
    if (text) text.focus();
    announce(said + chipText(f));
  }
  /** Says `msg` through the page's polite live region (screen readers read it once). */
  function announce(msg) { $("announce").textContent = msg; }
  function rowsSaid(n) { return nf.format(n) + (n === 1 ? " row" : " rows"); }

  // One panel drawn again on its own (its tab, property key or funnel changed): the URL records
  // the change, nothing else reloads; focus goes to `focusSel` in the new panel (the tab that
  // was activated) and the new content is announced.
  function redrawPanel(def, change, focusSel) {
    const st = readState();
    change(st);
    history.pushState(null, "", stateUrl(st));
    const old = $("panel-" + def.id);
    if (!old) { renderDash(); return; }
    const fresh = panel(def, st, S.generation, true);
    old.replaceWith(fresh);
    const target = fresh.querySelector(focusSel);
    if (target) target.focus();
  }

  function panel(def, st, gen, speak = false) {
    const tabId = def.tabs.some((t) => t.id === st.tabs[def.id]) ? st.tabs[def.id] : def.tabs[0].id;
    const tab = def.tabs.find((t) => t.id === tabId);
    const body = h("div", { class: "panel-body", role: "tabpanel", id: "tp-" + def.id, "aria-labelledby": "h-" + def.id });
    // Funnels are not a /api/v2/query report: no CSV for that tab.
    const csv = h("button", { type: "button", class: "secondary", "data-csv": def.id, text: "CSV",
      "aria-label": "Download " + tab.label + " as CSV", hidden: tab.dim === "funnel" });
    const tabs = h("div", { class: "tabs", role: "tablist", "aria-label": def.title },
      def.tabs.map((t) => h("button", { type: "button", role: "tab", "aria-selected": String(t.id === tabId),
        "aria-controls": "tp-" + def.id, "data-tab": t.id, text: t.label,
        onclick: () => redrawPanel(def, (s) => { s.tabs[def.id] = t.id; }, '[role="tab"][aria-selected="true"]') })));
    tabs.addEventListener("keydown", (ev) => {
      if (ev.key !== "ArrowRight" && ev.key !== "ArrowLeft") return;
      const bs = [...tabs.querySelectorAll("button")];
      const i = bs.indexOf(document.activeElement);
      if (i < 0) return;
      bs[(i + (ev.key === "ArrowRight" ? 1 : bs.length - 1)) % bs.length].focus();
    });
    const art = h("article", { class: "panel", id: "panel-" + def.id, "aria-labelledby": "h-" + def.id },
      h("div", { class: "panel-head" }, h("h2", { id: "h-" + def.id, text: def.title }), csv), tabs, body);

    const tabMetrics = tab.metrics || def.metrics;
    let dim = tab.dim;
    let metrics = tabMetrics;
    const said = def.title + ", " + tab.label + ": ";
    // A tab may leave out some values (custom events: not the pageviews).
    const query = (lim) => {
      // With a comparison chosen, each row's change too (not on the map, nor in Realtime).
      const compare = st.compare && st.view !== "realtime" && !tab.map ? { comparisons: comparisonOf(st) } : {};
      const q = Object.assign(baseQuery(st), {
        metrics, dimensions: tab.with ? [tab.with, dim] : [dim], pagination: { limit: lim, offset: 0 },
        include: withInclude(st, Object.assign({ total_rows: true }, compare)),
      });
      if (tab.exclude) q.filters = q.filters.concat([["is_not", dim, tab.exclude]]);
      return q;
    };
    // `again`: a realtime refresh — the old rows stay until the new ones replace them, and focus
    // stays on the same control (keepFocus). Resolves to the error shown, or null.
    async function load(again = false) {
      if (!again) body.replaceChildren(h("p", { class: "hint", text: "Loading…" }));
      try {
        // The map shows every country (at most 300 rows: each has a code); its table the first ten.
        const data = await api("/api/v2/query", { body: query(tab.map ? 300 : 10) });
        if (gen !== S.generation) return;
        const listed = tab.map ? Object.assign({}, data, { results: (data.results || []).slice(0, 10) }) : data;
        // Realtime takes no filters: its rows are not buttons.
        const out = [rowTable(dim, metrics, listed, st, def.title + ": " + tab.label, st.view !== "realtime", tab.with || null)];
        // The map points screen readers to the table of its numbers (aria-details).
        if (tab.map) { out[0].id = "world-map-table"; out.unshift(await worldMap(dim, metrics[0], data, out[0].id)); }
        if (gen !== S.generation) return;
        const skipped = data.meta && data.meta.imports_skip_reason;
        if (skipped && skipped !== "no_imported_data") {
          out.push(h("p", { class: "hint imports-note", text: "Imported data is not included in this report: " +
            (skipped === "unsupported_interval" ? "imports are by day, not by hour." : "the import has no such breakdown or filter.") }));
        }
        const shown = (listed.results || []).length;
        const total = (data.meta && data.meta.total_rows) || shown;
        if (total > shown) {
          const more = h("button", { type: "button", class: "secondary more", "aria-haspopup": "dialog",
            text: "Show all " + rowsSaid(total), onclick: () => moreDialog({ title: def.title + ": " + tab.label, dim, metrics, st,
              exclude: tab.exclude, opener: more, pair: tab.with || null }) });
          out.push(more);
        }
        keepFocus(body, () => body.replaceChildren(...out));
        if (speak) announce(said + rowsSaid(total));
        return null;
      } catch (e) {
        if (gen !== S.generation) return e;
        if (needsAuth(e)) { authFailed(e); return e; }
        keepFocus(body, () => body.replaceChildren(failure("p", e)));
        if (speak) announce(said + e.message);
        return e;
      }
    }
    csv.addEventListener("click", async () => {
      try {
        const body = tab.dim === "funnel" ? null : query(10000);
        if (!body || !dim.includes(":")) { status("Nothing to download here."); return; }
        const blob = await humanCsv(await api("/api/v2/query.csv", { body, csv: true, blob: true }));
        const range = st.view === "realtime" ? "realtime" : st.period === "custom" ? st.from + "_" + st.to : st.period;
        download(blob, fileSafe(S.site + "-" + def.id + "-" + tab.id + "-" + range) + ".csv");
      } catch (e) { status("CSV download failed: " + e.message); }
    });

    if (tab.dim === "props") {
      const form = h("form", { class: "inline-form" },
        h("label", {}, "Property key", h("input", { name: "prop", value: st.prop, autocomplete: "off", required: true })),
        h("button", { type: "submit", text: "Show" }));
      form.addEventListener("submit", (ev) => {
        ev.preventDefault();
        const key = new FormData(form).get("prop").trim();
        redrawPanel(def, (s) => { s.prop = key; }, 'input[name="prop"]');
      });
      art.insertBefore(form, body);
      if (!st.prop) {
        const hint = "Type a property key (e.g. plan) to break events down by its values.";
        body.replaceChildren(h("p", { class: "hint", text: hint }));
        if (speak) announce(said + hint);
        return art;
      }
      dim = "event:props:" + st.prop;
    } else if (tab.dim === "funnel") {
      funnelTab(art, body, st, gen, def, speak);
      return art;
    } else if (tab.dim === "event:goal" && S.settings && !(S.settings.goals || []).length) {
      // No goal set up: say so, and (to who may) where to set one up, instead of "no data".
      const hint = h("p", { class: "hint", id: "no-goals" }, "No goals yet. ");
      if (roleOn(S.site) >= RANK.admin) {
        hint.append(h("a", { href: "/site/" + encodeURIComponent(S.site) + "/settings#goal-form",
          text: "Set up a goal from the events this site receives" }), ".");
      }
      body.replaceChildren(hint);
      if (speak) announce(said + hint.textContent);
      return art;
    }
    metrics = withGoalRate(tabMetrics, dim, st);
    art.refresh = () => load(true);
    load();
    return art;
  }

  function funnelTab(art, body, st, gen, def, speak) {
    const funnels = (S.settings && S.settings.funnels) || [];
    if (funnels.length === 0 && !S.settings && S.settingsError) {
      body.replaceChildren(failure("p", S.settingsError));
      if (speak) announce(def.title + ", Funnels: " + S.settingsError.message);
      return;
    }
    if (funnels.length === 0) {
      const hint = S.settings ? "No funnels yet: define them in the settings." : "Funnels are listed for the admin token.";
      body.replaceChildren(h("p", { class: "hint", text: hint }));
      if (speak) announce(def.title + ", Funnels: " + hint);
      return;
    }
    const chosen = funnels.some((f) => f.name === st.tabs.funnel) ? st.tabs.funnel : funnels[0].name;
    const sel = h("select", { name: "funnel" }, funnels.map((f) => h("option", { value: f.name, text: f.name, selected: f.name === chosen })));
    sel.addEventListener("change", () => redrawPanel(def, (s) => { s.tabs.funnel = sel.value; }, 'select[name="funnel"]'));
    art.insertBefore(h("label", {}, "Funnel", sel), body);
    body.replaceChildren(h("p", { class: "hint", text: "Loading…" }));
    api("/api/v2/funnel", { body: { site_id: S.site, funnel: chosen, date_range: dateRange(st), filters: apiFilters(st) } })
      .then((data) => {
        if (gen !== S.generation) return;
        const steps = data.steps || [];
        const max = Math.max(1, ...steps.map((s) => Number(s.visitors) || 0));
        const ms = ["visitors", "conversion_rate", "conversion_rate_step", "dropoff"];
        const table = h("table", {}, h("caption", { class: "sr-only", text: "Funnel " + chosen }),
          h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Step" }),
            h("th", { scope: "col", class: "n", text: "Visitors" }), h("th", { scope: "col", class: "n", text: "Conversion" }),
            h("th", { scope: "col", class: "n", text: "From previous" }), h("th", { scope: "col", class: "n", text: "Drop-off" }))),
          h("tbody", {}, steps.map((s, i) => {
            const bar = h("span", { class: "bar", "aria-hidden": "true" });
            bar.style.width = (100 * (Number(s.visitors) || 0) / max).toFixed(1) + "%";
            return h("tr", {}, h("th", { scope: "row" }, bar, h("span", { class: "cell", text: (i + 1) + ". " + s.goal })),
              // A drop-off is the difference of two noisy steps: "≈" without an interval.
              ms.map((m) => numberCell(m === "dropoff" ? "visitors" : m, s[m], privacyOf(data), m === "dropoff" ? null : m)));
          })));
        body.replaceChildren(table);
        if (speak) announce(def.title + ", funnel " + chosen + ": " + steps.length + (steps.length === 1 ? " step" : " steps"));
      })
      .catch((e) => {
        if (gen !== S.generation) return;
        if (needsAuth(e)) return authFailed(e);
        body.replaceChildren(failure("p", e));
        if (speak) announce(def.title + ", funnel " + chosen + ": " + e.message);
      });
  }

  // ---------- "show all": every row of a panel in a dialog ----------
  // A native <dialog> (modal; Escape closes it; focus returns to the button that opened it)
  // listing the panel's rows a page of MORE_PAGE at a time (the Stats API's pagination: limit
  // and offset; under differential privacy paging asks nothing new of the budget, as order,
  // limit and offset are not part of a question), with a search (a case-insensitive
  // `contains` filter on the panel's dimension, sent on submit: under differential privacy each
  // search is a question of its own). Numbers are drawn as in the panels (rowTable); a row
  // filters the dashboard and closes the dialog.
  const MORE_PAGE = 100;
  function moreDialog({ title, dim, metrics, st, exclude, opener, pair = null }) {
    const old = $("more-dialog");
    if (old) old.close();
    const body = h("div", { class: "more-body" });
    const info = h("p", { class: "hint", id: "more-info", "aria-live": "polite" });
    const search = h("input", { type: "search", name: "q", autocomplete: "off" });
    const form = h("form", { class: "inline-form", role: "search", "aria-label": "Search " + title },
      h("label", {}, "Search", search), h("button", { type: "submit", class: "secondary", text: "Search" }));
    const prev = h("button", { type: "button", class: "secondary", id: "more-prev", text: "Previous " + MORE_PAGE });
    const next = h("button", { type: "button", class: "secondary", id: "more-next", text: "Next " + MORE_PAGE });
    const dlg = h("dialog", { id: "more-dialog", class: "more-dialog", "aria-labelledby": "more-h" },
      h("div", { class: "panel-head" }, h("h2", { id: "more-h", text: title }),
        h("button", { type: "button", class: "secondary", id: "more-close", text: "Close", onclick: () => dlg.close() })),
      form, body, h("div", { class: "pager" }, prev, info, next));
    let offset = 0, q = "", ask = 0;
    async function load(focusAfter) {
      const mine = ++ask;
      body.setAttribute("aria-busy", "true");
      const query = Object.assign(baseQuery(st), {
        metrics, dimensions: pair ? [pair, dim] : [dim], pagination: { limit: MORE_PAGE, offset }, include: withInclude(st, { total_rows: true }) });
      if (exclude) query.filters = query.filters.concat([["is_not", dim, exclude]]);
      if (q) query.filters = query.filters.concat([["contains", dim, [q], { case_sensitive: false }]]);
      try {
        const data = await api("/api/v2/query", { body: query });
        if (mine !== ask) return;
        const n = (data.results || []).length;
        const total = (data.meta && data.meta.total_rows) || offset + n;
        body.replaceChildren(rowTable(dim, metrics, data, st, title + (q ? ", matching " + q : ""), true, pair));
        info.textContent = n === 0 ? (q ? "No row matches “" + q + "”." : "No rows.") :
          "Rows " + nf.format(offset + 1) + "–" + nf.format(offset + n) + " of " + nf.format(total) + (q ? " matching “" + q + "”" : "");
        prev.disabled = offset === 0;
        next.disabled = offset + n >= total;
      } catch (e) {
        if (mine !== ask) return;
        if (needsAuth(e)) { dlg.close(); return authFailed(e); }
        body.replaceChildren(failure("p", e));
        info.textContent = "";
        prev.disabled = offset === 0;
        next.disabled = true;
      }
      body.removeAttribute("aria-busy");
      // A paging button that has just been disabled would drop focus to the page.
      if (focusAfter && focusAfter.disabled) {
        const other = focusAfter === next ? prev : next;
        (other.disabled ? search : other).focus();
      }
    }
    prev.addEventListener("click", () => { offset = Math.max(0, offset - MORE_PAGE); load(prev); });
    next.addEventListener("click", () => { offset += MORE_PAGE; load(next); });
    form.addEventListener("submit", (ev) => { ev.preventDefault(); q = search.value.trim(); offset = 0; load(null); });
    // Escape closes the dialog from anywhere in it, the search box included (where Chromium
    // would only clear the box).
    dlg.addEventListener("keydown", (ev) => {
      if (ev.key !== "Escape") return;
      ev.preventDefault();
      dlg.close();
    });
    dlg.addEventListener("close", () => {
      dlg.remove();
      if (opener && opener.isConnected) opener.focus();
    });
    document.body.append(dlg);
    dlg.showModal();
    search.focus();
    load(null);
  }

  // ---------- filtered traffic ----------
  // GET /api/v1/sites/{domain}/filtered-traffic?date_range=PERIOD|FROM,TO → {"dropped":
  // [{"reason", "events"}], "stored_bots": [...], "min_visitors"}: events left out of every
  // report. It takes the period only, never the filters. A reason with fewer than k events is
  // left out by the API (the panel says so); rows come in the API's order.
  const FILTER_REASONS = {
    bot_crawler: "Crawlers", bot_headless: "Headless browsers", bot_monitoring: "Uptime monitors",
    bot_library: "HTTP libraries", bot_datacenter: "Data-centre traffic", consent: "Opted out (GPC/DNT)",
    rate_limited: "Rate limited",
  };
  function filteredPanel(st, gen) {
    const body = h("div", { class: "panel-body", id: "tp-filtered" });
    const note = h("p", { class: "hint", id: "filtered-note", text: "Events Veil left out of every report in this period. " +
      "It follows the period; the filters do not apply (this report has none). " +
      "Reasons with fewer than k events are not listed." });
    const art = h("article", { class: "panel", id: "panel-filtered", "aria-labelledby": "h-filtered" },
      h("div", { class: "panel-head" }, h("h2", { id: "h-filtered", text: "Filtered traffic" })), note, body);
    body.replaceChildren(h("p", { class: "hint", text: "Loading…" }));
    const range = st.period === "custom" ? st.from + "," + st.to : st.period;
    api(sitePath("/filtered-traffic?date_range=" + range)).then((d) => {
      if (gen !== S.generation) return;
      const k = d.min_visitors;
      if (isDp(d.privacy)) {
        note.textContent = "Events Veil left out of every report in this period, with differential-privacy " +
          "noise. It follows the period; the filters do not apply (this report has none). " +
          "Reasons under the noisy threshold are not listed.";
      }
      const groups = [["dropped", "Not stored", d.dropped || []], ["stored_bots", "Kept bots (flagged)", d.stored_bots || []]]
        .filter(([id, , rows]) => id === "dropped" || rows.length > 0);
      const max = Math.max(1, ...groups.flatMap(([, , rows]) => rows.map((r) => Number(r.events) || 0)));
      const table = h("table", {}, h("caption", { class: "sr-only", text: "Filtered traffic by reason" }),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Reason" }), h("th", { scope: "col", class: "n", text: "Events" }))),
        groups.map(([id, title, rows]) => h("tbody", { "data-group": id },
          h("tr", { class: "group" }, h("th", { scope: "rowgroup", colspan: 2, text: title })),
          rows.length === 0 ? h("tr", {}, h("td", { colspan: 2, class: "hint", text: "Nothing filtered in this period." })) : null,
          rows.map((r) => {
            const bar = h("span", { class: "bar", "aria-hidden": "true" });
            bar.style.width = (100 * (Number(r.events) || 0) / max).toFixed(1) + "%";
            const hidden = r.events === null || r.events === undefined;
            return h("tr", {}, h("th", { scope: "row", "data-raw": String(r.reason) }, bar,
              h("span", { class: "cell", text: FILTER_REASONS[r.reason] || String(r.reason) })),
            hidden ? h("td", { class: "n null", "data-value": "null", title: "Hidden: fewer than k = " + k + " events",
              text: "fewer than " + k }) : numberCell("events", r.events, d.privacy));
          }))));
      body.replaceChildren(table);
    }).catch((e) => {
      if (gen !== S.generation) return;
      if (needsAuth(e)) return authFailed(e);
      body.replaceChildren(failure("p", e));
    });
    return art;
  }

  // ---------- top stats + chart ----------
  function changeBadge(metric, change, priv) {
    if (change === null || change === undefined) return h("span", { class: "change flat", text: "no comparison" });
    const approx = isDp(priv) ? "≈ " : "";
    const x = Number(change);
    const good = LOWER_IS_BETTER.has(metric) ? x < 0 : x > 0;
    const cls = x === 0 ? "flat" : good ? "good" : "bad";
    const arrow = x > 0 ? "↑" : x < 0 ? "↓" : "→";
    const unit = PERCENT.has(metric) ? " pp" : "%";
    return h("span", { class: "change " + cls, "data-change": String(change),
      text: arrow + " " + approx + nf.format(Math.abs(Math.round(x * 10) / 10)) + unit,
      title: "Change against the comparison period" + (approx ? " (between noisy numbers: differential privacy)" : "") });
  }

  // A stat card's comparison line: "↓ 14% · was 10,739" (dp: "↓ ≈ 14% · was ≈ 10,739"); with
  // no change figure "was 0", and with no earlier number either "no earlier data". The visible
  // pieces are hidden from screen readers, which read one sentence instead ("down 14% against
  // the previous period, was 10,739").
  const COMPARE_TEXT = { previous_period: "the previous period", year_over_year: "the same period last year" };
  function comparisonLine(m, r, i, priv, mode) {
    const cmp = r.comparison || null;
    const change = cmp && cmp.change ? cmp.change[i] : null;
    const was = cmp && cmp.metrics ? cmp.metrics[i] : null;
    const hasChange = change !== null && change !== undefined;
    const hasWas = was !== null && was !== undefined;
    const approx = isDp(priv) ? "≈ " : "";
    const badge = changeBadge(m, hasChange ? change : null, priv);
    badge.setAttribute("aria-hidden", "true");
    if (!hasChange) badge.textContent = hasWas ? "" : "no earlier data";
    badge.hidden = !hasChange && hasWas;
    // The comparison period is a release of its own: noisy too, its interval not sent.
    const prev = h("span", { class: "hint prev", "data-prev": String(was), "aria-hidden": "true", hidden: !hasWas,
      text: hasWas ? "was " + approx + fmt(m, was) : "" });
    const against = " against " + (COMPARE_TEXT[mode] || "the comparison period");
    let said;
    if (hasChange) {
      const x = Number(change);
      const size = approx + nf.format(Math.abs(Math.round(x * 10) / 10)) + (PERCENT.has(m) ? " percentage points" : "%");
      said = (x > 0 ? "up " + size : x < 0 ? "down " + size : "unchanged") + against + (hasWas ? ", was " + approx + fmt(m, was) : "");
    } else {
      said = hasWas ? "was " + approx + fmt(m, was) + " in " + (COMPARE_TEXT[mode] || "the comparison period") :
        "no data for " + (COMPARE_TEXT[mode] || "the comparison period");
    }
    return h("span", { class: "cmp" }, badge, hasChange && hasWas ? h("span", { class: "sep", "aria-hidden": "true", text: " · " }) : null,
      prev, h("span", { class: "sr-only", text: " " + said }));
  }

  // A stat card chosen: the chart alone is drawn again for its metric (the cards stay, focus
  // stays on the card) and the change is announced.
  function chooseMetric(m) {
    const st = readState();
    st.metric = m;
    history.pushState(null, "", stateUrl(st));
    for (const li of document.querySelectorAll("#stats .stat")) {
      li.setAttribute("aria-current", String(li.dataset.stat === m));
      const b = li.querySelector("button");
      if (b) b.setAttribute("aria-pressed", String(li.dataset.stat === m));
    }
    const old = $("chart");
    if (!old) { renderDash(); return; }
    const holder = document.createDocumentFragment();
    chart(holder, m, st, S.generation);
    old.replaceWith(holder);
    announce("Chart: " + metricLabel(m) + " by " + st.interval);
  }

  // Top stats, one query per group of metrics (the API does not mix performance percentiles with
  // visit metrics). Resolves to the first group's response (for its meta); a group that fails
  // shows the API's error in its place.
  // Cards computed from the API's cards, after them: post-processing of numbers the privacy
  // module published (under differential privacy "≈", without an interval), "—" when a number
  // it needs is hidden or its question failed. Crash-free sessions: an app sends `crash` = 1 on
  // the first launch after a crash (docs/ARCHITECTURE.md), so each crash is counted once, in the
  // session after it, and 100 × (1 − crashes ÷ sessions) of the sessions followed none.
  const APP_DERIVED = [{ metric: "crash_free_sessions", from: ["crashes", "visits"],
    title: "Sessions not started after a crash: 100 × (1 − crashes ÷ sessions), from the Crashes and Sessions cards",
    value: ([crashes, sessions]) => (Number(sessions) > 0 ?
      Math.min(100, Math.max(0, 100 * (1 - Number(crashes) / Number(sessions)))) : null),
    none: ([, sessions]) => (sessions !== null && Number(sessions) === 0 ? "No sessions in this period" : null) }];
  function derivedCard(d, got) {
    const have = d.from.map((m) => got.get(m));
    const el = h("span", { class: "value", "data-metric": d.metric });
    const vals = have.map((x) => (x && x.v !== null && x.v !== undefined ? x.v : null));
    const v = vals.every((x) => x !== null) ? d.value(vals) : null;
    const dp = have.find((x) => x && isDp(x.priv));
    putNumber(el, d.metric, v, dp ? dp.priv : null, null);
    if (v === null) {
      el.title = have.some((x) => !x) ? "Not shown: " + d.from.filter((m, i) => !have[i]).map(metricLabel).join(" and ") + " could not be loaded" :
        d.none(vals) || "Hidden: " + d.from.filter((m, i) => vals[i] === null).map(metricLabel).join(" and ") + " hidden";
    }
    // The title names the numbers it was computed from, with their intervals under differential
    // privacy (a noisy count of few crashes can be far from the true one).
    const from = d.from.map((m, i) => {
      if (!have[i]) return null;
      const ci = ciOf(have[i].priv, m);
      return metricLabel(m) + " " + (vals[i] === null ? "—" : (isDp(have[i].priv) ? "≈ " : "") + fmt(m, vals[i]) +
        (ci === null ? "" : " ± " + fmt(m, ci)));
    }).filter(Boolean);
    return h("li", { class: "stat", "data-stat": d.metric, "aria-current": "false" },
      h("div", { class: "static", title: d.title + (from.length ? " (" + from.join(", ") + ")" : "") },
        h("span", { class: "label", text: metricLabel(d.metric) }), el));
  }
  function topStats(container, groups, st, gen, chartMetric, derived = []) {
    const ul = h("ul", { class: "stats", id: "stats", "aria-label": "Totals" });
    container.append(ul);
    const slots = groups.map(() => h("div", { class: "slot" }));
    const got = new Map(); // metric → { v, priv }: the API's numbers, for the derived cards
    const runs = groups.map((metrics, g) => {
      const query = Object.assign(baseQuery(st), { metrics, dimensions: [] });
      if (st.compare) query.include = withInclude(st, { comparisons: comparisonOf(st) });
      return api("/api/v2/query", { body: query }).then((data) => {
        if (gen !== S.generation) return data;
        const r = (data.results || [])[0] || { metrics: metrics.map(() => null) };
        const priv = privacyOf(data);
        metrics.forEach((m, i) => got.set(m, { v: r.metrics[i], priv }));
        slots[g] = metrics.map((m, i) => {
          const chartable = CHARTABLE.has(m);
          const inner = [h("span", { class: "label", text: metricLabel(m) }),
            putNumber(h("span", { class: "value", "data-metric": m }), m, r.metrics[i], priv)];
          if (st.compare) inner.push(comparisonLine(m, r, i, priv, st.compare));
          return h("li", { class: "stat", "data-stat": m, "aria-current": String(m === chartMetric) },
            chartable ? h("button", { type: "button", "aria-pressed": String(m === chartMetric), title: "Chart " + metricLabel(m),
              onclick: () => chooseMetric(m) }, inner) : h("div", { class: "static" }, inner));
        });
        return data;
      }, (e) => {
        if (gen !== S.generation || needsAuth(e)) throw e;
        slots[g] = [failure("li", e, metrics.map(metricLabel).join(", "))];
        throw e;
      });
    });
    return Promise.allSettled(runs).then((done) => {
      if (gen === S.generation) ul.replaceChildren(...slots.flat(), ...derived.map((d) => derivedCard(d, got)));
      // The current day may come from a snapshot a few seconds old (--today-snapshot-secs).
      const asOf = done[0].status === "fulfilled" && done[0].value.meta && done[0].value.meta.today_as_of;
      if (asOf && gen === S.generation) {
        container.append(h("p", { class: "hint", id: "today-as-of", "data-as-of": asOf,
          text: "Today as of " + new Date(asOf).toLocaleTimeString() }));
      }
      if (done[0].status === "fulfilled") return done[0].value;
      const authErr = done.find((d) => d.status === "rejected" && needsAuth(d.reason));
      throw (authErr || done[0]).reason;
    });
  }

  // Counts get whole-number ticks on the y axis: 1, 2, 5, 10, 20, 25, 50, 100, …
  const INT_STEPS = [];
  for (let m = 1; m <= 1e9; m *= 10) INT_STEPS.push(m, 2 * m, ...(m >= 10 ? [2.5 * m] : []), 5 * m);
  const COUNTS = (m) => !PERCENT.has(m) && !SECONDS.has(m) && !MILLIS.has(m) && !DECIMAL.has(m);

  function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name).trim(); }

  // The site's annotations by the chart bucket their day falls in (hours: the day's first hour).
  function notesByBucket(labels, interval) {
    const out = new Map();
    const all = (S.settings && S.settings.annotations) || [];
    if (!all.length || !labels.length) return out;
    const firstOfDay = new Map();
    labels.forEach((l, i) => { const d = String(l).slice(0, 10); if (!firstOfDay.has(d)) firstOfDay.set(d, i); });
    for (const a of all) {
      let i = -1;
      if (interval === "hour" || interval === "day") i = firstOfDay.has(a.date) ? firstOfDay.get(a.date) : -1;
      else if (interval === "month") i = labels.findIndex((l) => String(l).slice(0, 7) === a.date.slice(0, 7));
      else {
        // Weeks: the last bucket starting on or before the day, if the day is in the range.
        for (let j = 0; j < labels.length; j++) if (String(labels[j]).slice(0, 10) <= a.date) i = j;
        const end = new Date(String(labels[labels.length - 1]).slice(0, 10) + "T00:00:00Z");
        end.setUTCDate(end.getUTCDate() + 6);
        if (a.date < String(labels[0]).slice(0, 10) || a.date > end.toISOString().slice(0, 10)) i = -1;
      }
      if (i >= 0) out.set(i, (out.get(i) || []).concat([a]));
    }
    return out;
  }
  // A dashed vertical line and a dot at the top of the plot for each bucket with notes.
  function drawNotes(u, notes) {
    if (!notes.size) return;
    const ctx = u.ctx;
    ctx.save();
    ctx.strokeStyle = cssVar("--muted");
    ctx.fillStyle = ctx.strokeStyle;
    ctx.lineWidth = 1.5 * devicePixelRatio;
    ctx.setLineDash([3 * devicePixelRatio, 3 * devicePixelRatio]);
    for (const i of notes.keys()) {
      const x = Math.round(u.valToPos(i, "x", true));
      ctx.beginPath();
      ctx.moveTo(x, u.bbox.top);
      ctx.lineTo(x, u.bbox.top + u.bbox.height);
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(x, u.bbox.top + 4 * devicePixelRatio, 3.5 * devicePixelRatio, 0, 2 * Math.PI);
      ctx.fill();
    }
    ctx.restore();
  }

  function chart(container, metric, st, gen) {
    const fig = h("figure", { class: "chart", id: "chart" });
    const caption = h("figcaption", { id: "chart-title", text: metricLabel(metric) + " by " + st.interval });
    const plot = h("div", { class: "plot", role: "img", "aria-labelledby": "chart-title", "aria-describedby": "chart-table-summary" });
    const details = h("details", { id: "chart-data" }, h("summary", { id: "chart-table-summary", text: "Chart data as a table" }));
    const csv = h("button", { type: "button", class: "secondary", "data-csv": "chart", text: "CSV",
      "aria-label": "Download the chart data as CSV" });
    fig.append(h("div", { class: "panel-head" }, caption, csv), plot, details);
    container.append(fig);
    const dim = "time:" + st.interval;
    const query = Object.assign(baseQuery(st), { metrics: [metric], dimensions: [dim], include: withInclude(st, { time_labels: true }) });
    if (st.compare) query.include.comparisons = comparisonOf(st);
    csv.addEventListener("click", async () => {
      try {
        const blob = await humanCsv(await api("/api/v2/query.csv", { body: Object.assign({}, query, { include: withInclude(st, {}) }), csv: true, blob: true }));
        download(blob, fileSafe(S.site + "-" + metric + "-by-" + st.interval) + ".csv");
      } catch (e) { status("CSV download failed: " + e.message); }
    });
    return api("/api/v2/query", { body: query }).then((data) => {
      if (gen !== S.generation || !fig.isConnected) return; // a newer chart took its place
      const rows = data.results || [];
      const byLabel = new Map(rows.map((r) => [String(r.dimensions[0]), r]));
      const labels = soFar(st, (data.meta && data.meta.time_labels) || rows.map((r) => String(r.dimensions[0])), data.query);
      const cur = labels.map((l) => (byLabel.has(l) ? byLabel.get(l).metrics[0] : 0));
      const hasPrev = !!st.compare && rows.some((r) => r.comparison);
      const priv = privacyOf(data);
      // The last bucket is not over when the range ends after now (today, this month, …): it
      // is drawn dashed from the bucket before, and its row in the table says "so far".
      const end = data.query && Array.isArray(data.query.date_range) ? Date.parse(String(data.query.date_range[1])) : NaN;
      const unfinished = labels.length >= 2 && Number.isFinite(end) && end > Date.now();
      if (unfinished) fig.dataset.unfinished = labels[labels.length - 1]; else delete fig.dataset.unfinished;
      // The legend under the chart (uPlot's tooltip): "≈ N ± I" with differential privacy.
      const legend = (ciKey) => (u, v) => {
        if (v === null || v === undefined || !isDp(priv)) return fmt(metric, v);
        const ci = ciOf(priv, ciKey);
        return "≈ " + fmt(metric, v) + (ci === null ? "" : " ± " + fmt(metric, ci));
      };
      const prev = labels.map((l) => { const r = byLabel.get(l); return r && r.comparison ? r.comparison.metrics[0] : null; });
      const notes = notesByBucket(labels, st.interval);
      const table = h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Time" }),
        h("th", { scope: "col", class: "n", text: metricLabel(metric) }),
        hasPrev ? h("th", { scope: "col", class: "n", text: "Comparison" }) : null)),
      h("tbody", {}, labels.map((l, i) => h("tr", { "data-time": l },
        h("th", { scope: "row", text: unfinished && i === labels.length - 1 ? l + " (so far)" : l }),
        numberCell(metric, byLabel.has(l) ? byLabel.get(l).metrics[0] : 0, priv),
        // The comparison period is a release of its own: noisy, its interval not sent.
        hasPrev ? numberCell(metric, prev[i], priv, null) : null))));
      details.append(table);
      // The site's notes of this range: a marked line on the chart, and listed under it.
      if (notes.size) {
        fig.append(h("ul", { class: "chart-notes", id: "chart-notes", "aria-label": "Notes on this chart" },
          [...notes.entries()].flatMap(([i, list]) => list.map((a) => h("li", { "data-time": labels[i], text: a.date + " — " + a.text })))));
      }
      if (typeof uPlot !== "function" || labels.length === 0) {
        plot.replaceChildren(h("p", { class: "hint", text: labels.length ? "Chart library unavailable; see the table." : "No data." }));
        return;
      }
      const short = (l) => tickLabel(st.interval, l);
      const series = [
        { label: "Time", value: (u, v) => (v === null ? "" : labels[Math.round(v)] || "") },
        { label: "This period", stroke: cssVar("--accent"), width: 2, fill: cssVar("--bar") + "80",
          value: legend(metric) },
      ];
      const ys = cur.map((v) => (v === null ? null : Number(v)));
      const dataArr = [labels.map((_, i) => i), unfinished ? ys.map((v, i) => (i === ys.length - 1 ? null : v)) : ys];
      if (unfinished) {
        const n = ys.length;
        series.push({ label: "So far", stroke: cssVar("--accent"), width: 2, dash: [4, 4], value: legend(metric) });
        dataArr.push(ys.map((v, i) => (i >= n - 2 ? v : null)));
      }
      if (hasPrev) {
        series.push({ label: "Comparison", stroke: cssVar("--prev"), width: 1.5, dash: [6, 4], value: legend(null) });
        dataArr.push(prev.map((v) => (v === null ? null : Number(v))));
      }
      const axisColor = cssVar("--muted");
      const grid = { stroke: cssVar("--line"), width: 1 };
      const opts = {
        width: Math.max(280, plot.clientWidth || 600), height: 260, series,
        scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
        axes: [
          { stroke: axisColor, grid, incrs: [1, 2, 3, 4, 6, 7, 12, 24, 30, 48, 90, 180, 365],
            values: (u, splits) => splits.map((i) => (Number.isInteger(i) ? short(labels[i]) : "")) },
          Object.assign({ stroke: axisColor, grid, size: 60, values: (u, splits) => splits.map((v) => fmt(metric, v)) },
            COUNTS(metric) ? { incrs: INT_STEPS } : {}),
        ],
        cursor: { drag: { x: false, y: false } },
        // uPlot's own legend ("Time: — This period: —" under the chart) is left out: the
        // tooltip below says the same at the point, and the table under the chart lists all.
        legend: { show: false },
        // A tooltip at the point under the pointer: a mouse hovering, or a finger tapping (a
        // tap moves uPlot's cursor like a mouse would).
        hooks: { setCursor: [(u) => tipAt(u, u.cursor.idx)], draw: [(u) => drawNotes(u, notes)] },
      };
      const tip = h("div", { class: "chart-tip", id: "chart-tip", hidden: true });
      function tipAt(u, i) {
        if (i === null || i === undefined || i < 0 || i >= labels.length) { tip.hidden = true; return; }
        const v = cur[i];
        const so = unfinished && i === labels.length - 1 ? " (so far)" : "";
        const lines = [labels[i] + so, metricLabel(metric) + ": " + legend(metric)(u, v === null ? null : Number(v))];
        if (hasPrev) lines.push("Comparison: " + legend(null)(u, prev[i] === null ? null : Number(prev[i])));
        for (const a of notes.get(i) || []) lines.push("Note: " + a.text);
        tip.replaceChildren(...lines.map((t) => h("div", { text: t })));
        tip.dataset.time = labels[i];
        tip.dataset.value = String(v === null || v === undefined ? "null" : v);
        const x = u.valToPos(i, "x"), y = u.valToPos(v === null ? 0 : Number(v), "y");
        tip.hidden = false;
        // Inside the plot: left of the point when it is in the right half.
        const w = tip.offsetWidth;
        tip.style.left = Math.max(0, x > u.over.clientWidth / 2 ? x - w - 12 : x + 12) + "px";
        tip.style.top = Math.max(0, y - tip.offsetHeight - 8) + "px";
      }
      if (S.chart) S.chart.destroy();
      plot.replaceChildren();
      S.chart = new uPlot(opts, dataArr, plot);
      S.chart.over.append(tip);
      S.chart.over.addEventListener("mouseleave", () => { tip.hidden = true; });
      if (S.resize) S.resize.disconnect();
      S.resize = new ResizeObserver(() => { if (S.chart && plot.clientWidth) S.chart.setSize({ width: plot.clientWidth, height: 260 }); });
      S.resize.observe(plot);
    }).catch((e) => {
      if (gen !== S.generation || !fig.isConnected) return; // a newer chart took its place
      if (needsAuth(e)) return authFailed(e);
      plot.replaceChildren(failure("p", e));
    });
  }

  // ---------- version adoption (App view) ----------
  // Each app version's share of the users of each day (week or month: the main chart's
  // interval), from one Stats API question: {"metrics": ["visitors"], "dimensions":
  // ["time:INTERVAL", "visit:app_version"]} with the view's filters. Lines for the five
  // versions with the most users over the period, "Other" for the rest. A share is a version's
  // users over the users listed for that day (computed here from the API's numbers; a user
  // who updated during the day is listed under both versions). A (day, version) row under k
  // (exact mode) or under the noisy threshold (differential privacy) is not sent: it is
  // missing from the lines and the table, never drawn as 0, and the note under the chart says
  // so. The table under the chart lists every row the API sent, with its share.
  const ADOPTION_TOP = 5;
  // Line colours (app.css: --s1…--s6, light and dark) and dashes, so lines differ by more than hue.
  const SERIES_STYLE = [["--s1", []], ["--s2", [8, 4]], ["--s3", [2, 3]], ["--s4", [10, 3, 2, 3]], ["--s5", [4, 4]], ["--s6", [1, 4]]];
  function lineSwatch(color, dash) {
    const svg = document.createElementNS(SVGNS, "svg");
    svg.setAttribute("viewBox", "0 0 28 8");
    svg.setAttribute("width", "28");
    svg.setAttribute("height", "8");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", "swatch");
    const line = document.createElementNS(SVGNS, "line");
    for (const [k, v] of [["x1", 0], ["y1", 4], ["x2", 28], ["y2", 4], ["stroke", color], ["stroke-width", 2.5]]) line.setAttribute(k, String(v));
    if (dash.length) line.setAttribute("stroke-dasharray", dash.join(" "));
    svg.append(line);
    return svg;
  }
  function adoptionChart(container, st, gen) {
    const unit = st.interval;
    const fig = h("figure", { class: "chart", id: "adoption" });
    const caption = h("figcaption", { id: "adoption-title", text: "Version adoption: each version's share of the active users by " + unit });
    const plot = h("div", { class: "plot", role: "img", "aria-labelledby": "adoption-title",
      "aria-describedby": "adoption-legend adoption-note adoption-table-summary" });
    const legendEl = h("ul", { class: "chart-legend", id: "adoption-legend", "aria-label": "Versions on the chart" });
    const note = h("p", { class: "hint", id: "adoption-note" });
    const details = h("details", { id: "adoption-data" }, h("summary", { id: "adoption-table-summary", text: "Chart data as a table" }));
    const csv = h("button", { type: "button", class: "secondary", "data-csv": "adoption", text: "CSV",
      "aria-label": "Download the version adoption data as CSV" });
    fig.append(h("div", { class: "panel-head" }, caption, csv), plot, legendEl, note, details);
    container.append(fig);
    const dim = "time:" + st.interval;
    const query = Object.assign(baseQuery(st), { metrics: ["visitors"], dimensions: [dim, "visit:app_version"],
      include: withInclude(st, { time_labels: true }) });
    csv.addEventListener("click", async () => {
      try {
        const blob = await humanCsv(await api("/api/v2/query.csv", { body: Object.assign({}, query, { include: withInclude(st, {}) }), csv: true, blob: true }));
        download(blob, fileSafe(S.site + "-versions-by-" + st.interval) + ".csv");
      } catch (e) { status("CSV download failed: " + e.message); }
    });
    return api("/api/v2/query", { body: query }).then((data) => {
      if (gen !== S.generation || !fig.isConnected) return;
      const priv = privacyOf(data);
      const meta = data.meta || {};
      const all = data.results || [];
      const labels = soFar(st, meta.time_labels || [...new Set(all.map((r) => String(r.dimensions[0])))], data.query);
      const at = new Map(labels.map((l, i) => [l, i]));
      const rows = all.filter((r) => at.has(String(r.dimensions[0])));
      const end = data.query && Array.isArray(data.query.date_range) ? Date.parse(String(data.query.date_range[1])) : NaN;
      const unfinished = labels.length >= 1 && Number.isFinite(end) && end > Date.now();
      const timeText = (i) => labels[i] + (unfinished && i === labels.length - 1 ? " (so far)" : "");
      // The users listed per bucket, and per version.
      const listed = labels.map(() => 0);
      const versions = new Map(); // raw version → { total, users[] }
      for (const r of rows) {
        const x = r.metrics[0];
        if (x === null || x === undefined || !Number.isFinite(Number(x))) continue;
        const i = at.get(String(r.dimensions[0])), ver = String(r.dimensions[1]);
        if (!versions.has(ver)) versions.set(ver, { total: 0, users: labels.map(() => null) });
        const e = versions.get(ver);
        e.total += Number(x);
        e.users[i] = (e.users[i] || 0) + Number(x);
        listed[i] += Number(x);
      }
      const share = (users, i) => (users === null || !(listed[i] > 0) ? null : 100 * users / listed[i]);
      const ranked = [...versions.entries()].sort((a, b) => b[1].total - a[1].total || (a[0] < b[0] ? -1 : 1));
      const lines = ranked.length <= ADOPTION_TOP + 1 ? ranked.map(([v, e]) => ({ name: valueLabel("visit:app_version", v), raw: v, users: e.users })) :
        ranked.slice(0, ADOPTION_TOP).map(([v, e]) => ({ name: valueLabel("visit:app_version", v), raw: v, users: e.users })).concat([{
          name: "Other (" + (ranked.length - ADOPTION_TOP) + " versions)", raw: null,
          users: labels.map((_, i) => {
            const xs = ranked.slice(ADOPTION_TOP).map(([, e]) => e.users[i]).filter((x) => x !== null);
            return xs.length ? xs.reduce((a, b) => a + b, 0) : null;
          }) }]);
      for (const l of lines) l.shares = l.users.map((u, i) => share(u, i));
      fig.dataset.versions = JSON.stringify(lines.map((l) => l.raw));
      // What is missing, and what a share is.
      const aUnit = (unit === "hour" ? "an " : "a ") + unit;
      const parts = ["Share: a version's users over the users listed for that " + unit +
        " (share of the users listed; a user who updated during the " + unit + " is listed under both versions)."];
      if (isDp(priv)) {
        parts.push("Under differential privacy a version is listed for " + aUnit + " only when its noisy users reach the threshold" +
          (Number(priv.threshold) > 0 ? " (" + nf.format(priv.threshold) + ")" : "") +
          ": versions under it are missing from the lines and the table, not zero, and every number is noisy (≈).");
      } else if (meta.suppressed) {
        parts.push("A version with fewer than " + meta.min_visitors + " users in " + aUnit +
          " is not listed (k-anonymity): it is missing from the lines and the table, not zero.");
      }
      if (ranked.length > ADOPTION_TOP + 1) parts.push("Lines: the " + ADOPTION_TOP + " versions with the most users over the period; “Other”: the rest together.");
      note.textContent = parts.join(" ");
      // The table: every row the API sent, in its order (time, then users).
      const head = TIME_LABELS[dim] || "Time";
      const body = h("tbody");
      labels.forEach((l, i) => {
        const mine = rows.filter((r) => String(r.dimensions[0]) === l);
        if (!mine.length) {
          body.append(h("tr", { "data-time": l }, h("th", { scope: "row", text: timeText(i) }),
            h("td", { colspan: 3, class: "hint", text: "No version listed" })));
          return;
        }
        for (const r of mine) {
          const u = r.metrics[0];
          body.append(h("tr", { "data-time": l, "data-version": String(r.dimensions[1]) },
            h("th", { scope: "row", text: timeText(i) }), h("td", { text: valueLabel("visit:app_version", r.dimensions[1]) }),
            numberCell("visitors", u, priv),
            numberCell("version_share", u === null || u === undefined ? null : share(Number(u), i), priv, null)));
        }
      });
      details.append(h("table", {}, h("caption", { class: "sr-only", text: "Active users per version by " + unit +
        ", and each version's share of the users listed for that " + unit }),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: head }), h("th", { scope: "col", text: "Version" }),
          h("th", { scope: "col", class: "n", text: "Users" }), h("th", { scope: "col", class: "n", text: "Share" }))),
        body));
      const styles = lines.map((_, j) => SERIES_STYLE[j % SERIES_STYLE.length]);
      legendEl.replaceChildren(...lines.map((l, j) => h("li", { "data-version": l.raw === null ? "" : l.raw },
        lineSwatch(cssVar(styles[j][0]), styles[j][1]), l.name)));
      if (typeof uPlot !== "function" || labels.length === 0 || lines.length === 0) {
        plot.replaceChildren(h("p", { class: "hint", text: labels.length && lines.length ? "Chart library unavailable; see the table." : "No version listed in this period." }));
        return;
      }
      const short = (l) => tickLabel(st.interval, l);
      const approx = isDp(priv) ? "≈ " : "";
      const pct = (v) => (v === null || v === undefined ? "—" : approx + fmt("version_share", v));
      const axisColor = cssVar("--muted");
      const grid = { stroke: cssVar("--line"), width: 1 };
      const tip = h("div", { class: "chart-tip", id: "adoption-tip", hidden: true });
      function tipAt(u, i) {
        if (i === null || i === undefined || i < 0 || i >= labels.length) { tip.hidden = true; return; }
        const at_i = lines.filter((l) => l.shares[i] !== null).sort((a, b) => b.shares[i] - a.shares[i]);
        const out = [timeText(i)].concat(at_i.length ? at_i.map((l) => l.name + ": " + pct(l.shares[i]) + " (" + approx + fmt("visitors", l.users[i]) + " users)") :
          ["No version listed"]);
        tip.replaceChildren(...out.map((t) => h("div", { text: t })));
        tip.dataset.time = labels[i];
        const top = at_i.length ? at_i[0].shares[i] : 0;
        const x = u.valToPos(i, "x"), y = u.valToPos(top, "y");
        tip.hidden = false;
        const w = tip.offsetWidth;
        tip.style.left = Math.max(0, x > u.over.clientWidth / 2 ? x - w - 12 : x + 12) + "px";
        tip.style.top = Math.max(0, y - 8) + "px";
      }
      const opts = {
        width: Math.max(280, plot.clientWidth || 600), height: 260,
        series: [{ label: "Time", value: (u, v) => (v === null ? "" : labels[Math.round(v)] || "") },
          ...lines.map((l, j) => ({ label: l.name, stroke: cssVar(styles[j][0]), width: 2, dash: styles[j][1], value: (u, v) => pct(v) }))],
        scales: { x: { time: false }, y: { range: () => [0, 100] } },
        axes: [
          { stroke: axisColor, grid, incrs: [1, 2, 3, 4, 6, 7, 12, 24, 30, 48, 90, 180, 365],
            values: (u, splits) => splits.map((i) => (Number.isInteger(i) ? short(labels[i]) : "")) },
          { stroke: axisColor, grid, size: 50, incrs: [10, 20, 25, 50], values: (u, splits) => splits.map((v) => fmt("version_share", v)) },
        ],
        cursor: { drag: { x: false, y: false } },
        // The list under the chart names the lines; the tooltip gives the numbers at a point.
        legend: { show: false },
        hooks: { setCursor: [(u) => tipAt(u, u.cursor.idx)] },
      };
      if (S.adoption) S.adoption.destroy();
      plot.replaceChildren();
      S.adoption = new uPlot(opts, [labels.map((_, i) => i), ...lines.map((l) => l.shares)], plot);
      S.adoption.over.append(tip);
      S.adoption.over.addEventListener("mouseleave", () => { tip.hidden = true; });
      if (S.adoptionResize) S.adoptionResize.disconnect();
      S.adoptionResize = new ResizeObserver(() => { if (S.adoption && plot.clientWidth) S.adoption.setSize({ width: plot.clientWidth, height: 260 }); });
      S.adoptionResize.observe(plot);
    }).catch((e) => {
      if (gen !== S.generation || !fig.isConnected) return;
      if (needsAuth(e)) return authFailed(e);
      plot.replaceChildren(failure("p", e));
    });
  }

  // ---------- dashboard ----------
  function filterChips(st) {
    const list = $("filter-list");
    list.replaceChildren(...st.filters.map((f, i) => {
      const text = chipText(f);
      return h("li", { "data-filter": f.dim, "data-op": f.op, "data-value": f.value },
        h("span", { class: "chip-text", tabindex: "-1", text }),
        h("button", { type: "button", "aria-label": "Remove filter: " + text, text: "×",
          onclick: () => navigate((s) => { s.filters.splice(i, 1); }, () => {
            // Focus stays in the filter bar: the next chip's remove button, else "Add filter".
            const left = $("filter-list").querySelectorAll("button");
            (left[Math.min(i, left.length - 1)] || $("filter-add").querySelector("summary")).focus();
            announce("Filter removed: " + text);
          }) }));
    }));
  }

  // A child-directed site stores no visitor hash, referrer, campaign or props: the API reports
  // page views and event counts by page, event, goal, host, country, device, browser and OS only.
  const CHILD_DIMS = new Set(["event:page", "event:name", "event:hostname", "event:goal", "visit:country", "visit:device",
    "visit:browser", "visit:os"]);
  const CHILD_STATS = [["pageviews", "events"]];
  function isChild() { return !!(S.settings && S.settings.child_directed); }
  function childPanels(defs) {
    return defs.map((d) => Object.assign({}, d, {
      metrics: d.id === "goals" || d.id === "events" ? ["events"] : ["pageviews", "events"],
      tabs: d.tabs.filter((t) => CHILD_DIMS.has(t.dim)).map((t) => Object.assign({}, t, { metrics: undefined })),
    })).filter((d) => d.tabs.length > 0);
  }

  function syncControls(st) {
    $("period").value = st.period;
    $("from-l").hidden = $("to-l").hidden = st.period !== "custom";
    $("from").value = st.from;
    $("to").value = st.to;
    $("compare").value = st.compare;
    $("match-day").checked = st.matchDay;
    $("match-day-l").hidden = !st.compare;
    $("interval").value = st.interval;
    $("imports").checked = st.imports !== false;
    // Shown once an answer says the site has imported history (or while it is turned off).
    $("imports-l").hidden = st.imports !== false;
    $("controls").hidden = st.view === "realtime";
    $("export").hidden = st.view === "realtime";
    $("filters").hidden = st.view === "realtime"; // the realtime endpoint takes no filters
    for (const v of ["web", "app", "realtime"]) {
      const a = $("view-" + v);
      const s2 = Object.assign({}, st, { view: v, metric: "" });
      a.href = stateUrl(s2);
      if (v === st.view) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
    }
    $("view-app").hidden = isChild();
    filterChips(st);
    filterDims(st.view);
    segmentBar(st);
  }
  // Segments: the site's and the reader's own, to choose from; the filters shown can be saved
  // as one (a person: their own, or with the admin role the site's).
  async function segmentBar(st) {
    const site = S.site;
    const admin = roleOn(site) >= RANK.admin;
    $("segment-save").hidden = !((isUser() || admin) && st.filters.length);
    // A person may keep one for themselves; without an account (the admin token) only the
    // site's, and below admin only one's own.
    $("segment-type").disabled = !isUser() || !admin;
    if (!isUser()) $("segment-type").value = "site"; else if (!admin) $("segment-type").value = "personal";
    let list = [];
    try { list = (await api("/api/v1/sites/" + encodeURIComponent(site) + "/segments", { noRetry: true })).segments || []; } catch { list = []; }
    if (S.site !== site) return;
    S.segments = list;
    const sel = $("segment");
    sel.replaceChildren(h("option", { value: "", text: "None" }),
      ...list.map((s) => h("option", { value: s.id, text: s.name + (s.type === "personal" ? " (mine)" : ""), selected: s.id === st.segment })));
    if (st.segment && !list.some((s) => s.id === st.segment)) sel.append(h("option", { value: st.segment, text: "(unknown segment)", selected: true }));
    $("segment-l").hidden = !list.length && !st.segment;
    const cur = list.find((s) => s.id === st.segment);
    $("segment-delete").hidden = !cur || !(cur.type === "personal" || roleOn(site) >= RANK.admin);
  }
  // Fields an app sends and a website does not (and the web's that apps have not): the filter
  // builder offers each view its own.
  const APP_ONLY = new Set(["visit:app_version", "visit:install_source", "visit:device_model", "visit:locale"]);
  const WEB_ONLY = new Set(["event:page", "event:hostname", "visit:entry_page", "visit:exit_page", "visit:referrer",
    "visit:channel", "visit:utm_source", "visit:utm_medium", "visit:utm_campaign", "visit:utm_content", "visit:utm_term",
    "visit:screen", "visit:browser", "visit:browser_version"]);
  function filterDims(view) {
    const sel = $("filter-dim");
    if (sel.dataset.view === view && sel.options.length) return;
    const skip = view === "app" ? WEB_ONLY : APP_ONLY;
    const keep = sel.value;
    sel.replaceChildren(...Object.entries(DIM_LABELS).filter(([d]) => !skip.has(d))
      .map(([d, l]) => h("option", { value: d, text: l, selected: d === keep })),
    h("option", { value: "props", text: "Custom property…", selected: keep === "props" }));
    sel.dataset.view = view;
  }

  // A person (not a key or link) may have this site's weekly and monthly reports and spike
  // alerts e-mailed, when the server sends e-mail: the boxes show their choice (GET …/digest).
  const DIGEST_BOXES = ["digest-l", "digest-monthly-l", "digest-spike-l"];
  function showDigest(r) {
    $("digest").checked = !!r.weekly;
    $("digest-monthly").checked = !!r.monthly;
    $("digest-spike").value = r.spike_threshold ? String(r.spike_threshold) : "";
  }
  function digestBox() {
    for (const id of DIGEST_BOXES) $(id).hidden = true;
    if (!isUser() || S.share) return;
    const site = S.site;
    api("/api/v1/sites/" + encodeURIComponent(site) + "/digest", { noRetry: true }).then((r) => {
      if (S.site !== site || !r.email_configured) return;
      showDigest(r);
      for (const id of DIGEST_BOXES) $(id).hidden = false;
    }).catch(() => { /* no e-mail for this reader: the boxes stay hidden */ });
  }
  // Changes one of the person's e-mail choices; `said(r)` is the status line for the answer.
  async function changeDigest(body, said, undo) {
    try {
      const r = await api("/api/v1/sites/" + encodeURIComponent(S.site) + "/digest", { method: "PUT", body });
      showDigest(r);
      status(said(r));
    } catch (e) { undo(); status("Your e-mail reports could not be changed: " + e.message); }
  }
  function renderDash() {
    const st = readState();
    if (isChild() && st.view === "app") st.view = "web";
    S.view = st.view;
    S.generation += 1;
    const gen = S.generation;
    clearInterval(S.timer);
    clearInterval(S.liveTimer);
    if ($("more-dialog")) $("more-dialog").close();
    if (S.chart) { S.chart.destroy(); S.chart = null; }
    if (S.adoption) { S.adoption.destroy(); S.adoption = null; }
    if (S.adoptionResize) { S.adoptionResize.disconnect(); S.adoptionResize = null; }
    if (S.rtResize) { S.rtResize.disconnect(); S.rtResize = null; }
    if ($("current").dataset.site !== S.site) $("current").hidden = true; // another site's
    showOnly("dash");
    status("");
    $("dash-h").textContent = S.site;
    document.title = S.site + " · Veil";
    syncControls(st);
    const body = $("view-body");
    body.replaceChildren();
    $("notice").hidden = true;
    if (st.view === "realtime") return realtime(body, st, gen);
    const stats = isChild() ? CHILD_STATS : st.view === "app" ? APP_STATS : WEB_STATS;
    const metric = st.metric && CHARTABLE.has(st.metric) ? st.metric : stats[0][0];
    const shown = topStats(body, stats, st, gen, metric, !isChild() && st.view === "app" ? APP_DERIVED : []);
    // The current visitors once the first answer has said how numbers are published.
    shown.finally(() => { if (gen === S.generation) currentBadge(st, gen); }).catch(() => {});
    shown.then((data) => {
      if (gen !== S.generation) return;
      const meta = data.meta || {};
      if (meta.imports_included || (meta.imports_skip_reason && meta.imports_skip_reason !== "no_imported_data")) {
        $("imports-l").hidden = false;
      }
      if (meta.too_few_visitors) {
        $("notice").hidden = false;
        $("notice").textContent = "These filters select fewer than " + meta.min_visitors +
          " visitors, so every number is hidden (no report may describe so few people).";
      }
      $("k-note").textContent = isDp(meta.privacy) ? DP_NOTE : "Rows describing fewer than " + meta.min_visitors +
        " visitors are folded into one “(other: N rows under k)” row or shown as “—”.";
    }).catch((e) => {
      if (gen !== S.generation) return;
      if (needsAuth(e)) return authFailed(e);
      if (e instanceof ApiError && e.budget) $("k-note").textContent = DP_NOTE;
      if (!$("stats").children.length) $("stats").replaceChildren(failure("li", e));
    });
    chart(body, metric, st, gen);
    if (st.view === "app" && !isChild()) adoptionChart(body, st, gen);
    const grid = h("div", { class: "grid" });
    body.append(grid);
    const defs = st.view === "app" ? APP_PANELS : WEB_PANELS;
    for (const def of isChild() ? childPanels(defs) : defs) grid.append(panel(def, st, gen));
    grid.append(filteredPanel(st, gen));
    if (isChild()) {
      grid.append(h("p", { class: "hint", text: "Child-directed site: page views and event counts only; no visitors, " +
        "sources, campaigns or properties are collected." }));
    }
  }

  const DP_NOTE = "Numbers marked ≈ carry differential-privacy noise: hover over or focus a row or card for the ± of " +
    "its 95 % interval (rates and averages have none). A row is listed only when its noisy visitors reach a threshold.";

  // ---------- realtime ----------
  // Focus survives a redraw: when the focused control is inside `root` and `replace` swaps it
  // for a new one, the new control that looks the same (tag, id, class, data-* and text; else
  // without the text, which may hold a count) gets the focus back.
  function focusSig(e, withText) {
    const attrs = [...e.attributes].filter((a) => a.name === "id" || a.name === "class" || a.name === "aria-label" ||
      (a.name.startsWith("data-") && a.name !== "data-value" && a.name !== "data-ci")).map((a) => a.name + "=" + a.value);
    return e.tagName + "|" + attrs.join("|") + (withText ? "|" + e.textContent : "");
  }
  function keepFocus(root, replace) {
    const had = document.activeElement;
    const inside = had && had !== document.body && root.contains(had);
    const sig = inside ? focusSig(had, true) : "", loose = inside ? focusSig(had, false) : "";
    replace();
    if (!inside || had.isConnected) return;
    const all = [...root.querySelectorAll(had.tagName)];
    const same = all.find((e) => focusSig(e, true) === sig) || all.find((e) => focusSig(e, false) === loose);
    if (same) same.focus();
  }

  // Refresh policy. Exact mode: every `refresh` seconds (30 by default), nothing to spend.
  // Differential privacy: the API ends realtime windows at five-minute marks, so a refresh
  // within one asks the same questions again (free, same numbers) and only a new window spends
  // (the Realtime view: 7 releases — current visitors, the two totals, the chart and 4 panels);
  // automatic refreshes stop while the tab is hidden, and once less than half of the day's
  // budget is left (the rest stays for reports; "Refresh now" asks once more by hand).
  function budgetLow() {
    const p = S.privacy;
    return !!p && p.mode === "dp" && !!p.budget && Number(p.budget.left) < Number(p.budget.epsilon_day) / 2;
  }

  // "● N current visitors" at the top of every view (Plausible's): the visitors of the 5 whole
  // minutes before the current one, GET …/realtime?only=visitors_5m. Exact mode refreshes it
  // every 30 s on every view. Under differential privacy each new five-minute window is a
  // release that spends budget, so outside the Realtime view it is a link to it (the reader
  // chooses to spend), and the Realtime view asks it with its other questions.
  const CURRENT_EVERY = 30;
  function drawCurrent(d) {
    const el = $("current");
    const priv = onePrivacy((Array.isArray(d.privacy) ? d.privacy : [])[0], "visitors");
    const n = h("span", { class: "n", id: "current-n", "data-metric": "visitors" });
    putNumber(n, "visitors", d.visitors_5m, priv);
    const v = d.visitors_5m;
    // A child-directed site keeps no visitor ids: its number is events.
    const what = isChild() ? [" event in the last 5 minutes", " events in the last 5 minutes"] : [" current visitor", " current visitors"];
    const words = v === null || v === undefined ? what[1] + " (fewer than k: hidden)" : what[Number(v) === 1 ? 0 : 1];
    el.replaceChildren(h("span", { class: "dot", "aria-hidden": "true" }), n, h("span", { text: words }));
    el.dataset.value = n.dataset.value;
    el.dataset.site = S.site;
    el.title = (isChild() ? "Events" : "Visitors") + " in the last 5 whole minutes (" + (isDp(priv) ? "differential privacy: " + n.title : n.title || "exact") + ")";
    el.hidden = false;
  }
  async function askCurrent(gen) {
    const d = await api(sitePath("/realtime?only=visitors_5m"));
    if (gen === S.generation) drawCurrent(d);
    return d;
  }
  function currentBadge(st, gen) {
    const el = $("current");
    clearInterval(S.liveTimer);
    if (st.view === "realtime") return; // the Realtime view's own refresh asks it
    if (isDp(S.privacy)) {
      const a = h("a", { href: stateUrl(Object.assign({}, st, { view: "realtime", metric: "" })), id: "current-link",
        title: "Under differential privacy each new answer spends from today's privacy budget: open Realtime to ask" },
      h("span", { class: "dot", "aria-hidden": "true" }), "Current visitors");
      el.replaceChildren(a);
      delete el.dataset.value;
      el.dataset.site = S.site;
      el.removeAttribute("title");
      el.hidden = false;
      return;
    }
    const tick = () => {
      if (document.hidden && el.dataset.value !== undefined) return;
      askCurrent(gen).catch((e) => {
        if (gen !== S.generation) return;
        if (needsAuth(e)) { clearInterval(S.liveTimer); return; }
        el.hidden = true;
      });
    };
    tick();
    S.liveTimer = setInterval(tick, CURRENT_EVERY * 1000);
  }

  // Realtime's `privacy` holds one entry per number, each of one metric (visitors, or events on a
  // child-directed site): its interval is put under `key`, the column the page shows it in.
  function onePrivacy(p, key) {
    if (!isDp(p)) return p;
    const first = Object.values(p.interval95 || {}).find((x) => x !== null && x !== undefined);
    return Object.assign({}, p, { interval95: { [key]: first === undefined ? null : first } });
  }

  // The per-minute chart: visitors and pageviews (events and pageviews for a child-directed site)
  // of each of the 30 whole minutes, one Stats API question (`time:minute`). The minute under way
  // is not drawn: the API counts a minute once it is over (a window sliding by the second could
  // be subtracted from the next; docs/PRIVACY.md). `refresh()` redraws it in place.
  function minuteChart(container, metrics, gen) {
    const fig = h("figure", { class: "chart", id: "rt-chart" });
    const caption = h("figcaption", { id: "rt-chart-title", text: shortLabel(metrics[0]) + " (solid line) and " + shortLabel(metrics[1]).toLowerCase() + " (dashed) per minute, last 30 minutes" });
    const plot = h("div", { class: "plot", role: "img", "aria-labelledby": "rt-chart-title", "aria-describedby": "rt-chart-legend rt-chart-summary" });
    const details = h("details", { id: "rt-chart-data" }, h("summary", { id: "rt-chart-summary", text: "Chart data as a table" }));
    const legendEl = h("p", { class: "hint", id: "rt-chart-legend" });
    fig.append(h("div", { class: "panel-head" }, caption), plot, legendEl, details);
    container.append(fig);
    let chart = null, shown = [];
    async function refresh() {
      let data;
      try {
        data = await api("/api/v2/query", { body: { site_id: S.site, date_range: "realtime", metrics, dimensions: ["time:minute"],
          include: { time_labels: true } } });
      } catch (e) {
        if (gen !== S.generation || !fig.isConnected) return e;
        if (needsAuth(e)) { authFailed(e); return e; }
        keepFocus(fig, () => plot.replaceChildren(failure("p", e)));
        return e;
      }
      if (gen !== S.generation || !fig.isConnected) return null;
      const rows = data.results || [];
      const byLabel = new Map(rows.map((r) => [String(r.dimensions[0]), r]));
      const labels = (data.meta && data.meta.time_labels) || [];
      const priv = privacyOf(data);
      // A minute without a row counted nobody (exact mode lists only minutes with visitors): 0.
      const val = (l, i) => (byLabel.has(l) ? byLabel.get(l).metrics[i] : 0);
      fig.dataset.points = String(labels.length);
      fig.dataset.last = labels.length ? labels[labels.length - 1] : "";
      const hhmm = (l) => String(l).slice(11, 16);
      legendEl.textContent = labels.length ? "From " + hhmm(labels[0]) + " to " + hhmm(labels[labels.length - 1]) +
        " (site time), whole minutes; the minute under way is counted once it is over" +
        (isDp(priv) ? ", and under differential privacy each five-minute step at once." : ".") : "";
      const table = h("table", {}, h("caption", { class: "sr-only", text: "Per minute, last 30 minutes" }),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Minute" }),
          metrics.map((m) => h("th", { scope: "col", class: "n", text: shortLabel(m) })))),
        h("tbody", {}, labels.map((l) => h("tr", { "data-time": l }, h("th", { scope: "row", text: hhmm(l) }),
          metrics.map((m, i) => numberCell(m, val(l, i), priv))))));
      keepFocus(details, () => { for (const t of details.querySelectorAll("table")) t.remove(); details.append(table); });
      if (typeof uPlot !== "function" || labels.length === 0) {
        plot.replaceChildren(h("p", { class: "hint", text: labels.length ? "Chart library unavailable; see the table." : "No data." }));
        return null;
      }
      const ys = metrics.map((_, i) => labels.map((l) => { const v = val(l, i); return v === null ? null : Number(v); }));
      const dataArr = [labels.map((_, i) => i), ...ys];
      shown = labels;
      if (chart && chart.root.isConnected) {
        chart.setData(dataArr);
        return null;
      }
      const show = (m) => (u, v) => (v === null || v === undefined ? "—" : (isDp(priv) ? "≈ " : "") + fmt(m, v));
      const axisColor = cssVar("--muted");
      const grid = { stroke: cssVar("--line"), width: 1 };
      const opts = {
        width: Math.max(280, plot.clientWidth || 600), height: 220,
        series: [{ label: "Minute", value: (u, v) => (v === null ? "" : hhmm(shown[Math.round(v)] || "")) },
          { label: shortLabel(metrics[0]), stroke: cssVar("--accent"), width: 2, fill: cssVar("--bar") + "80", value: show(metrics[0]) },
          { label: shortLabel(metrics[1]), stroke: cssVar("--prev"), width: 1.5, dash: [6, 4], value: show(metrics[1]) }],
        scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(1, max * 1.1)] } },
        axes: [{ stroke: axisColor, grid, incrs: [1, 5, 10, 15], values: (u, splits) => splits.map((i) => (Number.isInteger(i) ? hhmm(shown[i] || "") : "")) },
          { stroke: axisColor, grid, size: 50, incrs: INT_STEPS, values: (u, splits) => splits.map((v) => fmt("visitors", v)) }],
        cursor: { drag: { x: false, y: false } },
        // The caption names the lines; the table under the chart lists every number.
        legend: { show: false },
      };
      plot.replaceChildren();
      chart = new uPlot(opts, dataArr, plot);
      if (S.rtResize) S.rtResize.disconnect();
      S.rtResize = new ResizeObserver(() => { if (chart && plot.clientWidth) chart.setSize({ width: plot.clientWidth, height: 220 }); });
      S.rtResize.observe(plot);
      return null;
    }
    fig.refresh = refresh;
    return fig;
  }

  // The Realtime view: current visitors, the 30 minutes' unique visitors and pageviews, the
  // per-minute chart and the usual panels over the same 30 minutes, all from the Stats API and
  // refreshed in place (focus kept) every `refresh` seconds, as the refresh policy above allows.
  function realtime(body, st, gen) {
    const child = isChild();
    const totals = child ? ["pageviews", "events"] : ["visitors", "pageviews"];
    const box = h("div", { class: "realtime" });
    const v5 = h("span", { class: "big", id: "rt-visitors", text: "…" });
    const cards = totals.map((m) => h("span", { class: "big", id: "rt-30-" + m, "data-metric": m, text: "…" }));
    const updated = h("p", { class: "hint", id: "rt-updated", "aria-live": "polite" });
    const again = h("button", { type: "button", class: "secondary", id: "rt-again", text: "Refresh now", hidden: true,
      onclick: () => tick(true) });
    box.append(h("ul", { class: "stats", id: "rt-stats", "aria-label": "Realtime totals" },
      h("li", { class: "stat" }, h("div", { class: "static" },
        h("span", { class: "label", text: child ? "Events, last 5 minutes" : "Current visitors (last 5 minutes)" }), v5)),
      totals.map((m, i) => h("li", { class: "stat" }, h("div", { class: "static" },
        h("span", { class: "label", text: metricLabel(m) + ", last 30 minutes" }), cards[i])))));
    box.append(h("p", { class: "hint", id: "rt-status" }, updated, " ", again));
    minuteChart(box, child ? ["events", "pageviews"] : ["visitors", "pageviews"], gen);
    const grid = h("div", { class: "grid", id: "rt-grid" });
    const defs = WEB_PANELS.filter((d) => ["pages", "sources", "locations", "devices"].includes(d.id))
      .map((d) => Object.assign({}, d, { tabs: d.tabs.filter((t) => !t.map) }));
    for (const def of child ? childPanels(defs) : defs) grid.append(panel(def, st, gen));
    box.append(grid);
    body.append(box);
    let count = 0, ticks = 0, first = true;
    async function tick(byHand = false) {
      if (gen !== S.generation) return;
      updated.dataset.ticks = String(++ticks); // every turn of the timer, asking or not
      if (!byHand && !first) {
        // A hidden tab does not ask; under differential privacy neither does a refresh once
        // less than half of the day's budget is left.
        if (document.hidden) return;
        if (budgetLow()) {
          updated.textContent = "Refresh paused: less than half of today's privacy budget is left, kept for reports.";
          again.hidden = false;
          return;
        }
      }
      const asks = [askCurrent(gen).then((d) => {
        putNumber(v5, child ? "events" : "visitors", d.visitors_5m, onePrivacy(d.privacy[0], child ? "events" : "visitors"));
        return null;
      }, (e) => e),
      api("/api/v2/query", { body: { site_id: S.site, date_range: "realtime", metrics: totals } }).then((d) => {
        const r = (d.results || [])[0] || { metrics: totals.map(() => null) };
        totals.forEach((m, i) => putNumber(cards[i], m, r.metrics[i], privacyOf(d)));
        $("k-note").textContent = isDp(privacyOf(d)) ? DP_NOTE : "Numbers describing fewer than " + d.meta.min_visitors +
          " visitors are shown as “—” (hover for why); 0 means nobody.";
        return null;
      }, (e) => e)];
      asks.push($("rt-chart").refresh());
      // (The panels asked once when they were drawn.)
      if (!first) for (const art of grid.querySelectorAll("article.panel")) if (art.refresh) asks.push(art.refresh());
      first = false;
      const errors = (await Promise.all(asks)).filter((e) => e);
      if (gen !== S.generation) return;
      const auth = errors.find(needsAuth);
      if (auth) { clearInterval(S.timer); return authFailed(auth); }
      const spent = errors.find((e) => e instanceof ApiError && e.budget);
      if (spent) {
        // The budget renews at UTC midnight: refreshing before then would only be refused again.
        clearInterval(S.timer);
        for (const el of [v5, ...cards]) if (el.textContent === "…") { el.textContent = "—"; el.title = spent.message; }
        updated.textContent = "Stopped refreshing: today's privacy budget is spent.";
        again.hidden = true;
        return;
      }
      count += 1;
      updated.dataset.refreshes = String(count);
      updated.textContent = (errors.length ? "Refresh failed in part: " + errors[0].message + ". " : "") +
        "Updated " + new Date().toLocaleTimeString("en-GB") + "; refreshes every " + st.refresh + " s" +
        (budgetLow() ? " (paused while less than half of today's privacy budget is left)." : ".");
      again.hidden = !budgetLow();
    }
    tick();
    S.timer = setInterval(tick, st.refresh * 1000);
  }

  function initControls() {
    $("controls").addEventListener("submit", (ev) => ev.preventDefault());
    $("period").addEventListener("change", () => {
      const v = $("period").value;
      if (v === "custom") {
        $("from-l").hidden = $("to-l").hidden = false;
        const today = new Date().toISOString().slice(0, 10);
        if (!$("from").value) $("from").value = new Date(Date.now() - 29 * 864e5).toISOString().slice(0, 10);
        if (!$("to").value) $("to").value = today;
        $("from").focus();
      }
      navigate((s) => {
        s.period = v;
        s.interval = defaultInterval(v);
        if (v === "custom") { s.from = $("from").value; s.to = $("to").value; }
      });
    });
    for (const id of ["from", "to"]) {
      $(id).addEventListener("change", () => {
        if (DATE_RE.test($("from").value) && DATE_RE.test($("to").value) && $("from").value <= $("to").value) {
          navigate((s) => { s.period = "custom"; s.from = $("from").value; s.to = $("to").value; });
        }
      });
    }
    $("compare").addEventListener("change", () => navigate((s) => { s.compare = $("compare").value; }));
    $("match-day").addEventListener("change", () => navigate((s) => { s.matchDay = $("match-day").checked; }));
    $("segment").addEventListener("change", () => navigate((s) => { s.segment = $("segment").value; }, () => {
      const cur = (S.segments || []).find((x) => x.id === $("segment").value);
      announce(cur ? "Segment applied: " + cur.name : "No segment");
    }));
    $("segment-delete").addEventListener("click", async () => {
      const id = $("segment").value;
      try {
        await api("/api/v1/sites/" + encodeURIComponent(S.site) + "/segments/" + encodeURIComponent(id), { method: "DELETE" });
        status("Segment deleted.");
        navigate((s) => { s.segment = ""; });
      } catch (e) { status("The segment could not be deleted: " + e.message); }
    });
    $("segment-form").addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const st = readState();
      const f = new FormData($("segment-form"));
      // The type list may be disabled (one choice only): read it, FormData skips disabled fields.
      const body = { name: String(f.get("name")).trim(), type: $("segment-type").value,
        filters: st.filters.map((x) => [x.op, x.dim, filterValues(x.value)]) };
      try {
        const seg = await api("/api/v1/sites/" + encodeURIComponent(S.site) + "/segments", { body });
        $("segment-form").reset();
        $("segment-save").open = false;
        status("Segment saved: " + seg.name + ".");
        // Applied at once: the segment stands for the filters it was made of.
        navigate((s) => { s.segment = seg.id; s.filters = []; });
      } catch (e) { status("The segment could not be saved: " + e.message); }
    });
    $("imports").addEventListener("change", () => navigate((s) => { s.imports = $("imports").checked; }));
    $("digest").addEventListener("change", () => {
      const box = $("digest");
      changeDigest({ weekly: box.checked },
        (r) => (r.weekly ? "You will get this site's weekly report by e-mail (Mondays)." : "No more weekly reports by e-mail."),
        () => { box.checked = !box.checked; });
    });
    $("digest-monthly").addEventListener("change", () => {
      const box = $("digest-monthly");
      changeDigest({ monthly: box.checked },
        (r) => (r.monthly ? "You will get this site's monthly report by e-mail (on the 1st)." : "No more monthly reports by e-mail."),
        () => { box.checked = !box.checked; });
    });
    $("digest-spike").addEventListener("change", () => {
      const input = $("digest-spike");
      const n = input.value.trim() === "" ? 0 : Number(input.value);
      if (!Number.isInteger(n) || n < 0 || n > 10_000_000) {
        status("A spike alert needs a whole number of current visitors (0 or empty: none).");
        return;
      }
      changeDigest({ spike_threshold: n },
        (r) => (r.spike_threshold ? `You will get an e-mail when ${nf.format(r.spike_threshold)} or more visitors are on the site (at most one every 12 hours).` : "No more traffic-spike e-mails."),
        () => { input.value = ""; });
    });
    $("interval").addEventListener("change", () => navigate((s) => { s.interval = $("interval").value; }));
    $("export").addEventListener("click", async () => {
      const st = readState();
      const range = st.period === "custom" ? st.from + "," + st.to : st.period;
      try {
        status("Preparing the export…");
        const blob = await api("/api/v1/sites/" + encodeURIComponent(S.site) + "/export?date_range=" + range, { blob: true });
        download(blob, fileSafe("veil-" + S.site + "-" + range) + ".zip");
        status("");
      } catch (e) { status("Export failed: " + e.message); }
    });
    const dimSel = $("filter-dim");
    // The builder's fields, web and app apart (filterDims fills it for the view shown).
    // Value suggestions: the dimension's most visited values in the period shown (the Stats
    // API's breakdown, so only what its privacy rules publish), each offered as the value the
    // API takes (a country's code) with its name beside it ("Germany (DE)").
    const suggest = () => {
      const dim = dimSel.value;
      const list = $("filter-values");
      list.replaceChildren();
      if (S.page !== "dash" || !dim || dim === "props") return;
      const st = readState();
      api("/api/v2/query", { body: Object.assign(baseQuery(st), { metrics: ["visitors"], dimensions: [dim],
        pagination: { limit: 50, offset: 0 } }) })
        .then((d) => {
          if (dimSel.value !== dim) return;
          list.replaceChildren(...(d.results || []).map((r) => r.dimensions[0])
            .filter((v) => v !== null && v !== "" && !FOLDED.test(String(v)))
            .map((v) => h("option", { value: String(v), label: valueLabel(dim, v) })));
        })
        .catch(() => { /* suggestions are a convenience: any value can still be typed */ });
    };
    dimSel.addEventListener("change", () => { $("filter-prop-l").hidden = dimSel.value !== "props"; suggest(); });
    $("filter-add").addEventListener("toggle", () => { if ($("filter-add").open) suggest(); });
    $("filter-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const f = new FormData(ev.target);
      let dim = String(f.get("dim"));
      if (dim === "props") {
        const key = String(f.get("prop") || "").trim();
        if (!key) { status("Type the property's key (e.g. plan)."); return; }
        dim = "event:props:" + key;
      }
      const nf2 = { op: String(f.get("op")), dim, value: typedValues(dim, String(f.get("value"))) };
      ev.target.reset();
      $("filter-add").open = false;
      navigate((s) => { s.filters.push(nf2); }, () => focusChip(nf2, "Filter added: "));
    });
    window.addEventListener("popstate", () => { if (S.page === "dash") renderDash(); });
    document.addEventListener("keydown", shortcut);
  }

  // ---------- keyboard shortcuts (the dashboard's; "?" lists them) ----------
  // Single keys, as Plausible's: never while typing in a field, with a modifier, or over a
  // dialog (its own keys: Escape closes it).
  const SHORTCUTS = [
    ["d", "Today", (s) => { s.period = "day"; }],
    ["w", "Last 7 days", (s) => { s.period = "7d"; }],
    ["t", "Last 30 days", (s) => { s.period = "30d"; }],
    ["m", "This month", (s) => { s.period = "month"; }],
    ["y", "This year", (s) => { s.period = "year"; }],
    ["l", "Last 12 months", (s) => { s.period = "12mo"; }],
    ["a", "All time", (s) => { s.period = "all"; }],
    ["c", "Compare with the previous period (again: no comparison)", (s) => { s.compare = s.compare ? "" : "previous_period"; }],
    ["r", "Realtime (again: back to the web view)", (s) => { s.view = s.view === "realtime" ? "web" : "realtime"; }],
  ];
  function shortcut(ev) {
    if (S.page !== "dash" || ev.ctrlKey || ev.metaKey || ev.altKey || ev.defaultPrevented) return;
    const t = ev.target;
    if (t && (t.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName))) return; // typing
    if (document.querySelector("dialog[open]")) return;
    if (ev.key === "?") { ev.preventDefault(); return keysDialog(); }
    if (ev.key === "/") {
      // Search: the filter builder, opened, its first field focused.
      ev.preventDefault();
      $("filter-add").open = true;
      $("filter-dim").focus();
      return;
    }
    const hit = SHORTCUTS.find(([k]) => k === ev.key.toLowerCase() && !ev.shiftKey);
    if (!hit) return;
    ev.preventDefault();
    navigate(hit[2], () => announce(hit[1]));
  }
  function keysDialog() {
    const old = $("keys-dialog");
    if (old) old.remove();
    const rows = SHORTCUTS.map(([k, what]) => h("tr", {}, h("th", { scope: "row" }, h("kbd", { text: k.toUpperCase() })), h("td", { text: what })))
      .concat([h("tr", {}, h("th", { scope: "row" }, h("kbd", { text: "/" })), h("td", { text: "Add a filter" })),
        h("tr", {}, h("th", { scope: "row" }, h("kbd", { text: "?" })), h("td", { text: "This list" })),
        h("tr", {}, h("th", { scope: "row" }, h("kbd", { text: "Esc" })), h("td", { text: "Close a dialog" }))]);
    const dlg = h("dialog", { id: "keys-dialog", class: "more-dialog", "aria-labelledby": "keys-h" },
      h("div", { class: "panel-head" }, h("h2", { id: "keys-h", text: "Keyboard shortcuts" }),
        h("button", { type: "button", class: "secondary", id: "keys-close", text: "Close", onclick: () => dlg.close() })),
      h("table", {}, h("caption", { class: "sr-only", text: "Keyboard shortcuts" }), h("tbody", {}, rows)));
    const back = document.activeElement;
    dlg.addEventListener("close", () => { dlg.remove(); if (back && back.isConnected) back.focus(); });
    document.body.append(dlg);
    dlg.showModal();
    $("keys-close").focus();
  }

  // ---------- site list ----------
  function siteDomain(s) { return typeof s === "string" ? s : (s && (s.domain || s.site_id)) || ""; }
  async function renderSites() {
    showOnly(null);
    status("Loading sites…");
    let data;
    try { data = await api("/api/v1/sites"); } catch (e) { if (needsAuth(e)) return authFailed(e); status(e.message); return; }
    status("");
    showOnly("sites");
    const sites = (data.sites || []).map(siteDomain).filter(Boolean);
    const list = $("site-list");
    list.replaceChildren();
    if (sites.length === 0) {
      list.append(h("li", { class: "hint", text: canCreateSites() ? "No sites yet: start Veil with --site example.com or add one below."
        : "No site to show yet: an owner or admin of a site can invite you to it." }));
    }
    for (const d of sites) {
      const n = h("span", { class: "n", text: "…" });
      const change = h("span", { class: "site-change" });
      const spark = h("span", { class: "spark", "aria-hidden": "true" });
      list.append(h("li", { "data-site": d }, h("a", { href: "/site/" + encodeURIComponent(d), text: d }), n,
        h("span", { class: "hint", text: "visitors in the last 7 days" }), change, spark));
      // The 7 days' visitors with their change against the 7 days before, and a sparkline of
      // the days: the Stats API's answers (so, under differential privacy, its noisy ones).
      api("/api/v2/query", { body: { site_id: d, metrics: ["visitors"], date_range: "7d",
        include: { comparisons: { mode: "previous_period" } } } })
        .then((r) => {
          const row = (r.results || [])[0] || { metrics: [0] };
          putNumber(n, "visitors", row.metrics[0], privacyOf(r));
          const c = row.comparison && row.comparison.change ? row.comparison.change[0] : null;
          change.replaceChildren(changeBadge("visitors", c, privacyOf(r)));
        })
        .catch((e) => { n.textContent = "—"; n.title = e.message; });
      api("/api/v2/query", { body: { site_id: d, metrics: ["visitors"], date_range: "7d", dimensions: ["time:day"],
        include: { time_labels: true } } })
        .then((r) => sparkline(spark, r))
        .catch(() => { /* the number above already says what failed */ });
    }
    // Adding a site needs the owner role on every site (or the admin token): /me says so.
    const form = $("add-site");
    form.hidden = !canCreateSites();
    form.onsubmit = async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      try {
        await api("/api/v1/sites", { body: { domain: String(f.get("domain")).trim(), timezone: String(f.get("timezone")).trim() || "UTC" } });
        form.reset();
        renderSites();
      } catch (e) { status("Adding the site failed: " + e.message); }
    };
  }
  // A site's last days as a small line (uPlot, no axes): every day of the answer's time labels,
  // a day without a row (or hidden under k) drawn as a gap.
  function sparkline(el, r) {
    const labels = (r.meta && r.meta.time_labels) || [];
    if (!labels.length || typeof uPlot === "undefined") return;
    const by = new Map((r.results || []).map((x) => [String(x.dimensions[0]), x.metrics[0]]));
    const ys = labels.map((l) => { const v = by.get(String(l)); return v === null || v === undefined ? null : Number(v); });
    el.dataset.points = ys.map((v) => (v === null ? "" : String(v))).join(",");
    el.replaceChildren();
    new uPlot({ width: 96, height: 28, legend: { show: false }, cursor: { show: false }, axes: [{ show: false }, { show: false }],
      scales: { x: { time: false }, y: { range: (u, min, max) => [0, Math.max(1, max)] } },
      series: [{}, { stroke: cssVar("--accent"), width: 1.5, fill: cssVar("--bar") + "80" }] },
    [labels.map((_, i) => i), ys], el);
  }
  // Site keys are "vk_…" and shared-link tokens "vl_…" (the API's wire format); anything else
  // (or no token, on an open loopback deployment) is the admin token.
  function isAdmin() { return !S.share && !/^v[kl]_/.test(token()); }

  // ---------- settings (admin API) ----------
  function sitePath(suffix) { return "/api/v1/sites/" + encodeURIComponent(S.site) + (suffix || ""); }
  async function renderSettings() {
    showOnly(null);
    status("Loading settings…");
    let site;
    try { site = await api(sitePath()); } catch (e) { if (needsAuth(e)) return authFailed(e); status(e.message); return; }
    status("");
    showOnly("settings");
    S.settings = site.settings || site;
    $("settings-h").textContent = "Settings · " + S.site;
    document.title = "Settings · " + S.site + " · Veil";
    const box = $("settings-body");
    const rank = roleOn(S.site);
    if (rank < RANK.admin) {
      // A viewer (or a site key) reads the dashboard only; the API would refuse every change.
      box.replaceChildren(h("p", { id: "settings-refused", class: "notice", text: "Settings need the admin or owner role on " +
        S.site + "; you can read its dashboard and export its data." }), h("p", {}, h("a", { href: "/site/" + encodeURIComponent(S.site), text: "Back to the dashboard" })));
      return;
    }
    const parts = [installSection(), general(site), goals(), funnels(), annotationsSection(), await keysSection(), await ingestSection(), await linksSection()];
    // People of a site are its admins' and owners'; session-less tokens have no account to invite from.
    if (S.me) parts.push(await peopleSection());
    if (rank >= RANK.owner && S.me) parts.push(await auditSection());
    if (rank >= RANK.owner) parts.push(deleteSection());
    box.replaceChildren(...parts);
  }
  async function saveSettings(change, okMsg) {
    const next = JSON.parse(JSON.stringify(S.settings));
    delete next.domain;
    delete next.source;
    change(next);
    try {
      const r = await api(sitePath(), { method: "PUT", body: next });
      S.settings = (r && (r.settings || r)) || next;
      status(okMsg);
      return true;
    } catch (e) { status("Saving failed: " + e.message); return false; }
  }
  // Onboarding: the snippets that send this site's events to this Veil (its own tracker and
  // the drop-ins for Plausible's, Umami's and Aptabase's), each with a copy button, and an
  // install check that asks every 3 s whether an event has arrived and turns green when one has.
  function installSection() {
    const origin = location.origin;
    const site = S.site;
    const alias = (S.settings.aliases || [])[0] || "WEBSITE_ID";
    const snippets = [
      ["Veil's tracker", `<script defer src="${origin}/js/veil.js" data-domain="${site}"></script>`],
      ["Plausible's tracker (npm)", `import { init } from "@plausible-analytics/tracker";\ninit({ domain: "${site}", endpoint: "${origin}/api/event" });`],
      ["Umami's script (add the website id as an alias of this site)", `<script defer src="/umami.js" data-website-id="${alias}" data-host-url="${origin}"></script>`],
      ["Aptabase's SDK (the app key as an alias of this site)", `import { init } from "@aptabase/web";\ninit("${alias}", { host: "${origin}" });`],
    ];
    const blocks = snippets.map(([label, code], i) => {
      // Focusable: a snippet wider than a phone scrolls sideways, and a keyboard must reach that too.
      const pre = h("pre", { class: "snippet", id: "snippet-" + i, tabindex: "0" }, h("code", { text: code }));
      return h("div", { class: "snippet-block" }, h("h3", { text: label }), pre, copyButton(label, () => code));
    });
    const check = h("p", { id: "install-check", class: "hint", role: "status", "aria-live": "polite",
      text: "Checking for events…" });
    const path = "/api/v1/sites/" + encodeURIComponent(site) + "/install-check";
    const tick = async () => {
      try {
        const r = await api(path);
        if (S.page !== "settings" || S.site !== site) return clearInterval(S.timer);
        if (r.receiving) {
          clearInterval(S.timer);
          check.className = "ok";
          check.dataset.state = "receiving";
          check.textContent = "Receiving events: the site is set up.";
        } else {
          check.dataset.state = "waiting";
          check.textContent = "No event yet: add a snippet to the site and open one of its pages.";
        }
      } catch (e) {
        check.textContent = "Install check failed: " + e.message;
      }
    };
    clearInterval(S.timer);
    tick();
    S.timer = setInterval(tick, 3000);
    return section("Install", h("p", { class: "hint", text: "Send this site's events here with one of these:" }), ...blocks, check);
  }
  function section(title, ...children) { return h("section", { class: "card", "aria-label": title }, h("h2", { text: title }), children); }
  // Every IANA zone the browser knows (the site's own first, should the browser not list it),
  // UTC first: a list to choose from instead of a name to type.
  function timezoneSelect(current) {
    let zones = [];
    try { zones = Intl.supportedValuesOf("timeZone"); } catch { zones = []; }
    const all = [...new Set(["UTC", current, ...zones])];
    return h("select", { name: "timezone", required: true },
      all.map((z) => h("option", { value: z, text: z.replace(/_/g, " "), selected: z === current })));
  }
  function general() {
    const s = S.settings;
    const check = (name, label) => h("label", { class: "check" }, h("input", { name, type: "checkbox", checked: !!s[name] }),
      h("span", { text: label }));
    const form = h("form", { class: "inline-form", id: "general-form" },
      h("label", {}, "Time zone", timezoneSelect(s.timezone || "UTC")),
      h("label", {}, "k (minimum visitors per number)", h("input", { name: "min_visitors", type: "number", min: 2, value: s.min_visitors || 5 })),
      h("label", {}, "Retention in days (empty: the server's default)",
        h("input", { name: "retention_days", type: "number", min: 1, value: s.retention_days || "" })),
      h("label", {}, "Largest revenue one visitor adds a day, in currency units (differential privacy sizes its noise for it; empty: 1 000)",
        h("input", { name: "revenue_bound", type: "number", min: 1, step: 1, value: s.revenue_bound || "" })),
      check("child_directed", "Child-directed site (page views only)"),
      check("honor_dnt", "Honour Do Not Track"),
      check("keep_bots", "Keep bot hits (flagged, never reported)"),
      h("button", { type: "submit", text: "Save" }));
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      saveSettings((n) => {
        n.timezone = String(f.get("timezone")).trim();
        n.min_visitors = Number(f.get("min_visitors"));
        const days = String(f.get("retention_days")).trim();
        if (days) n.retention_days = Number(days); else delete n.retention_days;
        const bound = String(f.get("revenue_bound")).trim();
        if (bound) n.revenue_bound = Number(bound); else delete n.revenue_bound;
        for (const k of ["child_directed", "honor_dnt", "keep_bots"]) n[k] = f.get(k) === "on";
      }, "Settings saved.");
    });
    return section("General", form);
  }
  // The custom events seen in the last 30 days (the Stats API's event:name breakdown, so only
  // names its privacy rules publish), offered as goal names: a datalist the goal form's value
  // field suggests from, filled when the answer comes.
  function seenEvents() {
    const list = h("datalist", { id: "seen-events" });
    api("/api/v2/query", { body: { site_id: S.site, date_range: "30d", metrics: ["visitors"], dimensions: ["event:name"],
      filters: [["is_not", "event:name", ["pageview", "engagement"]]], pagination: { limit: 50, offset: 0 } } })
      .then((d) => list.replaceChildren(...(d.results || []).map((r) => String(r.dimensions[0]))
        .filter((n) => !n.startsWith("(other: ")).map((n) => h("option", { value: n }))))
      .catch(() => { /* suggestions are a convenience: the field still takes any name */ });
    return list;
  }
  function goals() {
    const list = h("ul", { id: "goal-list" });
    const draw = () => list.replaceChildren(...(S.settings.goals || []).map((g, i) => h("li", {},
      h("span", { text: g.name + " — " + (g.event_name ? "event " + g.event_name : "page " + g.page_path) +
        (g.currency ? ", revenue in " + g.currency : "") + " " }),
      h("button", { type: "button", class: "link", "aria-label": "Delete goal " + g.name, text: "Delete",
        onclick: async () => { if (await saveSettings((n) => n.goals.splice(i, 1), "Goal deleted.")) draw(); } }))));
    draw();
    const form = h("form", { class: "inline-form", id: "goal-form" },
      h("label", {}, "Name", h("input", { name: "name", required: true, autocomplete: "off" })),
      h("label", {}, "Kind", h("select", { name: "kind" }, h("option", { value: "event_name", text: "Custom event" }),
        h("option", { value: "page_path", text: "Page visit (path, * wildcard)" }))),
      h("label", {}, "Event name or path", h("input", { name: "value", required: true, autocomplete: "off", list: "seen-events" })),
      seenEvents(),
      // A revenue goal (custom events only): its ISO 4217 currency; the API checks the code.
      h("label", {}, "Revenue currency (optional)", h("input", { name: "currency", autocomplete: "off", maxlength: 3,
        placeholder: "EUR", pattern: "[A-Za-z]{3}" })),
      h("button", { type: "submit", text: "Add goal" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      const g = { name: String(f.get("name")).trim() };
      g[String(f.get("kind"))] = String(f.get("value")).trim();
      const currency = String(f.get("currency") || "").trim().toUpperCase();
      if (currency) g.currency = currency;
      if (await saveSettings((n) => { n.goals = (n.goals || []).concat([g]); }, "Goal added.")) { form.reset(); draw(); }
    });
    return section("Goals", list, form);
  }
  function funnels() {
    const list = h("ul", { id: "funnel-list" });
    const draw = () => list.replaceChildren(...(S.settings.funnels || []).map((fu, i) => h("li", {},
      h("span", { text: fu.name + ": " + fu.steps.join(" → ") + " " }),
      h("button", { type: "button", class: "link", "aria-label": "Delete funnel " + fu.name, text: "Delete",
        onclick: async () => { if (await saveSettings((n) => n.funnels.splice(i, 1), "Funnel deleted.")) draw(); } }))));
    draw();
    const form = h("form", { class: "inline-form", id: "funnel-form" },
      h("label", {}, "Name", h("input", { name: "name", required: true, autocomplete: "off" })),
      h("label", {}, "Steps (goal names, one per line, 2–8)", h("textarea", { name: "steps", rows: 3, required: true })),
      h("button", { type: "submit", text: "Add funnel" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      const fu = { name: String(f.get("name")).trim(), steps: String(f.get("steps")).split("\n").map((x) => x.trim()).filter(Boolean) };
      if (await saveSettings((n) => { n.funnels = (n.funnels || []).concat([fu]); }, "Funnel added.")) { form.reset(); draw(); }
    });
    return section("Funnels", list, form);
  }
  // Dated notes on the charts ("Launched the new pricing page"), newest first.
  function annotationsSection() {
    const list = h("ul", { id: "annotation-list" });
    const sorted = () => (S.settings.annotations || []).map((a, i) => [a, i]).sort((x, y) => (x[0].date < y[0].date ? 1 : -1));
    const draw = () => list.replaceChildren(...sorted().map(([a, i]) => h("li", {},
      h("span", { text: a.date + " — " + a.text + " " }),
      h("button", { type: "button", class: "link", "aria-label": "Delete note of " + a.date + ": " + a.text, text: "Delete",
        onclick: async () => { if (await saveSettings((n) => n.annotations.splice(i, 1), "Note deleted.")) draw(); } }))));
    draw();
    const form = h("form", { class: "inline-form", id: "annotation-form" },
      h("label", {}, "Day", h("input", { name: "date", type: "date", required: true })),
      h("label", {}, "Note", h("input", { name: "text", required: true, maxlength: 200, autocomplete: "off" })),
      h("button", { type: "submit", text: "Add note" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      const a = { date: String(f.get("date")), text: String(f.get("text")).trim() };
      if (await saveSettings((n) => { n.annotations = (n.annotations || []).concat([a]); }, "Note added.")) { form.reset(); draw(); }
    });
    return section("Notes on the charts", h("p", { class: "hint", text: "Mark a day on every chart of this site (a launch, a campaign, an outage)." }), list, form);
  }
  function itemsOf(d, key) { return Array.isArray(d) ? d : (d && (d[key] || d.items)) || []; }
  // A "Copy" button for the text `text()` gives, named for `label` (screen readers say which).
  function copyButton(label, text) {
    return h("button", { type: "button", class: "secondary", text: "Copy", "aria-label": "Copy: " + label,
      onclick: async () => {
        try { await navigator.clipboard.writeText(text()); status("Copied: " + label + "."); }
        catch { status("Copying is not allowed here: select the text and copy it."); }
      } });
  }
  function describe(item) {
    const parts = [item.name || item.label || item.id];
    const when = (v) => (typeof v === "number" ? new Date(v * 1000).toISOString().slice(0, 16).replace("T", " ") : String(v));
    if (item.created_at) parts.push("created " + when(item.created_at));
    if (item.expires_at) parts.push("expires " + when(item.expires_at));
    if (item.password === true) parts.push("password");
    if (item.embed_origins && item.embed_origins.length) parts.push("may be embedded in " + item.embed_origins.join(", "));
    return parts.filter(Boolean).join(" · ");
  }
  async function collection(title, suffix, key, createFields, shownSecret) {
    const list = h("ul", { id: key + "-list" });
    const out = h("div", { "aria-live": "polite" });
    async function draw() {
      try {
        const d = await api(sitePath(suffix));
        list.replaceChildren(...itemsOf(d, key).filter((it) => !it.revoked).map((it) => h("li", {}, h("span", { text: describe(it) + " " }),
          it.url ? h("code", { class: "secret", text: location.origin + it.url.replace(/^https?:\/\/[^/]+/, "") }) : null,
          it.url ? copyButton("link " + (it.name || it.id), () => location.origin + it.url.replace(/^https?:\/\/[^/]+/, "")) : null,
          h("button", { type: "button", class: "link", "aria-label": "Revoke " + (it.name || it.id), text: "Revoke",
            onclick: async () => {
              try { await api(sitePath(suffix + "/" + encodeURIComponent(it.id)), { method: "DELETE" }); draw(); } catch (e) { status(e.message); }
            } }))));
      } catch (e) { list.replaceChildren(h("li", { class: "hint", text: e.message })); }
    }
    const form = h("form", { class: "inline-form", id: key + "-form" }, createFields, h("button", { type: "submit", text: "Create" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      const body = {};
      for (const [k, v] of f) if (String(v).trim()) body[k] = String(v).trim();
      // A date input gives a day: the link works until that day ends (UTC).
      if (body.expires_at && DATE_RE.test(body.expires_at)) body.expires_at += "T23:59:59Z";
      if (body.embed_origins) body.embed_origins = body.embed_origins.split(/[\s,]+/).filter(Boolean);
      try {
        const r = await api(sitePath(suffix), { body });
        const secret = secretOf(r);
        out.replaceChildren(h("p", { text: shownSecret }), h("code", { class: "secret", id: key + "-new", text: secret }),
          copyButton(title.toLowerCase().replace(/ \(.*$/, "") + ": the new one", () => secret));
        if (r && r.embed_url) {
          const frame = `<iframe src="${location.origin + r.embed_url}" title="${S.site} analytics" ` +
            `style="width:100%;height:1600px;border:0" loading="lazy"></iframe>`;
          out.append(h("p", { text: "To embed it in " + r.embed_origins.join(", ") + ", paste this into a page there:" }),
            h("pre", { class: "snippet", id: key + "-embed" }, h("code", { text: frame })), copyButton("embed code", () => frame));
        }
        form.reset();
        draw();
      } catch (e) { status(title + ": " + e.message); }
    });
    await draw();
    return section(title, list, form, out);
  }
  function secretOf(r) {
    if (!r) return "";
    if (r.url) return location.origin + String(r.url).replace(/^https?:\/\/[^/]+/, "");
    return String(r.key || r.token || r.secret || "");
  }
  function keysSection() {
    return collection("Site keys (read-only API access)", "/keys", "keys",
      [h("label", {}, "Name", h("input", { name: "name", autocomplete: "off" }))],
      "New key (shown once; copy it now):");
  }
  function ingestSection() {
    return collection("Ingest keys (write-only: a server sending its visitors' hits to /v1/events)", "/ingest-keys", "ingest_keys",
      [h("label", {}, "Name", h("input", { name: "name", autocomplete: "off" }))],
      "New ingest key (shown once; copy it now; it reads nothing):");
  }
  function linksSection() {
    return collection("Shared links", "/shared-links", "shared_links",
      [h("label", {}, "Name", h("input", { name: "name", autocomplete: "off" })),
        h("label", {}, "Password (optional)", h("input", { name: "password", type: "password", autocomplete: "new-password" })),
        h("label", {}, "Expires (optional)", h("input", { name: "expires_at", type: "date" })),
        h("label", {}, "May be embedded in (optional origins, e.g. https://blog.example)",
          h("input", { name: "embed_origins", autocomplete: "off", placeholder: "https://blog.example" }))],
      "Read-only link (anyone with it can see this dashboard):");
  }

  // The site's settings (funnel names for the funnels tab); readable by every reader of the site.
  async function loadSiteSettings() {
    S.settings = null;
    S.settingsError = null;
    try {
      const site = await api(sitePath());
      S.settings = site.settings || site;
    } catch (e) {
      if (needsAuth(e)) return; // the dashboard's own calls will ask for a token or password
      S.settingsError = e; // the funnels tab says why it has no funnels to list
    }
  }

  // ---------- who is asking: sessions, roles, login, invitations, the account page ----------
  const RANK = { viewer: 1, admin: 2, owner: 3 };
  const ROLE_TEXT = { viewer: "viewer", admin: "admin", owner: "owner" };
  /** The rank of the asker's role on `site` (0: none); a role on "*" counts on every site. */
  function roleOn(site) {
    if (S.share) return 0;
    if (!S.me) return /^v[kl]_/.test(token()) ? RANK.viewer : RANK.owner;
    const d = String(site || "").toLowerCase();
    let best = 0;
    for (const r of S.me.roles || []) {
      if (r.site === "*" || String(r.site).toLowerCase() === d) best = Math.max(best, RANK[r.role] || 0);
    }
    return best;
  }
  function canCreateSites() { return S.me ? !!S.me.can_create_sites : isAdmin(); }
  function isUser() { return !!S.me && S.me.kind === "user"; }
  function rolesText(roles) {
    return (roles || []).map((r) => ROLE_TEXT[r.role] + " of " + (r.site === "*" ? "every site" : r.site)).join(", ");
  }
  /** The header's right side: who is logged in (a link to /account) and "Log out". */
  function header() {
    const who = $("whoami");
    who.hidden = !isUser();
    who.textContent = isUser() ? S.me.email : "";
    who.title = isUser() ? "Your account: " + rolesText(S.me.roles) : "";
    $("logout").hidden = S.share || !(isUser() || sessionStorage.getItem(TOKEN_KEY));
  }
  /**
   * GET /api/v1/me: who this browser is (a session cookie, or the token in sessionStorage).
   * Resolves to true when the page may go on; on 401 it has shown the login (or setup) page.
   */
  async function loadMe() {
    try {
      S.me = await api("/api/v1/me", { noRetry: true });
      S.csrf = (S.me && S.me.csrf) || "";
    } catch (e) {
      S.me = null;
      if (e instanceof ApiError && e.status === 401) { authFailed(e); return false; }
      // Anything else (an older server without /me): carry on as a token client.
    }
    header();
    return true;
  }
  function showError(box, msg) { box.hidden = !msg; box.textContent = msg || ""; }
  /** The message of a failed login or acceptance: the API's, with what to do next. */
  function loginMessage(e) {
    if (!(e instanceof ApiError)) return String(e.message || e);
    if (e.status === 429) return e.message.charAt(0).toUpperCase() + e.message.slice(1) + ".";
    return e.message.charAt(0).toUpperCase() + e.message.slice(1);
  }
  function afterLogin(r) {
    sessionStorage.removeItem(TOKEN_KEY);
    S.csrf = (r && r.csrf) || "";
    const here = location.pathname;
    const stay = here !== "/login" && here !== "/setup" && here !== "/invite";
    location.assign(stay ? here + location.search : "/");
  }
  async function submitLogin(ev) {
    ev.preventDefault();
    const err = $("login-error");
    showError(err, "");
    const body = { email: $("login-email").value.trim(), password: $("login-password").value };
    const code = $("login-code").value.trim();
    if (code) body.code = code;
    try {
      const r = await api("/api/v1/auth/login", { body, noRetry: true });
      afterLogin(r);
    } catch (e) {
      if (e instanceof ApiError && e.data && e.data.second_factor) {
        $("login-code-box").hidden = false;
        $("login-code").value = "";
        $("login-code").focus();
      } else {
        $("login-password").value = "";
        $("login-password").focus();
      }
      showError(err, loginMessage(e));
    }
  }

  // /setup#token=… and /invite#token=…: what the invitation offers, then a password.
  async function renderInvite(setupPage) {
    const frag = new URLSearchParams(location.hash.slice(1)).get("token");
    if (frag) S.inviteToken = frag;
    // The token leaves the address bar and history at once (it stays in this page's memory).
    if (location.hash) history.replaceState(null, "", location.pathname);
    showOnly("invite");
    header();
    status("");
    document.title = (setupPage ? "Set up Veil" : "Invitation") + " · Veil";
    const offer = $("invite-offer");
    const form = $("invite-form");
    form.hidden = true;
    offer.className = "";
    if (!S.inviteToken) {
      $("invite-h").textContent = setupPage ? "Set up Veil" : "Invitation";
      offer.className = "form-error";
      offer.textContent = "This link has no token: open the whole link you were given (it ends in #token=…).";
      return;
    }
    let info;
    try {
      info = await api("/api/v1/auth/invitation", { body: { token: S.inviteToken }, noRetry: true });
    } catch (e) {
      $("invite-h").textContent = setupPage ? "Set up Veil" : "Invitation";
      offer.className = "form-error";
      offer.textContent = "This link cannot be used: " + e.message;
      return;
    }
    S.invite = info;
    const where = info.site === "*" ? "every site" : info.site;
    if (info.setup) {
      $("invite-h").textContent = "Set up Veil";
      offer.textContent = "Veil has no owner yet. Choose the owner's e-mail and password: the owner sees and manages " +
        "every site, and invites everyone else.";
    } else {
      $("invite-h").textContent = "Invitation";
      offer.textContent = info.email + " is invited as " + ROLE_TEXT[info.role] + " of " + where + "." +
        (info.account_exists ? " You already have an account: enter its password to accept." : " Choose a password to accept.");
    }
    $("invite-email-box").hidden = !info.setup;
    $("invite-email").required = !!info.setup;
    $("invite-password-l").textContent = info.account_exists ? "Your password" : "Password (at least 10 characters)";
    $("invite-password").autocomplete = info.account_exists ? "current-password" : "new-password";
    $("invite-submit").textContent = info.setup ? "Set up" : "Accept";
    $("invite-code-box").hidden = true;
    form.hidden = false;
    (info.setup ? $("invite-email") : $("invite-password")).focus();
  }
  async function submitInvite(ev) {
    ev.preventDefault();
    const err = $("invite-error");
    showError(err, "");
    const body = { token: S.inviteToken, password: $("invite-password").value };
    if (S.invite && S.invite.setup) body.email = $("invite-email").value.trim();
    const code = $("invite-code").value.trim();
    if (code) body.code = code;
    try {
      const r = await api("/api/v1/auth/accept", { body, noRetry: true });
      afterLogin(r);
    } catch (e) {
      if (e instanceof ApiError && e.data && e.data.second_factor) {
        $("invite-code-box").hidden = false;
        $("invite-code").focus();
      }
      showError(err, loginMessage(e));
    }
  }

  // /account: the person's sessions, password and second factor.
  async function renderAccount() {
    showOnly("account");
    status("");
    document.title = "Your account · Veil";
    const box = $("account-body");
    if (!isUser()) {
      box.replaceChildren(h("p", { class: "hint", text: "You opened the dashboard with an API token: it has no account. " +
        "Log out and log in with your e-mail and password to manage an account." }));
      return;
    }
    const me = S.me;
    const roles = me.roles || [];
    box.replaceChildren(
      section("Signed in", h("p", { id: "account-email", text: me.email }),
        h("p", { class: "hint", id: "account-roles", text: roles.length ? "Roles: " + rolesText(roles) + "." : "No role on any site yet." })),
      section("Sessions", h("p", { class: "hint", text: "“Log out everywhere” ends every session of this account, " +
        "on every device and browser, this one included." }),
      h("button", { type: "button", id: "logout-everywhere", class: "secondary", text: "Log out everywhere",
        onclick: async () => {
          try { await api("/api/v1/auth/logout-everywhere", { body: {}, noRetry: true }); location.assign("/"); } catch (e) { status(e.message); }
        } })),
      passwordSection(), secondFactorSection());
  }
  function passwordSection() {
    const form = h("form", { class: "inline-form", id: "password-change" },
      h("label", {}, "Current password", h("input", { name: "current", type: "password", autocomplete: "current-password", required: true })),
      h("label", {}, "New password (at least 10 characters)", h("input", { name: "new", type: "password", autocomplete: "new-password", required: true })),
      h("button", { type: "submit", text: "Change password" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      try {
        // Every older session ends, this one too: the answer is this browser's new session.
        const r = await api("/api/v1/auth/password", { body: { current: String(f.get("current")), new: String(f.get("new")) }, noRetry: true });
        if (r && r.csrf) S.csrf = r.csrf;
        form.reset();
        status("Password changed; your other sessions have ended.");
      } catch (e) { status("Changing the password failed: " + e.message); }
    });
    return section("Password", form);
  }
  function secondFactorSection() {
    const out = h("div", { id: "totp-box", "aria-live": "polite" });
    const sec = section("Second factor", out);
    const drawOff = () => {
      out.replaceChildren(h("p", { id: "totp-state", text: "Off: logging in needs the password only." }),
        h("button", { type: "button", id: "totp-setup", text: "Set up an authenticator app", onclick: async () => {
          let r;
          try { r = await api("/api/v1/auth/totp/setup", { body: {}, noRetry: true }); } catch (e) { status(e.message); return; }
          const form = h("form", { class: "inline-form", id: "totp-enable" },
            h("label", {}, "6-digit code from the app", h("input", { name: "code", inputmode: "numeric", autocomplete: "one-time-code", required: true })),
            h("button", { type: "submit", text: "Turn on" }));
          form.addEventListener("submit", async (ev) => {
            ev.preventDefault();
            try {
              const done = await api("/api/v1/auth/totp/enable", { body: { secret: r.secret, code: String(new FormData(form).get("code")).trim() }, noRetry: true });
              S.me.second_factor = true;
              out.replaceChildren(h("p", { id: "totp-state", text: "On: logging in needs a code from the app as well." }),
                h("p", { text: "Recovery codes (shown once; keep them somewhere safe: each opens the account once if the app is lost):" }),
                h("ol", { id: "recovery-codes", class: "codes" }, (done.recovery_codes || []).map((c) => h("li", { text: c }))));
            } catch (e) { status("Turning the second factor on failed: " + e.message); }
          });
          out.replaceChildren(h("p", { text: "Add this account to your authenticator app with the secret (or the otpauth URI), then enter the code it shows." }),
            h("p", {}, "Secret: ", h("code", { id: "totp-secret", class: "secret", text: r.secret })),
            h("p", {}, "URI: ", h("code", { id: "totp-uri", class: "secret", text: r.otpauth_uri })), form);
        } }));
    };
    const drawOn = () => {
      const form = h("form", { class: "inline-form", id: "totp-disable" },
        h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
        h("button", { type: "submit", class: "secondary", text: "Turn off" }));
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        try {
          await api("/api/v1/auth/totp/disable", { body: { password: String(new FormData(form).get("password")) }, noRetry: true });
          S.me.second_factor = false;
          status("Second factor turned off.");
          drawOff();
        } catch (e) { status("Turning the second factor off failed: " + e.message); }
      });
      const left = S.me.recovery_codes_left;
      out.replaceChildren(h("p", { id: "totp-state", text: "On: logging in needs a code from the app as well" +
        (typeof left === "number" ? " (" + left + " recovery codes left)." : ".") }), form);
    };
    if (S.me.second_factor) drawOn(); else drawOff();
    return sec;
  }

  // ---------- people and the audit log (settings page) ----------
  function roleSelect(name, current, maxRank, label) {
    return h("select", { name, "aria-label": label || "Role" }, ["viewer", "admin", "owner"].filter((r) => RANK[r] <= maxRank)
      .map((r) => h("option", { value: r, text: ROLE_TEXT[r], selected: r === current })));
  }
  function when(v) {
    if (typeof v === "number") return new Date(v * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
    return String(v === null || v === undefined ? "" : v);
  }
  async function peopleSection() {
    const mine = roleOn(S.site);
    const people = h("ul", { id: "people-list" });
    const invites = h("ul", { id: "invitation-list" });
    const out = h("div", { "aria-live": "polite" });
    async function draw() {
      let d;
      try { d = await api(sitePath("/people")); } catch (e) { people.replaceChildren(h("li", { class: "hint error", text: e.message })); return; }
      people.replaceChildren(...(d.people || []).map((p) => {
        const sel = roleSelect("role", p.role, mine, "Role of " + p.email);
        return h("li", { "data-email": p.email }, h("span", { class: "who", text: p.email + " — " + ROLE_TEXT[p.role] + " " }), sel,
          h("button", { type: "button", class: "link", "aria-label": "Change role of " + p.email, text: "Change role",
            onclick: async () => {
              try {
                await api(sitePath("/people/" + encodeURIComponent(p.id)), { method: "PUT", body: { role: sel.value } });
                status("Role changed.");
                draw();
              } catch (e) { status(e.message); }
            } }),
          h("button", { type: "button", class: "link", "aria-label": "Remove " + p.email, text: "Remove",
            onclick: async () => {
              try { await api(sitePath("/people/" + encodeURIComponent(p.id)), { method: "DELETE" }); status("Removed."); draw(); } catch (e) { status(e.message); }
            } }));
      }));
      if (!(d.people || []).length) people.append(h("li", { class: "hint", text: "Nobody has a role on this site alone (roles on every site are not listed here)." }));
      invites.replaceChildren(...(d.invitations || []).map((i) => h("li", { "data-email": i.email },
        h("span", { text: "Invited: " + i.email + " — " + ROLE_TEXT[i.role] + ", expires " + when(i.expires_at) +
          (i.invited_by ? ", by " + i.invited_by : "") + " " }),
        h("button", { type: "button", class: "link", "aria-label": "Withdraw the invitation of " + i.email, text: "Withdraw",
          onclick: async () => {
            try { await api(sitePath("/invitations/" + encodeURIComponent(i.id)), { method: "DELETE" }); status("Invitation withdrawn."); draw(); } catch (e) { status(e.message); }
          } }))));
      if (!(d.invitations || []).length) invites.append(h("li", { class: "hint", text: "None." }));
    }
    const form = h("form", { class: "inline-form", id: "invite-person" },
      h("label", {}, "E-mail", h("input", { name: "email", type: "email", required: true, autocomplete: "off" })),
      h("label", {}, "Role", roleSelect("role", "viewer", mine)),
      h("button", { type: "submit", text: "Invite" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const f = new FormData(form);
      try {
        const r = await api(sitePath("/people"), { body: { email: String(f.get("email")).trim(), role: String(f.get("role")) } });
        out.replaceChildren(h("p", { text: "Invitation link (shown once; Veil sends no e-mail: give it to them yourself; it works once, for 7 days):" }),
          h("code", { class: "secret", id: "invite-link", text: location.origin + String(r.url || "").replace(/^https?:\/\/[^/]+/, "") }));
        form.reset();
        draw();
      } catch (e) { status("Inviting failed: " + e.message); }
    });
    await draw();
    return section("People", people, h("h3", { text: "Open invitations" }), invites, form, out);
  }
  async function auditSection() {
    const body = h("tbody");
    const table = h("table", { class: "audit", id: "audit" },
      h("thead", {}, h("tr", {}, ["When", "Who", "What", "Details"].map((t) => h("th", { scope: "col", text: t })))), body);
    try {
      const d = await api("/api/v1/audit?site=" + encodeURIComponent(S.site) + "&limit=100");
      const entries = d.entries || [];
      body.replaceChildren(...entries.map((e) => h("tr", { "data-action": e.action },
        h("td", { text: when(e.at) }), h("td", { text: e.actor }), h("td", { text: e.action }),
        h("td", { text: typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail) }))));
      if (!entries.length) body.append(h("tr", {}, h("td", { colspan: 4, class: "hint", text: "Nothing recorded yet." })));
    } catch (e) { body.replaceChildren(h("tr", {}, h("td", { colspan: 4, class: "hint error", text: e.message }))); }
    return section("Audit log (newest first)", table);
  }
  function deleteSection() {
    const form = h("form", { class: "inline-form", id: "delete-site" },
      h("label", {}, "Type the domain to confirm", h("input", { name: "confirm", autocomplete: "off", required: true })),
      h("button", { type: "submit", class: "secondary", text: "Delete this site" }));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      if (String(new FormData(form).get("confirm")).trim().toLowerCase() !== S.site.toLowerCase()) {
        status("Type the site's domain, " + S.site + ", to delete it.");
        return;
      }
      try { await api(sitePath(), { method: "DELETE" }); location.assign("/"); } catch (e) { status("Deleting failed: " + e.message); }
    });
    const sec = section("Delete this site", h("p", { class: "hint", text: "Unregisters the site: its settings, keys and links go. Owners only." }), form);
    sec.classList.add("danger");
    return sec;
  }

  // ---------- routing ----------
  function crumbs() {
    const c = $("crumbs");
    c.replaceChildren();
    if (S.share) return;
    if (S.site) {
      c.append(h("a", { href: "/", text: "Sites" }), h("span", { "aria-hidden": "true", text: "/" }),
        h("a", { href: "/site/" + encodeURIComponent(S.site), text: S.site }));
    }
  }
  async function route() {
    clearInterval(S.timer); // a realtime refresh or an install check belongs to the page left
    clearInterval(S.liveTimer);
    const path = location.pathname;
    let m;
    const params = new URLSearchParams(location.search);
    S.site = "";
    if ((m = path.match(/^\/share\/([^/]+)$/))) {
      S.share = true;
      S.site = decodeURIComponent(m[1]);
      // An embedded link (`?embed=ID`, framed by a page its link names): no top bar; the id
      // stays in every state's URL, since the server allows the frame by it.
      S.embed = params.get("embed") || "";
      document.body.classList.toggle("embedded", !!S.embed);
      const legacy = params.get("auth");
      S.shareToken = new URLSearchParams(location.hash.slice(1)).get("auth") || legacy || "";
      if (legacy !== null) {
        params.delete("auth");
        const rest = params.toString();
        history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + shareFragment());
      }
      $("mode-badge").hidden = false;
      $("mode-badge").textContent = "Shared, read-only";
      $("brand").removeAttribute("href");
    }
    if (S.share) { header(); S.page = "dash"; crumbs(); await loadSiteSettings(); return renderDash(); }
    if (path === "/setup" || path === "/invite") { S.page = "invite"; crumbs(); return renderInvite(path === "/setup"); }
    if (path === "/login") { S.page = "login"; crumbs(); return showLogin(""); }
    if (!(await loadMe())) return;
    if (path === "/account") { S.page = "account"; crumbs(); return renderAccount(); }
    if ((m = path.match(/^\/site\/([^/]+)\/settings$/))) {
      S.site = decodeURIComponent(m[1]); S.page = "settings"; crumbs(); return renderSettings();
    }
    if ((m = path.match(/^\/site\/([^/]+)$/))) {
      S.site = decodeURIComponent(m[1]);
      S.page = "dash";
      crumbs();
      $("settings-link").hidden = roleOn(S.site) < RANK.admin;
      $("settings-link").href = "/site/" + encodeURIComponent(S.site) + "/settings";
      await loadSiteSettings();
      digestBox();
      return renderDash();
    }
    S.page = "sites";
    crumbs();
    return renderSites();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
      $("token").value = "";
      status("");
      if (location.pathname === "/login") history.replaceState(null, "", "/");
      route();
    });
    $("password-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      S.password = $("link-password").value;
      $("link-password").value = "";
      status("");
      loadSiteSettings().then(renderDash);
    });
    $("account-form").addEventListener("submit", submitLogin);
    $("invite-form").addEventListener("submit", submitInvite);
    $("logout").addEventListener("click", async () => {
      sessionStorage.removeItem(TOKEN_KEY);
      if (isUser()) {
        try { await api("/api/v1/auth/logout", { body: {}, noRetry: true }); } catch (e) { status("Logging out failed: " + e.message); return; }
      }
      location.href = "/";
    });
    initControls();
    route();
  });
})();
