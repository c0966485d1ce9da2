//! The kind command line, as pulsedev uses it: list, create, delete. Goes through
//! `process::Runner`, so tests see the exact arguments.

use std::path::Path;
use std::time::Duration;

use super::process::{Cmd, Failure, Runner};
use crate::error::{Error, ErrorKind, Result};

pub struct Kind<'a> {
    pub runner: &'a dyn Runner,
    pub bin: &'a Path,
}

/// Plenty for listing; a hung `kind get clusters` means a hung Docker.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);
const DELETE_TIMEOUT: Duration = Duration::from_secs(300);

/// kind picks its node provider from this variable, else auto-detects: docker when
/// `docker -v` prints "Docker version", else nerdctl, else podman (kind v0.32.0:
/// pkg/internal/runtime/runtime.go `GetDefault`, pkg/cluster/provider.go
/// `DetectNodeProvider`, pkg/cluster/internal/providers/docker/util.go `IsAvailable`).
/// pulsedev sees nodes only through the Docker API, so it always asks for docker: a
/// machine whose `docker` is podman's shim would otherwise get podman nodes that
/// pulsedev cannot find. `doctor` checks that `docker` is Docker's CLI.
pub const PROVIDER_ENV: &str = "KIND_EXPERIMENTAL_PROVIDER";

/// kind takes `<kubeconfig>.lock` with O_CREATE|O_EXCL around every kubeconfig write
/// and removes it after (kind v0.32.0: pkg/cluster/internal/kubeconfig/internal/
/// kubeconfig/lock.go, merge.go, remove.go). A kind killed in between leaves it, and
/// every later create or delete then fails with "failed to lock config file".
pub fn lock_file(kubeconfig: &Path) -> std::path::PathBuf {
    let mut name = kubeconfig.as_os_str().to_owned();
    name.push(".lock");
    std::path::PathBuf::from(name)
}

impl Kind<'_> {
    fn cmd(&self) -> Cmd {
        let mut cmd = Cmd::new(self.bin);
        cmd.env
            .push((PROVIDER_ENV.to_string(), "docker".to_string()));
        cmd
    }

    /// `kind get clusters`: the names of every kind cluster on this engine.
    pub async fn clusters(&self) -> Result<Vec<String>> {
        let cmd = self.cmd().args(["get", "clusters"]);
        let out = self
            .runner
            .run(&cmd, Some(LIST_TIMEOUT))
            .await
            .map_err(|f| failed("list the kind clusters", &f))?;
        Ok(out
            .stdout
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("No kind clusters"))
            .map(str::to_string)
            .collect())
    }

    /// `kind create cluster --name N --config F --kubeconfig K --wait Ws`.
    pub fn create_cmd(&self, name: &str, config: &Path, kubeconfig: &Path, wait: Duration) -> Cmd {
        self.cmd()
            .args(["create", "cluster", "--name", name, "--config"])
            .arg(config)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--wait")
            .arg(format!("{}s", wait.as_secs()))
    }

    /// `kind delete cluster --name N --kubeconfig K` (a missing cluster is fine).
    pub async fn delete(&self, name: &str, kubeconfig: &Path) -> Result<()> {
        let cmd = self
            .cmd()
            .args(["delete", "cluster", "--name", name, "--kubeconfig"])
            .arg(kubeconfig);
        self.runner
            .run(&cmd, Some(DELETE_TIMEOUT))
            .await
            .map_err(|f| failed(&format!("delete the kind cluster {name}"), &f))?;
        Ok(())
    }
}

fn failed(what: &str, f: &Failure) -> Error {
    Error::new(
        ErrorKind::ClusterCreateFailed,
        format!("failed to {what}: {}", f.short_summary()),
    )
    .with_details(f.details())
}

/// How a `kind create cluster` failed, from kind's own texts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateFailure {
    /// "node(s) already exist for a cluster with the name …"
    AlreadyExists,
    /// Docker could not publish a host port: "port is already allocated",
    /// "address already in use".
    PortBusy,
    Other,
}

pub fn classify(f: &Failure) -> CreateFailure {
    let text = f.text();
    if text.contains("already exist for a cluster with the name") {
        CreateFailure::AlreadyExists
    } else if text.contains("port is already allocated") || text.contains("address already in use")
    {
        CreateFailure::PortBusy
    } else {
        CreateFailure::Other
    }
}

/// The user-facing error for a failed create.
pub fn create_error(name: &str, f: &Failure) -> Error {
    let base = |kind: ErrorKind, msg: String| Error::new(kind, msg).with_details(f.details());
    match classify(f) {
        CreateFailure::AlreadyExists => base(
            ErrorKind::ClusterCreateFailed,
            format!("failed to create the kind cluster {name}: one with that name already exists"),
        )
        .with_hint(format!(
            "pulsedev did not make it, so it leaves it alone: choose another name with `--name`, or delete it yourself with `kind delete cluster --name {name}` if it is yours"
        )),
        CreateFailure::PortBusy => base(
            ErrorKind::PortInUse,
            format!("failed to create the kind cluster {name}: a host port it publishes is in use"),
        )
        .with_hint("run `pulsedev doctor` to see which process holds it, or choose other ports with `--http-port`/`--https-port`"),
        CreateFailure::Other => base(
            ErrorKind::ClusterCreateFailed,
            format!("failed to create the kind cluster {name}: {}", f.short_summary()),
        )
        .with_hint("kind's output is listed above, and kind removes a cluster whose creation failed; run `pulsedev doctor` to check Docker's memory and ports, then try again"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::process::Output;

    fn failure(stderr: &str) -> Failure {
        Failure {
            line: "kind create cluster".into(),
            output: Output {
                code: Some(1),
                stdout: String::new(),
                stderr: stderr.into(),
            },
            spawn_error: None,
            timed_out: None,
        }
    }

    #[test]
    fn kinds_own_error_texts_are_recognised() {
        let f = failure(
            "ERROR: failed to create cluster: node(s) already exist for a cluster with the name \"dev\"\n",
        );
        assert_eq!(classify(&f), CreateFailure::AlreadyExists);
        let e = create_error("dev", &f);
        assert_eq!(e.kind, ErrorKind::ClusterCreateFailed);
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .contains("kind delete cluster --name dev")
        );
        let f = failure(
            "ERROR: failed to create cluster: command \"docker run --name dev-control-plane ...\" failed with error: exit status 125\nCommand Output: docker: Error response from daemon: driver failed programming external connectivity on endpoint dev-control-plane: Bind for 127.0.0.1:80 failed: port is already allocated.\n",
        );
        assert_eq!(create_error("dev", &f).kind, ErrorKind::PortInUse);
        let f = failure("ERROR: failed to create cluster: failed to pull image \"kindest/node\"\n");
        let e = create_error("dev", &f);
        assert_eq!(e.kind, ErrorKind::ClusterCreateFailed);
        assert_eq!(
            e.details,
            vec![
                "$ kind create cluster",
                "ERROR: failed to create cluster: failed to pull image \"kindest/node\""
            ]
        );
        assert_eq!(
            e.message,
            "failed to create the kind cluster dev: `kind create cluster` exited with code 1"
        );
    }
}
