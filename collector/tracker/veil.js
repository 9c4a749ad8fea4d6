// veil.js — Veil's browser tracker. Source of veil.min.js (built by `make tracker` with terser).
//
// <script defer src="https://VEIL/js/veil.js" data-domain="example.com"></script>
//   data-domain  the site (required)        data-api   endpoint (default: same origin as the script)
//   data-hash    also count #fragment changes (hash routing)
//
// Sends Plausible-compatible JSON to /api/event: {n, u, d, r, p, h, sc, pc, tp} and, when the page
// is hidden or left, an "engagement" event with e = visible milliseconds and sd = scroll depth %.
// Sends nothing when Global Privacy Control or Do Not Track is on, or the visitor opted out
// (localStorage.veil_ignore = "true", set by the /opt-out page). No cookies, no identifiers.
(function (w, d) {
  var s = d.currentScript;
  if (!s) return;
  var n = w.navigator, loc = w.location;
  var dom = s.getAttribute("data-domain");
  var api = s.getAttribute("data-api") || new URL(s.src).origin + "/api/event";
  var hashMode = s.hasAttribute("data-hash");

  function off() {
    var ignore;
    try { ignore = w.localStorage.getItem("veil_ignore") === "true"; } catch (e) {}
    return ignore || n.globalPrivacyControl === true || n.doNotTrack == "1" || w.doNotTrack == "1";
  }
  function screenClass() {
    var x = w.innerWidth;
    return x < 576 ? "mobile" : x < 992 ? "tablet" : x < 1440 ? "laptop" : "desktop";
  }
  function cpuClass() {
    var c = n.hardwareConcurrency || 0;
    return !c ? "" : c < 3 ? "1-2" : c < 5 ? "3-4" : c < 9 ? "5-8" : c < 17 ? "9-16" : "17+";
  }
  function send(name, extra, beacon) {
    if (off() || !dom) return;
    var body = { n: name, u: page, d: dom, r: d.referrer || null, h: hashMode ? 1 : 0, sc: screenClass(), pc: cpuClass() };
    // iPadOS Safari presents itself as a Mac: a touch screen tells them apart.
    if (n.maxTouchPoints > 1) body.tp = 1;
    for (var k in extra) body[k] = extra[k];
    var json = JSON.stringify(body);
    if (beacon && n.sendBeacon) {
      n.sendBeacon(api, new Blob([json], { type: "text/plain" }));
    } else {
      fetch(api, { method: "POST", body: json, keepalive: true, headers: { "Content-Type": "text/plain" } }).catch(function () {});
    }
  }

  // Engagement: visible time and scroll depth of the current page.
  var page, visibleMs = 0, visibleSince = 0, depth = 0;
  function scrolled() {
    var h = d.documentElement, max = h.scrollHeight - w.innerHeight;
    var p = max > 0 ? Math.round((w.scrollY / max) * 100) : 100;
    if (p > depth) depth = Math.min(100, p);
  }
  function pause() { if (visibleSince) { visibleMs += Date.now() - visibleSince; visibleSince = 0; } }
  function resume() { if (!d.hidden && !visibleSince) visibleSince = Date.now(); }
  function engagement() {
    pause();
    if (page && visibleMs > 0) send("engagement", { e: visibleMs, sd: depth }, true);
    visibleMs = 0;
  }

  function pageview() {
    var u = loc.href;
    if (!hashMode) u = u.split("#")[0];
    if (u === page) return;
    engagement();
    page = u;
    depth = 0;
    scrolled();
    resume();
    send("pageview");
  }

  // Single-page apps: history API, and hash changes when data-hash is set.
  var push = w.history.pushState;
  if (push) {
    w.history.pushState = function () { push.apply(this, arguments); pageview(); };
    w.addEventListener("popstate", pageview);
  }
  if (hashMode) w.addEventListener("hashchange", pageview);
  d.addEventListener("visibilitychange", function () { d.hidden ? engagement() : resume(); });
  w.addEventListener("pagehide", engagement);
  w.addEventListener("scroll", scrolled, { passive: true });

  // Outbound links and file downloads.
  var files = /\.(pdf|zip|gz|tar|dmg|exe|msi|pkg|deb|rpm|apk|csv|xlsx?|docx?|pptx?|mp3|mp4|mov|epub)$/i;
  d.addEventListener("click", function (ev) {
    var a = ev.target && ev.target.closest && ev.target.closest("a[href]");
    if (!a) return;
    if (a.host && a.host !== loc.host) send("Outbound Link: Click", { p: { url: a.protocol + "//" + a.host + a.pathname } });
    else if (files.test(a.pathname)) send("File Download", { p: { url: a.pathname } });
  });

  // Custom events: veil("signup", {plan: "pro"}); calls queued before the script loaded run now.
  var queued = (w.veil && w.veil.q) || [];
  w.veil = function (name, props) { send(name, props ? { p: props } : {}); };
  for (var i = 0; i < queued.length; i++) w.veil.apply(null, queued[i]);

  pageview();
})(window, document);
