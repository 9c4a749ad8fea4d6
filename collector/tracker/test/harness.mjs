// Shared set-up for browser tests: a real `veil up` (managed ClickHouse) on a temp data dir, a
// page server on another port, headless Debian Chromium through playwright-core, and a
// ClickHouse query helper.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, "../../..");

function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); });
  });
}

export async function startVeil(extraArgs = []) {
  const bin = join(root, "target/debug/veil");
  if (!existsSync(bin)) execFileSync("cargo", ["build", "-p", "veil"], { cwd: root, stdio: "inherit" });
  const dir = mkdtempSync(join(tmpdir(), "veil-browser-"));
  const port = await freePort();
  const child = spawn(bin, ["up", "--site", "example.com", "--min-visitors", "2", "--batch-max-age", "200ms",
    "--listen", `127.0.0.1:${port}`, "--data-dir", join(dir, "var"), ...extraArgs], { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  child.stdout.on("data", (b) => { out += b; });
  child.stderr.on("data", (b) => { out += b; });
  const deadline = Date.now() + 90_000;
  while (!out.includes("Veil is running")) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error("veil up did not start:\n" + out);
    await new Promise((r) => setTimeout(r, 100));
  }
  const cfg = readFileSync(join(dir, "var/clickhouse/config.xml"), "utf8");
  const chPort = cfg.match(/<http_port>(\d+)<\/http_port>/)[1];
  return {
    url: `http://127.0.0.1:${port}`,
    clickhouse: `http://127.0.0.1:${chPort}`,
    log: () => out,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => child.exitCode !== null ? r() : child.once("exit", r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export async function query(veil, sql) {
  const res = await fetch(veil.clickhouse + "/", { method: "POST", body: sql + " FORMAT JSONEachRow" });
  const text = await res.text();
  if (!res.ok) throw new Error(text);
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

/** Waits until `sql` returns at least `n` rows. */
export async function rows(veil, sql, n, ms = 15_000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const r = await query(veil, sql);
    if (r.length >= n || Date.now() > deadline) return r;
    await new Promise((ok) => setTimeout(ok, 100));
  }
}

/** Serves `pages` (path → html) on a free port; `/node_modules/…` serves the test's npm
 * packages as JavaScript modules (adding `.js` to extension-less imports, as bundlers do). */
export async function pageServer(pages) {
  const port = await freePort();
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path.startsWith("/node_modules/") && !path.includes("..")) {
      const file = join(here, "..", path);
      for (const f of [file, file + ".js"]) {
        if (existsSync(f) && !f.endsWith("/")) {
          try {
            res.writeHead(200, { "content-type": "text/javascript" });
            res.end(readFileSync(f));
            return;
          } catch {}
        }
      }
    }
    const body = pages[path] ?? pages["*"];
    if (body === undefined) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(body);
  });
  await new Promise((ok) => server.listen(port, "127.0.0.1", ok));
  return { origin: `http://127.0.0.1:${port}`, close: () => new Promise((ok) => server.close(ok)) };
}

export async function browser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}
