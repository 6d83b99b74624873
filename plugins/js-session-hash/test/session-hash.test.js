// Native unit tests of the plugin's logic: `npm test` (Node's test runner,
// no host needed; see test/host-stub.mjs).
import { test } from "node:test";
import assert from "node:assert/strict";

import { balancer, fnv1a, parseConfig, rendezvous } from "../session-hash.js";

const endpoints = [0, 1, 2].map((id) => ({ id, address: `http://10.0.0.${id}:80`, weight: 1, labels: [] }));
const stats = (ids) => ids.map((id) => ({ id, inFlight: 0, ewmaLatencyUs: 0n, successRate: 1, load: undefined }));
const request = (headers) => ({ method: "GET", authority: "a", path: "/", headers, clientAddr: "127.0.0.1:1" });

test("fnv1a matches the published test vectors", () => {
  assert.equal(fnv1a(""), 0x811c9dc5);
  assert.equal(fnv1a("a"), 0xe40c292c);
  assert.equal(fnv1a("foobar"), 0xbf9cf968);
});

test("a session keeps its instance, and only a removed instance's sessions move", () => {
  const addresses = new Map(endpoints.map((e) => [e.id, e.address]));
  const before = new Map();
  for (let s = 0; s < 50; s++) before.set(s, rendezvous(`s${s}`, [0, 1, 2], addresses)[0]);
  for (let s = 0; s < 50; s++) {
    const after = rendezvous(`s${s}`, [0, 2], addresses)[0];
    if (before.get(s) !== 1) assert.equal(after, before.get(s), `session s${s} moved`);
  }
});

test("the export ranks by the configured header, round robin without it", () => {
  assert.deepEqual(balancer.configure('{"header":"X-User"}'), { requestHeaders: ["x-user"], observe: false });
  balancer.update(1n, endpoints);
  const first = balancer.pick(request([["x-user", "alice"]]), stats([0, 1, 2]), 3);
  assert.equal(first.length, 3);
  assert.deepEqual(balancer.pick(request([["x-user", "alice"]]), stats([0, 1, 2]), 1), first.slice(0, 1));
  const spread = [0, 1, 2].map(() => balancer.pick(request([]), stats([0, 1, 2]), 1)[0]);
  assert.deepEqual([...spread].sort(), [0, 1, 2]);
});

test("config errors name the key, as a WIT error value", () => {
  assert.throws(() => parseConfig('{"hdr":"x"}'), /unknown key `hdr`/);
  assert.throws(() => balancer.configure('{"header":""}'), (e) => e.tag === "invalid-config" && /header/.test(e.val));
});
