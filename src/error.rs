//! Error kinds, their stable ids, exit codes and hints.
//!
//! Owns: the one error type every command returns, the mapping from kind to id and
//! exit code (the table in README.md "Exit codes"), and nothing about rendering
//! (that is `ui`). Must not touch Docker, Kubernetes or processes.

use std::fmt;

/// Every failure pulsedev reports has one of these kinds. The id is part of the
/// public contract (CLI.md): ids are added, never renamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    DockerUnreachable,
    DockerPermissionDenied,
    PortInUse,
    /// Binding a low port needs privileges this user (or rootless Docker) lacks.
    PortPermissionDenied,
    ToolMissing,
    ToolTooOld,
    ToolChecksumMismatch,
    /// A preflight check failed; the details list the failing checks.
    PreflightFailed,
    ConfigInvalid,
    ClusterCreateFailed,
    /// Another pulsedev holds the cluster's lock (its pid is named).
    ClusterBusy,
    /// An existing cluster was made from a different definition (kind config, ports,
    /// node image) than the one pulsedev would use now.
    ClusterDrift,
    NotAKindContext,
    ImageBuildFailed,
    ImagePushFailed,
    /// `helm template` failed: a chart or values problem.
    RenderFailed,
    /// A pinned platform chart could not be fetched (`helm pull`).
    ChartFetchFailed,
    /// Something `up` downloads is not on this machine and its source does not answer
    /// (doctor's download checks).
    DownloadUnreachable,
    ApplyFailed,
    WebhookNotReady,
    RolloutTimeout,
    PodCrashLooping,
    ImagePullFailed,
    /// A container cannot be created from its spec (CreateContainerConfigError: a
    /// missing Secret, ConfigMap or key it refers to).
    ContainerConfigError,
    /// A controller cannot create the pods at all (FailedCreate: Pod Security
    /// admission, a quota, a webhook).
    PodCreateFailed,
    MigrationsFailed,
    /// A Job other than the migrations Job ended Failed.
    JobFailed,
    /// `status` found something missing or not ready (the table says what).
    NotReady,
    /// `dev` cannot watch the files: the inotify watch limit is used up (ENOSPC).
    WatchLimitReached,
    Interrupted,
    /// The user answered "no" to a question (`reset`'s confirmation): nothing changed.
    Declined,
    /// An exec found no pod to run in: it does not exist, lacks the container, or is
    /// not running it (replaced by a rollout, restarting).
    PodUnavailable,
    /// A command run in a container (over exec) failed, or the session broke.
    ExecFailed,
    /// Bad command line (clap reports most of these itself).
    Usage,
    /// Anything else: an I/O error we did not expect, a bug.
    Internal,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 35] = [
        ErrorKind::DockerUnreachable,
        ErrorKind::DockerPermissionDenied,
        ErrorKind::PortInUse,
        ErrorKind::PortPermissionDenied,
        ErrorKind::ToolMissing,
        ErrorKind::ToolTooOld,
        ErrorKind::ToolChecksumMismatch,
        ErrorKind::PreflightFailed,
        ErrorKind::ConfigInvalid,
        ErrorKind::ClusterCreateFailed,
        ErrorKind::ClusterBusy,
        ErrorKind::ClusterDrift,
        ErrorKind::NotAKindContext,
        ErrorKind::ImageBuildFailed,
        ErrorKind::ImagePushFailed,
        ErrorKind::RenderFailed,
        ErrorKind::ChartFetchFailed,
        ErrorKind::DownloadUnreachable,
        ErrorKind::ApplyFailed,
        ErrorKind::WebhookNotReady,
        ErrorKind::RolloutTimeout,
        ErrorKind::PodCrashLooping,
        ErrorKind::ImagePullFailed,
        ErrorKind::ContainerConfigError,
        ErrorKind::PodCreateFailed,
        ErrorKind::MigrationsFailed,
        ErrorKind::JobFailed,
        ErrorKind::NotReady,
        ErrorKind::WatchLimitReached,
        ErrorKind::Interrupted,
        ErrorKind::Declined,
        ErrorKind::PodUnavailable,
        ErrorKind::ExecFailed,
        ErrorKind::Usage,
        ErrorKind::Internal,
    ];

    pub fn from_id(id: &str) -> Option<ErrorKind> {
        ErrorKind::ALL.into_iter().find(|k| k.id() == id)
    }

    /// The stable id printed in `error[<id>]` and in JSON `error.id`.
    pub fn id(self) -> &'static str {
        match self {
            ErrorKind::DockerUnreachable => "docker-unreachable",
            ErrorKind::DockerPermissionDenied => "docker-permission-denied",
            ErrorKind::PortInUse => "port-in-use",
            ErrorKind::PortPermissionDenied => "port-permission-denied",
            ErrorKind::ToolMissing => "tool-missing",
            ErrorKind::ToolTooOld => "tool-too-old",
            ErrorKind::ToolChecksumMismatch => "tool-checksum-mismatch",
            ErrorKind::PreflightFailed => "preflight-failed",
            ErrorKind::ConfigInvalid => "config-invalid",
            ErrorKind::ClusterCreateFailed => "cluster-create-failed",
            ErrorKind::ClusterBusy => "cluster-busy",
            ErrorKind::ClusterDrift => "cluster-drift",
            ErrorKind::NotAKindContext => "not-a-kind-context",
            ErrorKind::ImageBuildFailed => "image-build-failed",
            ErrorKind::ImagePushFailed => "image-push-failed",
            ErrorKind::RenderFailed => "render-failed",
            ErrorKind::ChartFetchFailed => "chart-fetch-failed",
            ErrorKind::DownloadUnreachable => "download-unreachable",
            ErrorKind::ApplyFailed => "apply-failed",
            ErrorKind::WebhookNotReady => "webhook-not-ready",
            ErrorKind::RolloutTimeout => "rollout-timeout",
            ErrorKind::PodCrashLooping => "pod-crash-looping",
            ErrorKind::ImagePullFailed => "image-pull-failed",
            ErrorKind::ContainerConfigError => "container-config-error",
            ErrorKind::PodCreateFailed => "pod-create-failed",
            ErrorKind::MigrationsFailed => "migrations-failed",
            ErrorKind::JobFailed => "job-failed",
            ErrorKind::NotReady => "not-ready",
            ErrorKind::WatchLimitReached => "watch-limit-reached",
            ErrorKind::Interrupted => "interrupted",
            ErrorKind::Declined => "declined",
            ErrorKind::PodUnavailable => "pod-unavailable",
            ErrorKind::ExecFailed => "exec-failed",
            ErrorKind::Usage => "usage",
            ErrorKind::Internal => "internal",
        }
    }

    /// Exit codes (CLI.md): 1 the work failed, 2 usage, 3 machine not ready,
    /// 4 configuration invalid, 130 interrupted.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::DockerUnreachable
            | ErrorKind::DockerPermissionDenied
            | ErrorKind::PortInUse
            | ErrorKind::PortPermissionDenied
            | ErrorKind::ToolMissing
            | ErrorKind::ToolTooOld
            | ErrorKind::ToolChecksumMismatch
            | ErrorKind::DownloadUnreachable
            | ErrorKind::PreflightFailed
            | ErrorKind::WatchLimitReached => exit::MACHINE_NOT_READY,
            // Pointing pulsedev at a context it did not make is a configuration
            // problem of the invocation, not a failed piece of work.
            ErrorKind::ConfigInvalid | ErrorKind::NotAKindContext => exit::CONFIG_INVALID,
            ErrorKind::Usage => exit::USAGE,
            ErrorKind::Interrupted => exit::INTERRUPTED,
            ErrorKind::ClusterCreateFailed
            | ErrorKind::ClusterBusy
            | ErrorKind::ClusterDrift
            | ErrorKind::ImageBuildFailed
            | ErrorKind::ImagePushFailed
            | ErrorKind::RenderFailed
            | ErrorKind::ChartFetchFailed
            | ErrorKind::ApplyFailed
            | ErrorKind::WebhookNotReady
            | ErrorKind::RolloutTimeout
            | ErrorKind::PodCrashLooping
            | ErrorKind::ImagePullFailed
            | ErrorKind::ContainerConfigError
            | ErrorKind::PodCreateFailed
            | ErrorKind::MigrationsFailed
            | ErrorKind::JobFailed
            | ErrorKind::NotReady
            | ErrorKind::Declined
            | ErrorKind::PodUnavailable
            | ErrorKind::ExecFailed
            | ErrorKind::Internal => exit::FAILED,
        }
    }
}

/// The documented exit codes, in one place.
pub mod exit {
    pub const SUCCESS: i32 = 0;
    pub const FAILED: i32 = 1;
    pub const USAGE: i32 = 2;
    pub const MACHINE_NOT_READY: i32 = 3;
    pub const CONFIG_INVALID: i32 = 4;
    /// Ctrl-C; SIGTERM and SIGHUP exit 128 + their number (143, 129).
    pub const INTERRUPTED: i32 = 130;
}

/// A failure as the user sees it: what happened (`message`, reads "failed to …" or
/// names the cause), what to do (`hint`), and supporting lines (`details`, e.g. each
/// config problem, or a pod diagnosis). `data` carries structured detail for JSON.
///
/// Boxed, so `Result<T>` stays one pointer wide on the happy path; the fields are
/// reached through `Deref`.
#[derive(Debug, Clone)]
pub struct Error(pub Box<Details>);

#[derive(Debug, Clone)]
pub struct Details {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
    pub details: Vec<String>,
    pub data: Option<serde_json::Value>,
    /// The command already wrote its JSON document, which embeds this error
    /// (doctor's check list): the renderer must not write a second one.
    pub emitted: bool,
    /// An exit code other than the kind's: `interrupted` by SIGTERM (143) or SIGHUP
    /// (129) rather than Ctrl-C (130).
    pub exit: Option<i32>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error(Box::new(Details {
            kind,
            message: message.into(),
            hint: None,
            details: Vec::new(),
            data: None,
            emitted: false,
            exit: None,
        }))
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn interrupted() -> Self {
        Error::new(ErrorKind::Interrupted, "interrupted").with_hint(
            "run the same command again to resume, or `pulsedev down` to remove what was made",
        )
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_details(mut self, details: Vec<String>) -> Self {
        self.details = details;
        self
    }

    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = Some(data);
        self
    }

    pub fn id(&self) -> &'static str {
        self.kind.id()
    }

    pub fn exit_code(&self) -> i32 {
        self.exit.unwrap_or_else(|| self.kind.exit_code())
    }
}

impl std::ops::Deref for Error {
    type Target = Details;
    fn deref(&self) -> &Details {
        &self.0
    }
}

impl std::ops::DerefMut for Error {
    fn deref_mut(&mut self) -> &mut Details {
        &mut self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl std::error::Error for Error {}

/// `e` with the causes in its source chain (reqwest and hyper hide the one that matters,
/// "connection refused", a DNS failure, there), each said once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(&format!(": {t}"));
        }
        cur = c.source();
    }
    s
}

/// Adds "failed to <what>" context to an I/O-ish error as an internal error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::internal(format!("failed to {}: {e}", what())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_kebab_case() {
        let mut seen = HashSet::new();
        for kind in ErrorKind::ALL {
            let id = kind.id();
            assert!(seen.insert(id), "duplicate id {id}");
            assert!(
                id.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{id} is not kebab-case"
            );
        }
    }

    #[test]
    fn every_id_of_the_contract_exists() {
        // The ids CLI.md promises; renaming one breaks users' scripts.
        let contract = [
            "docker-unreachable",
            "docker-permission-denied",
            "port-in-use",
            "tool-missing",
            "tool-too-old",
            "tool-checksum-mismatch",
            "config-invalid",
            "cluster-create-failed",
            "not-a-kind-context",
            "image-build-failed",
            "image-push-failed",
            "apply-failed",
            "webhook-not-ready",
            "rollout-timeout",
            "pod-crash-looping",
            "image-pull-failed",
            "migrations-failed",
            "interrupted",
        ];
        let ids: HashSet<_> = ErrorKind::ALL.iter().map(|k| k.id()).collect();
        for id in contract {
            assert!(ids.contains(id), "missing contract id {id}");
        }
    }

    #[test]
    fn the_readme_documents_every_id() {
        let readme = include_str!("../README.md");
        for kind in ErrorKind::ALL {
            assert!(
                readme.contains(kind.id()),
                "README.md does not list {}",
                kind.id()
            );
        }
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(ErrorKind::DockerUnreachable.exit_code(), 3);
        assert_eq!(ErrorKind::PortInUse.exit_code(), 3);
        assert_eq!(ErrorKind::ToolMissing.exit_code(), 3);
        assert_eq!(ErrorKind::ConfigInvalid.exit_code(), 4);
        assert_eq!(ErrorKind::Usage.exit_code(), 2);
        assert_eq!(ErrorKind::Interrupted.exit_code(), 130);
        assert_eq!(ErrorKind::ImageBuildFailed.exit_code(), 1);
        assert_eq!(ErrorKind::MigrationsFailed.exit_code(), 1);
        for kind in ErrorKind::ALL {
            assert!([1, 2, 3, 4, 130].contains(&kind.exit_code()));
        }
    }

    #[test]
    fn an_error_chain_names_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl fmt::Display for E {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let dns = E("dns error: no such host", None);
        let connect = E("client error (Connect)", Some(Box::new(dns)));
        // hyper's outer error already quotes its cause: said once.
        let outer = E(
            "error sending request: client error (Connect)",
            Some(Box::new(connect)),
        );
        assert_eq!(
            error_chain(&outer),
            "error sending request: client error (Connect): dns error: no such host"
        );
    }
}
