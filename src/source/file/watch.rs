//! Watching manifest files for changes, debounced.

use super::is_manifest;
use notify::{EventKind, RecursiveMode, Watcher as _};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long the files must be quiet before a reload.
pub const QUIET: Duration = Duration::from_millis(50);
/// The longest a reload waits while changes keep coming.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// Why watching could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    /// The path that could not be watched.
    pub path: PathBuf,
    /// The watcher's error.
    #[source]
    pub source: notify::Error,
}

/// Change notifications for a set of manifest paths.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<()>,
}

/// Starts watching `paths`: directories recursively; a file through its parent directory, so that editors that
/// replace a file by renaming a new one over it are seen too.
pub fn watch(paths: &[PathBuf]) -> Result<Watcher, WatchError> {
    let (tx, rx) = mpsc::unbounded_channel();
    let files: Vec<PathBuf> = paths
        .iter()
        .filter(|p| !p.is_dir())
        .map(|p| absolute(p))
        .collect();
    let mut inner = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else {
            // An error from the OS watcher: reload, which re-reads everything and reports what it finds.
            let _ = tx.send(());
            return;
        };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        let relevant = event
            .paths
            .iter()
            .any(|p| is_manifest(p) || files.iter().any(|f| f == p) || p.extension().is_none());
        if relevant {
            let _ = tx.send(());
        }
    })
    .map_err(|source| WatchError {
        path: PathBuf::new(),
        source,
    })?;
    for p in paths {
        let (target, mode) = if p.is_dir() {
            (p.clone(), RecursiveMode::Recursive)
        } else {
            let parent = absolute(p)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."));
            (parent, RecursiveMode::NonRecursive)
        };
        inner.watch(&target, mode).map_err(|source| WatchError {
            path: target.clone(),
            source,
        })?;
    }
    Ok(Watcher { _inner: inner, rx })
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

impl Watcher {
    /// Waits for the next burst of changes: returns once the files have been quiet for [`QUIET`], or [`MAX_DELAY`]
    /// after the first change of the burst. Returns `false` when the watcher has stopped.
    pub async fn changed(&mut self) -> bool {
        if self.rx.recv().await.is_none() {
            return false;
        }
        let deadline = Instant::now() + MAX_DELAY;
        loop {
            let quiet_until = (Instant::now() + QUIET).min(deadline);
            match tokio::time::timeout_at(quiet_until, self.rx.recv()).await {
                Ok(Some(())) if Instant::now() < deadline => continue,
                Ok(Some(())) | Err(_) => return true,
                Ok(None) => return false,
            }
        }
    }
}
