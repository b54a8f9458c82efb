// The demo page: pick a node of the example fleet (regions.toml), see the
// geofence decision (admitted where, or the refusal code), publish a
// synthetic canvas stream as media datagrams, and in another tab subscribe
// and chart one-way latency and loss. Camera/microphone capture and video
// decoding with WebCodecs are not built yet: the stream carries a frame
// counter and timestamps, which is what the chart needs.
import { RefusedError, Session } from "/dist/index.js";

// The example fleet of regions.toml: node id, QUIC address, admin address.
const FLEET = [
  ["eu-fra-1", "127.10.0.1:4433", "127.10.0.1:9090"],
  ["eu-ams-1", "127.10.0.2:4433", "127.10.0.2:9090"],
  ["uk-lon-1", "127.40.0.1:4433", "127.40.0.1:9090"],
  ["us-iad-1", "127.20.0.1:4433", "127.20.0.1:9090"],
  ["us-sfo-1", "127.20.0.2:4433", "127.20.0.2:9090"],
  ["ap-sin-1", "127.30.0.1:4433", "127.30.0.1:9090"],
];
const $ = (id) => document.getElementById(id);
for (const [node, addr] of FLEET) $("node").append(new Option(`${node} (${addr})`, node));

let session;
const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

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

$("connect").onclick = async () => {
  const chosen = FLEET.find(([node]) => node === $("node").value);
  const others = FLEET.filter((entry) => entry !== chosen);
  const targets = [chosen, ...others].map(([node, addr]) => ({ node, addr }));
  $("decision").textContent = "connecting...";
  $("decision").className = "";
  try {
    session = await Session.connect(
      targets,
      { app: $("app").value, channel: $("channel").value, token: $("token").value.trim() },
      { transport: $("transport").value, webTransport: { certificateHashes: await certificateHashes() } },
    );
    const c = session.client;
    const via = c.redirects > 0 ? ` after ${c.redirects} redirect(s) (GEOFENCE_REDIRECT)` : "";
    $("decision").textContent = `admitted by ${c.node} in region ${c.region}${via}, over ${c.transportKind}`;
    $("decision").className = "admitted";
    $("publish").disabled = false;
    $("subscribe").disabled = false;
    session.on("reconnected", ({ node, transport }) => {
      $("decision").textContent = `reconnected to ${node} over ${transport}`;
    });
    session.on("closed", ({ code, reason }) => {
      $("decision").textContent = `closed: ${code ?? "normal"} ${reason}`;
      $("decision").className = "refused";
    });
  } catch (err) {
    $("decision").textContent = err instanceof RefusedError ? `refused: ${err.code} (${err.reason})` : `failed: ${err.message}`;
    $("decision").className = "refused";
  }
};

$("publish").onclick = async () => {
  $("publish").disabled = true;
  const track = await session.announce("video", "synthetic-canvas");
  const ctx = $("source").getContext("2d");
  let seq = 0;
  setInterval(() => {
    ctx.fillStyle = `hsl(${(seq * 3) % 360} 60% 50%)`;
    ctx.fillRect(0, 0, 320, 180);
    ctx.fillStyle = "#fff";
    ctx.font = "32px monospace";
    ctx.fillText(`frame ${seq}`, 70, 100);
    const payload = new Uint8Array(8);
    new DataView(payload.buffer).setUint32(0, seq);
    session.sendMedia(track, seq++, nowUs(), payload);
  }, 1000 / 30);
};

$("subscribe").onclick = async () => {
  $("subscribe").disabled = true;
  const samples = []; // [arrival ms, latency ms]
  const lastSeq = new Map();
  let received = 0;
  let lost = 0;
  session.on("track-added", ({ track }) => ($("tracks").textContent += ` ${track.publisher}/${track.name}`));
  session.on("subscription-state", ({ state, code }) => ($("stats").textContent = `subscription ${state} ${code ?? ""}`));
  session.on("media", ({ header }) => {
    received++;
    const previous = lastSeq.get(header.track);
    if (previous !== undefined && header.seq > previous + 1n) lost += Number(header.seq - previous - 1n);
    lastSeq.set(header.track, header.seq);
    samples.push([performance.now(), (nowUs() - Number(header.timestampUs)) / 1000]);
  });
  await session.subscribe();
  const chart = $("chart").getContext("2d");
  setInterval(() => {
    const cutoff = performance.now() - 10000;
    while (samples.length && samples[0][0] < cutoff) samples.shift();
    chart.clearRect(0, 0, 640, 160);
    const max = Math.max(5, ...samples.map(([, ms]) => ms));
    chart.beginPath();
    samples.forEach(([t, ms], i) => {
      const x = ((t - cutoff) / 10000) * 640;
      const y = 160 - (ms / max) * 150;
      i === 0 ? chart.moveTo(x, y) : chart.lineTo(x, y);
    });
    chart.stroke();
    const sorted = samples.map(([, ms]) => ms).sort((a, b) => a - b);
    const p50 = sorted[Math.floor(sorted.length / 2)] ?? 0;
    $("stats").textContent = `received ${received}, lost ${lost} (${((100 * lost) / Math.max(1, received + lost)).toFixed(2)}%), p50 ${p50.toFixed(1)} ms, scale ${max.toFixed(1)} ms`;
  }, 250);
};
