// js-session-hash: session affinity by rendezvous hashing, as a Switchyard
// balancer in JavaScript.
//
// Requests carrying the same session key (a request header, `x-session` by
// default) go to the same instance, and when instances come and go only the
// sessions of the instances that changed move. The algorithm is rendezvous
// (highest random weight) hashing, Thaler & Ravishankar 1998: every
// candidate scores hash(key, address) and the ranking is by score, highest
// first — so the runner-up is where the session goes when its instance is
// filtered out (unhealthy, draining, already tried). The hash is 32-bit
// FNV-1a (Fowler, Noll, Vo) over key, a NUL byte and the address.
//
// A request without the header is spread round robin.
//
// Config (JSON, from the pool's `strategy.config` table):
//
// | key | type | default | meaning |
// |---|---|---|---|
// | `header` | string | `"x-session"` | request header holding the session key (any case) |

import { log } from "switchyard:plugin/host@0.1.3";

/** 32-bit FNV-1a of the UTF-16 code units of `text` (ASCII keys hash as bytes). */
export function fnv1a(text, hash = 0x811c9dc5) {
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i) & 0xff;
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash >>> 0;
}

/** Candidate ids ranked for `key`: highest rendezvous score first (ties: lower id). */
export function rendezvous(key, candidates, addresses) {
  const seed = fnv1a("\0", fnv1a(key));
  return candidates
    .map((id) => ({ id, score: fnv1a(addresses.get(id) ?? String(id), seed) }))
    .sort((a, b) => b.score - a.score || a.id - b.id)
    .map((c) => c.id);
}

/** The `header` of a config text; throws a message naming the problem. */
export function parseConfig(text) {
  const config = JSON.parse(text || "{}");
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw new Error("config must be a JSON object");
  }
  for (const key of Object.keys(config)) {
    if (key !== "header") throw new Error(`unknown key \`${key}\``);
  }
  const header = config.header ?? "x-session";
  if (typeof header !== "string" || header === "") {
    throw new Error("`header` must be a non-empty string");
  }
  return header.toLowerCase();
}

let header = "x-session";
let addresses = new Map();
let cursor = 0;

export const balancer = {
  configure(config) {
    try {
      header = parseConfig(config);
    } catch (e) {
      // A WIT `result` error: the variant case and its payload.
      throw { tag: "invalid-config", val: `js-session-hash: ${e.message}` };
    }
    log("info", `js-session-hash configured: header ${header}`);
    return { requestHeaders: [header], observe: false };
  },

  update(_version, endpoints) {
    addresses = new Map(endpoints.map((e) => [e.id, e.address]));
  },

  pick(request, candidates, limit) {
    if (candidates.length === 0) throw { tag: "no-candidates" };
    const ids = candidates.map((c) => c.id);
    const session = request.headers.find(([name]) => name === header);
    let ranked;
    if (session) {
      ranked = rendezvous(session[1], ids, addresses);
    } else {
      const start = cursor++ % ids.length;
      ranked = ids.slice(start).concat(ids.slice(0, start));
    }
    return ranked.slice(0, limit);
  },

  observe(_id, _success, _latencyUs) {},
};
