// js-prompt-guard: a Switchyard filter in JavaScript that refuses requests
// whose body contains a listed phrase — a guard in front of an inference or
// agent route (phrases of known prompt injections, words a tenant may not
// send), decided at the gateway before any instance is asked.
//
// It asks the host for the body's first `body_bytes` bytes (the host reads
// them ahead and sends the body on unchanged), decodes them as UTF-8 and
// looks for each phrase, ignoring case. A refused request gets `status` and
// a JSON body `{"error":"prompt_refused","phrase":"…"}`; the others go on
// with `x-prompt-guard: passed`, or `partial` when the body was longer than
// what was read (only its first bytes were checked).
//
// Config (JSON, from the filter's `plugin.config` table):
//
// | key | type | default | meaning |
// |---|---|---|---|
// | `phrases` | array of strings | `DEFAULT_PHRASES` | phrases refused, any case |
// | `body_bytes` | integer | 65536 | body bytes read, 1..=1048576 |
// | `status` | integer | 403 | status of a refusal, 400..=599 |

import { log } from "switchyard:plugin/host@0.1.3";

/** The phrases refused when the config names none. */
export const DEFAULT_PHRASES = [
  "ignore previous instructions",
  "ignore all previous instructions",
  "disregard previous instructions",
];

/** The config of `text`; throws a message naming the key at fault. */
export function parseConfig(text) {
  const config = JSON.parse(text || "{}");
  if (config === null || typeof config !== "object" || Array.isArray(config)) {
    throw new Error("config must be a JSON object");
  }
  for (const key of Object.keys(config)) {
    if (!["phrases", "body_bytes", "status"].includes(key)) {
      throw new Error(`unknown key \`${key}\``);
    }
  }
  const { phrases = DEFAULT_PHRASES, body_bytes: bodyBytes = 65536, status = 403 } = config;
  if (!Array.isArray(phrases) || phrases.length === 0
    || !phrases.every((p) => typeof p === "string" && p !== "")) {
    throw new Error("`phrases` must be a non-empty list of non-empty strings");
  }
  if (!Number.isInteger(bodyBytes) || bodyBytes < 1 || bodyBytes > 1048576) {
    throw new Error("`body_bytes` must be an integer in 1..=1048576");
  }
  if (!Number.isInteger(status) || status < 400 || status > 599) {
    throw new Error("`status` must be an integer in 400..=599");
  }
  return { phrases: phrases.map((p) => p.toLowerCase()), bodyBytes, status };
}

/** The first of `phrases` (lower case) in `bytes` (UTF-8), or undefined. */
export function findPhrase(bytes, phrases) {
  const text = new TextDecoder().decode(bytes).toLowerCase();
  return phrases.find((p) => text.includes(p));
}

let settings = { phrases: [], bodyBytes: 0, status: 403 };

export const filter = {
  configure(config) {
    try {
      settings = parseConfig(config);
    } catch (e) {
      // A WIT `result` error: the variant case and its payload.
      throw { tag: "invalid-config", val: `js-prompt-guard: ${e.message}` };
    }
    log("info", `js-prompt-guard configured: ${settings.phrases.length} phrases`);
    return {
      requestHeaders: [],
      onResponse: false,
      responseHeaders: [],
      mcpCalls: false,
      mcpResults: false,
      requestBodyBytes: settings.bodyBytes,
      responseBodyBytes: 0,
    };
  },

  onRequest(request) {
    const body = request.body;
    const phrase = body ? findPhrase(body.bytes, settings.phrases) : undefined;
    if (phrase !== undefined) {
      return {
        tag: "respond",
        val: {
          status: settings.status,
          headers: [["content-type", "application/json"]],
          body: new TextEncoder().encode(JSON.stringify({ error: "prompt_refused", phrase })),
        },
      };
    }
    const checked = !body || body.complete ? "passed" : "partial";
    return {
      tag: "change",
      val: { path: undefined, setHeaders: [["x-prompt-guard", checked]], removeHeaders: [] },
    };
  },

  onResponse(_request, _response) {
    return { tag: "continue" };
  },

  onMcpCall(_call) {
    return { tag: "continue" };
  },

  onMcpResult(_call, _result) {
    return { tag: "continue" };
  },
};
