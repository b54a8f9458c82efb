// Takes the README's demo screenshot in headless Chromium (Debian's
// /usr/bin/chromium) against the example fleet: `georelay serve --all`
// must be running with the repository's regions.toml and `npm run demo`
// serving the page. One tab publishes the synthetic canvas stream at
// eu-fra-1, a second tab subscribes; the second tab is captured.
// Run from sdk/js: node demo/screenshot.mjs [out.png]
import { SignJWT } from "jose";
import puppeteer from "puppeteer-core";

const out = process.argv[2] ?? "../../docs/img/demo.png";
const token = (role) =>
  new SignJWT({ channel: "demo-room", role })
    .setProtectedHeader({ alg: "HS256" })
    .setIssuer("acme-health")
    .setSubject(`demo-${role}`)
    .setAudience("georelay")
    .setExpirationTime("10m")
    .sign(new TextEncoder().encode("dev-secret-acme-health-change-me"));

const browser = await puppeteer.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  headless: true,
  args: ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1200,900"],
});
try {
  const open = async (role) => {
    const page = await browser.newPage();
    await page.setViewport({ width: 1200, height: 900 });
    page.on("console", (msg) => console.error(`[${role}] ${msg.text()}`));
    await page.goto("http://127.0.0.1:8080/demo/");
    await page.waitForFunction(() => document.querySelectorAll("#node option").length > 0);
    await page.select("#node", "eu-fra-1");
    await page.$eval("#app", (el) => (el.value = "acme-health"));
    await page.$eval("#channel", (el) => (el.value = "demo-room"));
    await page.$eval("#token", (el, t) => (el.value = t), await token(role));
    await page.click("#connect");
    await page.waitForFunction(() => document.querySelector("#decision").className !== "", { timeout: 10000 });
    return page;
  };
  const publisher = await open("publish");
  await publisher.click("#publish");
  const subscriber = await open("subscribe");
  await subscriber.click("#subscribe");
  // Until the chart has samples (the stats line reports received frames).
  await subscriber.waitForFunction(() => /[1-9]/.test(document.querySelector("#stats").textContent), { timeout: 15000 });
  await new Promise((resolve) => setTimeout(resolve, 3000)); // let the chart fill for the picture
  await subscriber.screenshot({ path: out });
  console.log(`wrote ${out}: ${await subscriber.$eval("#decision", (el) => el.textContent)} | ${await subscriber.$eval("#stats", (el) => el.textContent)}`);
} finally {
  await browser.close();
}
