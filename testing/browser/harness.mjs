// The one harness of Veil's browser tests (collector/tracker/test/ and dashboards/test/): a real
// `veil up` (the debug binary, managed ClickHouse) on a temp data dir, ClickHouse queries,
// polling under a deadline (never a decision after a fixed sleep), a page server on another
// port, and headless Debian Chromium.
//
// This file imports nothing from npm: it lives outside both npm packages, so a bare
// `import "playwright-core"` here would not resolve. The tests pass in the `chromium` they
// imported from their own package's playwright-core (`launch(chromium)`).
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, existsSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";

/** The repository root. */
export const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

const tick = (ms) => new Promise((ok) => setTimeout(ok, ms));

/**
 * Calls `read()` (sync or async) every `every` ms until `done(value)` holds or `ms` have passed,
 * and resolves to the last value either way: the caller's assertions then judge it (and print it).
 */
export async function poll(read, done, { ms = 15_000, every = 100 } = {}) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await read();
    if (done(value) || Date.now() >= deadline) return value;
    await tick(every);
  }
}

/**
 * Like `poll`, but the deadline is a failure: resolves to the first value for which `done` holds,
 * or fails with `what` (a string, followed by the last value as JSON, or a function of the last
 * value giving the whole message).
 */
export async function waitFor(read, done, { ms = 15_000, every = 100, what = "timed out" } = {}) {
  const value = await poll(read, done, { ms, every });
  if (!done(value)) assert.fail(typeof what === "function" ? what(value) : `${what}: ${JSON.stringify(value)}`);
  return value;
}

/** A TCP port free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((ok) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => ok(p)); });
  });
}

/**
 * `veil up ARGS` on a fresh temp data dir and a free port, flushing batches every 200 ms; builds
 * the binary first if it is missing (`VEIL_BIN` names another). `env` is added to the
 * environment; `publicUrl` adds `--public-url` with its own address (links in e-mails are
 * absolute). Resolves once Veil says it is running, to `{url, clickhouse, chPassword, log(),
 * stop()}` (`chPassword`: the managed ClickHouse's generated password, from its file).
 */
export async function startVeil(args = [], { env = {}, publicUrl = false } = {}) {
  const bin = process.env.VEIL_BIN || join(root, "target/debug/veil");
  if (!existsSync(bin)) execFileSync("cargo", ["build", "-p", "veil"], { cwd: root, stdio: "inherit" });
  const dir = mkdtempSync(join(tmpdir(), "veil-browser-"));
  const port = await freePort();
  const child = spawn(bin, ["up", "--batch-max-age", "200ms", "--listen", `127.0.0.1:${port}`,
    "--data-dir", join(dir, "var"), ...(publicUrl ? ["--public-url", `http://127.0.0.1:${port}`] : []), ...args],
  { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
  let out = "";
  child.stdout.on("data", (b) => { out += b; });
  child.stderr.on("data", (b) => { out += b; });
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const up = await poll(() => out.includes("Veil is running"), (ok) => ok || child.exitCode !== null, { ms: 120_000 });
  if (!up) {
    await stop();
    throw new Error("veil up did not start:\n" + out);
  }
  const cfg = readFileSync(join(dir, "var/clickhouse/config.xml"), "utf8");
  const chPort = cfg.match(/<http_port>(\d+)<\/http_port>/)[1];
  const chPassword = readFileSync(join(dir, "var/clickhouse/password"), "utf8").trim();
  return { url: `http://127.0.0.1:${port}`, clickhouse: `http://127.0.0.1:${chPort}`, chPassword, log: () => out, stop };
}

/** The rows of a ClickHouse query (JSONEachRow), logged in as the managed server's `default` user. */
export async function sql(veil, text) {
  const res = await fetch(veil.clickhouse + "/", {
    method: "POST",
    headers: { "X-ClickHouse-User": "default", "X-ClickHouse-Key": veil.chPassword },
    body: text + " FORMAT JSONEachRow",
  });
  const body = await res.text();
  if (!res.ok) throw new Error(body);
  return body.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

/** The rows of `text` once there are at least `n` (or whatever there are after `ms`). */
export function rows(veil, text, n, ms = 15_000) {
  return poll(() => sql(veil, text), (r) => r.length >= n, { ms });
}

/**
 * Serves `pages` (path → html; `"*"` for any other path) on a free port. With `packageDir`,
 * `/node_modules/…` serves that npm package's modules as JavaScript (adding `.js` to
 * extension-less imports, as bundlers do).
 */
export async function pageServer(pages, { packageDir } = {}) {
  const port = await freePort();
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (packageDir && path.startsWith("/node_modules/") && !path.includes("..")) {
      const file = join(packageDir, path);
      for (const f of [file, file + ".js"]) {
        if (existsSync(f) && !f.endsWith("/")) {
          let js;
          try { js = readFileSync(f); } catch { continue; }
          res.writeHead(200, { "content-type": "text/javascript" });
          res.end(js);
          return;
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

/** Headless Chromium (`CHROMIUM`, or Debian's /usr/bin/chromium) through playwright-core's `chromium`. */
export function launch(chromium) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
}
