//! Launching external programs (kind) behind one narrow trait, so tests can record
//! or script them and the real implementation lives in one place.
//!
//! Owns: spawning, capturing output, killing what we spawned. A failure keeps the
//! command line and the output, which are shown only when the command failed.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use futures::future::BoxFuture;

/// A program and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

impl Cmd {
    pub fn new(program: impl Into<PathBuf>) -> Cmd {
        Cmd {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Cmd {
        self.args.push(a.into());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: Into<OsString>>(mut self, a: I) -> Cmd {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    /// The command as a user would type it (for messages).
    pub fn line(&self) -> String {
        let mut parts = vec![self.program.display().to_string()];
        parts.extend(self.args.iter().map(|a| {
            let s = a.to_string_lossy();
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
                format!("{s:?}")
            } else {
                s.into_owned()
            }
        }));
        parts.join(" ")
    }
}

/// What a finished command left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Output {
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A command that could not run or did not succeed.
#[derive(Debug, Clone)]
pub struct Failure {
    pub line: String,
    pub output: Output,
    /// Set when the program could not be started at all.
    pub spawn_error: Option<String>,
    pub timed_out: Option<Duration>,
}

impl Failure {
    /// One line for the error message: why it failed.
    pub fn summary(&self) -> String {
        if let Some(e) = &self.spawn_error {
            return format!("`{}` could not be started: {e}", self.line);
        }
        if let Some(t) = self.timed_out {
            return format!("`{}` did not finish within {}s", self.line, t.as_secs());
        }
        match self.output.code {
            Some(c) => format!("`{}` exited with code {c}", self.line),
            None => format!("`{}` was killed by a signal", self.line),
        }
    }

    /// `kind create cluster` rather than the whole command line (which goes to the
    /// details): the program's file name and its leading non-flag arguments.
    pub fn short(&self) -> String {
        let mut words = self.line.split(' ');
        let program = words
            .next()
            .map(|p| p.rsplit('/').next().unwrap_or(p).to_string())
            .unwrap_or_default();
        let mut parts = vec![program];
        parts.extend(
            words
                .take_while(|w| !w.starts_with('-'))
                .take(2)
                .map(str::to_string),
        );
        parts.join(" ")
    }

    /// One line naming the short command and why it failed.
    pub fn short_summary(&self) -> String {
        let full = self.summary();
        full.replacen(
            &format!("`{}`", self.line),
            &format!("`{}`", self.short()),
            1,
        )
    }

    /// The command line, then the output, for the error's detail lines.
    pub fn details(&self) -> Vec<String> {
        let mut out = vec![format!("$ {}", self.line)];
        for text in [&self.output.stderr, &self.output.stdout] {
            out.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| l.trim_end().to_string()),
            );
        }
        out
    }

    /// stdout and stderr together, for matching known error texts.
    pub fn text(&self) -> String {
        format!("{}\n{}", self.output.stderr, self.output.stdout)
    }
}

/// Runs commands. Dropping the returned future must stop the command.
pub trait Runner: Send + Sync {
    fn run<'a>(
        &'a self,
        cmd: &'a Cmd,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<Output, Failure>>;
}

/// The real thing: a child process in its own process group, killed with its whole
/// group when the future is dropped (Ctrl-C) or times out, so a kind that spawned
/// `docker` children leaves nothing running.
#[derive(Debug, Clone, Default)]
pub struct ProcessRunner;

struct GroupGuard {
    pgid: Option<i32>,
}

impl GroupGuard {
    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: signalling the process group we created for our own child.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Runner for ProcessRunner {
    fn run<'a>(
        &'a self,
        cmd: &'a Cmd,
        timeout: Option<Duration>,
    ) -> BoxFuture<'a, Result<Output, Failure>> {
        Box::pin(async move {
            let line = cmd.line();
            let mut c = tokio::process::Command::new(&cmd.program);
            c.args(&cmd.args)
                .envs(cmd.env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .process_group(0)
                .kill_on_drop(true);
            let child = c.spawn().map_err(|e| Failure {
                line: line.clone(),
                output: Output::default(),
                spawn_error: Some(e.to_string()),
                timed_out: None,
            })?;
            let mut guard = GroupGuard {
                pgid: child.id().map(|id| id as i32),
            };
            let wait = child.wait_with_output();
            let out = match timeout {
                None => wait.await,
                Some(t) => match tokio::time::timeout(t, wait).await {
                    Ok(r) => r,
                    Err(_) => {
                        guard.kill();
                        return Err(Failure {
                            line,
                            output: Output::default(),
                            spawn_error: None,
                            timed_out: Some(t),
                        });
                    }
                },
            };
            // Finished: the group leader is gone; do not signal a reused pgid.
            guard.pgid = None;
            let out = out.map_err(|e| Failure {
                line: line.clone(),
                output: Output::default(),
                spawn_error: Some(e.to_string()),
                timed_out: None,
            })?;
            let output = Output {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            };
            if output.success() {
                Ok(output)
            } else {
                Err(Failure {
                    line,
                    output,
                    spawn_error: None,
                    timed_out: None,
                })
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_and_failures_keep_the_command_line() {
        let r = ProcessRunner;
        let ok = r
            .run(
                &Cmd::new("/bin/sh").args(["-c", "echo hi; echo warn >&2"]),
                None,
            )
            .await
            .unwrap();
        assert_eq!(ok.stdout, "hi\n");
        assert_eq!(ok.stderr, "warn\n");
        let f = r
            .run(
                &Cmd::new("/bin/sh").args(["-c", "echo boom >&2; exit 3"]),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(
            f.summary(),
            "`/bin/sh -c \"echo boom >&2; exit 3\"` exited with code 3"
        );
        assert_eq!(
            f.details(),
            vec!["$ /bin/sh -c \"echo boom >&2; exit 3\"", "boom"]
        );
        assert_eq!(f.short(), "sh");
        let f = r
            .run(&Cmd::new("/nonexistent/kind"), None)
            .await
            .unwrap_err();
        assert!(
            f.summary().contains("could not be started"),
            "{}",
            f.summary()
        );
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("grandchild.pid");
        // A grandchild that would live 30 s, and a parent that waits until its pid is
        // written before it sleeps too: the timeout finds both running.
        let script = format!(
            "sh -c 'echo $$ > {p}.tmp && mv {p}.tmp {p} && exec sleep 30' & \
             while [ ! -s {p} ]; do sleep 0.01; done; sleep 30",
            p = pidfile.display()
        );
        let started = std::time::Instant::now();
        let f = ProcessRunner
            .run(
                &Cmd::new("/bin/sh").args(["-c", &script]),
                Some(Duration::from_secs(3)),
            )
            .await
            .unwrap_err();
        assert!(f.timed_out.is_some());
        assert!(started.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .expect("the grandchild started before the timeout")
            .trim()
            .parse()
            .unwrap();
        // Gone (or a zombie waiting to be reaped) soon after the kill; alive for 30 s
        // otherwise.
        let dead = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !dead() {
            assert!(
                std::time::Instant::now() < deadline,
                "the grandchild {pid} outlived the kill"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
