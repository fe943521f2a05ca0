//! Watch units: one kube-rs `watcher` + reflector store per (kind, namespace) — or per ConfigMap — feeding one
//! [`Input`]. Level-triggered: a unit never tells what changed, only *that* something did (by waking the `dirty`
//! [`Notify`]); the source then rebuilds the whole `Input` from the stores.

use super::watched::{status_only_change, strip, with_last_good, Served, StatusOnly, Watched};
use crate::k8s::kube::api::Api;
use crate::k8s::kube::runtime::reflector::{store::Writer, ObjectRef, Store};
use crate::k8s::kube::runtime::watcher::{self, Event};
use crate::k8s::kube::runtime::WatchStreamExt;
use crate::k8s::kube::{Client, Resource};
use crate::source::{HasMeta, Input, LoadProblem, Location, ObjectRef as InputRef};
use crate::translate::Severity;
use futures::StreamExt;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// One running watch: a kind (in one namespace, or cluster-wide), or one ConfigMap.
pub trait Unit: Send + Sync {
    /// The version it watches.
    fn served(&self) -> Served;
    /// `true` once its first list completed (it stays true across relists: the store keeps the last complete
    /// list until the next one completes).
    fn synced(&self) -> bool;
    /// When it started.
    fn started(&self) -> Instant;
    /// Adds what its store holds to `input`; unreadable objects become problems (their last good version, if
    /// any, is added).
    fn collect(&self, input: &mut Input, problems: &mut Vec<LoadProblem>);
}

/// Where a kind's objects go in [`Input`].
pub type Slot<K> = fn(&mut Input) -> &mut Vec<Arc<K>>;

struct TypedUnit<K: HasMeta + Clone + 'static> {
    served: Served,
    kind: &'static str,
    store: Store<Watched<K>>,
    synced: Arc<AtomicBool>,
    started: Instant,
    slot: Slot<K>,
    task: JoinHandle<()>,
}

impl<K: HasMeta + Clone + 'static> Drop for TypedUnit<K> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K> Unit for TypedUnit<K>
where
    K: HasMeta + Clone + Send + Sync + 'static,
{
    fn served(&self) -> Served {
        self.served
    }

    fn synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    fn started(&self) -> Instant {
        self.started
    }

    fn collect(&self, input: &mut Input, problems: &mut Vec<LoadProblem>) {
        let out = (self.slot)(input);
        for w in self.store.state() {
            match &*w {
                Watched::Read(k) => out.push(k.clone()),
                Watched::Unreadable {
                    meta,
                    error,
                    last_good,
                } => {
                    let mut message = format!("cannot be read: {error}");
                    if let Some(k) = last_good {
                        out.push(k.clone());
                        message.push_str("; its last good version keeps serving");
                    } else {
                        message.push_str("; skipped");
                    }
                    problems.push(LoadProblem {
                        severity: Severity::Error,
                        location: Location {
                            file: PathBuf::from("kubernetes"),
                            line: 0,
                        },
                        object: Some(InputRef::new(self.kind, meta)),
                        message,
                    });
                }
            }
        }
    }
}

/// "Something changed": a wake-up plus a flag, so the waiter can tell which of several signals fired.
#[derive(Debug, Default)]
pub struct Signal {
    notify: Notify,
    pending: AtomicBool,
}

impl Signal {
    /// Marks a change and wakes the waiter (a wake-up is kept if nobody waits yet).
    pub fn raise(&self) {
        self.pending.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Waits for the next [`Signal::raise`] (returns at once if one happened since the last wait).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Whether a change was raised since the last `take`; clears it.
    pub fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }
}

/// Starts units on one Kubernetes client; every unit raises `dirty` when its store changes in a way translation
/// sees, `status_dirty` when only an object's status changed.
#[derive(Clone)]
pub struct Spawner {
    /// The client.
    pub client: Client,
    /// Raised on every store change translation must see.
    pub dirty: Arc<Signal>,
    /// Raised when only the status of an object changed (see [`StatusOnly`]).
    pub status_dirty: Arc<Signal>,
}

impl Spawner {
    /// Watches `served` (in `namespace`, or cluster-wide) into a new store; `kind` names the objects in messages
    /// and `slot` is where they go in [`Input`].
    pub fn spawn<K>(
        &self,
        kind: &'static str,
        served: Served,
        namespace: Option<&str>,
        config: watcher::Config,
        slot: Slot<K>,
    ) -> Box<dyn Unit>
    where
        K: HasMeta + StatusOnly + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let api: Api<Watched<K>> = match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &served),
            None => Api::all_with(self.client.clone(), &served),
        };
        let writer: Writer<Watched<K>> = Writer::new(served);
        let store = writer.as_reader();
        let lookup_store = store.clone();
        let synced = Arc::new(AtomicBool::new(false));
        let what = match namespace {
            Some(ns) => format!("{served} in namespace {ns}"),
            None => served.to_string(),
        };
        let task = tokio::spawn(drive(
            api,
            config,
            writer,
            lookup_store,
            served,
            what,
            synced.clone(),
            self.dirty.clone(),
            self.status_dirty.clone(),
        ));
        Box::new(TypedUnit {
            served,
            kind,
            store,
            synced,
            started: Instant::now(),
            slot,
            task,
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive<K>(
    api: Api<Watched<K>>,
    config: watcher::Config,
    writer: Writer<Watched<K>>,
    lookup_store: Store<Watched<K>>,
    served: Served,
    what: String,
    synced: Arc<AtomicBool>,
    dirty: Arc<Signal>,
    status_dirty: Arc<Signal>,
) where
    K: HasMeta + StatusOnly + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let lookup = move |meta: &crate::k8s::ObjectMeta| {
        let name = meta.name.as_deref()?;
        let mut key = ObjectRef::<Watched<K>>::new_with(name, served);
        if let Some(ns) = meta.namespace.as_deref() {
            key = key.within(ns);
        }
        lookup_store.get(&key)
    };
    // Set for each Apply event before the store takes it: did only the status change?
    let status_only = Arc::new(AtomicBool::new(false));
    let status_only_set = status_only.clone();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(strip::<K>)
        .map(move |ev| {
            ev.map(|ev| {
                if let Event::Apply(w) = &ev {
                    let previous = lookup(w.meta());
                    status_only_set.store(
                        status_only_change(w, previous.as_deref()),
                        Ordering::Relaxed,
                    );
                }
                with_last_good(ev, &lookup)
            })
        })
        .reflect(writer);
    let mut stream = std::pin::pin!(stream);
    let mut errors = ErrorLog::new(what);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(Event::InitDone) => {
                if !synced.swap(true, Ordering::AcqRel) {
                    tracing::debug!(watch = %errors.what, "initial list complete");
                }
                errors.ok();
                dirty.raise();
            }
            Ok(Event::Apply(_)) => {
                errors.ok();
                if status_only.load(Ordering::Relaxed) {
                    status_dirty.raise();
                } else {
                    dirty.raise();
                }
            }
            Ok(Event::Delete(_)) => {
                errors.ok();
                dirty.raise();
            }
            Ok(Event::Init | Event::InitApply(_)) => {}
            Err(e) => errors.error(&e),
        }
    }
}

fn watcher<K>(
    api: Api<Watched<K>>,
    config: watcher::Config,
) -> impl futures::Stream<Item = watcher::Result<Event<Watched<K>>>> + Send
where
    K: HasMeta + StatusOnly + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    watcher::watcher(api, config)
}

/// Logs watch errors without flooding: a new message at once, the same message again at most once a minute, and
/// one line when the watch recovers.
struct ErrorLog {
    what: String,
    last: Option<(String, Instant)>,
    failing: bool,
}

impl ErrorLog {
    fn new(what: String) -> Self {
        ErrorLog {
            what,
            last: None,
            failing: false,
        }
    }

    fn error(&mut self, e: &watcher::Error) {
        let msg = e.to_string();
        let repeat = self
            .last
            .as_ref()
            .is_some_and(|(m, t)| *m == msg && t.elapsed() < Duration::from_secs(60));
        if !repeat {
            tracing::warn!(watch = %self.what, error = %msg, "watch failed; retrying with backoff (the last good configuration keeps serving)");
            self.last = Some((msg, Instant::now()));
        }
        self.failing = true;
    }

    fn ok(&mut self) {
        if self.failing {
            tracing::info!(watch = %self.what, "watch recovered");
            self.failing = false;
            self.last = None;
        }
    }
}
