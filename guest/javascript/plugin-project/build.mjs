// Bundles a plugin's module with its npm imports (lockfile-guest) into one
// ES module with rolldown, since componentize-js loads a single file and
// resolves no package names, then makes it a component with componentize-js,
// called directly (`jco componentize` 1.35 failed on Node 20 here). The WIT
// imports (`wasi:...`, `lockfile:...`) stay imports: componentize-js binds
// them. The plugin world is a wasi:cli command; it needs no HTTP.
// Usage: node build.mjs APP.js WIT_DIR OUT.wasm
import { componentize } from "@bytecodealliance/componentize-js";
import { rolldown } from "rolldown";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [source, wit, out] = process.argv.slice(2);
const bundle = await rolldown({ input: source, external: [/^wasi:/, /^lockfile:/], platform: "neutral" });
const { output } = await bundle.generate({ format: "esm" });
const scratch = await mkdtemp(join(tmpdir(), "lockfile-plugin-"));
try {
  const bundled = join(scratch, "plugin.js");
  await writeFile(bundled, output[0].code);
  const { component } = await componentize({
    sourcePath: bundled,
    witPath: wit,
    worldName: "plugin",
    disableFeatures: ["http", "fetch-event"],
  });
  await writeFile(out, component);
} finally {
  await rm(scratch, { recursive: true, force: true });
}
