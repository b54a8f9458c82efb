// End to end in real headless Chromium (Debian's /usr/bin/chromium, driven
// by puppeteer-core; nothing downloads a browser): the built SDK in a page
// against `cargo run --example browser_echo`, a georelay/1 echo fixture on
// the browser serving blocks, over WebTransport (certificate pinned by
// serverCertificateHashes) and over the WebSocket fallback (forced).
//
// Run from sdk/js after `npm run build`: node e2e/run.mjs
// Prints one JSON summary; exits 1 when delivery is under 99% or a message
// is missing. The relay wiring (real fleet, geofence) is the next phase.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { launchChromium, root, serveStatic } from "./harness.mjs";

const repo = join(root, "..", "..");

function startFixture() {
  const child = spawn("cargo", ["run", "--quiet", "--locked", "--example", "browser_echo"], {
    cwd: repo,
    stdio: ["pipe", "pipe", "inherit"],
  });
  const line = new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).once("line", (text) => resolve(JSON.parse(text)));
    child.once("exit", (code) => reject(new Error(`fixture exited with ${code}`)));
  });
  return { child, ready: line };
}

const fixture = startFixture();
const http = await serveStatic();
const profile = mkdtempSync(join(tmpdir(), "georelay-chromium-"));
let browser;
let failed = false;
try {
  const ports = await fixture.ready;
  browser = await launchChromium({
    userDataDir: profile,
    // The fallback's TLS: browsers do not apply serverCertificateHashes
    // to WebSockets, so trust this one key for the test.
    extraArgs: [`--ignore-certificate-errors-spki-list=${ports.spki_sha256_base64}`],
  });
  const page = await browser.newPage();
  page.on("console", (msg) => console.error(`[page] ${msg.text()}`));
  await page.goto(`http://127.0.0.1:${http.address().port}/e2e/page.html`);
  await page.waitForFunction(() => window.ready === true, { timeout: 10000 });
  const runs = {};
  // webtransport and websocket: each transport forced; auto-fallback: the
  // SDK's own choice when WebTransport fails (here: a pinned hash that does
  // not match, so the QUIC handshake is refused) must be the WebSocket.
  const scenarios = [
    ["webtransport", "webtransport", ports.certificate_sha256, "webtransport"],
    ["websocket", "websocket", ports.certificate_sha256, "websocket"],
    ["auto-fallback", "auto", "00".repeat(32), "websocket"],
  ];
  for (const [name, transport, certificateHash, expected] of scenarios) {
    runs[name] = await page.evaluate((config) => window.runEcho(config), {
      target: { node: "echo", addr: ports.webtransport },
      webSocketAddr: ports.websocket,
      certificateHash,
      transport,
      count: 500,
      messages: 20,
    });
    const run = runs[name];
    run.delivery = run.received / run.sent;
    if (run.transport !== expected || run.delivery < 0.99 || run.messagesReceived !== run.messagesSent || !run.messagesInOrder) {
      failed = true;
    }
  }
  // The demo page loads (module graph, SDK import) without a script error.
  const demo = await browser.newPage();
  const errors = [];
  demo.on("pageerror", (err) => errors.push(err.message));
  await demo.goto(`http://127.0.0.1:${http.address().port}/demo/index.html`);
  const demoNodes = await demo.waitForFunction(() => document.querySelectorAll("#node option").length, {
    timeout: 10000,
  });
  const demoLoaded = { nodes: await demoNodes.jsonValue(), errors };
  if (demoLoaded.nodes !== 6 || errors.length > 0) failed = true;
  console.log(JSON.stringify({ chromium: await browser.version(), runs, demoLoaded }, null, 2));
} catch (err) {
  failed = true;
  console.error(err);
} finally {
  await browser?.close();
  http.close();
  fixture.child.stdin.end();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
