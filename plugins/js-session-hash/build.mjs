// Builds a Switchyard plugin component from a JavaScript module with
// componentize-js (StarlingMonkey): `node build.mjs SOURCE OUT [WORLD]`.
// The WIT is the repository's `wit/`; WORLD defaults to `balancer-plugin`.
// Every optional runtime feature is left out, so the component imports only
// `switchyard:plugin` interfaces (no WASI clocks, random, stdio or HTTP).
import { componentize } from "@bytecodealliance/componentize-js";
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";

const [source, out, world = "balancer-plugin"] = process.argv.slice(2);
if (!source || !out) {
  console.error("usage: node build.mjs SOURCE OUT [WORLD]");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: source,
  witPath: fileURLToPath(new URL("../../wit", import.meta.url)),
  worldName: world,
  disableFeatures: ["http", "fetch-event", "stdio", "clocks", "random"],
});
await writeFile(out, component);
console.log(`${out}: ${component.length} bytes`);
