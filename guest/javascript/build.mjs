// componentize-js, called directly (`jco componentize` 1.35 failed on Node 20
// here). The plugin world is a wasi:cli command; it needs no HTTP.
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";

const [source, wit, out] = process.argv.slice(2);
const { component } = await componentize({
  sourcePath: source,
  witPath: wit,
  worldName: "plugin",
  disableFeatures: ["http", "fetch-event"],
});
await writeFile(out, component);
