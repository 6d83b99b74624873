//! Watching folders for files whose content changed — and only that.
//!
//! Linux's inotify, as notify sets it up, also reports a file being opened
//! and closed without a write. A callback that reads the files it watches
//! (to hash a plugin, to load a certificate) would then see its own reads
//! as changes and read again, forever. [`watch_dirs`] passes on only the
//! events that can change what a file holds: created, written
//! (modified, or closed after a write), renamed (either name) and removed;
//! opens, reads, closes without a write and metadata changes (atime,
//! permissions) are dropped.
//!
//! Events are debounced (notify-debouncer-full) over [`DEBOUNCE`], then
//! coalesced until the folders have been quiet for as long: the debouncer
//! releases each event [`DEBOUNCE`] after it happened, so a file written as
//! a temporary and then renamed into place (`cp new c.tmp && mv c.tmp
//! c.pem`) reaches it as two batches when the rename comes a tick after
//! the write; waiting for quiet makes it one change, whatever the timing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify_debouncer_full::notify::event::{AccessKind, AccessMode, ModifyKind};
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

/// Changes to one file within this long count as one.
pub const DEBOUNCE: Duration = Duration::from_millis(250);

/// A live watch: the folders are watched for as long as it lives.
pub type Watch = Debouncer<RecommendedWatcher, RecommendedCache>;

/// Watches each of `dirs` (not their subfolders) and calls `on_change`
/// with the paths, sorted and deduplicated, of the files whose content
/// may have changed within one debounce period (a rename gives both names).
///
/// # Errors
/// A reason naming the folder when one cannot be watched.
pub fn watch_dirs<F>(dirs: &[PathBuf], mut on_change: F) -> Result<Watch, String>
where
    F: FnMut(Vec<PathBuf>) + Send + 'static,
{
    let (changed, batches) = std::sync::mpsc::channel::<Vec<PathBuf>>();
    std::thread::Builder::new()
        .name("switchyard-fswatch".into())
        .spawn(move || coalesce(&batches, DEBOUNCE, &mut on_change))
        .map_err(|e| format!("starting a file watcher: {e}"))?;
    let mut debouncer =
        new_debouncer(
            DEBOUNCE,
            None,
            move |events: DebounceEventResult| match events {
                Ok(events) => {
                    let paths: Vec<PathBuf> = events
                        .into_iter()
                        .filter(|e| changes_content(e.kind))
                        .flat_map(|e| e.event.paths)
                        .collect();
                    if !paths.is_empty() {
                        // The coalescing thread ends only with this sender.
                        let _ = changed.send(paths);
                    }
                }
                Err(errors) => {
                    for error in errors {
                        tracing::warn!(%error, "file watcher");
                    }
                }
            },
        )
        .map_err(|e| format!("starting a file watcher: {e}"))?;
    for dir in dirs {
        debouncer
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|e| format!("watching {}: {e}", dir.display()))?;
    }
    Ok(debouncer)
}

/// Calls `on_change` once per burst of `batches`: with the union of a
/// batch and every batch that follows it within `quiet` of the previous,
/// sorted and deduplicated. Returns when the sender is gone (the watch was
/// dropped), after passing on what it had.
fn coalesce(
    batches: &std::sync::mpsc::Receiver<Vec<PathBuf>>,
    quiet: Duration,
    on_change: &mut impl FnMut(Vec<PathBuf>),
) {
    while let Ok(mut paths) = batches.recv() {
        while let Ok(more) = batches.recv_timeout(quiet) {
            paths.extend(more);
        }
        paths.sort();
        paths.dedup();
        on_change(paths);
    }
}

/// Whether an event of this kind can change what a file holds.
fn changes_content(kind: EventKind) -> bool {
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Other => false,
    }
}

/// `path` with its folder made canonical (the file itself may be missing
/// for a moment while it is replaced); a bare file name is taken in the
/// working directory. Paths a watcher reports are canonical, so this is
/// what they are compared with.
pub fn canonical(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    match (std::fs::canonicalize(dir), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    }
}

/// The folder of `file` (the working directory for a bare file name).
pub fn folder_of(file: &Path) -> PathBuf {
    canonical(file)
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use notify_debouncer_full::notify::event::{CreateKind, DataChange, MetadataKind, RenameMode};

    use super::*;

    #[test]
    fn reads_and_metadata_are_not_changes_writes_and_renames_are() {
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Read),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        ] {
            assert!(!changes_content(kind), "{kind:?}");
        }
        for kind in [
            EventKind::Create(CreateKind::File),
            EventKind::Modify(ModifyKind::Data(DataChange::Any)),
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            EventKind::Access(AccessKind::Close(AccessMode::Write)),
            EventKind::Remove(notify_debouncer_full::notify::event::RemoveKind::File),
        ] {
            assert!(changes_content(kind), "{kind:?}");
        }
    }

    #[test]
    fn batches_that_follow_each_other_are_one_change() {
        let (send, batches) = std::sync::mpsc::channel();
        send.send(vec![PathBuf::from("/d/c.tmp"), PathBuf::from("/d/c.pem")])
            .unwrap();
        send.send(vec![PathBuf::from("/d/c.pem")]).unwrap();
        drop(send);
        let mut calls = Vec::new();
        coalesce(&batches, Duration::from_secs(60), &mut |paths| {
            calls.push(paths)
        });
        assert_eq!(
            calls,
            vec![vec![PathBuf::from("/d/c.pem"), PathBuf::from("/d/c.tmp")]]
        );
    }

    #[test]
    fn a_bare_file_name_is_canonical_in_the_working_directory() {
        let here = std::fs::canonicalize(".").unwrap();
        assert_eq!(canonical(Path::new("c.pem")), here.join("c.pem"));
        assert_eq!(folder_of(Path::new("c.pem")), here);
    }
}
