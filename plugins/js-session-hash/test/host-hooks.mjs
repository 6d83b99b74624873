// Module resolution hook: `switchyard:plugin/host@...` is a stub module.
const STUB = "export const logged = []; export function log(level, message) { logged.push([level, message]); }";

export async function resolve(specifier, context, next) {
  if (specifier.startsWith("switchyard:plugin/host")) {
    return { url: `data:text/javascript,${encodeURIComponent(STUB)}`, shortCircuit: true };
  }
  return next(specifier, context);
}
