// Real video over georelay with WebCodecs: the publisher encodes a canvas
// (a synthetic animation, or the camera drawn into it) with VideoEncoder
// (VP8, software in headless Chromium), splits each encoded frame into
// media datagrams with the SDK's frame header (packetizeFrame, see
// src/frames.ts; keyframes every KEY_EVERY frames), and the subscriber
// reassembles them (FrameAssembler), decodes with VideoDecoder and draws to
// a canvas.
//
// Every captured frame carries its own capture time in pixels: 16 black or
// white blocks along the top edge spell the low 16 bits of the capture time
// in milliseconds. The subscriber reads them back from each decoded frame
// and compares them with the frame's timestamp (the capture time the
// georelay header carried): `verified` counts decoded pictures that are the
// frames the publisher captured, not just decoder output.
import { FrameAssembler, packetizeFrame } from "/dist/index.js";

export const CODEC = "vp8";
export const WIDTH = 640;
export const HEIGHT = 360;
export const FPS = 30;
/** A keyframe every second: the longest a new subscriber or a loss waits. */
export const KEY_EVERY = 30;
export const BITRATE = 1_000_000;
const BLOCK = 16;
const BITS = 16;

/** Wall-clock microseconds, comparable across tabs of one machine. */
export const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);

function drawStamp(ctx, captureUs) {
  const ms = Math.floor(captureUs / 1000) & 0xffff;
  for (let bit = 0; bit < BITS; bit++) {
    ctx.fillStyle = (ms >> (BITS - 1 - bit)) & 1 ? "#fff" : "#000";
    ctx.fillRect(bit * BLOCK, 0, BLOCK, BLOCK);
  }
}

function readStamp(ctx) {
  const row = ctx.getImageData(0, BLOCK / 2, BITS * BLOCK, 1).data;
  let ms = 0;
  for (let bit = 0; bit < BITS; bit++) {
    const at = (bit * BLOCK + BLOCK / 2) * 4;
    const luma = (row[at] + row[at + 1] + row[at + 2]) / 3;
    ms = (ms << 1) | (luma > 128 ? 1 : 0);
  }
  return ms;
}

/** Draws frame `n` of the synthetic animation. */
function drawSynthetic(ctx, n) {
  const t = n / FPS;
  ctx.fillStyle = `hsl(${(n * 2) % 360} 55% 35%)`;
  ctx.fillRect(0, 0, WIDTH, HEIGHT);
  for (let i = 0; i < 5; i++) {
    ctx.fillStyle = `hsl(${(i * 72 + n * 3) % 360} 80% 60%)`;
    const x = WIDTH / 2 + Math.cos(t * (1 + i * 0.3) + i) * (WIDTH / 3);
    const y = HEIGHT / 2 + Math.sin(t * (1.3 + i * 0.2) + i) * (HEIGHT / 3);
    ctx.beginPath();
    ctx.arc(x, y, 30 + i * 6, 0, 2 * Math.PI);
    ctx.fill();
  }
  ctx.fillStyle = "#fff";
  ctx.font = "bold 40px monospace";
  ctx.fillText(`georelay  frame ${n}`, 40, HEIGHT - 40);
}

/**
 * Publishes `canvas` as VP8 on a new video track of `session` at FPS.
 * `source` is "synthetic" or "camera". Returns { stats, stop() }.
 */
export async function startPublisher(session, canvas, { source = "synthetic" } = {}) {
  canvas.width = WIDTH;
  canvas.height = HEIGHT;
  const ctx = canvas.getContext("2d");
  let camera;
  if (source === "camera") {
    camera = document.createElement("video");
    camera.muted = true;
    camera.srcObject = await navigator.mediaDevices.getUserMedia({ video: { width: WIDTH, height: HEIGHT } });
    await camera.play();
  }
  const track = await session.announce("video", source === "camera" ? "camera-vp8" : "canvas-vp8");
  const stats = { captured: 0, encoded: 0, keyframes: 0, skipped: 0, packets: 0, bytes: 0, errors: 0, lastError: "" };
  let seq = 0;
  let frame = 0;
  const encoder = new VideoEncoder({
    output: (chunk) => {
      const data = new Uint8Array(chunk.byteLength);
      chunk.copyTo(data);
      const key = chunk.type === "key";
      stats.encoded++;
      if (key) stats.keyframes++;
      for (const part of packetizeFrame(frame, key, data, session.client.maxMediaPayload)) {
        try {
          session.sendMedia(track, seq++, chunk.timestamp, part);
          stats.packets++;
          stats.bytes += part.length;
        } catch (err) {
          stats.errors++;
          stats.lastError = String(err);
        }
      }
      frame++;
    },
    error: (err) => {
      stats.errors++;
      stats.lastError = String(err);
    },
  });
  encoder.configure({ codec: CODEC, width: WIDTH, height: HEIGHT, bitrate: BITRATE, framerate: FPS, latencyMode: "realtime" });
  let n = 0;
  const timer = setInterval(() => {
    if (encoder.state !== "configured") return;
    // Real time: a frame the encoder cannot take now is skipped, not queued.
    if (encoder.encodeQueueSize > 2) {
      stats.skipped++;
      return;
    }
    if (camera) ctx.drawImage(camera, 0, 0, WIDTH, HEIGHT);
    else drawSynthetic(ctx, n);
    const captureUs = nowUs();
    drawStamp(ctx, captureUs);
    const videoFrame = new VideoFrame(canvas, { timestamp: captureUs });
    encoder.encode(videoFrame, { keyFrame: n % KEY_EVERY === 0 });
    videoFrame.close();
    stats.captured++;
    n++;
  }, 1000 / FPS);
  return {
    track,
    stats,
    stop() {
      clearInterval(timer);
      if (encoder.state !== "closed") encoder.close();
      camera?.srcObject?.getTracks().forEach((t) => t.stop());
    },
  };
}

/**
 * Decodes the first video track of the channel into `canvas`. Returns
 * { stats, samples } where samples are [arrival ms, latency ms, lost
 * packets so far] for the chart; latency is capture → decoded picture.
 * `dropEvery` n > 0 discards every n-th datagram on arrival (simulated
 * network loss, counted as lost, to watch keyframe recovery).
 */
export function startSubscriber(session, canvas, { dropEvery = 0 } = {}) {
  canvas.width = WIDTH;
  canvas.height = HEIGHT;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const stats = {
    packets: 0, lostPackets: 0, frames: 0, droppedFrames: 0, decoded: 0, verified: 0, mismatched: 0,
    keyframes: 0, errors: 0, lastError: "", track: null, latencyMs: [], simulatedDrops: 0,
  };
  let arrivals = 0;
  const samples = [];
  let videoTrack;
  let lastSeq;
  let assembler;
  const decoder = new VideoDecoder({
    output: (frame) => {
      const latencyMs = (nowUs() - frame.timestamp) / 1000;
      ctx.drawImage(frame, 0, 0, WIDTH, HEIGHT);
      const expected = Math.floor(frame.timestamp / 1000) & 0xffff;
      if (readStamp(ctx) === expected) stats.verified++;
      else stats.mismatched++;
      frame.close();
      stats.decoded++;
      stats.latencyMs.push(latencyMs);
      if (stats.latencyMs.length > 10_000) stats.latencyMs.shift();
      samples.push([performance.now(), latencyMs, stats.lostPackets]);
    },
    error: (err) => {
      stats.errors++;
      stats.lastError = String(err);
    },
  });
  decoder.configure({ codec: CODEC, optimizeForLatency: true });
  session.on("track-added", ({ track }) => {
    if (videoTrack === undefined && track.kind === "video") {
      videoTrack = track.track;
      stats.track = `${track.publisher}/${track.name}`;
      assembler = new FrameAssembler();
      lastSeq = undefined;
    }
  });
  session.on("track-removed", ({ track }) => {
    if (track === videoTrack) videoTrack = undefined;
  });
  session.on("media", ({ header, payload }) => {
    if (header.track !== videoTrack) return;
    if (dropEvery > 0 && ++arrivals % dropEvery === 0) {
      stats.simulatedDrops++;
      return;
    }
    stats.packets++;
    if (lastSeq !== undefined && header.seq > lastSeq + 1n) stats.lostPackets += Number(header.seq - lastSeq - 1n);
    if (lastSeq === undefined || header.seq > lastSeq) lastSeq = header.seq;
    for (const frame of assembler.push(payload, header.timestampUs)) {
      if (decoder.state !== "configured") break;
      if (frame.key) stats.keyframes++;
      decoder.decode(new EncodedVideoChunk({ type: frame.key ? "key" : "delta", timestamp: Number(frame.timestampUs), data: frame.data }));
    }
    stats.frames = assembler.stats.frames;
    stats.droppedFrames = assembler.stats.dropped;
  });
  return { stats, samples, stop: () => decoder.state !== "closed" && decoder.close() };
}

/** Draws the last 10 s of latency (line, left scale) and loss (red bars, right scale). */
export function drawChart(canvas, samples, windowMs = 10_000) {
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  const now = performance.now();
  const cutoff = now - windowMs;
  while (samples.length && samples[0][0] < cutoff) samples.shift();
  ctx.clearRect(0, 0, w, h);
  const max = Math.max(10, ...samples.map(([, ms]) => ms));
  // Loss: packets lost per second, as bars.
  const perSecond = new Map();
  for (let i = 1; i < samples.length; i++) {
    const second = Math.floor((samples[i][0] - cutoff) / 1000);
    perSecond.set(second, (perSecond.get(second) ?? 0) + (samples[i][2] - samples[i - 1][2]));
  }
  const maxLoss = Math.max(1, ...perSecond.values());
  ctx.fillStyle = "rgba(200, 0, 0, 0.5)";
  for (const [second, lost] of perSecond) {
    const bar = (lost / maxLoss) * (h - 20);
    ctx.fillRect((second / (windowMs / 1000)) * w + 2, h - bar, w / (windowMs / 1000) - 4, bar);
  }
  ctx.strokeStyle = "#06c";
  ctx.lineWidth = 2;
  ctx.beginPath();
  samples.forEach(([t, ms], i) => {
    const x = ((t - cutoff) / windowMs) * w;
    const y = h - (ms / max) * (h - 20);
    i === 0 ? ctx.moveTo(x, y) : ctx.lineTo(x, y);
  });
  ctx.stroke();
  ctx.fillStyle = "#333";
  ctx.font = "12px sans-serif";
  ctx.fillText(`latency (blue, capture → decoded): 0–${max.toFixed(0)} ms`, 6, 14);
  ctx.fillText(`lost packets/s (red): 0–${maxLoss}`, w - 170, 14);
}

/** p50 / p99 of a list of numbers. */
export function percentiles(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? 0;
  return { p50: at(0.5), p99: at(0.99) };
}
