// The demo page: pick a node of the example fleet (regions.toml), see the
// geofence decision (admitted where, after which redirects, or the refusal
// code), publish real video (WebCodecs VP8 of a synthetic canvas animation
// or the camera, video.js), and in a second tab subscribe: reassembled,
// decoded and drawn, with a live chart of latency and loss.
//
// Everything the form holds can be given in the URL, for a scripted run
// (demo/screenshot.mjs, e2e/video.mjs): ?node=eu-fra-1&app=...&channel=...
// &token=...&transport=auto&role=publish|subscribe&source=synthetic&auto=1,
// and &fleet=<JSON [[node, quic addr, admin addr, websocket addr], ...]>
// for another fleet than the example's; &drop=N makes the subscriber
// discard every N-th video datagram (simulated loss: watch the chart and
// the recovery at the next keyframe).
import { RefusedError, Session } from "/dist/index.js";
import { drawChart, percentiles, startPublisher, startSubscriber } from "./video.js";

const params = new URLSearchParams(location.search);
// The example fleet of regions.toml: node id, QUIC, admin, WebSocket fallback.
const FLEET = params.has("fleet")
  ? JSON.parse(params.get("fleet"))
  : [
      ["eu-fra-1", "127.10.0.1:4433", "127.10.0.1:9090", "127.10.0.1:4443"],
      ["eu-ams-1", "127.10.0.2:4433", "127.10.0.2:9090", "127.10.0.2:4443"],
      ["uk-lon-1", "127.40.0.1:4433", "127.40.0.1:9090", "127.40.0.1:4443"],
      ["us-iad-1", "127.20.0.1:4433", "127.20.0.1:9090", "127.20.0.1:4443"],
      ["us-sfo-1", "127.20.0.2:4433", "127.20.0.2:9090", "127.20.0.2:4443"],
      ["ap-sin-1", "127.30.0.1:4433", "127.30.0.1:9090", "127.30.0.1:4443"],
    ];
const $ = (id) => document.getElementById(id);
for (const [node, addr] of FLEET) $("node").append(new Option(`${node} (${addr})`, node));
for (const field of ["node", "app", "channel", "token", "transport", "source"]) {
  if (params.has(field)) $(field).value = params.get(field);
}

/** What a scripted run reads: the decision and the live statistics. */
const demo = (window.demo = { decision: null, publisher: null, subscriber: null });
let session;

async function certificateHashes() {
  // Every node's development certificate hash (GET /certificate.sha256):
  // a redirect may send the client to any of them.
  const hashes = await Promise.all(
    FLEET.map(([, , admin]) =>
      fetch(`http://${admin}/certificate.sha256`).then((r) => (r.ok ? r.text() : ""), () => ""),
    ),
  );
  return hashes.map((h) => h.trim()).filter((h) => /^[0-9a-f]{64}$/.test(h));
}

function showDecision(text, admitted) {
  $("decision").textContent = text;
  $("decision").className = admitted ? "admitted" : "refused";
}

async function connect() {
  const chosen = FLEET.find(([node]) => node === $("node").value);
  const others = FLEET.filter((entry) => entry !== chosen);
  const targets = [chosen, ...others].map(([node, addr]) => ({ node, addr }));
  const websocket = Object.fromEntries(FLEET.map(([node, , , ws]) => [node, ws]));
  $("decision").textContent = "connecting...";
  $("decision").className = "";
  try {
    session = await Session.connect(
      targets,
      { app: $("app").value, channel: $("channel").value, token: $("token").value.trim() },
      {
        transport: $("transport").value,
        webTransport: { certificateHashes: await certificateHashes() },
        webSocket: { url: (target) => `wss://${websocket[target.node] ?? target.addr}/georelay` },
      },
    );
    const c = session.client;
    const via = c.redirects > 0 ? ` after ${c.redirects} redirect(s) (GEOFENCE_REDIRECT)` : "";
    demo.decision = { admitted: true, node: c.node, region: c.region, redirects: c.redirects, transport: c.transportKind };
    showDecision(`admitted by ${c.node} in region ${c.region}${via}, over ${c.transportKind}`, true);
    $("publish").disabled = false;
    $("subscribe").disabled = false;
    session.on("reconnected", ({ node, transport }) => showDecision(`reconnected to ${node} over ${transport}`, true));
    session.on("closed", ({ code, reason }) => showDecision(`closed: ${code ?? "normal"} ${reason}`, false));
  } catch (err) {
    const code = err instanceof RefusedError ? err.code : undefined;
    demo.decision = { admitted: false, code, reason: err.message };
    showDecision(code ? `refused: ${code} (${err.reason})` : `failed: ${err.message}`, false);
  }
}

function fmt(ms) {
  return `${ms.toFixed(1)} ms`;
}

async function publish() {
  $("publish").disabled = true;
  try {
    demo.publisher = await startPublisher(session, $("source-view"), { source: $("source").value });
  } catch (err) {
    $("pub-stats").textContent = `cannot publish: ${err.message}`;
    return;
  }
  const { stats } = demo.publisher;
  setInterval(() => {
    $("pub-stats").textContent =
      `captured ${stats.captured}, encoded ${stats.encoded} (${stats.keyframes} keyframes, ${stats.skipped} skipped), ` +
      `${stats.packets} datagrams, ${(stats.bytes / 1024).toFixed(0)} KiB` + (stats.errors ? `, ${stats.errors} errors: ${stats.lastError}` : "");
  }, 250);
}

async function subscribe() {
  $("subscribe").disabled = true;
  demo.subscriber = startSubscriber(session, $("video"), { dropEvery: Number(params.get("drop") ?? 0) });
  const { stats, samples } = demo.subscriber;
  let state = "";
  session.on("subscription-state", ({ state: s, code }) => (state = `subscription ${s}${code ? ` ${code}` : ""}`));
  await session.subscribe();
  const started = performance.now();
  setInterval(() => {
    drawChart($("chart"), samples);
    const { p50, p99 } = percentiles(stats.latencyMs.slice(-300));
    const lossPct = (100 * stats.lostPackets) / Math.max(1, stats.packets + stats.lostPackets);
    const seconds = (performance.now() - started) / 1000;
    $("stats").textContent =
      `${state}; track ${stats.track ?? "none yet"}; decoded ${stats.decoded} frames (${(stats.decoded / seconds).toFixed(1)} fps), ` +
      `${stats.verified} verified; packets ${stats.packets}, lost ${stats.lostPackets} (${lossPct.toFixed(2)}%); ` +
      `frames dropped ${stats.droppedFrames}; latency p50 ${fmt(p50)}, p99 ${fmt(p99)}` + (stats.errors ? `; ${stats.errors} decoder errors: ${stats.lastError}` : "");
  }, 250);
}

$("connect").onclick = connect;
$("publish").onclick = publish;
$("subscribe").onclick = subscribe;

// A tab given its role shows only that role's part.
const role = params.get("role");
if (role === "publish" || role === "subscribe") {
  $(role === "publish" ? "subscribe-part" : "publish-part").hidden = true;
  document.querySelector("h1").textContent += role === "publish" ? ": publisher tab" : ": subscriber tab";
}

if (params.get("auto") === "1") {
  await connect();
  if (session && role === "publish") await publish();
  if (session && role === "subscribe") await subscribe();
}
window.demoReady = true;
