//! MCP routes: Switchyard as an MCP gateway over the streamable HTTP
//! transport (MCP revisions 2025-03-26 and 2025-06-18, with sessions; and
//! the 2026-07-28 revision's `server/discover`, session-less requests and
//! `Mcp-Method`/`Mcp-Name` headers).
//!
//! The gateway is an MCP server to its clients and an MCP client of its
//! targets (pools; any strategy, health check and breaker, and their
//! bulkhead: see **Calls**). What each JSON-RPC message does:
//!
//! | client sends | the gateway |
//! |---|---|
//! | `initialize` | asks every target (a balancer-chosen instance each), merges the results ([`merge::merge_initialize`]) and issues a sealed session id (`session`) that records, per target, the instance and the session it issued |
//! | `server/discover` | asks every target, merges as above; no session |
//! | `ping` | answers itself |
//! | `tools/list`, `prompts/list`, `resources/list`, `resources/templates/list` | asks every target (the targets named in a composite cursor, for a next page) and merges the pages ([`merge::merge_list`]): names prefixed per `prefix`, `nextCursor` combined |
//! | `tools/call`, `prompts/get`, `completion/complete` (prompt refs) | the one target that owns the name, the prefix removed |
//! | `resources/read`, `resources/subscribe`, `resources/unsubscribe`, `completion/complete` (resource refs) | the target that listed the URI (or a template it starts with) |
//! | `logging/setLevel` and notifications | every target of the session |
//! | a response (to a server's request) | the target whose request it answers (the gateway's id for it says which) |
//! | anything else | the target, with one; "method not found" with several |
//!
//! GET opens the session's notification stream: the targets' GET streams
//! merged into one (a target that offers none is left out; event ids are
//! `TARGET.ID`, so `Last-Event-ID` resumes the right target's stream).
//! DELETE ends every upstream session and the gateway's.
//!
//! A target's answer may be JSON or an SSE stream; a stream is relayed as
//! it comes, each server-to-client request (sampling, elicitation, roots)
//! given an id `TARGET:ID` that routes the client's answer back.
//!
//! **Sessions.** A request of a session goes to the instance that holds
//! the target's session. When that instance has left its pool, cannot be
//! reached, or answers 404, the client gets HTTP 404 with a JSON-RPC
//! error saying to initialize again — never a silent move to an instance
//! that does not know the session (the MCP spec's "session expired").
//!
//! **Calls.** A `tools/call` is sent once, unless the tool is idempotent
//! (its annotations say `readOnlyHint` or `idempotentHint`, or the route's
//! `tools` table says so): then a failure may be retried, on another
//! instance when the target keeps no session (a call of a session pinned
//! to one instance has no other: only a failover plugin that allows the
//! same instance retries it). The failover step is a pool route's (`Pool::after_failure`): the
//! target pool's failover policy decides — the built-in retries the
//! failures its `retry.retry_on` lists, a failover plugin keeps its own
//! schedule (it sees `Mcp-Method`/`Mcp-Name`) — within the pool's attempt
//! cap (`retry.retries`, default 1), retry budget, backoff and the call's
//! deadline. The idempotence is the policy's input: a call that is not
//! idempotent is not replayable, so no policy can send it twice.
//! A call that never reached an instance (no connection) may be tried on
//! another either way, as an attempt of its own. A tool with `fuse` is asked of `count` instances
//! at once and their results resolved by the built-in resolver
//! ([`crate::fusion`]), with provenance in the result's `_meta`. A call is
//! bounded by `idle_timeout_ms` between events (and to the answer's head)
//! and by `call_timeout_ms` in all, not by the pool's `request_timeout_ms`.
//! Every POST and DELETE to a target (lists, calls, fused calls, session
//! set-up) holds a slot of the target pool's bulkhead until its answer is
//! read or its stream ends, as a request of a pool route does; one shed is
//! answered with the same reason (`pool … is at capacity: …`) and is not
//! retried. The session's standing GET stream takes no slot.
//!
//! | file | holds |
//! |---|---|
//! | `route` | [`McpRoute`]: its targets, tools and catalog; a client request served: the session opened, each message dispatched by method |
//! | `relay` | a call to one target with its pool's failover step, asking every target, notifications, the client's answers to servers |
//! | `lists` | lists asked of every target and merged, paged with composite cursors |
//! | `fuse` | a fused tool call: `count` instances asked, their results resolved |
//! | `stream` | a target's event stream relayed, or held for a retry |
//! | `upstream` | one request to an instance of a target's pool, through the pool's one upstream call |
//! | [`merge`] | how names, results and `initialize` answers are merged |
//! | `session` | sealed session ids ([`SessionKeys`]) and the sessions seen |
//! | `rpc` | JSON-RPC 2.0: error codes and the responses the gateway makes |

mod fuse;
mod guard;
mod lists;
pub mod merge;
mod relay;
mod route;
mod rpc;
mod session;
mod stream;
mod upstream;

pub use guard::{Guards, McpGuard};
use route::Client;
pub use route::McpRoute;
use rpc::{
    FORBIDDEN, INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, RATE_LIMITED, outbound, rpc_error,
    rpc_result, session_gone,
};
pub use session::{KEYS_ENV, SessionKeys, Sessions, SessionsSeen};
