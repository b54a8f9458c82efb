// Serves the demo page and the built SDK on http://127.0.0.1:8080/demo/
// (a secure context for WebTransport). Run from sdk/js: npm run demo
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";

const root = fileURLToPath(new URL("..", import.meta.url));
const types = { ".html": "text/html", ".js": "text/javascript", ".map": "application/json" };
const port = Number(process.env.PORT ?? 8080);
createServer((req, res) => {
  let path = normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^\/+/, "");
  if (path === "" || path === "demo") path = "demo/index.html";
  if (path.endsWith("/")) path += "index.html";
  if (!/^(dist|demo)\//.test(path)) return res.writeHead(404).end();
  try {
    res.writeHead(200, { "content-type": types[extname(path)] ?? "application/octet-stream" });
    res.end(readFileSync(join(root, path)));
  } catch {
    res.writeHead(404).end();
  }
}).listen(port, "127.0.0.1", () => console.log(`demo on http://127.0.0.1:${port}/demo/`));
