// Takes the README's demo screenshot in headless Chromium (Debian's
// /usr/bin/chromium) against the example fleet: `georelay serve --all`
// must be running with the repository's regions.toml and `npm run demo`
// serving the page. One tab publishes WebCodecs VP8 of the synthetic canvas
// at eu-fra-1, a second tab subscribes and decodes; the two views are
// captured side by side in one picture.
// Run from sdk/js: node demo/screenshot.mjs [out.png]
import { SignJWT } from "jose";
import { launchChromium } from "../e2e/harness.mjs";

const out = process.argv[2] ?? "../../docs/img/demo.png";
const token = (role) =>
  new SignJWT({ channel: "demo-room", role })
    .setProtectedHeader({ alg: "HS256" })
    .setIssuer("acme-health")
    .setSubject(`demo-${role}`)
    .setAudience("georelay")
    .setExpirationTime("10m")
    .sign(new TextEncoder().encode("dev-secret-acme-health-change-me"));

const browser = await launchChromium();
try {
  const open = async (role) => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1000, height: 1000 });
    page.on("console", (msg) => console.error(`[${role}] ${msg.text()}`));
    const params = new URLSearchParams({
      node: "eu-fra-1", app: "acme-health", channel: "demo-room", token: await token(role), role, auto: "1",
    });
    await page.goto(`http://127.0.0.1:8080/demo/?${params}`);
    await page.waitForFunction(() => window.demoReady === true, { timeout: 15000, polling: 100 });
    return page;
  };
  const subscriber = await open("subscribe");
  const publisher = await open("publish");
  // Until the subscriber has decoded frames for the chart to show.
  await subscriber.waitForFunction(() => window.demo.subscriber?.stats.decoded > 150, { timeout: 20000, polling: 100 });
  const views = [];
  for (const page of [publisher, subscriber]) {
    await page.bringToFront();
    views.push(await page.screenshot({ encoding: "base64" }));
  }
  const sheet = await browser.newPage();
  await sheet.setViewport({ width: 2000, height: 1000 });
  await sheet.setContent(
    `<body style="margin:0;display:flex">${views.map((b) => `<img style="width:1000px;border-right:2px solid #888" src="data:image/png;base64,${b}">`).join("")}</body>`,
  );
  await sheet.screenshot({ path: out });
  console.log(`wrote ${out}: ${await subscriber.$eval("#decision", (el) => el.textContent)} | ${await subscriber.$eval("#stats", (el) => el.textContent)}`);
} finally {
  await browser.close();
}
