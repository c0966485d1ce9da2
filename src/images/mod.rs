//! Service images: build contexts (`.dockerignore`, streamed tar, content hash), builds
//! through the Docker Engine API, and delivery to the cluster (registry push or
//! archive import).
//!
//! Owns: everything between a service's source directory and an image reference a
//! manifest can use. With `docker`, the only module that imports bollard. Must not
//! render output (it reports events; `cli`/`ui` draw them) or talk to Kubernetes.

pub mod archive;
pub mod build;
pub mod context;
pub mod deliver;
pub mod dockerfile;
pub mod dockerignore;
pub mod oci;
pub mod registry;
pub mod upstream;

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use build::{BuildOptions, Event, Events, LocalImage, Outcome, Status};

use crate::config::{Config, Service};
use crate::docker::{self, Engine};
use crate::error::{Error, ErrorKind, Result};

/// The engine handle's timeout (from `docker::connect`) is meant for quick calls and
/// bounds the wait for response headers, which a build only sends once the whole
/// context has arrived: builds, pushes, exports and execs use this one instead
/// (they end when the work does, or when Ctrl-C drops them).
pub const LONG_CALLS: std::time::Duration = std::time::Duration::from_secs(3600);

/// The engine's client with the timeout for long calls.
pub fn long_calls(engine: &Engine) -> bollard::Docker {
    engine.docker.clone().with_timeout(LONG_CALLS)
}

/// Connects to the engine the docker CLI would use (DOCKER_HOST, then contexts).
pub async fn connect_engine(timeout: Duration) -> Result<Engine> {
    let endpoint = docker::resolve(&|k| std::env::var(k).ok(), dirs::home_dir().as_deref())?;
    docker::connect(&endpoint, timeout).await
}

/// The services named on the command line (all when none), or a usage error that
/// names the unknown ones and suggests the closest.
pub fn select(config: &Config, names: &[String]) -> Result<BTreeMap<String, Service>> {
    if names.is_empty() {
        return Ok(config.services.clone());
    }
    let known: Vec<&str> = config.services.keys().map(String::as_str).collect();
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for n in names {
        match config.services.get(n) {
            Some(s) => {
                out.insert(n.clone(), s.clone());
            }
            None => problems.push(match crate::config::did_you_mean(n, &known) {
                Some(s) => format!("unknown service {n:?} (did you mean {s:?}?)"),
                None => format!("unknown service {n:?}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(Error::new(ErrorKind::Usage, problems.join("; "))
            .with_hint(format!("the configured services are: {}", known.join(", "))))
    }
}

/// Options for `config`'s builds on `engine`: the engine's platform, the configured
/// parallelism, the stat cache under the user's cache directory.
pub async fn build_options(config: &Config, engine: &Engine) -> Result<BuildOptions> {
    let info = engine.info().await?;
    Ok(BuildOptions {
        prefix: build::DEFAULT_PREFIX.to_string(),
        platform: docker::platform(&info),
        parallel: config.build_parallelism(),
        cache_dir: crate::state::Dirs::from_process().ok().map(|d| d.cache),
    })
}

/// Builds (or skips) every service in `services`; see `build::build_all`.
pub async fn build(
    engine: &Engine,
    services: &BTreeMap<String, Service>,
    opts: &BuildOptions,
    cancel: &CancellationToken,
    events: Events,
) -> Vec<Outcome> {
    build::build_all(&long_calls(engine), services, opts, cancel, events).await
}

/// The JSON form of outcomes: `[{"service","tag","status","reason","seconds"}]`.
pub fn outcomes_json(outcomes: &[Outcome]) -> serde_json::Value {
    serde_json::Value::Array(
        outcomes
            .iter()
            .map(|o| {
                let (status, reason) = match &o.status {
                    Status::Built => ("built", None),
                    Status::Skipped { reason } => ("skipped", Some(reason.clone())),
                    Status::Failed(e) => ("failed", Some(e.message.clone())),
                };
                serde_json::json!({
                    "service": o.image.service,
                    "tag": if o.image.tag.is_empty() { serde_json::Value::Null } else { o.image.reference().into() },
                    "hash": if o.image.hash.is_empty() { serde_json::Value::Null } else { o.image.hash.clone().into() },
                    "status": status,
                    "reason": reason,
                    "seconds": (o.seconds * 100.0).round() / 100.0,
                })
            })
            .collect(),
    )
}

/// One line per service for humans: name, status, image, seconds, reason.
pub fn outcomes_table(outcomes: &[Outcome]) -> String {
    let width = outcomes
        .iter()
        .map(|o| o.image.service.len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for o in outcomes {
        let (status, reason) = match &o.status {
            Status::Built => ("built", String::new()),
            Status::Skipped { reason } => ("skipped", format!("  ({reason})")),
            Status::Failed(e) if e.kind == ErrorKind::Interrupted => {
                ("stopped", "  (interrupted)".to_string())
            }
            Status::Failed(_) => ("failed", String::new()),
        };
        let image = if o.image.tag.is_empty() {
            o.image.repository.clone()
        } else {
            o.image.reference()
        };
        out.push_str(&format!(
            "{:width$}  {status:7}  {image}  {:.1}s{reason}\n",
            o.image.service, o.seconds
        ));
    }
    out
}
