// Serves the demo page and the built SDK on http://127.0.0.1:8080/demo/
// (a secure context for WebTransport and WebCodecs). Run from sdk/js:
// npm run demo (PORT=... for another port).
import { serveStatic } from "../e2e/harness.mjs";

const port = Number(process.env.PORT ?? 8080);
await serveStatic(port);
console.log(`demo on http://127.0.0.1:${port}/demo/`);
