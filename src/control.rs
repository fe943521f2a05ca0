//! The control plane loop: source -> translate -> publish, with the problems of each round kept for the admin API
//! and logged once when they first appear.

use crate::metrics::{Metrics, Round, RouteCounts};
use crate::report;
use crate::snapshot::Store;
use crate::source::file::{FileLoader, Loaded, Watcher};
use crate::translate::status::Statuses;
use crate::translate::{self, Options, Severity};
use arc_swap::ArcSwap;
use std::collections::BTreeSet;
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
        let out = translate::translate(&loaded.input, &self.options);
        let mut lines = Vec::new();
        let mut severities = Vec::new();
        for p in &loaded.problems {
            lines.push(p.to_string());
            severities.push(p.severity);
        }
        for d in &out.diagnostics {
            lines.push(report::diagnostic_line(d, &loaded.locations));
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

    /// Reloads and republishes on every change the watcher reports, until it stops.
    pub async fn watch_files(mut self, mut loader: FileLoader, mut watcher: Watcher) {
        while watcher.changed().await {
            let loaded = loader.load();
            self.apply(&loaded);
        }
        tracing::warn!("file watcher stopped; configuration is no longer reloaded");
    }
}
