//! The control plane loop: source -> translate -> publish, with the problems of each round kept for the admin API
//! and logged once when they first appear.

use crate::k8s::Ingress;
use crate::metrics::{Metrics, Round, RouteCounts};
use crate::report;
use crate::snapshot::Store;
use crate::source::file::{FileLoader, Loaded, Watcher};
use crate::source::{Input, ObjectRef};
use crate::translate::status::Statuses;
use crate::translate::{self, Diagnostic, Options, Output, Severity};
use arc_swap::ArcSwap;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// Translates and publishes what a source loaded.
pub struct Control {
    store: Arc<Store>,
    options: Options,
    diagnostics: Arc<ArcSwap<Vec<String>>>,
    statuses: Arc<ArcSwap<Statuses>>,
    logged: BTreeSet<String>,
    after_round: Option<fn()>,
    metrics: Option<Arc<Metrics>>,
    /// The last version of each Ingress that translation accepted: an Ingress whose annotations are refused is
    /// translated with it instead (ingress-nginx keeps the Ingress it had when its annotations are refused).
    last_good: HashMap<ObjectRef, Arc<Ingress>>,
}

/// What one round did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A new version was published.
    Published(u64),
    /// The model did not change; nothing was published.
    Unchanged,
    /// The model could not be compiled; the previous snapshot keeps serving.
    Refused,
}

impl Control {
    /// A control loop publishing into `store`.
    pub fn new(store: Arc<Store>, options: Options) -> Self {
        Control {
            store,
            options,
            diagnostics: Arc::new(ArcSwap::from_pointee(Vec::new())),
            statuses: Arc::new(ArcSwap::from_pointee(Statuses::default())),
            logged: BTreeSet::new(),
            after_round: None,
            metrics: None,
            last_good: HashMap::new(),
        }
    }

    /// Records every round in `metrics` (rounds by result, routes, and the gauges that follow the published
    /// model).
    pub fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.metrics = Some(metrics);
    }

    /// The metrics rounds are recorded in, if any.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Runs `hook` at the end of every round, once the round's temporaries are freed. The binary uses it to
    /// return that memory to the operating system at once (`main.rs`, `release_freed_memory`).
    pub fn set_after_round(&mut self, hook: fn()) {
        self.after_round = Some(hook);
    }

    /// The Gateway API status computed by the latest round.
    pub fn statuses(&self) -> Arc<ArcSwap<Statuses>> {
        self.statuses.clone()
    }

    /// The problems of the latest round, formatted with their locations.
    pub fn diagnostics(&self) -> Arc<ArcSwap<Vec<String>>> {
        self.diagnostics.clone()
    }

    /// Translates `loaded` and publishes the result if it changed.
    pub fn apply(&mut self, loaded: &Loaded) -> Outcome {
        let out = self.translate_keeping_last_good(&loaded.input);
        let mut lines = Vec::new();
        let mut severities = Vec::new();
        for p in &loaded.problems {
            lines.push(p.to_string());
            severities.push(p.severity);
        }
        for d in &out.diagnostics {
            lines.push(report::diagnostic_line_at(
                d,
                &loaded.locations,
                &loaded.field_lines,
            ));
            severities.push(d.severity);
        }
        // Log each problem once, when it first appears.
        let current: BTreeSet<String> = lines.iter().cloned().collect();
        for (line, sev) in lines.iter().zip(&severities) {
            if !self.logged.contains(line) {
                match sev {
                    Severity::Error => tracing::error!("{line}"),
                    Severity::Warning => tracing::warn!("{line}"),
                }
            }
        }
        self.logged = current;
        self.diagnostics.store(Arc::new(lines));
        let routes = self
            .metrics
            .as_ref()
            .map(|_| RouteCounts::new(&out.model, &out.diagnostics, &out.statuses));
        self.statuses.store(Arc::new(out.statuses));

        let published = self.store.publish(out.model);
        self.store.record_round(loaded.input.len());
        drop(out.diagnostics);
        let outcome = match published {
            Ok(Some(v)) => {
                tracing::info!(version = v, "configuration published");
                Outcome::Published(v)
            }
            Ok(None) => Outcome::Unchanged,
            Err(e) => {
                tracing::error!(error = %e, "configuration refused; the previous one keeps serving");
                Outcome::Refused
            }
        };
        if let Some(m) = &self.metrics {
            match outcome {
                Outcome::Published(_) => {
                    m.set_model(&self.store.load().model);
                    m.round(Round::Published);
                }
                Outcome::Unchanged => m.round(Round::Unchanged),
                Outcome::Refused => m.round(Round::Refused),
            }
            // The counts describe the table being served: not updated when the round was refused.
            if let (Some(counts), false) = (routes, outcome == Outcome::Refused) {
                m.set_routes(&counts);
            }
        }
        if let Some(hook) = self.after_round {
            hook();
        }
        outcome
    }

    /// Translates `input`; Ingresses that translation refuses are replaced by their last accepted version (when
    /// there is one) and the input translated again. Remembers the accepted versions for the next round.
    fn translate_keeping_last_good(&mut self, input: &Input) -> Output {
        let first = translate::translate(input, &self.options);
        let refused: BTreeSet<&ObjectRef> = first.rejected.iter().collect();
        let mut notes = Vec::new();
        let mut patched: Option<Input> = None;
        for r in &first.rejected {
            match self.last_good.get(r) {
                Some(old) => {
                    let input = patched.get_or_insert_with(|| input.clone());
                    for ing in input.ingresses.iter_mut() {
                        if ObjectRef::new("Ingress", &ing.metadata) == *r {
                            *ing = old.clone();
                        }
                    }
                    notes.push(Diagnostic {
                        severity: Severity::Warning,
                        object: r.clone(),
                        message: "its last good version keeps serving".into(),
                        annotation: None,
                    });
                }
                None => notes.push(Diagnostic {
                    severity: Severity::Warning,
                    object: r.clone(),
                    message: "no earlier version of this Ingress was accepted; it is not served"
                        .into(),
                    annotation: None,
                }),
            }
        }
        // Remember what was accepted this round (the refused ones keep their previous entry).
        let current: BTreeSet<ObjectRef> = input
            .ingresses
            .iter()
            .map(|i| ObjectRef::new("Ingress", &i.metadata))
            .collect();
        self.last_good.retain(|k, _| current.contains(k));
        for ing in &input.ingresses {
            let r = ObjectRef::new("Ingress", &ing.metadata);
            if !refused.contains(&r) {
                self.last_good.insert(r, ing.clone());
            }
        }
        let mut out = match patched {
            None => first,
            Some(patched) => {
                let mut second = translate::translate(&patched, &self.options);
                // The refusals of the new versions are this round's news; the old versions' own findings too.
                second.diagnostics.extend(
                    first
                        .diagnostics
                        .into_iter()
                        .filter(|d| refused.contains(&d.object) && d.severity == Severity::Error),
                );
                second.rejected = first.rejected;
                second
            }
        };
        out.diagnostics.extend(notes);
        out.diagnostics.sort();
        out.diagnostics.dedup();
        out
    }

    /// Reads the files and applies them, on a thread of its own: the allocator gives that thread pages of its
    /// own, so the table a round builds does not fill the holes the previous table leaves, and once that one is
    /// dropped its pages are returned whole. Measured at 10,000 routes (docs/benchmarks.md, "1,000 edits"): over
    /// 80 publishes RSS grew 1.4 MB instead of 11 MB. The thread inherits the caller's lowered priority.
    pub fn load_and_apply(&mut self, loader: &mut FileLoader) -> Outcome {
        std::thread::scope(|s| {
            s.spawn(|| {
                let loaded = loader.load();
                self.apply(&loaded)
            })
            .join()
            // A panic in a round is a bug; the last good table keeps serving.
            .unwrap_or(Outcome::Refused)
        })
    }

    /// Reloads and republishes on every change the watcher reports, until it stops.
    pub async fn watch_files(mut self, mut loader: FileLoader, mut watcher: Watcher) {
        while watcher.changed().await {
            self.load_and_apply(&mut loader);
        }
        tracing::warn!("file watcher stopped; configuration is no longer reloaded");
    }
}
