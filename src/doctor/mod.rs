//! Preflight checks of this machine, each with a status, a finding and a fix. `doctor`
//! prints them; `up` runs the same checks and stops on a failure.
//!
//! Owns: deciding whether the machine can run the dev environment. Must not change
//! anything on the machine.

pub mod downloads;
pub mod ports;
pub mod system;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::config::Config;
use crate::docker::{self, EngineInfo};
use crate::error::{Error, ErrorKind};
use crate::tools::{self, Tool};
use crate::ui::{Style, paint};

use ports::PortState;
use system::{MIN_FREE_DISK, MIN_MEMORY, gib};

// Ports published by kind's node containers, or by the registry container pulsedev
// runs, belong to the cluster: not a conflict.
use crate::cluster::nodes::KIND_CLUSTER_LABEL;
use crate::images::registry::CLUSTER_LABEL as PULSEDEV_CLUSTER_LABEL;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// What was checked: docker, memory, disk, kind, helm, port-http, … (stable).
    pub id: String,
    pub status: Status,
    /// The stable error or warning id when the status is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<&'static str>,
    pub message: String,
    pub hint: Option<String>,
}

impl Check {
    fn ok(id: &str, message: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            status: Status::Ok,
            problem: None,
            message: message.into(),
            hint: None,
        }
    }

    fn warn(
        id: &str,
        problem: &'static str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> Check {
        Check {
            id: id.into(),
            status: Status::Warn,
            problem: Some(problem),
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(id: &str, kind: ErrorKind, message: impl Into<String>, hint: Option<String>) -> Check {
        Check {
            id: id.into(),
            status: Status::Fail,
            problem: Some(kind.id()),
            message: message.into(),
            hint,
        }
    }

    fn from_error(id: &str, e: Error) -> Check {
        let d = *e.0;
        Check::fail(id, d.kind, d.message, d.hint)
    }
}

/// What the checks read from the machine, passed in so tests can point them elsewhere.
#[derive(Debug, Clone)]
pub struct Machine {
    pub env: std::collections::HashMap<String, String>,
    pub home: Option<PathBuf>,
    pub path_var: Option<OsString>,
    pub cwd: PathBuf,
    pub proc_root: PathBuf,
    /// How long the Docker engine may take to answer before it counts as hanging.
    pub docker_timeout: Duration,
    pub tool_timeout: Duration,
    /// Whether to check what `up` downloads (`downloads`): doctor does, `up`'s own
    /// preflight does not (its steps report a failed download themselves).
    pub downloads: bool,
}

impl Machine {
    pub fn from_process(docker_timeout: Duration) -> Machine {
        Machine {
            env: std::env::vars().collect(),
            home: dirs::home_dir(),
            path_var: std::env::var_os("PATH"),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            proc_root: PathBuf::from("/proc"),
            docker_timeout,
            tool_timeout: Duration::from_secs(5),
            downloads: true,
        }
    }

    fn var(&self, k: &str) -> Option<String> {
        self.env.get(k).cloned()
    }
}

/// Runs every check concurrently; the result is in a fixed order.
pub async fn run(config: &Config, m: &Machine) -> Vec<Check> {
    let (docker_checks, docker_cli, kind, helm, inotify, downloads) = tokio::join!(
        check_docker(config, m),
        check_docker_cli(m),
        check_tool(&tools::KIND, m),
        check_tool(&tools::HELM, m),
        async { check_inotify(m) },
        async {
            if m.downloads {
                downloads::checks(config, m).await
            } else {
                Vec::new()
            }
        },
    );
    let (mut checks, owned_ports, rootless) = docker_checks;
    checks.push(docker_cli);
    checks.push(kind);
    checks.push(helm);
    for (id, port) in [
        ("port-http", config.ports.http),
        ("port-https", config.ports.https),
        ("port-registry", config.ports.registry),
    ] {
        checks.push(check_port(id, port, &owned_ports, rootless, m));
    }
    checks.push(inotify);
    checks.extend(downloads);
    checks
}

/// The docker check plus the memory and disk checks that need the engine's /info.
/// Also returns the host ports our own cluster already publishes, and rootlessness.
async fn check_docker(
    config: &Config,
    m: &Machine,
) -> (Vec<Check>, Vec<(u16, String)>, Option<bool>) {
    // Without the engine's own figures, the host's: a newcomer still learns whether
    // this machine has the memory and disk, while the docker check says what to fix.
    let without_engine = |e: Error| {
        let checks = vec![
            Check::from_error("docker", e),
            check_host_memory(m),
            check_host_disk(),
        ];
        (checks, vec![], None)
    };
    let endpoint = match docker::resolve(&|k| m.var(k), m.home.as_deref()) {
        Ok(e) => e,
        Err(e) => return without_engine(e),
    };
    let engine = match docker::connect(&endpoint, m.docker_timeout).await {
        Ok(engine) => engine,
        Err(e) => return without_engine(e),
    };
    let info = match tokio::time::timeout(m.docker_timeout, engine.info()).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return without_engine(e),
        Err(_) => {
            return without_engine(Error::new(
                ErrorKind::DockerUnreachable,
                format!(
                    "the Docker engine at {} did not answer /info in time",
                    endpoint.host
                ),
            ));
        }
    };
    let mut owned = Vec::new();
    for label in [KIND_CLUSTER_LABEL, PULSEDEV_CLUSTER_LABEL] {
        if let Ok(ports) = engine
            .published_ports(&format!("{label}={}", config.name))
            .await
        {
            owned.extend(ports);
        }
    }
    let mut checks = vec![Check::ok(
        "docker",
        format!(
            "Docker {} (API {}) at {} ({}): {}",
            info.version,
            info.api_version,
            endpoint.host,
            endpoint.source,
            describe(&info)
        ),
    )];
    checks.push(check_memory(&info));
    checks.push(check_disk(&info, &endpoint.host));
    (checks, owned, Some(info.rootless))
}

/// Memory of the host when the engine cannot say how much it gives containers.
fn check_host_memory(m: &Machine) -> Check {
    match system::host_memory(&m.proc_root) {
        Some(mem) if mem < MIN_MEMORY => Check::warn(
            "memory",
            "memory-low",
            format!(
                "this host has {} of memory (Docker did not answer, so its own limit is unknown); the stack wants at least {}",
                gib(mem),
                gib(MIN_MEMORY)
            ),
            "use a machine with more memory, or close other programs",
        ),
        Some(mem) => Check::ok(
            "memory",
            format!(
                "this host has {} (Docker did not answer, so the memory it gives containers is unknown)",
                gib(mem)
            ),
        ),
        None => Check::ok(
            "memory",
            format!(
                "not measured: Docker did not answer and {} is unreadable",
                m.proc_root.join("meminfo").display()
            ),
        ),
    }
}

/// Free disk where a local engine usually keeps its data, when the engine cannot say
/// where its data root is.
fn check_host_disk() -> Check {
    let default_root = PathBuf::from("/var/lib/docker");
    let dir = if default_root.is_dir() {
        default_root
    } else {
        PathBuf::from("/")
    };
    match system::free_bytes(&dir) {
        Some(free) if free < MIN_FREE_DISK => Check::warn(
            "disk",
            "disk-low",
            format!(
                "{} free on the filesystem of {} (Docker did not answer; its data root is unknown); at least {} is advised",
                gib(free),
                dir.display(),
                gib(MIN_FREE_DISK)
            ),
            "free space, or move Docker's data root to a larger filesystem",
        ),
        Some(free) => Check::ok(
            "disk",
            format!(
                "{} free on the filesystem of {} (Docker did not answer; its data root is unknown)",
                gib(free),
                dir.display()
            ),
        ),
        None => Check::ok(
            "disk",
            format!(
                "not measured: Docker did not answer and {} cannot be read",
                dir.display()
            ),
        ),
    }
}

fn describe(info: &EngineInfo) -> String {
    let mut parts = vec![
        docker::platform(info),
        format!("{} CPUs", info.cpus),
        gib(info.memory_bytes.max(0) as u64),
        format!(
            "cgroup v{}",
            if info.cgroup_version.is_empty() {
                "?"
            } else {
                &info.cgroup_version
            }
        ),
        format!("storage {}", info.storage_driver),
    ];
    if info.rootless {
        parts.push("rootless".into());
    }
    parts.join(", ")
}

fn check_memory(info: &EngineInfo) -> Check {
    let mem = info.memory_bytes.max(0) as u64;
    if mem < MIN_MEMORY {
        Check::warn(
            "memory",
            "memory-low",
            format!(
                "the Docker engine has {} of memory; the stack wants at least {}",
                gib(mem),
                gib(MIN_MEMORY)
            ),
            "give Docker more memory (Docker Desktop / colima: its resource settings), or close other containers",
        )
    } else {
        Check::ok("memory", format!("{} available to containers", gib(mem)))
    }
}

fn check_disk(info: &EngineInfo, host: &str) -> Check {
    let dir = PathBuf::from(&info.root_dir);
    // Only a local engine's data directory can be measured from here.
    let local = host.starts_with("unix://") && dir.is_absolute() && dir.exists();
    match local.then(|| system::free_bytes(&dir)).flatten() {
        Some(free) if free < MIN_FREE_DISK => Check::warn(
            "disk",
            "disk-low",
            format!(
                "{} free on the filesystem of {} (Docker's data); at least {} is advised",
                gib(free),
                dir.display(),
                gib(MIN_FREE_DISK)
            ),
            "free space with `docker system prune` (removes unused images and build cache), or move Docker's data root",
        ),
        Some(free) => Check::ok(
            "disk",
            format!(
                "{} free where Docker keeps its data ({})",
                gib(free),
                dir.display()
            ),
        ),
        None => Check::ok(
            "disk",
            format!(
                "Docker's data directory {} is not on this host (engine in a VM?); not measured",
                info.root_dir
            ),
        ),
    }
}

/// kind makes the nodes by running the `docker` CLI it finds on PATH (pulsedev runs
/// kind with KIND_EXPERIMENTAL_PROVIDER=docker, see `cluster::kind::PROVIDER_ENV`).
/// It must be Docker's own: kind's test is one line of `docker -v` starting with
/// "Docker version" (kind v0.32.0: pkg/cluster/internal/providers/docker/util.go,
/// `IsAvailable`); podman's `docker` shim prints "podman version …", and nodes made
/// through it are invisible to the Docker API pulsedev uses.
async fn check_docker_cli(m: &Machine) -> Check {
    let id = "docker-cli";
    let install = "install Docker's command-line client (the `docker` of Docker Engine or Docker Desktop, https://docs.docker.com/engine/install/) and put it first on PATH";
    let Ok(path) = which::which_in("docker", m.path_var.as_deref(), &m.cwd) else {
        return Check::fail(
            id,
            ErrorKind::ToolMissing,
            "the `docker` command is not on PATH; kind runs it to create the cluster's nodes",
            Some(install.to_string()),
        );
    };
    let run = tokio::process::Command::new(&path)
        .arg("-v")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let text = match tokio::time::timeout(m.tool_timeout, run).await {
        Ok(Ok(out)) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        Ok(Ok(out)) => format!("exit status {}", out.status),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {}s", m.tool_timeout.as_secs_f32()),
    };
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() == 1 && lines[0].starts_with("Docker version") {
        return Check::ok(id, format!("{} at {}", lines[0].trim(), path.display()));
    }
    Check::fail(
        id,
        ErrorKind::ToolMissing,
        format!(
            "`{} -v` does not say \"Docker version\" ({:?}): it is not Docker's CLI (podman's docker shim?), and kind would make the nodes with it where pulsedev cannot see them",
            path.display(),
            text.trim()
        ),
        Some(install.to_string()),
    )
}

async fn check_tool(tool: &Tool, m: &Machine) -> Check {
    let unusable = match tools::locate(tool, m.path_var.as_deref(), &m.cwd) {
        None => Check::fail(
            tool.name,
            ErrorKind::ToolMissing,
            format!("{} is not on PATH", tool.name),
            Some(format!(
                "install {} {} (minimum {}): {}",
                tool.name, tool.pinned, tool.minimum, tool.install_url
            )),
        ),
        Some(path) => match tools::version(tool, &path, m.tool_timeout).await {
            Err(e) => Check::from_error(tool.name, e),
            Ok(v) => match tool.unusable(v) {
                Some((kind, why)) => Check::fail(
                    tool.name,
                    kind,
                    format!("{} at {}: {why}", tool.name, path.display()),
                    Some(format!(
                        "install {} {}: {}",
                        tool.name, tool.pinned, tool.install_url
                    )),
                ),
                None => {
                    return Check::ok(
                        tool.name,
                        format!("{} {v} at {}", tool.name, path.display()),
                    );
                }
            },
        },
    };
    // pulsedev fetches its pinned release itself, so an unusable tool only fails the
    // check when there is nothing pinned (or cached) for this platform.
    let dirs = crate::state::Dirs::resolve(&|k| m.var(k), m.home.as_deref());
    let fallback = match (dirs, tools::pins_text()) {
        (Ok(dirs), Ok(pins)) => tools::fallback(tool, &dirs.tools(), &pins),
        _ => tools::Fallback::Unavailable,
    };
    match fallback {
        tools::Fallback::Cached { path, version } => {
            let mut check = Check::ok(
                tool.name,
                format!(
                    "{} v{} from pulsedev's cache at {}, checked against its pin ({})",
                    tool.name,
                    version.trim_start_matches('v'),
                    path.display(),
                    unusable.message
                ),
            );
            let overridden = tools::override_warnings(&|k| m.var(k));
            if !overridden.is_empty() {
                check.status = Status::Warn;
                check.hint = Some(overridden.join("; "));
            }
            check
        }
        tools::Fallback::Download { version } => Check {
            status: Status::Warn,
            hint: Some(format!(
                "`pulsedev up` will download the pinned {} v{} (SHA-256 verified) into its cache; to use your own, install it: {}",
                tool.name,
                version.trim_start_matches('v'),
                tool.install_url
            )),
            ..unusable
        },
        tools::Fallback::Tampered { why } => Check::fail(
            tool.name,
            ErrorKind::ToolChecksumMismatch,
            why,
            Some(format!(
                "`pulsedev up` downloads the pinned {} again; to use your own, install it: {}",
                tool.name, tool.install_url
            )),
        ),
        tools::Fallback::Unavailable => unusable,
    }
}

fn check_port(
    id: &str,
    port: u16,
    owned: &[(u16, String)],
    rootless: Option<bool>,
    m: &Machine,
) -> Check {
    let key = id.trim_start_matches("port-");
    let knob = format!("`--{key}-port N` (or ports.{key} in pulsedev.toml)");
    // A listener already there may be our own cluster from an earlier `up`.
    if let Some((_, container)) = owned.iter().find(|(p, _)| *p == port) {
        return Check::ok(
            id,
            format!("127.0.0.1:{port} is published by this cluster's container {container}"),
        );
    }
    match ports::probe(port, &m.proc_root) {
        PortState::Free => Check::ok(id, format!("127.0.0.1:{port} is free")),
        PortState::InUse(holder) => {
            let by = match holder {
                Some(h) => format!(" by pid {} ({})", h.pid, h.command),
                None => " by another process (run as root to see which)".to_string(),
            };
            Check::fail(
                id,
                ErrorKind::PortInUse,
                format!("127.0.0.1:{port} is in use{by}"),
                Some(format!(
                    "stop that process, or choose another port with {knob}"
                )),
            )
        }
        // The engine did not answer: whether it may bind the port depends on it (a
        // rootful one does), so this is no failure of its own; the docker check is.
        PortState::PermissionDenied if rootless.is_none() => Check::warn(
            id,
            ErrorKind::PortPermissionDenied.id(),
            format!(
                "permission denied binding 127.0.0.1:{port} as this user, so it was not probed; whether Docker may bind it is unknown until it answers"
            ),
            format!(
                "fix the docker check first; a rootful Docker binds ports below 1024 for kind, a rootless one needs a port above 1023 ({knob})"
            ),
        ),
        PortState::PermissionDenied if rootless == Some(false) => Check::warn(
            id,
            ErrorKind::PortPermissionDenied.id(),
            format!(
                "permission denied binding 127.0.0.1:{port} as this user, so it was not probed; Docker runs as root and binds it for kind"
            ),
            format!(
                "nothing to do unless `up` reports the port busy; to probe it, run doctor as root or pick a port above 1023 with {knob}"
            ),
        ),
        PortState::PermissionDenied => Check::fail(
            id,
            ErrorKind::PortPermissionDenied,
            format!(
                "permission denied binding 127.0.0.1:{port}: ports below 1024 need privileges{}",
                if rootless == Some(true) {
                    " that rootless Docker lacks"
                } else {
                    ""
                }
            ),
            Some(format!(
                "allow it with `sudo sysctl net.ipv4.ip_unprivileged_port_start={port}`, or choose a port above 1023 with {knob}"
            )),
        ),
        PortState::Other(why) => Check::fail(
            id,
            ErrorKind::PortInUse,
            format!("cannot bind 127.0.0.1:{port}: {why}"),
            Some(format!("choose another port with {knob}")),
        ),
    }
}

fn check_inotify(m: &Machine) -> Check {
    let limits = system::read_inotify(&m.proc_root);
    let fixes = system::inotify_fixes(&limits);
    let shown = |v: Option<u64>| v.map_or("unknown".to_string(), |v| v.to_string());
    let now = format!(
        "fs.inotify.max_user_watches={}, max_user_instances={}",
        shown(limits.max_user_watches),
        shown(limits.max_user_instances)
    );
    if fixes.is_empty() {
        return Check::ok("inotify", now);
    }
    let lines: Vec<String> = fixes.iter().map(|f| format!("`sudo sysctl {f}`")).collect();
    Check::warn(
        "inotify",
        "inotify-limits-low",
        format!("inotify limits are low ({now}); kind nodes fail with \"too many open files\""),
        format!(
            "run {}; to keep them after a reboot, add the same lines to /etc/sysctl.d/99-pulsedev.conf",
            lines.join(" and ")
        ),
    )
}

/// True when no check failed (warnings are fine).
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

/// The error `doctor` (or `up`'s preflight) ends with when a check failed: the id of
/// the first failure, with every failure listed.
pub fn failure(checks: &[Check]) -> Option<Error> {
    let failed: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Fail).collect();
    let first = failed.first()?;
    let kind = first
        .problem
        .and_then(ErrorKind::from_id)
        .unwrap_or(ErrorKind::PreflightFailed);
    let message = if failed.len() == 1 {
        format!("this machine is not ready: {}", first.message)
    } else {
        format!("this machine is not ready: {} checks failed", failed.len())
    };
    let mut e = Error::new(kind, message).with_details(
        failed
            .iter()
            .map(|c| format!("{}: {}", c.id, c.message))
            .collect(),
    );
    e.hint = Some(if failed.len() == 1 {
        first.hint.clone().unwrap_or_default()
    } else {
        "fix each failed check (`pulsedev doctor` shows the fix for each), then run again".into()
    });
    Some(e)
}

pub fn to_json(checks: &[Check]) -> serde_json::Value {
    let mut doc = json!({ "ok": passed(checks), "checks": checks });
    if let Some(mut e) = failure(checks) {
        // The checks above already list every failure.
        e.details.clear();
        doc["error"] = crate::ui::error_json(&e);
    }
    doc
}

/// The human table: one line per check, the fix beneath anything not ok.
pub fn render(checks: &[Check], color: bool) -> String {
    let width = checks.iter().map(|c| c.id.len()).max().unwrap_or(0);
    let mut out = String::new();
    for c in checks {
        let (word, style) = match c.status {
            Status::Ok => ("ok", Style::Green),
            Status::Warn => ("warn", Style::Yellow),
            Status::Fail => ("fail", Style::Red),
        };
        out.push_str(&format!(
            "{} {:width$}  {}\n",
            paint(color, style, &format!("{word:4}")),
            c.id,
            c.message
        ));
        if c.status != Status::Ok
            && let Some(h) = &c.hint
        {
            out.push_str(&format!(
                "     {:width$}  {} {h}\n",
                "",
                paint(color, Style::Dim, "fix:")
            ));
        }
    }
    let fails = checks.iter().filter(|c| c.status == Status::Fail).count();
    let warns = checks.iter().filter(|c| c.status == Status::Warn).count();
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    out.push_str(&format!(
        "\n{} passed, {}, {}\n",
        checks.len() - fails - warns,
        plural(warns, "warning"),
        plural(fails, "failure")
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checks() -> Vec<Check> {
        vec![
            Check::ok(
                "docker",
                "Docker 20.10.24 at unix:///x.sock (from DOCKER_HOST)",
            ),
            Check::warn(
                "inotify",
                "inotify-limits-low",
                "limits are low",
                "run `sudo sysctl x=1`",
            ),
            Check::fail(
                "kind",
                ErrorKind::ToolMissing,
                "kind is not on PATH",
                Some("install kind".into()),
            ),
        ]
    }

    #[test]
    fn rendering_human() {
        insta::assert_snapshot!(render(&checks(), false), @r"
        ok   docker   Docker 20.10.24 at unix:///x.sock (from DOCKER_HOST)
        warn inotify  limits are low
                      fix: run `sudo sysctl x=1`
        fail kind     kind is not on PATH
                      fix: install kind

        1 passed, 1 warning, 1 failure
        ");
    }

    #[test]
    fn rendering_json_carries_the_error_of_the_first_failure() {
        let doc = to_json(&checks());
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["checks"][1]["status"], "warn");
        assert_eq!(doc["checks"][1]["problem"], "inotify-limits-low");
        assert_eq!(doc["checks"][2]["problem"], "tool-missing");
        assert!(doc["checks"][0].get("problem").is_none());
        assert_eq!(doc["error"]["id"], "tool-missing");
        assert_eq!(doc["error"]["exit_code"], 3);
    }

    #[test]
    fn warnings_alone_pass() {
        let c = &checks()[..2];
        assert!(passed(c));
        assert!(failure(c).is_none());
        assert_eq!(to_json(c)["ok"], true);
    }

    #[test]
    fn several_failures_are_listed() {
        let mut c = checks();
        c.push(Check::fail(
            "port-https",
            ErrorKind::PortInUse,
            "busy",
            None,
        ));
        let e = failure(&c).unwrap();
        assert_eq!(e.kind, ErrorKind::ToolMissing);
        assert_eq!(e.exit_code(), 3);
        assert_eq!(
            e.details,
            vec!["kind: kind is not on PATH", "port-https: busy"]
        );
    }
}
