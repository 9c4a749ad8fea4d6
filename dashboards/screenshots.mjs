// The README's screenshots (`make screenshots`): `veil up --demo` in its default privacy mode
// (differential privacy: numbers read "≈ N"), the demo website's web view on a desktop and on a
// phone, and the demo app's App view, saved as docs/img/*.png. Run after `cargo build -p veil`
// (the dashboard's files are compiled into the binary); it uses the browser tests' harness
// (Debian's Chromium through playwright-core, a managed ClickHouse) and takes about a minute.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { startVeil, browser, open, settled, waitFor } from "./test/fixture.mjs";
import { root } from "../testing/browser/harness.mjs";

/** The demo website and the demo app `veil up --demo` fills (cli/src/gen.rs). */
const WEB = "demo.veil.local";
const APP = process.env.VEIL_DEMO_APP || "demo-app.veil.local";
const out = join(root, "docs/img");

const shots = [
  { name: "demo-web", url: `/site/${WEB}?period=30d`, viewport: { width: 1280, height: 1400 } },
  { name: "demo-web-phone", url: `/site/${WEB}?period=7d`, viewport: { width: 390, height: 1500 }, touch: true },
  { name: "demo-app", url: `/site/${APP}?view=app&period=30d`, viewport: { width: 1280, height: 1400 }, ready: "#adoption canvas, #adoption .error" },
];

const veil = await startVeil({ args: ["--demo"], log: "warn,veil=info" });
let chrome;
try {
  await waitFor(() => veil.log(), (l) => /rollups rebuilt|rollup job failed/.test(l),
    { ms: 120_000, every: 200, what: (l) => "the rollup job did not report:\n" + l.slice(-2000) });
  chrome = await browser();
  mkdirSync(out, { recursive: true });
  for (const s of shots) {
    const page = await open(chrome, { viewport: s.viewport, touch: s.touch });
    await page.goto(veil.url + s.url);
    await settled(page);
    if (s.ready) await page.waitForSelector(s.ready, { timeout: 30_000 });
    const path = join(out, s.name + ".png");
    await page.screenshot({ path });
    if (page.problems.length) throw new Error(`${s.name}: ${page.problems.join("\n")}`);
    console.log(`${path}: ${s.url}`);
    await page.close_all();
  }
} finally {
  await chrome?.close();
  await veil.stop();
}
