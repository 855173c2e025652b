// The example page in a real browser: Debian's headless Chromium, driven by playwright-core,
// loads the page from one origin and calls a live contextd on another (so CORS is exercised),
// with gRPC-Web, Connect and the Converse WebSocket. Asserts what the page shows.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { dirname, extname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { chromium } from "playwright-core";

import { bundle } from "../build.mjs";

const here = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repo = resolve(here, "../..");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const WAIT_MS = 60_000;

let page_server;
let contextd;
let browser;
let pageOrigin;
let contextdUrl;

/** Serves index.html and dist/ on a free port. */
function servePage() {
  const types = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };
  const server = createServer((request, response) => {
    const path = new URL(request.url, "http://x").pathname;
    const file = join(here, path === "/" ? "index.html" : path);
    if (!file.startsWith(here) || !existsSync(file)) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { "content-type": types[extname(file)] ?? "application/octet-stream" });
    response.end(readFileSync(file));
  });
  return new Promise((done) => server.listen(0, "127.0.0.1", () => done(server)));
}

/** Starts contextd allowing `origin`; resolves with its address. */
function startContextd(origin) {
  const binary = process.env.CONTEXTD_BIN || resolve(repo, "target/debug/contextd");
  assert.ok(existsSync(binary), `no contextd binary at ${binary}: cargo build, or set CONTEXTD_BIN`);
  const config = join(mkdtempSync(join(tmpdir(), "contextd-web-")), "contextd.toml");
  writeFileSync(config, `[http]\ncors_origins = ["${origin}"]\n`);
  const child = spawn(binary, ["serve", "--listen", "127.0.0.1:0", "--store", "memory", "--config", config], {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, CONTEXTD_LOG: "warn" },
  });
  const lines = createInterface({ input: child.stdout });
  return new Promise((done, fail) => {
    child.once("exit", (code) => fail(new Error(`contextd exited with ${code} before listening`)));
    lines.on("line", (line) => {
      const prefix = "contextd listening on ";
      if (line.startsWith(prefix)) {
        child.removeAllListeners("exit");
        done({ child, address: line.slice(prefix.length).trim() });
      }
    });
  });
}

before(async () => {
  await bundle();
  page_server = await servePage();
  pageOrigin = `http://127.0.0.1:${page_server.address().port}`;
  contextd = await startContextd(pageOrigin);
  contextdUrl = `http://${contextd.address}`;
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
});

after(async () => {
  await browser?.close();
  contextd?.child.kill("SIGTERM");
  page_server?.close();
});

test("the page talks to contextd with gRPC-Web, Connect and the Converse WebSocket", async () => {
  const page = await browser.newPage();
  const errors = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  await page.goto(`${pageOrigin}/?server=${encodeURIComponent(contextdUrl)}`);
  await page.waitForFunction(
    () => {
      const status = document.getElementById("status")?.textContent ?? "";
      return status === "done" || status.startsWith("failed");
    },
    undefined,
    { timeout: WAIT_MS },
  );
  const text = async (id) => (await page.textContent(`#${id}`)) ?? "";
  assert.equal(await text("status"), "done", `page errors: ${errors.join("; ")}`);

  assert.match(await text("grpc-web"), /You said 'hello from the page'/);

  // The streamed reply appeared token by token: each step extends the one before.
  const streamed = await text("stream");
  assert.match(streamed, /one two three four five six/);
  const snapshots = await page.evaluate(() => globalThis.snapshots);
  assert.ok(snapshots.length > 3, `several tokens: ${JSON.stringify(snapshots)}`);
  for (let i = 1; i < snapshots.length; i++) {
    assert.ok(snapshots[i].startsWith(snapshots[i - 1]) && snapshots[i].length > snapshots[i - 1].length);
  }
  assert.equal(snapshots.at(-1), streamed);

  assert.match(await text("grpc-web-stream"), /seven eight/);
  assert.match(await text("tool"), /Tool lookup returned: rust is a systems programming language/);
  assert.equal(await text("cancel"), "finish reason: CANCELLED");
  await page.close();
});

test("another origin gets no CORS grant", async () => {
  const page = await browser.newPage();
  // about:blank has the opaque origin "null": contextd grants it nothing, so the browser
  // refuses to hand the reply to the page.
  await page.goto("about:blank");
  const outcome = await page.evaluate(async (url) => {
    try {
      await fetch(`${url}/contextd.v1.InteractService/Interact`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ sessionId: "x", message: "y" }),
      });
      return "allowed";
    } catch {
      return "refused";
    }
  }, contextdUrl);
  assert.equal(outcome, "refused");
  await page.close();
});
