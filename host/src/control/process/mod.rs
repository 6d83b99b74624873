//! Managed upstreams: the processes behind a pool with a `process` table,
//! started, supervised and restarted by Switchyard, in dependency order.
//!
//! Each replica is one process (`command` with `{port}` and `{replica}`
//! expanded), in its own process group, which dies with Switchyard even
//! when Switchyard is killed (`PR_SET_PDEATHSIG`, set by `switchyard
//! exec-child` before it becomes the command). A replica's life:
//!
//! 1. **start**, once every pool in the pool's `depends_on` has its
//!    `min_ready` fit instances; a port is chosen (free on 127.0.0.1, or
//!    the replica's entry of `ports`); `process_started`;
//! 2. **ready** when the pool's active check passes (HTTP, TCP, MCP, gRPC
//!    or a plugin; without a check, when its port accepts a connection),
//!    within `ready_timeout_ms`: only then is `http://127.0.0.1:PORT` added
//!    to the pool's instances (a config change, like the admin API's);
//! 3. **supervised**: probed at the check's interval; `exit` or
//!    `restart_after_failed_checks` failed probes in a row end it. Its
//!    instance leaves the pool at once, its process group is stopped
//!    (`stop_signal`, then `SIGKILL` after `stop_timeout_ms`);
//!    `process_exited`;
//! 4. **restart** after the next tier of `restart_backoff_ms` (tiers start
//!    again once a replica stayed ready `stable_after_ms`);
//!    `process_restarted`. More than `max_restarts` in `restart_window_ms`:
//!    `crash-loop`, an alert event (`process_crash_loop`), no more restarts
//!    until one is asked through the API.
//!
//! Scaling down, a pool removed, and shutdown (in reverse dependency order)
//! drain a replica's instance first (its requests in flight finish, up to
//! `stop_timeout_ms`), then stop it. The supervisor follows the
//! configuration: every config change (file at start, admin API) is
//! reconciled against the replicas running.

//!
//! | file | what it holds |
//! |---|---|
//! | `supervisor.rs` | [`Supervisor`]: every managed pool's replicas, reconciled with the configuration, and the API's orders |
//! | `replica.rs` | one replica's life: start, ready, supervise, drain, restart, and its [`ReplicaStatus`] |
//! | `child.rs` | the child process: its group, its signals, its output lines, `switchyard exec-child` |
//! | `stdio.rs` | the bridge from a stdio MCP server to HTTP |

mod child;
mod replica;
mod stdio;
mod supervisor;

pub use child::{KEPT_LINES, exec_child};
pub use replica::{ReplicaState, ReplicaStatus};
pub use supervisor::{ProcessError, Supervisor};
