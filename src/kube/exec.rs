//! Running a command in a pod's container over the API server's exec subresource, with
//! stdin, stdout and stderr streamed and the command's exit status read back.
//!
//! Owns: the WebSocket exec session (kube's `ws` feature: `Api::<Pod>::exec`), the
//! decoding of the status the server sends when the command ends, choosing a pod of a
//! workload to exec into, and the error ids of an exec (`pod-unavailable`,
//! `exec-failed`). Must not: know what the command does (tar, psql, pg_dump belong to
//! their callers), print anything, or put a secret in the command line (callers pass
//! secrets on stdin or let the pod's own environment hold them).
//!
//! The protocol, as the real server speaks it: the client offers the subprotocols
//! `v5.channel.k8s.io` and `v4.channel.k8s.io` (kube-client src/client/upgrade.rs); every
//! binary message starts with its channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the
//! error/status channel, 4 terminal resize (k8s.io/apimachinery
//! pkg/util/remotecommand/constants.go). When the command ends, the server writes one
//! `metav1.Status` as JSON on channel 3 (k8s.io/apiserver pkg/util/proxy/websocket.go
//! `writeStatus`, streamtranslator.go: Success, or Failure with reason
//! `NonZeroExitCode` and the code in a cause of type `ExitCode`, or another Failure
//! such as InternalError when the runtime could not run the command). v5 adds the
//! close signal: the client ends stdin with the message `[255, 0]` (kube-client
//! src/api/remote_command.rs `CLOSE_CHANNEL`), so a command reading stdin to EOF (tar,
//! pg_restore) sees EOF while its output still flows back.
//!
//! The status is decoded as client-go does (tools/remotecommand/v4.go
//! `errorDecoderV4.decode`): Success is exit 0; NonZeroExitCode needs a parseable
//! `ExitCode` cause; any other Failure is an error carrying the server's message.

use std::time::Duration;

use ::kube::Api;
use ::kube::api::{AttachParams, ListParams};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};

/// How many bytes of the command's stderr an error keeps (the end of it: the last lines
/// say what went wrong).
pub const STDERR_TAIL: usize = 2048;

/// The buffers between kube's WebSocket task and the copies here. kube's default is 1 KiB
/// (kube-client src/api/remote_command.rs `MAX_BUF_SIZE`), which makes a 10 MB dump or a
/// tar of a source tree cross the task boundary ten thousand times.
const PIPE_BUF: usize = 64 * 1024;

/// Which container of which pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} (container {})",
            self.namespace, self.pod, self.container
        )
    }
}

/// The streams of one exec. `stdin`, when given, is copied to the command until it ends,
/// then the command sees EOF. With `tty` the server merges stderr into stdout (a
/// terminal has one output), so `stderr` receives nothing.
pub struct Io<'a> {
    pub stdin: Option<&'a mut (dyn AsyncRead + Unpin + Send)>,
    pub stdout: &'a mut (dyn AsyncWrite + Unpin + Send),
    pub stderr: &'a mut (dyn AsyncWrite + Unpin + Send),
    pub tty: bool,
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The command's exit code (0: success).
    pub code: i32,
    /// The last [`STDERR_TAIL`] bytes of its stderr, secrets scrubbed.
    pub stderr_tail: String,
}

impl Exit {
    /// `Ok` for exit code 0; otherwise `exec-failed` saying `what` failed with the code
    /// and the end of stderr.
    pub fn check(self, target: &Target, what: &str) -> Result<Exit> {
        if self.code == 0 {
            return Ok(self);
        }
        let mut details: Vec<String> = self
            .stderr_tail
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect();
        if details.is_empty() {
            details.push("(the command wrote nothing to stderr)".into());
        }
        Err(Error::new(
            ErrorKind::ExecFailed,
            format!(
                "failed to {what}: the command exited with code {} in {target}",
                self.code
            ),
        )
        .with_details(details)
        .with_hint("the lines above are the end of the command's stderr; fix the cause and run the command again"))
    }
}

/// What the status on channel 3 means (client-go tools/remotecommand/v4.go).
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Exited(i32),
    /// The server or the runtime could not run the command (its message).
    Failed(String),
}

fn decode(status: &Status) -> Outcome {
    match status.status.as_deref() {
        Some("Success") => Outcome::Exited(0),
        Some("Failure") if status.reason.as_deref() == Some("NonZeroExitCode") => {
            let cause = status
                .details
                .as_ref()
                .and_then(|d| d.causes.as_ref())
                .and_then(|c| c.iter().find(|c| c.reason.as_deref() == Some("ExitCode")));
            match cause.and_then(|c| c.message.as_deref()) {
                // client-go parses the code as an 8-bit unsigned number.
                Some(m) => match m.parse::<u8>() {
                    Ok(code) => Outcome::Exited(i32::from(code)),
                    Err(_) => Outcome::Failed(format!(
                        "error stream protocol error: invalid exit code value {m:?}"
                    )),
                },
                None => {
                    Outcome::Failed("error stream protocol error: no ExitCode cause given".into())
                }
            }
        }
        Some("Failure") => Outcome::Failed(
            status
                .message
                .clone()
                .unwrap_or_else(|| "the server reported a failure without a message".into()),
        ),
        _ => Outcome::Failed("error stream protocol error: unknown error".into()),
    }
}

/// The kubelet's answer for a container that is not running (pkg/kubelet
/// kubelet_pods.go `findContainer` only sees running containers: "container not
/// found"), as the API server's stream translator relays it in an InternalError.
fn container_gone(message: &str) -> bool {
    message.contains("container not found")
}

/// Runs `command` in `target` with `io`, until it ends or `cancel` fires.
///
/// Errors: `pod-unavailable` when the pod does not exist, has no such container or is
/// not running it; `exec-failed` when the session breaks or the runtime cannot run the
/// command (e.g. the executable is missing); `interrupted` on `cancel`. A command that
/// runs and exits non-zero is `Ok` with its code: see [`Exit::check`].
pub async fn run(
    client: &::kube::Client,
    target: &Target,
    command: &[String],
    io: Io<'_>,
    cancel: &CancellationToken,
) -> Result<Exit> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &target.namespace);
    let params = AttachParams {
        container: Some(target.container.clone()),
        stdin: io.stdin.is_some(),
        stdout: true,
        stderr: !io.tty,
        tty: io.tty,
        max_stdin_buf_size: Some(PIPE_BUF),
        max_stdout_buf_size: Some(PIPE_BUF),
        max_stderr_buf_size: Some(PIPE_BUF),
    };
    let program = command.first().map_or("", String::as_str);
    let started = tokio::select! {
        biased;
        _ = cancel.cancelled() => return Err(Error::interrupted()),
        r = api.exec(&target.pod, command.to_vec(), &params) => r,
    };
    let mut process = started.map_err(|e| start_error(target, program, &e))?;
    let status = process.take_status().expect("the status is taken once");
    let mut out = process.stdout().expect("stdout was requested");
    let err = process.stderr();
    let stdin_writer = process.stdin();

    let Io {
        stdin,
        stdout,
        stderr,
        ..
    } = io;
    // stdin is copied until it ends, then EOF is sent (dropping the writer makes kube
    // send the v5 close signal). If the command exits before reading all of it, the copy
    // fails and is dropped: the outcome comes from the status.
    let feed = async move {
        if let (Some(reader), Some(mut writer)) = (stdin, stdin_writer) {
            let _ = tokio::io::copy(reader, &mut writer).await;
            let _ = writer.shutdown().await;
        }
        std::future::pending::<()>().await
    };
    let mut tail = Vec::new();
    let drain = async {
        let (o, e) = tokio::join!(pump(&mut out, stdout, None), async {
            match err {
                Some(mut r) => pump(&mut r, stderr, Some(&mut tail)).await,
                None => Ok(()),
            }
        });
        (o, e, status.await)
    };
    let (o, e, status) = tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            process.abort();
            return Err(Error::interrupted());
        }
        r = drain => r,
        _ = feed => unreachable!("feed never ends"),
    };
    let session = process.join().await;
    for r in [o, e] {
        r.map_err(|why| {
            Error::new(
                ErrorKind::ExecFailed,
                format!("failed to pass on the output of `{program}` from {target}: {why}"),
            )
        })?;
    }
    let Some(status) = status else {
        let why = match session {
            Err(e) => format!(": {e}"),
            Ok(()) => String::new(),
        };
        return Err(Error::new(
            ErrorKind::ExecFailed,
            format!(
                "the exec session of `{program}` in {target} ended before the command's exit status arrived{why}"
            ),
        )
        .with_hint("the API server or the node may have restarted; run the command again"));
    };
    let stderr_tail = crate::redact::scrub(&String::from_utf8_lossy(&tail)).into_owned();
    match decode(&status) {
        Outcome::Exited(code) => Ok(Exit { code, stderr_tail }),
        Outcome::Failed(message) if container_gone(&message) => Err(Error::new(
            ErrorKind::PodUnavailable,
            format!("pod {target} is not running the container: {message}"),
        )
        .with_hint("the pod is restarting or being replaced; wait until `pulsedev status` shows it ready, then run the command again")),
        Outcome::Failed(message) => Err(Error::new(
            ErrorKind::ExecFailed,
            format!(
                "failed to run `{program}` in {target}: {}",
                crate::redact::scrub(&message)
            ),
        )
        .with_hint("the container's image must provide the command; check the message above")),
    }
}

/// Copies `from` to `to` (flushing each piece: an interactive session shows output at
/// once), keeping the last [`STDERR_TAIL`] bytes in `tail` when given.
async fn pump(
    from: &mut (dyn AsyncRead + Unpin + Send),
    to: &mut (dyn AsyncWrite + Unpin + Send),
    mut tail: Option<&mut Vec<u8>>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; PIPE_BUF];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.flush().await;
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        if let Some(t) = tail.as_deref_mut() {
            t.extend_from_slice(&buf[..n]);
            if t.len() > STDERR_TAIL {
                t.drain(..t.len() - STDERR_TAIL);
            }
        }
    }
}

/// The error of an exec the server refused before it started: 404 for a pod that does
/// not exist, 400 for a container the pod does not have or a pod without a node
/// (k8s.io/kubernetes pkg/registry/core/pod/strategy.go `streamLocation`,
/// `validateContainer`).
fn start_error(target: &Target, program: &str, e: &::kube::Error) -> Error {
    let text = super::describe(e);
    match e {
        ::kube::Error::Api(s) if s.code == 404 || s.code == 400 => Error::new(
            ErrorKind::PodUnavailable,
            format!("failed to exec `{program}` in pod {target}: {text}"),
        )
        .with_hint("the pod may have been replaced; run `pulsedev status` to see the stack's pods, or `pulsedev up` to bring it back"),
        _ => Error::new(
            ErrorKind::ExecFailed,
            format!("failed to start `{program}` in pod {target}: {text}"),
        )
        .with_hint("check that the cluster is up with `pulsedev status`, then run the command again"),
    }
}

/// A pod of `namespace` matching `selector` that can take an exec now: Running, not
/// being deleted, with `container` running (the newest such pod, so that a rollout's
/// new pod is preferred over its old one).
///
/// Errors: `pod-unavailable` naming the selector when there is none.
pub async fn pick_pod(
    client: &::kube::Client,
    namespace: &str,
    selector: &str,
    container: &str,
) -> Result<Target> {
    let mut pods = running_pods(client, namespace, selector, container).await?;
    Ok(pods.remove(0))
}

/// Every pod of `namespace` matching `selector` that can take an exec now (see
/// [`pick_pod`]), newest first; never empty.
///
/// Errors: `pod-unavailable` naming the selector when there is none.
pub async fn running_pods(
    client: &::kube::Client,
    namespace: &str,
    selector: &str,
    container: &str,
) -> Result<Vec<Target>> {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pods = api
        .list(&ListParams::default().labels(selector))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::PodUnavailable,
                format!(
                    "failed to list the pods of {namespace} ({selector}): {}",
                    super::describe(&e)
                ),
            )
            .with_hint("check that the cluster is up with `pulsedev status`")
        })?;
    let mut usable: Vec<&Pod> = pods
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            let status = p.status.as_ref();
            status.and_then(|s| s.phase.as_deref()) == Some("Running")
                && status
                    .and_then(|s| s.container_statuses.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c.name == container && c.state.as_ref().is_some_and(|s| s.running.is_some())
                    })
        })
        .collect();
    usable.sort_by_key(|p| {
        std::cmp::Reverse(
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
        )
    });
    if usable.is_empty() {
        return Err(Error::new(
            ErrorKind::PodUnavailable,
            format!(
                "no running pod in namespace {namespace} matches {selector} with container {container} running"
            ),
        )
        .with_hint("run `pulsedev status` to see why, or `pulsedev up` to bring the stack back"));
    }
    Ok(usable
        .into_iter()
        .map(|pod| Target {
            namespace: namespace.to_string(),
            pod: pod.metadata.name.clone().unwrap_or_default(),
            container: container.to_string(),
        })
        .collect())
}

/// How long an exec whose output is collected by [`output`] may take.
pub const OUTPUT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `command` (no stdin) and returns its stdout, failing with `exec-failed` on a
/// non-zero exit (`what` names the work in the message).
pub async fn output(
    client: &::kube::Client,
    target: &Target,
    command: &[String],
    what: &str,
    cancel: &CancellationToken,
) -> Result<Vec<u8>> {
    let mut stdout = Vec::new();
    let mut stderr = tokio::io::sink();
    let exit = tokio::time::timeout(
        OUTPUT_TIMEOUT,
        run(
            client,
            target,
            command,
            Io {
                stdin: None,
                stdout: &mut stdout,
                stderr: &mut stderr,
                tty: false,
            },
            cancel,
        ),
    )
    .await
    .map_err(|_| {
        Error::new(
            ErrorKind::ExecFailed,
            format!(
                "failed to {what}: no answer from {target} within {}s",
                OUTPUT_TIMEOUT.as_secs()
            ),
        )
    })??;
    exit.check(target, what)?;
    Ok(stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(v: serde_json::Value) -> Status {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn statuses_decode_as_client_go_decodes_them() {
        assert_eq!(
            decode(&status(serde_json::json!({"status": "Success"}))),
            Outcome::Exited(0)
        );
        assert_eq!(
            decode(&status(serde_json::json!({
                "status": "Failure", "reason": "NonZeroExitCode",
                "message": "command terminated with non-zero exit code: command terminated with exit code 3",
                "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}
            }))),
            Outcome::Exited(3)
        );
        // No cause, or a code that is no 8-bit number: protocol errors, not exit codes.
        assert!(matches!(
            decode(&status(serde_json::json!({"status": "Failure", "reason": "NonZeroExitCode", "details": {"causes": []}}))),
            Outcome::Failed(m) if m.contains("no ExitCode cause")
        ));
        assert!(matches!(
            decode(&status(serde_json::json!({"status": "Failure", "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": "300"}]}}))),
            Outcome::Failed(m) if m.contains("invalid exit code value \"300\"")
        ));
        assert_eq!(
            decode(&status(serde_json::json!({
                "status": "Failure", "reason": "InternalError", "code": 500,
                "message": "Internal error occurred: unable to upgrade connection: container not found (\"api\")"
            }))),
            Outcome::Failed(
                "Internal error occurred: unable to upgrade connection: container not found (\"api\")".into()
            )
        );
        assert!(matches!(
            decode(&status(serde_json::json!({}))),
            Outcome::Failed(m) if m.contains("unknown error")
        ));
    }

    #[test]
    fn a_failed_exit_names_the_code_and_the_end_of_stderr() {
        let target = Target {
            namespace: "pulsewatch-dev".into(),
            pod: "api-1".into(),
            container: "api".into(),
        };
        let e = Exit {
            code: 2,
            stderr_tail: "tar: can't open 'x': Read-only file system\n".into(),
        }
        .check(&target, "copy files into the container")
        .unwrap_err();
        assert_eq!(e.id(), "exec-failed");
        assert!(e.message.contains("exited with code 2"), "{}", e.message);
        assert_eq!(e.details, ["tar: can't open 'x': Read-only file system"]);
        let ok = Exit {
            code: 0,
            stderr_tail: String::new(),
        };
        assert_eq!(ok.clone().check(&target, "x").unwrap(), ok);
    }
}
