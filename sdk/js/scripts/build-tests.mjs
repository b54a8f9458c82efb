// Bundles each test/*.test.ts into build/test/ for `node --test`.
import { readdirSync, rmSync } from "node:fs";
import { build } from "esbuild";

rmSync("build", { recursive: true, force: true });
const entryPoints = readdirSync("test")
  .filter((name) => name.endsWith(".test.ts"))
  .map((name) => `test/${name}`);
await build({
  entryPoints,
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  outdir: "build/test",
  packages: "external",
  logLevel: "warning",
});
