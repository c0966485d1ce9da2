//! Building service images through the Engine API: planning (scan + content hash →
//! tag), the skip decision, bounded parallel builds with per-build events, and
//! turning a failed build into an error that shows the failing step and its log.
//!
//! Owns: the `/build` calls and the tag scheme. Must not deliver images anywhere
//! (that is `registry` / `archive`) nor render anything (it emits `Event`s).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bollard::Docker;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::context::{self, BuildInputs, Context, StatCache};
use crate::config::Service;
use crate::error::{Error, ErrorKind, Result};

/// Image names are `<prefix>-<service>`.
pub const DEFAULT_PREFIX: &str = "pulsewatch";
/// Hex digits of the content hash in the tag.
pub const TAG_HEX: usize = 12;
pub const LABEL_SERVICE: &str = "dev.pulsedev.service";
pub const LABEL_HASH: &str = "dev.pulsedev.content-hash";
/// Log lines kept per build for the failure report.
const TAIL_LINES: usize = 15;

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub prefix: String,
    /// `linux/<arch>` of the node (from the engine's /info).
    pub platform: String,
    /// Concurrent builds (at least 1).
    pub parallel: usize,
    /// Where the stat cache lives (`state::Dirs::cache`); None disables it.
    pub cache_dir: Option<PathBuf>,
}

/// A service image whose tag is known: what `up` hands to delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalImage {
    pub service: String,
    /// `pulsewatch-api`
    pub repository: String,
    /// The first `TAG_HEX` hex digits of the content hash.
    pub tag: String,
    /// The full content hash, hex.
    pub hash: String,
}

impl LocalImage {
    /// `pulsewatch-api:0123456789ab`
    pub fn reference(&self) -> String {
        format!("{}:{}", self.repository, self.tag)
    }
}

/// What became of one service.
#[derive(Debug, Clone)]
pub enum Status {
    Built,
    Skipped { reason: String },
    Failed(Error),
}

#[derive(Debug, Clone)]
pub struct Outcome {
    pub image: LocalImage,
    pub status: Status,
    pub seconds: f64,
}

/// Progress of the builds, for the UI to draw.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Hashing the context.
    Checking {
        service: String,
    },
    Skipped {
        service: String,
        reason: String,
    },
    Started {
        service: String,
        image: String,
    },
    /// A Dockerfile step began (`Step 2/5 : COPY . /app`).
    Step {
        service: String,
        step: String,
    },
    /// Any other line of build output.
    Line {
        service: String,
        line: String,
    },
    Built {
        service: String,
        seconds: f64,
    },
    Failed {
        service: String,
        message: String,
    },
}

pub type Events = Arc<dyn Fn(Event) + Send + Sync>;

/// The tag of a content hash.
pub fn tag_of(hash: &str) -> String {
    hash[..TAG_HEX.min(hash.len())].to_string()
}

/// Scans and hashes one service's context (blocking: call from a blocking thread).
pub fn plan(
    name: &str,
    service: &Service,
    opts: &BuildOptions,
) -> Result<(LocalImage, Arc<Context>, BuildInputs)> {
    let started = SystemTime::now();
    let ctx = context::scan(&service.context, &service.dockerfile)?;
    let inputs = BuildInputs {
        dockerfile: ctx.dockerfile.clone(),
        build_args: service.build_args.clone(),
        target: service.target.clone(),
        platform: opts.platform.clone(),
    };
    let mut cache = match &opts.cache_dir {
        Some(dir) => StatCache::load(dir, &service.context, &ctx.dockerfile),
        None => StatCache::disabled(),
    };
    let hash = context::content_hash(&ctx, &inputs, &mut cache)?;
    // A cache that cannot be written only costs speed next time.
    let _ = cache.save(started);
    let image = LocalImage {
        service: name.to_string(),
        repository: format!("{}-{name}", opts.prefix),
        tag: tag_of(&hash),
        hash,
    };
    Ok((image, Arc::new(ctx), inputs))
}

/// Builds `services` (name → service) with at most `opts.parallel` at a time. Every
/// service gets an outcome; a failure does not stop the others. When `cancel` fires,
/// running builds are dropped (the engine stops a build whose client went away) and
/// report `interrupted`.
pub async fn build_all(
    docker: &Docker,
    services: &BTreeMap<String, Service>,
    opts: &BuildOptions,
    cancel: &CancellationToken,
    events: Events,
) -> Vec<Outcome> {
    let limit = Arc::new(tokio::sync::Semaphore::new(opts.parallel.max(1)));
    let tasks = services.iter().map(|(name, service)| {
        let limit = limit.clone();
        let events = events.clone();
        let name = name.clone();
        let service = service.clone();
        let opts = opts.clone();
        let docker = docker.clone();
        let cancel = cancel.clone();
        async move {
            let _permit = limit
                .acquire_owned()
                .await
                .expect("semaphore is never closed");
            let started = Instant::now();
            let placeholder = LocalImage {
                service: name.clone(),
                repository: format!("{}-{name}", opts.prefix),
                tag: String::new(),
                hash: String::new(),
            };
            let status = tokio::select! {
                s = one(&docker, &name, &service, &opts, &events) => s,
                _ = cancel.cancelled() => Err((placeholder.clone(), Error::interrupted())),
            };
            let seconds = started.elapsed().as_secs_f64();
            match status {
                Ok((image, status)) => {
                    match &status {
                        Status::Built => events(Event::Built {
                            service: name.clone(),
                            seconds,
                        }),
                        Status::Skipped { reason } => events(Event::Skipped {
                            service: name.clone(),
                            reason: reason.clone(),
                        }),
                        Status::Failed(_) => {}
                    }
                    Outcome {
                        image,
                        status,
                        seconds,
                    }
                }
                Err((image, e)) => {
                    events(Event::Failed {
                        service: name.clone(),
                        message: e.message.clone(),
                    });
                    Outcome {
                        image,
                        status: Status::Failed(e),
                        seconds,
                    }
                }
            }
        }
    });
    futures::future::join_all(tasks).await
}

type OneResult = std::result::Result<(LocalImage, Status), (LocalImage, Error)>;

async fn one(
    docker: &Docker,
    name: &str,
    service: &Service,
    opts: &BuildOptions,
    events: &Events,
) -> OneResult {
    events(Event::Checking {
        service: name.to_string(),
    });
    let placeholder = LocalImage {
        service: name.to_string(),
        repository: format!("{}-{name}", opts.prefix),
        tag: String::new(),
        hash: String::new(),
    };
    let planned = {
        let (name, service, opts) = (name.to_string(), service.clone(), opts.clone());
        tokio::task::spawn_blocking(move || plan(&name, &service, &opts)).await
    };
    let (image, ctx, inputs) = match planned {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return Err((placeholder, e)),
        Err(e) => {
            return Err((
                placeholder,
                Error::internal(format!("the context scan of {name} panicked: {e}")),
            ));
        }
    };
    let reference = image.reference();
    match docker.inspect_image(&reference).await {
        Ok(_) => {
            let reason = format!("unchanged: {reference} is already in the engine");
            return Ok((image, Status::Skipped { reason }));
        }
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {}
        Err(e) => {
            let e = Error::new(
                ErrorKind::DockerUnreachable,
                format!("failed to inspect image {reference}: {e}"),
            );
            return Err((image, e));
        }
    }
    events(Event::Started {
        service: name.to_string(),
        image: reference.clone(),
    });
    match run_build(docker, &image, ctx, &inputs, events).await {
        Ok(()) => Ok((image, Status::Built)),
        Err(e) => Err((image, e)),
    }
}

async fn run_build(
    docker: &Docker,
    image: &LocalImage,
    ctx: Arc<Context>,
    inputs: &BuildInputs,
    events: &Events,
) -> Result<()> {
    let reference = image.reference();
    let options = bollard::query_parameters::BuildImageOptions {
        dockerfile: inputs.dockerfile.clone(),
        t: Some(reference.clone()),
        rm: true,
        forcerm: true,
        buildargs: Some(
            inputs
                .build_args
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ),
        labels: Some(HashMap::from([
            (LABEL_SERVICE.to_string(), image.service.clone()),
            (LABEL_HASH.to_string(), image.hash.clone()),
        ])),
        platform: inputs.platform.clone(),
        target: inputs.target.clone().unwrap_or_default(),
        ..Default::default()
    };
    let failure = context::UploadFailure::default();
    let root = ctx.root.clone();
    let body = bollard::body_try_stream(context::tar_stream(ctx, failure.clone()));
    let mut stream = docker.build_image(options, None, Some(body));
    // The context changed while it was sent: say so, not the engine's view of an
    // aborted upload (the build failed, so nothing was tagged).
    let upload_failed = || {
        let why = failure.lock().ok()?.clone()?;
        Some(
            Error::new(
                ErrorKind::ImageBuildFailed,
                format!(
                    "failed to build {}: the build context {} changed while it was being sent: {why}; nothing was tagged",
                    image.service,
                    root.display()
                ),
            )
            .with_hint("run the build again once nothing is writing into the context (an editor saving, a generator, a `git checkout`)"),
        )
    };
    let mut log = BuildLog::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream.as_deref().or(info.status.as_deref()) {
                    for line in text.lines() {
                        let line = strip_ansi(line);
                        let line = line.trim_end();
                        if line.is_empty() || is_noise(line) {
                            continue;
                        }
                        if log.push(line) {
                            events(Event::Step {
                                service: image.service.clone(),
                                step: line.to_string(),
                            });
                        } else {
                            events(Event::Line {
                                service: image.service.clone(),
                                line: line.to_string(),
                            });
                        }
                    }
                }
            }
            Err(bollard::errors::Error::DockerStreamError { error }) => {
                return Err(upload_failed().unwrap_or_else(|| {
                    log.failure(&image.service, &reference, &strip_ansi(&error))
                }));
            }
            Err(e) => {
                return Err(upload_failed()
                    .unwrap_or_else(|| log.failure(&image.service, &reference, &e.to_string())));
            }
        }
    }
    if let Some(e) = upload_failed() {
        return Err(e);
    }
    // The stream can end without an error yet without an image (daemon restarted).
    docker.inspect_image(&reference).await.map_err(|e| {
        log.failure(
            &image.service,
            &reference,
            &format!("the build finished but the image is missing: {e}"),
        )
    })?;
    Ok(())
}

/// Removes terminal escape sequences (the daemon colours a RUN step's stderr).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in @..~.
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Bookkeeping lines of the classic builder that say nothing about the failure.
fn is_noise(line: &str) -> bool {
    line.starts_with(" ---> ")
        || line.starts_with("Removing intermediate container")
        || line.starts_with("Successfully built")
        || line.starts_with("Successfully tagged")
}

/// The step being run and the last lines of output, for the failure report.
#[derive(Debug, Default)]
struct BuildLog {
    step: Option<String>,
    tail: VecDeque<String>,
}

impl BuildLog {
    /// Records a line; true when it starts a new step.
    fn push(&mut self, line: &str) -> bool {
        let is_step = line.starts_with("Step ") && line.contains(" : ");
        if is_step {
            self.step = Some(line.to_string());
            self.tail.clear();
        } else {
            if self.tail.len() == TAIL_LINES {
                self.tail.pop_front();
            }
            self.tail.push_back(line.to_string());
        }
        is_step
    }

    fn failure(&self, service: &str, reference: &str, why: &str) -> Error {
        let mut details = Vec::new();
        if let Some(step) = &self.step {
            details.push(format!("failing step: {step}"));
        }
        if !self.tail.is_empty() {
            details.push("last lines of its output:".to_string());
            details.extend(self.tail.iter().map(|l| format!("  {l}")));
        }
        Error::new(
            ErrorKind::ImageBuildFailed,
            format!(
                "failed to build {reference} (service {service}): {}",
                why.trim()
            ),
        )
        .with_details(details)
        .with_hint(hint_for(service, self.step.as_deref(), why))
    }
}

/// The error a command returns when some builds failed, listing each failure.
pub fn failure_summary(outcomes: &[Outcome]) -> Option<Error> {
    let failed: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| matches!(o.status, Status::Failed(_)))
        .collect();
    if failed.is_empty() {
        return None;
    }
    if failed
        .iter()
        .any(|o| matches!(&o.status, Status::Failed(e) if e.kind == ErrorKind::Interrupted))
    {
        return Some(Error::interrupted());
    }
    if let [one] = failed.as_slice()
        && let Status::Failed(e) = &one.status
    {
        return Some(e.clone());
    }
    let names: Vec<&str> = failed.iter().map(|o| o.image.service.as_str()).collect();
    let mut details = Vec::new();
    let mut kind = ErrorKind::ImageBuildFailed;
    let (mut pulls, mut others) = (0, 0);
    for o in &failed {
        if let Status::Failed(e) = &o.status {
            if e.kind != ErrorKind::ImageBuildFailed {
                kind = e.kind;
            }
            if e.hint.as_deref().is_some_and(|h| h.starts_with(PULL_HINT)) {
                pulls += 1;
            } else {
                others += 1;
            }
            details.push(format!("{}: {}", o.image.service, e.message));
            details.extend(e.details.iter().map(|d| format!("  {d}")));
        }
    }
    // The hint follows the causes: base images that could not be pulled are a network
    // matter, not the Dockerfiles'.
    let hint = match (pulls, others) {
        (_, 0) => "base images could not be pulled: check the network and registry access \
                   (`docker pull` them; HTTPS_PROXY for the Docker daemon), then run `pulsedev build` again"
            .to_string(),
        (0, _) => "fix the failing Dockerfiles, then run `pulsedev build` again".to_string(),
        _ => "some base images could not be pulled (check the network and registry access) and \
              some builds failed (fix those Dockerfiles); then run `pulsedev build` again"
            .to_string(),
    };
    Some(
        Error::new(
            kind,
            format!(
                "failed to build {} of {} images: {}",
                failed.len(),
                outcomes.len(),
                names.join(", ")
            ),
        )
        .with_details(details)
        .with_hint(hint),
    )
}

/// How a failed pull's hint starts (see `hint_for`).
const PULL_HINT: &str = "the base image";

/// What to do about a failed build: a base image that could not be pulled is a network
/// or registry problem, not a Dockerfile one.
fn hint_for(service: &str, step: Option<&str>, why: &str) -> String {
    let pulling = step.is_some_and(|s| s.contains(" : FROM "));
    let network = [
        "no such host",
        "dial tcp",
        "i/o timeout",
        "TLS handshake timeout",
        "connection refused",
        "toomanyrequests",
        "pull access denied",
        "manifest unknown",
        "unauthorized",
    ]
    .iter()
    .any(|m| why.contains(m));
    if pulling || network {
        let image = step
            .and_then(|s| s.split(" : FROM ").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .map(|i| format!(" `{i}`"))
            .unwrap_or_default();
        format!(
            "{PULL_HINT}{image} could not be pulled: check the network and registry access \
             (`docker pull` it; HTTPS_PROXY for the Docker daemon), then run `pulsedev build {service}` again"
        )
    } else {
        format!(
            "fix the Dockerfile or the code it builds, then run `pulsedev build {service}` again"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_tell_a_pull_failure_from_a_broken_build() {
        let pull = hint_for(
            "api",
            Some("Step 1/16 : FROM docker.io/library/node:22-alpine@sha256:ab AS deps"),
            "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io: no such host",
        );
        assert!(
            pull.starts_with(
                "the base image `docker.io/library/node:22-alpine@sha256:ab` could not be pulled"
            ),
            "{pull}"
        );
        let broken = hint_for(
            "api",
            Some("Step 3/5 : RUN make"),
            "The command '/bin/sh -c make' returned a non-zero code: 2",
        );
        assert!(broken.starts_with("fix the Dockerfile"), "{broken}");
    }

    #[test]
    fn build_log_keeps_the_step_and_a_bounded_tail() {
        let mut log = BuildLog::default();
        assert!(log.push("Step 1/2 : FROM scratch"));
        assert!(!log.push(" ---> Running in abc"));
        assert!(log.push("Step 2/2 : RUN make"));
        for i in 0..40 {
            log.push(&format!("line {i}"));
        }
        let e = log.failure("api", "pulsewatch-api:0123", "exit 2");
        assert_eq!(e.kind, ErrorKind::ImageBuildFailed);
        assert_eq!(e.details[0], "failing step: Step 2/2 : RUN make");
        assert_eq!(e.details.len(), 2 + TAIL_LINES);
        assert_eq!(e.details.last().unwrap(), "  line 39");
        assert!(e.message.contains("pulsewatch-api:0123"));
    }

    #[test]
    fn output_lines_are_cleaned() {
        assert_eq!(strip_ansi("\x1b[91merror: boom\x1b[0m"), "error: boom");
        assert_eq!(strip_ansi("plain"), "plain");
        assert!(is_noise(" ---> Running in abc"));
        assert!(is_noise("Removing intermediate container abc"));
        assert!(!is_noise("compiling"));
    }

    #[test]
    fn tags_are_twelve_hex() {
        assert_eq!(tag_of(&"ab".repeat(32)), "abababababab");
    }

    #[test]
    fn summary_of_failures() {
        let img = |s: &str| LocalImage {
            service: s.into(),
            repository: format!("p-{s}"),
            tag: "t".into(),
            hash: "h".into(),
        };
        let ok = Outcome {
            image: img("web"),
            status: Status::Built,
            seconds: 1.0,
        };
        assert!(failure_summary(std::slice::from_ref(&ok)).is_none());
        let bad = |s: &str| Outcome {
            image: img(s),
            status: Status::Failed(Error::new(
                ErrorKind::ImageBuildFailed,
                format!("{s} broke"),
            )),
            seconds: 1.0,
        };
        let e = failure_summary(&[ok.clone(), bad("api")]).unwrap();
        assert_eq!(e.message, "api broke");
        let e = failure_summary(&[ok.clone(), bad("api"), bad("worker")]).unwrap();
        assert_eq!(e.kind, ErrorKind::ImageBuildFailed);
        assert!(
            e.message
                .starts_with("failed to build 2 of 3 images: api, worker")
        );
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .starts_with("fix the failing Dockerfiles")
        );
        // Base images that cannot be pulled: a network hint, not "fix the Dockerfiles".
        let unpulled = |s: &str| Outcome {
            image: img(s),
            status: Status::Failed(
                Error::new(ErrorKind::ImageBuildFailed, format!("{s}: no such host")).with_hint(
                    hint_for(
                        s,
                        Some("Step 1/4 : FROM node:22-alpine"),
                        "dial tcp: lookup registry-1.docker.io: no such host",
                    ),
                ),
            ),
            seconds: 1.0,
        };
        let e = failure_summary(&[ok.clone(), unpulled("api"), unpulled("worker")]).unwrap();
        let hint = e.hint.as_deref().unwrap();
        assert!(
            hint.starts_with("base images could not be pulled: check the network"),
            "{hint}"
        );
        let e = failure_summary(&[ok, unpulled("api"), bad("worker")]).unwrap();
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .starts_with("some base images could not be pulled")
        );
    }
}
