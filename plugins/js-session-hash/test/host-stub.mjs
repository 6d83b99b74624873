// Lets `node --test` import a plugin module natively: the component's
// `switchyard:plugin/...` imports resolve to a stub `log` that records.
import { register } from "node:module";

register("./host-hooks.mjs", import.meta.url);
