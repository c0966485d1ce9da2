//! A running container on the test engine that stands in for a pod's container behind
//! the fake API server's exec endpoint (tests/it/apiserver/exec.rs): an image built
//! `FROM scratch` with Debian's static busybox installed as `sh`, `tar`, `cat` … in
//! /bin, optional files, and the same restrictions a pod would put on it (a read-only
//! root filesystem with writable tmpfs mounts standing in for emptyDir volumes, a
//! non-root user).

use std::process::Command;

use pulsedev::docker::Engine;

use super::build;

/// How the stand-in runs.
#[derive(Default)]
pub struct Spec {
    /// (path in the image, content) copied in at build time.
    pub files: Vec<(String, Vec<u8>)>,
    /// `--read-only`, as `readOnlyRootFilesystem: true`.
    pub read_only: bool,
    /// Writable mounts (emptyDir), as `--tmpfs PATH` owned by `user`.
    pub writable: Vec<String>,
    /// `--user`, e.g. "10001:10001".
    pub user: Option<String>,
    /// Extra `--env K=V` of the container.
    pub env: Vec<(String, String)>,
    /// Files or directories of this machine copied into the image at the same path
    /// (symlinks followed), e.g. Debian's PostgreSQL binaries and the libraries they
    /// link.
    pub host_paths: Vec<String>,
    /// A shell script run at build time, after busybox is installed.
    pub setup: Option<String>,
    /// The container's command as a shell script (default: sleep).
    pub cmd: Option<String>,
}

/// Copies `src` (a file, or a directory recursively) to `dst`, following symlinks.
fn copy_in(src: &std::path::Path, dst: &std::path::Path) {
    if src.is_dir() {
        std::fs::create_dir_all(dst).unwrap();
        for e in std::fs::read_dir(src).unwrap() {
            let e = e.unwrap();
            copy_in(&e.path(), &dst.join(e.file_name()));
        }
    } else if src.exists() {
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
    }
}

/// A running stand-in; removed (container and image tag) when dropped.
pub struct StandIn {
    pub container: String,
    pub image: String,
}

impl StandIn {
    pub async fn start(engine: &Engine, spec: Spec) -> StandIn {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy("/bin/busybox", dir.path().join("busybox")).unwrap();
        let root = dir.path().join("root");
        // A nonce makes each stand-in its own image: tests running at once must not
        // share (and remove) one tag.
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/standin-nonce"), build::nonce()).unwrap();
        for (path, content) in &spec.files {
            let p = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        for p in &spec.host_paths {
            copy_in(
                std::path::Path::new(p),
                &root.join(p.trim_start_matches('/')),
            );
        }
        let json = |s: &str| serde_json::to_string(s).unwrap();
        let setup = spec
            .setup
            .as_deref()
            .map(|s| format!("RUN [\"/bin/sh\", \"-c\", {}]\n", json(s)))
            .unwrap_or_default();
        let cmd = match &spec.cmd {
            Some(c) => format!("CMD [\"/bin/sh\", \"-c\", {}]\n", json(c)),
            None => "CMD [\"/bin/busybox\", \"sleep\", \"86400\"]\n".to_string(),
        };
        std::fs::write(
            dir.path().join("Dockerfile"),
            format!(
                "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nCOPY root/ /\n{setup}{cmd}"
            ),
        )
        .unwrap();
        let image = build::build(engine, "standin", dir.path()).await;
        let container = format!("pdtest-standin-{}", build::nonce());
        let mut run = Command::new("docker");
        run.args(["run", "-d", "--name", &container]);
        if spec.read_only {
            run.arg("--read-only");
        }
        if let Some(u) = &spec.user {
            run.args(["--user", u]);
        }
        let (uid, gid) = spec
            .user
            .as_deref()
            .and_then(|u| u.split_once(':'))
            .unwrap_or(("0", "0"));
        for w in &spec.writable {
            run.args(["--tmpfs", &format!("{w}:rw,uid={uid},gid={gid},mode=0755")]);
        }
        for (k, v) in &spec.env {
            run.args(["--env", &format!("{k}={v}")]);
        }
        run.arg(image.reference());
        let out = run.output().expect("the docker CLI runs");
        assert!(
            out.status.success(),
            "docker run failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        StandIn {
            container,
            image: image.reference(),
        }
    }

    /// Runs `sh -c script` in the container (directly, not through the fake) and
    /// returns its stdout; panics when it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = Command::new("docker")
            .args(["exec", &self.container, "sh", "-c", script])
            .output()
            .expect("the docker CLI runs");
        assert!(
            out.status.success(),
            "`{script}` failed in {}: {}",
            self.container,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        // --no-prune: concurrent builds use the parent layers as cache (build.rs).
        let _ = Command::new("docker")
            .args(["rmi", "--no-prune", &self.image])
            .output();
    }
}
