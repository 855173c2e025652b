// Bundles the page's script (src/app.ts and the contextd client's browser entry) into dist/.
import { build } from "esbuild";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));

/** Builds dist/app.js; resolves when it is written. */
export async function bundle() {
  await build({
    entryPoints: [resolve(here, "src/app.ts")],
    outfile: resolve(here, "dist/app.js"),
    bundle: true,
    format: "esm",
    target: "es2022",
    sourcemap: true,
    logLevel: "warning",
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await bundle();
