//! Everything pulsedev says to the Kubernetes API server: the client from pulsedev's own
//! kubeconfig, manifests as dynamic objects, server-side apply in an order that works the
//! first time, waits until things are really ready, webhook gates, prune, diagnosis of
//! what is not ready, and the `status` picture.
//!
//! Owns: every use of the `kube` and `k8s_openapi` crates (no other module imports them).
//! Must not: render output (it hands `ui` data and progress lines), run processes, talk
//! to Docker, or decide the order of `up`'s steps (that is `plan`).
//!
//! The entry point is [`Engine`]:
//!
//! ```no_run
//! # async fn up(kubeconfig: &std::path::Path, stream: &str) -> pulsedev::error::Result<()> {
//! use pulsedev::kube::{ApplyOptions, Engine, Target, connect, parse};
//! use std::time::Duration;
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let engine = Engine::new(connect(kubeconfig, "kind-pulsedev").await?)
//!     .with_progress(|line| eprintln!("{line}"));
//! let manifests = parse("helm template api", stream)?;
//! let options = ApplyOptions::new("pulsewatch", "pulsewatch-dev");
//! let report = engine.apply(&manifests, &options, &cancel).await?;
//! engine.wait_ready(&report.targets(), Duration::from_secs(300), &cancel).await?;
//! engine.prune("pulsewatch", &report, &cancel).await?;
//! # Ok(()) }
//! ```

mod admission;
mod apply;
pub mod client;
mod diagnose;
mod discovery;
pub mod exec;
mod inventory;
pub mod jobs;
pub mod logs;
pub mod manifest;
mod prune;
pub mod secrets;
mod status;
#[cfg(test)]
mod testing;
mod wait;
mod webhook;
mod yaml11;

use std::sync::Arc;
use std::time::Duration;

use ::kube::Client;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

pub use apply::{Applied, ApplyOptions, ApplyReport};
pub use client::{connect, context_name};
pub use diagnose::{ContainerReport, Diagnosis, EventReport, PodReport};
pub use inventory::{INVENTORY_NAMESPACE, Inventory, inventory_name};
pub use manifest::{Manifest, parse};
pub use prune::{ObjectKey, PruneOptions, PruneReport};
pub use status::{
    Category, Check, CheckKind, ClusterInfo, Row, State, StatusReport, StatusSpec,
    collect as collect_status,
};
pub use wait::{Target, TargetKind};
pub use webhook::{Backoff, WebhookGate};

/// The field manager of every server-side apply pulsedev makes.
pub const FIELD_MANAGER: &str = "pulsedev";
/// The label that marks an object as part of a pulsedev stack; prune deletes only
/// objects carrying it.
pub const STACK_LABEL: &str = "pulsedev.dev/stack";

/// Durations and limits of the engine; tests shrink them, `up` may stretch them.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Between two readiness polls of one object.
    pub poll: Duration,
    /// How long new CRDs may take to become Established.
    pub crd_established: Duration,
    /// How long discovery may lag behind an Established CRD.
    pub discovery_catch_up: Duration,
    /// Objects applied (or deleted) at once within one group.
    pub concurrency: usize,
    /// Log lines collected from each crashing container.
    pub log_lines: i64,
    /// How long an object deleted to be recreated (an immutable field changed) may take
    /// to be gone (finalizers) before the apply fails.
    pub recreate: Duration,
    /// How long a deleted object (a Terminating namespace or CRD) may take to be gone.
    pub deletion: Duration,
    /// How long a wait looks only at the object before it also looks at its pods for a
    /// failure (fail fast; docs/DECISIONS.md "Waits").
    pub probe_after: Duration,
    /// How long the same kind of pod failure must persist before the wait reports it
    /// instead of waiting for its deadline.
    pub settle: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            poll: Duration::from_secs(2),
            crd_established: Duration::from_secs(60),
            discovery_catch_up: Duration::from_secs(30),
            concurrency: 8,
            log_lines: 20,
            recreate: Duration::from_secs(60),
            deletion: Duration::from_secs(300),
            probe_after: Duration::from_secs(10),
            settle: Duration::from_secs(30),
        }
    }
}

type ProgressFn = Arc<dyn Fn(&str) + Send + Sync>;

/// Applies, waits, gates, prunes and diagnoses against one cluster.
#[derive(Clone)]
pub struct Engine {
    client: Client,
    discovery: discovery::Discovery,
    timing: Timing,
    progress: ProgressFn,
    /// API server warnings already said (each is said once per engine).
    warned: Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>,
    /// One inventory update at a time from this process (steps apply concurrently).
    inventory_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Engine {
    pub fn new(client: Client) -> Engine {
        Engine {
            discovery: discovery::Discovery::new(client.clone()),
            client,
            timing: Timing::default(),
            progress: Arc::new(|_| {}),
            warned: Arc::default(),
            inventory_lock: Arc::default(),
        }
    }

    pub fn with_timing(mut self, timing: Timing) -> Engine {
        self.timing = timing;
        self
    }

    /// Where progress lines go (`deployment pulsewatch-dev/api: 1/2 replicas available`).
    pub fn with_progress(mut self, f: impl Fn(&str) + Send + Sync + 'static) -> Engine {
        self.progress = Arc::new(f);
        self
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn say(&self, line: &str) {
        (self.progress)(line);
    }

    /// Says an API server warning about `what`, once.
    fn warn(&self, what: &str, text: &str) {
        let line = format!("warning: {what}: {text}");
        let new = self
            .warned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(line.clone());
        if new {
            self.say(&line);
        }
    }
}

/// Runs `fut` unless `cancel` fires first; then it is dropped and `interrupted` returned.
async fn cancellable<T>(cancel: &CancellationToken, fut: impl Future<Output = T>) -> Result<T> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::interrupted()),
        r = fut => Ok(r),
    }
}

/// A client error in words: the API server's own message for a `Status` failure.
fn describe(e: &::kube::Error) -> String {
    match e {
        ::kube::Error::Api(s) => {
            let mut text = if s.message.is_empty() {
                format!("the API server answered {}", s.code)
            } else {
                s.message.clone()
            };
            if !s.reason.is_empty() {
                text.push_str(&format!(" ({} {})", s.code, s.reason));
            }
            text
        }
        // Transport errors hide the useful part ("Connection refused") in their sources.
        other => {
            let mut text = other.to_string();
            let mut source = std::error::Error::source(other);
            while let Some(e) = source {
                let part = e.to_string();
                if !text.contains(&part) {
                    text.push_str(": ");
                    text.push_str(&part);
                }
                source = e.source();
            }
            text
        }
    }
}

/// `1m30s`, `45s`, `2m`: durations in messages.
fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 60, s % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}
