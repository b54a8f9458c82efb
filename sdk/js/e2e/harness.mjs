// What the headless-Chromium scripts share (e2e/run.mjs, e2e/fleet.mjs,
// demo/screenshot.mjs): Debian's /usr/bin/chromium launched by
// puppeteer-core (nothing downloads a browser), and a static server for
// the built SDK and the pages.
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import puppeteer from "puppeteer-core";

/** sdk/js, the root of what is served. */
export const root = fileURLToPath(new URL("..", import.meta.url));

/**
 * Launches headless Chromium with a throwaway profile in `userDataDir`
 * (none: puppeteer's own) plus `extraArgs`. Background tabs keep their
 * timers (the video scenario's publisher tab runs in the background).
 */
export function launchChromium({ userDataDir, extraArgs = [] } = {}) {
  return puppeteer.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless=new",
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-background-timer-throttling",
      "--disable-renderer-backgrounding",
      "--disable-backgrounding-occluded-windows",
      ...(userDataDir ? [`--user-data-dir=${userDataDir}`] : []),
      ...extraArgs,
    ],
  });
}

const TYPES = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };

/**
 * Serves dist/, e2e/ and demo/ of sdk/js on 127.0.0.1 (`port` 0: any);
 * resolves to the listening server.
 */
export function serveStatic(port = 0) {
  const server = createServer((req, res) => {
    let path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^\/+/, "");
    if (path === "" || path === "demo") path = "demo/index.html";
    if (path.endsWith("/")) path += "index.html";
    if (!/^(dist|e2e|demo)\//.test(path)) {
      res.writeHead(404).end();
      return;
    }
    try {
      const body = readFileSync(join(root, path));
      res.writeHead(200, { "content-type": TYPES[extname(path)] ?? "application/octet-stream" }).end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve) => server.listen(port, "127.0.0.1", () => resolve(server)));
}
