// End to end in real headless Chromium (Debian's /usr/bin/chromium, driven
// by puppeteer-core; nothing downloads a browser) against a real fleet:
// `georelay serve --all` on a generated two-node configuration (eu, us) on
// a random loopback prefix. The browser's source address (127.0.0.1) is
// mapped to DE by a geoip override.
//
// Scenarios: publisher and subscriber through the relay over WebTransport
// and over the forced WebSocket fallback (500 datagrams, 20 messages,
// one-way latency measured in the page); an app whose client countries
// deny DE → GEOFENCE_DENIED; an app allowed only in the US, dialled at the
// EU node → follows GEOFENCE_REDIRECT to the US node; a malformed control
// frame over raw WebTransport → ERROR and the session closed with
// PROTOCOL_VIOLATION (close code 6 in WebTransport.closed) while another
// session stays up (and the runs after it are served); a subscribe token's
// datagram → the SDK's "closed" event carries UNAUTHORIZED from the close
// code alone (no ERROR frame), over both transports. Every
// token is an HS256 JWT minted here with jose. A native Rust SDK client
// (examples/native_peer.rs) and a browser in one channel exchange media and
// messages both ways, and /status counts both sessions. Real video
// (e2e/video.mjs): the demo page publishes WebCodecs VP8 in one tab and
// decodes it in another (dialled at the US node, redirected to the EU
// one), over WebTransport and over the fallback.
//
// Run from sdk/js after `npm run build` and
// `cargo build --bin georelay --example native_peer`: node e2e/fleet.mjs
// Prints one JSON summary; exits 1 when any expectation fails.
import { spawn } from "node:child_process";
import { createHash, X509Certificate } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { connect as tlsConnect } from "node:tls";
import { SignJWT } from "jose";
import { launchChromium, root, serveStatic } from "./harness.mjs";
import { demoDecision, runVideo } from "./video.mjs";

const repo = join(root, "..", "..");
const GEORELAY = process.env.GEORELAY ?? join(repo, "target", "debug", "georelay");

const prefix = `127.${60 + Math.floor(Math.random() * 190)}.${Math.floor(Math.random() * 250)}`;
const SECRETS = { "e2e-eu": "e2e-eu-secret", "e2e-us": "e2e-us-secret", "e2e-denied": "e2e-denied-secret" };
const config = `
[geoip.overrides]
"127.0.0.1/32" = "DE"

[regions.eu]
name = "EU"
countries = ["DE", "NL"]

[regions.us]
name = "US"
countries = ["US"]

[nodes.eu-fra-1]
region = "eu"
listen = "${prefix}.1:4433"
admin = "${prefix}.1:9090"
websocket = "${prefix}.1:4443"

[nodes.us-iad-1]
region = "us"
listen = "${prefix}.2:4433"
admin = "${prefix}.2:9090"
websocket = "${prefix}.2:4443"

[[links]]
between = ["eu-fra-1", "us-iad-1"]
rtt_ms = 80

[apps.e2e-eu]
secret = "${SECRETS["e2e-eu"]}"
allow_regions = ["eu"]

[apps.e2e-us]
secret = "${SECRETS["e2e-us"]}"
allow_regions = ["us"]

[apps.e2e-denied]
secret = "${SECRETS["e2e-denied"]}"
allow_regions = ["eu"]
client_countries = { deny = ["DE"] }
`;

function jwt(app, channel, role) {
  return new SignJWT({ channel, role })
    .setProtectedHeader({ alg: "HS256", typ: "JWT" })
    .setIssuer(app)
    .setSubject(`browser-${role}`)
    .setAudience("georelay")
    .setExpirationTime("10m")
    .sign(new TextEncoder().encode(SECRETS[app]));
}

async function joinAs(app, channel, role) {
  return { app, channel, token: await jwt(app, channel, role) };
}

function startFleet(dir) {
  const path = join(dir, "regions.toml");
  writeFileSync(path, config);
  const child = spawn(GEORELAY, ["serve", "--all", "--config", path], {
    cwd: dir,
    stdio: ["ignore", "pipe", "inherit"],
  });
  const nodes = {};
  const ready = new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      const m = /^node (\S+) browsers: https:\/\/(\S+)\/georelay wss:\/\/(\S+)\/georelay \(dev certificate sha256 ([0-9a-f]{64})/.exec(line);
      if (!m) return;
      nodes[m[1]] = { listen: m[2], websocket: m[3], hash: m[4] };
      if (Object.keys(nodes).length === 2) resolve(nodes);
    });
    child.once("exit", (code) => reject(new Error(`serve exited with ${code}`)));
  });
  return { child, ready };
}

// The SPKI hash Chromium's --ignore-certificate-errors-spki-list takes, of
// the certificate a fallback listener presents.
function spkiOf(addr) {
  const [host, port] = addr.split(":");
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host, port: Number(port), rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] }, () => {
      const cert = new X509Certificate(socket.getPeerCertificate(true).raw);
      socket.destroy();
      const spki = cert.publicKey.export({ type: "spki", format: "der" });
      resolve(createHash("sha256").update(spki).digest("base64"));
    });
    socket.once("error", reject);
  });
}

// The native Rust SDK peer (examples/native_peer.rs): JSON lines out.
function nativePeer(configPath, role) {
  const bin = process.env.NATIVE_PEER ?? join(repo, "target", "debug", "examples", "native_peer");
  const child = spawn(bin, ["--config", configPath, "--app", "e2e-eu", "--channel", "mixed", "--node", "eu-fra-1", "--role", role], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const lines = [];
  const waiters = [];
  createInterface({ input: child.stdout }).on("line", (line) => {
    lines.push(JSON.parse(line));
    waiters.splice(0).forEach((wake) => wake());
  });
  child.once("exit", () => waiters.splice(0).forEach((wake) => wake()));
  const next = async (index) => {
    const deadline = Date.now() + 20000;
    while (lines.length <= index) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`native ${role} gave no line ${index}`);
      await new Promise((resolve) => { waiters.push(resolve); setTimeout(resolve, 500); });
    }
    return lines[index];
  };
  return { child, next };
}

async function status(admin) {
  return (await fetch(`http://${admin}/status`)).json();
}

const dir = mkdtempSync(join(tmpdir(), "georelay-fleet-e2e-"));
const fleetProcess = startFleet(dir);
const http = await serveStatic();
let browser;
const failures = [];
try {
  const nodes = await fleetProcess.ready;
  const spkis = await Promise.all(Object.values(nodes).map((n) => spkiOf(n.websocket)));
  browser = await launchChromium({
    userDataDir: join(dir, "chromium"),
    // Browsers do not apply serverCertificateHashes to WebSockets: trust
    // the fallback listeners' development keys for this run only.
    extraArgs: [`--ignore-certificate-errors-spki-list=${spkis.join(",")}`],
  });
  const page = await browser.newPage();
  page.on("console", (msg) => console.error(`[page] ${msg.text()}`));
  await page.goto(`http://127.0.0.1:${http.address().port}/e2e/fleet.html`);
  await page.waitForFunction(() => window.ready === true, { timeout: 10000 });
  const fleet = {
    hashes: Object.values(nodes).map((n) => n.hash),
    websocket: Object.fromEntries(Object.entries(nodes).map(([id, n]) => [id, n.websocket])),
  };
  const eu = { node: "eu-fra-1", addr: nodes["eu-fra-1"].listen };
  const malformed = await page.evaluate((args) => window.runMalformed(args), {
    fleet, target: eu, join: await joinAs("e2e-eu", "room", "subscribe"),
  });
  // PROTOCOL_VIOLATION is wire code 6 (docs/PROTOCOL.md, error codes).
  // The ERROR frame, then the WebTransport session close with the same
  // code and the code's name as reason (docs/PROTOCOL.md §11).
  const violation = malformed.errorFrame?.type === "ERROR" && malformed.errorFrame.code === 6
    && malformed.closeCode === 6 && malformed.closeReason === "PROTOCOL_VIOLATION";
  if (!violation || !malformed.bystanderOpen) failures.push(`malformed frame gave ${JSON.stringify(malformed)}`);
  // A close without an ERROR frame: the SDK's typed error comes from the
  // close code, over both transports.
  const closeWithoutError = {};
  for (const transport of ["webtransport", "websocket"]) {
    const closed = await page.evaluate((args) => window.runCloseWithoutError(args), {
      fleet, target: eu, transport, join: await joinAs("e2e-eu", "room", "subscribe"),
    });
    closeWithoutError[transport] = closed;
    if (closed.transport !== transport || closed.code !== "UNAUTHORIZED") {
      failures.push(`${transport}: a subscribe token's datagram gave ${JSON.stringify(closed)}`);
    }
  }
  const runs = {};
  for (const transport of ["webtransport", "websocket"]) {
    const run = await page.evaluate((args) => window.runPubSub(args), {
      fleet,
      target: eu,
      transport,
      count: 500,
      messages: 20,
      join: {
        publish: await joinAs("e2e-eu", "room", "publish"),
        subscribe: await joinAs("e2e-eu", "room", "subscribe"),
      },
    });
    run.delivery = run.received / run.sent;
    runs[transport] = run;
    console.error(`${transport}: ${JSON.stringify(run)}`);
    if (!run.activeInTime) failures.push(`${transport}: subscription never active`);
    if (run.transport.some((t) => t !== transport)) failures.push(`${transport}: ran over ${run.transport}`);
    if (run.delivery < 0.99) failures.push(`${transport}: delivery ${run.delivery}`);
    if (run.messagesReceived !== run.messagesSent || !run.messagesInOrder) failures.push(`${transport}: messages`);
  }
  // Native and browser clients in one channel, both directions, over
  // WebTransport; /status counts both sessions.
  const configPath = join(dir, "regions.toml");
  const admin = nodes["eu-fra-1"].listen.replace(":4433", ":9090");
  const mixed = {};
  {
    const sub = nativePeer(configPath, "subscribe");
    await sub.next(0);
    const pub = await page.evaluate((args) => window.runPublishOnly(args), {
      fleet, target: eu, transport: "webtransport", count: 500, messages: 20,
      join: await joinAs("e2e-eu", "mixed", "publish"),
    });
    const got = await sub.next(1);
    mixed.browserToNative = { ...pub, ...got, delivery: got.received / 500 };
    if (got.received < 495 || got.messages !== 20 || !got.in_order) failures.push(`browser→native: ${JSON.stringify(got)}`);
  }
  {
    await page.evaluate((args) => window.startSubscriber(args), {
      fleet, target: eu, transport: "webtransport", join: await joinAs("e2e-eu", "mixed", "subscribe"),
    });
    const pub = nativePeer(configPath, "publish");
    await pub.next(0);
    const trackSeen = await page.evaluate(() => window.awaitTrack());
    const sessions = (await status(admin)).sessions;
    pub.child.stdin.write("go\n");
    await pub.next(1);
    const got = await page.evaluate((args) => window.finishSubscriber(args), { count: 500, messages: 20 });
    mixed.nativeToBrowser = { trackSeen, statusSessions: sessions, ...got, delivery: got.received / 500 };
    if (!trackSeen || sessions < 2) failures.push(`native→browser: track ${trackSeen}, /status sessions ${sessions}`);
    if (got.received < 495 || got.messagesReceived !== 20 || !got.messagesInOrder) failures.push(`native→browser: ${JSON.stringify(got)}`);
  }
  const admission = {};
  for (const transport of ["webtransport", "websocket"]) {
    const denied = await page.evaluate((args) => window.runConnect(args), {
      fleet, target: eu, transport, join: await joinAs("e2e-denied", "room", "subscribe"),
    });
    const redirected = await page.evaluate((args) => window.runConnect(args), {
      fleet, target: eu, transport, join: await joinAs("e2e-us", "room", "subscribe"),
    });
    admission[transport] = { denied, redirected };
    if (denied.admitted || denied.code !== "GEOFENCE_DENIED") failures.push(`${transport}: denied app gave ${JSON.stringify(denied)}`);
    if (!redirected.admitted || redirected.node !== "us-iad-1" || redirected.redirects !== 1) {
      failures.push(`${transport}: redirect gave ${JSON.stringify(redirected)}`);
    }
  }
  // Real video: the demo page publishing WebCodecs VP8 in one tab, decoding
  // in another (e2e/video.mjs).
  const video = {};
  const fleetRows = Object.entries(nodes).map(([id, n]) => [id, n.listen, n.listen.replace(":4433", ":9090"), n.websocket]);
  for (const [name, transport, drop] of [["webtransport", "webtransport", 0], ["websocket", "websocket", 0], ["webtransport-loss", "webtransport", 200]]) {
    video[name] = await runVideo({
      browser, base: `http://127.0.0.1:${http.address().port}`, fleetRows, node: "eu-fra-1", subscriberDials: "us-iad-1", app: "e2e-eu", transport, drop,
      token: (channel, role) => jwt("e2e-eu", channel, role), failures,
    });
    const { decodedFps, packetLoss, subscriber: s } = video[name];
    console.error(`video ${name}: ${decodedFps.toFixed(1)} fps decoded, ${s.verified}/${s.decoded} verified, frames dropped ${s.droppedFrames}, loss ${packetLoss}, latency ${JSON.stringify(s.latencyMs)}`);
  }
  // The demo page shows a refusal as the geofence decision.
  const deniedInDemo = await demoDecision({
    browser, base: `http://127.0.0.1:${http.address().port}`, fleetRows, node: "eu-fra-1", app: "e2e-denied",
    channel: "room", token: await jwt("e2e-denied", "room", "subscribe"), transport: "webtransport",
  });
  if (deniedInDemo.admitted || deniedInDemo.code !== "GEOFENCE_DENIED" || !deniedInDemo.shown.startsWith("refused: GEOFENCE_DENIED")) {
    failures.push(`demo decision for a denied country: ${JSON.stringify(deniedInDemo)}`);
  }
  video.deniedInDemo = deniedInDemo;
  console.log(JSON.stringify({ chromium: await browser.version(), malformed, closeWithoutError, runs, mixed, admission, video, failures }, null, 2));
} catch (err) {
  failures.push(String(err?.stack ?? err));
  console.error(err);
} finally {
  await browser?.close();
  http.close();
  fleetProcess.child.kill("SIGTERM");
  await new Promise((resolve) => (fleetProcess.child.exitCode !== null ? resolve() : fleetProcess.child.once("exit", resolve)));
  rmSync(dir, { recursive: true, force: true });
}
if (failures.length > 0) console.error(`FAILED: ${failures.join("; ")}`);
process.exit(failures.length > 0 ? 1 : 0);
