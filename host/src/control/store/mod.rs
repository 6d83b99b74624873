//! Where the configuration is kept: this machine's state file (`[store]
//! kind = "file"`, [`crate::control`]), or an etcd cluster shared by every
//! replica (`kind = "etcd"`), as APISIX keeps its configuration in etcd.
//!
//! With etcd, what replicas **share** ([`Shared`]: routes, filters, pools
//! and their static instances, the grace and cooldown settings) is one JSON
//! document at `PREFIX config`. What stays **per replica** is read from each one's
//! file (listeners, admin, runtime, plugin cache, MCP session keys, the
//! store itself) or learned by it: instances of managed pools and
//! discovered instances, health, breakers and sticky tables (as in Envoy,
//! each replica judges its upstreams itself).
//!
//! - **Start**: the document is read (and written from the file's pools
//!   when etcd has none yet: the first replica seeds it); etcd unreachable
//!   → the local cached copy (`cache_file`) with a warning, else the file.
//! - **Follow**: a watch on the prefix applies each new revision of the
//!   document; a watch that fell behind a compaction, or broke, resyncs
//!   from a fresh read (reconnecting with exponential backoff and jitter,
//!   100 ms to 5 s). The document is also read every 10 s, so a connection
//!   that died silently is noticed.
//! - **Write** (the admin API): the replica first catches up with etcd (a
//!   linearizable read), then applies the change on top and commits it
//!   with a transaction conditioned on the document's `mod_revision` it
//!   was based on, and acknowledges only after etcd committed. A write
//!   that lost the race to another replica's gets 409 naming both
//!   revisions (nothing written, never a lost update); `If-Match: "N"` on
//!   a request makes revision N its precondition. etcd unreachable → 503.
//! - **Plugins** uploaded through the API ([`plugins`]) are stored
//!   content-addressed, in chunks.
//!
//! Plugin files under this replica's `admin.plugins_dir` are written in the
//! document as `$plugins_dir/NAME.wasm` and read back under the reading
//! replica's own `plugins_dir`, so replicas need not share a directory
//! layout for uploaded plugins; other plugin paths must exist on every
//! replica.

pub mod etcd;
mod file;
mod follow;
mod kept;
pub mod plugins;
mod shared;

pub use file::{restore, write_atomically};
pub use follow::{Backoff, follow};
pub use kept::{EtcdStore, Store, block_on, open};
pub use shared::Shared;
