// The video scenario of e2e/fleet.mjs: the demo page itself (demo/), in two
// tabs of headless Chromium against the running fleet. One tab publishes
// WebCodecs VP8 of the synthetic canvas animation, the other subscribes,
// reassembles, decodes with VideoDecoder and draws; the decoded pictures
// are checked against the capture time stamped into their pixels.
//
// Expectations (per transport): both tabs admitted by `node`, the
// subscriber's after following GEOFENCE_REDIRECT when it dials a node the
// app may not use (`subscriberDials`), as the page's decision line shows;
// at least MIN_DECODED frames decoded in SECONDS seconds, of which at
// least 95% verified; no encoder or decoder error. With `drop`, the
// subscriber discards every drop-th datagram: frames are skipped to the
// next keyframe, the rest decode (at least MIN_DECODED_WITH_LOSS).

export const SECONDS = 5;
export const MIN_DECODED = 90;
/** With 1 in 200 datagrams dropped (about 0.7 a second, one per keyframe interval). */
export const MIN_DECODED_WITH_LOSS = 30;

/** The demo page URL for one tab. */
export function demoUrl(base, fleetRows, { node, app, channel, token, transport, role, drop = 0 }) {
  const params = new URLSearchParams({ fleet: JSON.stringify(fleetRows), node, app, channel, token, transport, role, drop: String(drop), source: "synthetic", auto: "1" });
  return `${base}/demo/index.html?${params}`;
}

async function openTab(browser, url, label) {
  const page = await browser.newPage();
  await page.setViewport({ width: 1100, height: 1250 });
  page.on("console", (msg) => console.error(`[${label}] ${msg.text()}`));
  page.on("pageerror", (err) => console.error(`[${label}] ${err}`));
  await page.goto(url);
  // Polling, not requestAnimationFrame: a background tab has no frames.
  await page.waitForFunction(() => window.demoReady === true, { timeout: 15000, polling: 100 });
  return page;
}

/**
 * Runs publisher and subscriber tabs over `transport` (`token(channel,
 * role)` mints their tokens); returns the figures and pushes what failed onto `failures`. `screenshot` (optional)
 * is called with both pages before they close.
 */
export async function runVideo({ browser, base, fleetRows, node, subscriberDials = node, app, transport, drop = 0, token, failures, screenshot }) {
  const channel = `video-${transport}-${drop}`;
  const label = drop ? `${transport}, 1 in ${drop} datagrams dropped` : transport;
  const tokens = { publish: await token(channel, "publish"), subscribe: await token(channel, "subscribe") };
  const common = { node, app, channel, transport };
  const subscriber = await openTab(
    browser,
    demoUrl(base, fleetRows, { ...common, node: subscriberDials, role: "subscribe", token: tokens.subscribe, drop }),
    `sub ${transport}`,
  );
  const publisher = await openTab(browser, demoUrl(base, fleetRows, { ...common, role: "publish", token: tokens.publish }), `pub ${transport}`);
  try {
    try {
      await subscriber.waitForFunction(() => window.demo.subscriber?.stats.decoded > 0, { timeout: 15000, polling: 100 });
    } catch (err) {
      const state = async (page) => page.evaluate(() => ({
        decision: document.querySelector("#decision").textContent,
        publisher: document.querySelector("#pub-stats").textContent,
        subscriber: document.querySelector("#stats").textContent,
      }));
      throw new Error(`video ${transport}: no frame decoded: ${JSON.stringify({ publisher: await state(publisher), subscriber: await state(subscriber) })}`, { cause: err });
    }
    const start = await subscriber.evaluate(() => ({ decoded: window.demo.subscriber.stats.decoded, at: performance.now() }));
    await subscriber.waitForFunction((at, ms) => performance.now() - at >= ms, { timeout: SECONDS * 1000 + 10000, polling: 100 }, start.at, SECONDS * 1000);
    const sub = await subscriber.evaluate(() => {
      const { latencyMs, ...stats } = window.demo.subscriber.stats;
      const sorted = [...latencyMs].sort((a, b) => a - b);
      const at = (p) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
      return { decision: window.demo.decision, ...stats, latencyMs: { p50: at(0.5), p99: at(0.99) }, shown: document.querySelector("#stats").textContent };
    });
    const pub = await publisher.evaluate(() => ({ decision: window.demo.decision, ...window.demo.publisher.stats }));
    const decodedInWindow = sub.decoded - start.decoded;
    const result = {
      transport,
      publisher: pub,
      subscriber: sub,
      decodedInWindow,
      decodedFps: decodedInWindow / SECONDS,
      packetLoss: sub.lostPackets / Math.max(1, sub.packets + sub.lostPackets),
    };
    const redirects = { publisher: 0, subscriber: subscriberDials === node ? 0 : 1 };
    for (const [role, decision] of [["publisher", pub.decision], ["subscriber", sub.decision]]) {
      const expected = decision?.admitted && decision.node === node && decision.transport === transport
        && decision.redirects === redirects[role];
      if (!expected) failures.push(`video ${label}: ${role} decision ${JSON.stringify(decision)}`);
    }
    // With simulated loss, frames after a lost datagram wait for the next
    // keyframe: fewer are decoded, none fails to decode.
    const minDecoded = drop ? MIN_DECODED_WITH_LOSS : MIN_DECODED;
    if (decodedInWindow < minDecoded) failures.push(`video ${label}: ${decodedInWindow} frames decoded in ${SECONDS} s`);
    if (drop && (sub.droppedFrames === 0 || sub.lostPackets < sub.simulatedDrops)) {
      failures.push(`video ${label}: no frame skipped to a keyframe (${JSON.stringify(sub)})`);
    }
    if (sub.verified < 0.95 * sub.decoded) failures.push(`video ${label}: ${sub.verified} of ${sub.decoded} decoded frames verified`);
    if (pub.errors || sub.errors) failures.push(`video ${label}: errors ${pub.lastError} ${sub.lastError}`);
    if (screenshot) await screenshot(publisher, subscriber);
    return result;
  } finally {
    await publisher.close();
    await subscriber.close();
  }
}

/** The geofence decision the demo page shows for one connection attempt. */
export async function demoDecision({ browser, base, fleetRows, node, app, channel, token, transport }) {
  const page = await openTab(browser, demoUrl(base, fleetRows, { node, app, channel, token, transport, role: "subscribe" }), `decision ${app}`);
  try {
    await page.waitForFunction(() => window.demo.decision !== null, { timeout: 15000, polling: 100 });
    return await page.evaluate(() => ({ ...window.demo.decision, shown: document.querySelector("#decision").textContent }));
  } finally {
    await page.close();
  }
}
