//! Archive mode: stream `docker save` of an image straight into each kind node's
//! containerd (`ctr images import … -`) over an attached exec, never holding the
//! image in memory, and read the importer's exit code.
//!
//! Owns: exec-with-stdin streaming and `Deliver` in archive mode. Must not create or
//! change nodes (they belong to the cluster code) nor build images.

use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use tokio::io::AsyncWriteExt;

use super::build::LocalImage;
use super::deliver::{Deliver, Delivered, ImageRef, Transfer};
use crate::docker::Engine;
use crate::error::{Error, ErrorKind, Result};

/// Bytes of stdout / stderr kept from an exec (the end of each).
const KEEP: usize = 16 * 1024;

/// How an exec ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_code: i64,
    /// Bytes written to the process's stdin.
    pub sent: u64,
    /// Whether all of the input was written and EOF delivered; false when the
    /// process ended (closed its output) before reading everything.
    pub stdin_complete: bool,
    /// The last `KEEP` bytes of stdout and stderr.
    pub stdout: String,
    pub stderr: String,
}

impl ExecResult {
    /// The last `n` lines of stderr, in order: the importer's own words for an error.
    pub fn stderr_tail(&self, n: usize) -> Vec<String> {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(n)..]
            .iter()
            .map(|l| l.to_string())
            .collect()
    }
}

fn push_error(message: String) -> Error {
    Error::new(ErrorKind::ImagePushFailed, message)
}

/// Runs `cmd` in `container` with `input` as its stdin, then EOF, and returns its
/// exit code and the tail of its output.
///
/// The writer and the output reader run as one race: if the process exits without
/// reading all of stdin, a plain write loop would block forever, so the output
/// ending (the process is gone) drops the writer.
pub async fn exec_with_stdin<S, E>(
    docker: &Docker,
    container: &str,
    cmd: &[String],
    input: S,
) -> Result<ExecResult>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let exec = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(cmd.to_vec()),
                attach_stdin: Some(true),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| push_error(format!("failed to create an exec in {container}: {e}")))?;
    let started = docker
        .start_exec(&exec.id, None)
        .await
        .map_err(|e| push_error(format!("failed to start {cmd:?} in {container}: {e}")))?;
    let StartExecResults::Attached {
        mut output,
        input: mut stdin,
    } = started
    else {
        return Err(Error::internal("an attached exec came back detached"));
    };

    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = sent.clone();
    let what = format!("{cmd:?} in {container}");
    // Owns the write half, so dropping this future closes it.
    let writer = async move {
        let mut input = std::pin::pin!(input);
        while let Some(chunk) = input.next().await {
            let chunk = chunk.map_err(|e| push_error(format!("failed to read the image: {e}")))?;
            stdin
                .write_all(&chunk)
                .await
                .map_err(|e| push_error(format!("failed to write to {what}: {e}")))?;
            counter.fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        // EOF for the process: half-close the hijacked connection.
        stdin
            .shutdown()
            .await
            .map_err(|e| push_error(format!("failed to close stdin of {what}: {e}")))?;
        Ok::<(), Error>(())
    };
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let reader = async {
        while let Some(item) = output.next().await {
            match item {
                Ok(LogOutput::StdOut { message }) | Ok(LogOutput::Console { message }) => {
                    keep_tail(&mut stdout, &message)
                }
                Ok(LogOutput::StdErr { message }) => keep_tail(&mut stderr, &message),
                Ok(LogOutput::StdIn { .. }) => {}
                Err(e) => {
                    return Err(push_error(format!(
                        "failed to read the output of {cmd:?} in {container}: {e}"
                    )));
                }
            }
        }
        Ok(())
    };

    let mut writer = Box::pin(writer);
    let mut reader = std::pin::pin!(reader);
    let mut written: Option<Result<()>> = None;
    let read = loop {
        tokio::select! {
            w = &mut writer, if written.is_none() => {
                if w.is_err() {
                    // The input failed (export error, broken pipe): stop here.
                    written = Some(w);
                    break Ok(());
                }
                written = Some(w);
            }
            r = &mut reader => break r,
        }
    };
    drop(writer);
    let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
    let stdin_complete = matches!(written, Some(Ok(())));
    if let Some(Err(e)) = written {
        // If the process already ended, its exit code explains more than the
        // broken pipe does; otherwise report the input failure.
        if read.is_ok()
            && let Ok(code) = exit_code(docker, &exec.id).await
            && code != 0
        {
            return Ok(ExecResult {
                exit_code: code,
                sent,
                stdin_complete: false,
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
            });
        }
        return Err(e);
    }
    read?;
    let exit_code = exit_code(docker, &exec.id).await?;
    Ok(ExecResult {
        exit_code,
        sent,
        stdin_complete,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}

fn keep_tail(buf: &mut Vec<u8>, data: &[u8]) {
    buf.extend_from_slice(data);
    if buf.len() > KEEP {
        buf.drain(..buf.len() - KEEP);
    }
}

/// The exit code, once the engine reports the exec finished (its output can close
/// a moment before).
async fn exit_code(docker: &Docker, id: &str) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info = docker
            .inspect_exec(id)
            .await
            .map_err(|e| push_error(format!("failed to inspect exec {id}: {e}")))?;
        if info.running != Some(true)
            && let Some(code) = info.exit_code
        {
            return Ok(code);
        }
        if Instant::now() >= deadline {
            return Err(push_error(format!(
                "exec {id} still runs 10s after its output closed"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Archive mode: for each node, skip when its containerd already lists the image,
/// else stream the export into the import command.
pub struct ArchiveImport {
    docker: Docker,
    /// Each node with the snapshotter its containerd's CRI plugin uses.
    nodes: Vec<(String, String)>,
    import: Vec<String>,
    present: Vec<String>,
}

/// `{ref}` in a command is replaced by the image's full name as containerd stores it
/// (`docker.io/library/pulsewatch-api:<tag>`).
const REF: &str = "{ref}";
/// `{snapshotter}` in a command is replaced by the node's snapshotter.
const SNAPSHOTTER: &str = "{snapshotter}";

/// The snapshotter the kubelet's containerd unpacks images with, from the output of
/// `containerd config dump`, read as kind reads it before every image load (kind
/// v0.32.0: pkg/cluster/nodeutils/util.go, `parseSnapshotter`): config version 2 keeps
/// it at `plugins."io.containerd.grpc.v1.cri".containerd.snapshotter`, versions 3 and 4
/// (containerd 2.x) at `plugins."io.containerd.cri.v1.images".snapshotter`. kind's
/// node entrypoint switches it away from `overlayfs` on some hosts (`native` on zfs,
/// `fuse-overlayfs` on fuseblk and some rootless setups); an image imported into
/// another snapshotter is listed by `ctr images ls` but cannot start a pod.
pub fn parse_snapshotter(dump: &str) -> std::result::Result<String, String> {
    let doc: toml::Table =
        toml::from_str(dump).map_err(|e| format!("`containerd config dump` is not TOML: {e}"))?;
    let version = doc
        .get("version")
        .and_then(toml::Value::as_integer)
        .ok_or("`containerd config dump` names no config version")?;
    let path: &[&str] = match version {
        2 => &[
            "plugins",
            "io.containerd.grpc.v1.cri",
            "containerd",
            "snapshotter",
        ],
        3 | 4 => &["plugins", "io.containerd.cri.v1.images", "snapshotter"],
        v => {
            return Err(format!(
                "unknown containerd config version {v} (known: 2, 3 and 4)"
            ));
        }
    };
    let mut at = doc.get(path[0]);
    for key in &path[1..] {
        at = at.and_then(|v| v.get(key));
    }
    at.and_then(toml::Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "no snapshotter at {} (config version {version})",
                path.join(".")
            )
        })
}

/// Runs `containerd config dump` in `node` and returns its CRI snapshotter.
pub async fn node_snapshotter(docker: &Docker, node: &str) -> Result<String> {
    let cmd = ["containerd", "config", "dump"].map(String::from);
    let r = exec_with_stdin(
        docker,
        node,
        &cmd,
        futures::stream::empty::<std::result::Result<Bytes, std::io::Error>>(),
    )
    .await?;
    let fail = |why: String| {
        push_error(format!(
            "failed to detect the containerd snapshotter of node {node}: {why}"
        ))
        .with_hint(format!(
            "look at `docker exec {node} containerd config dump`; `--load registry` does not need it"
        ))
    };
    if r.exit_code != 0 {
        return Err(fail(format!(
            "`containerd config dump` exited with code {}: {}",
            r.exit_code,
            r.stderr.trim()
        )));
    }
    parse_snapshotter(&r.stdout).map_err(fail)
}

impl ArchiveImport {
    /// The kind default: `ctr` in the k8s.io namespace of every node, for the node
    /// platform (`linux/<arch>`), into each node's own snapshotter.
    pub fn new(engine: &Engine, nodes: Vec<(String, String)>, platform: &str) -> Self {
        let import = [
            "ctr",
            "--namespace=k8s.io",
            "images",
            "import",
            "--platform",
            platform,
            "--digests",
            "--snapshotter={snapshotter}",
            "-",
        ]
        .map(String::from)
        .to_vec();
        let present = ["ctr", "--namespace=k8s.io", "images", "ls", "-q", "name=="]
            .map(String::from)
            .to_vec();
        let mut a = ArchiveImport {
            docker: super::long_calls(engine),
            nodes,
            import,
            present,
        };
        // `name=={ref}` as one argument.
        if let Some(last) = a.present.last_mut() {
            last.push_str(REF);
        }
        a
    }

    /// `new`, with each node's snapshotter read from the node (`node_snapshotter`).
    pub async fn detect(engine: &Engine, nodes: Vec<String>, platform: &str) -> Result<Self> {
        let mut with = Vec::with_capacity(nodes.len());
        for node in nodes {
            let s = node_snapshotter(&engine.docker, &node).await?;
            with.push((node, s));
        }
        Ok(Self::new(engine, with, platform))
    }

    /// Replaces the commands (tests run busybox instead of ctr). `present` must print
    /// something and exit 0 exactly when the node has `{ref}`; `{snapshotter}` is
    /// replaced in `import`.
    pub fn with_commands(mut self, import: Vec<String>, present: Vec<String>) -> Self {
        self.import = import;
        self.present = present;
        self
    }

    /// The name containerd gives an image imported from `docker save`.
    pub fn containerd_name(image: &LocalImage) -> String {
        format!("docker.io/library/{}", image.reference())
    }

    fn image_ref(image: &LocalImage) -> ImageRef {
        ImageRef {
            repository: image.repository.clone(),
            tag: image.tag.clone(),
            digest: None,
        }
    }

    async fn node_has(&self, node: &str, image: &LocalImage) -> Result<bool> {
        let name = Self::containerd_name(image);
        let cmd: Vec<String> = self.present.iter().map(|a| a.replace(REF, &name)).collect();
        let r = exec_with_stdin(
            &self.docker,
            node,
            &cmd,
            futures::stream::empty::<std::result::Result<Bytes, std::io::Error>>(),
        )
        .await?;
        Ok(r.exit_code == 0 && !r.stdout.trim().is_empty())
    }

    async fn lookup(&self, image: &LocalImage) -> Result<Option<ImageRef>> {
        for (node, _) in &self.nodes {
            if !self.node_has(node, image).await? {
                return Ok(None);
            }
        }
        Ok(Some(Self::image_ref(image)))
    }

    async fn import(&self, image: &LocalImage) -> Result<Delivered> {
        let started = Instant::now();
        let reference = image.reference();
        let mut transfer: Option<Transfer> = None;
        for (node, snapshotter) in &self.nodes {
            if self.node_has(node, image).await? {
                continue;
            }
            let name = Self::containerd_name(image);
            let cmd: Vec<String> = self
                .import
                .iter()
                .map(|a| a.replace(REF, &name).replace(SNAPSHOTTER, snapshotter))
                .collect();
            let export = self.docker.export_image(&reference);
            let r = exec_with_stdin(&self.docker, node, &cmd, export).await?;
            if r.exit_code != 0 || !r.stdin_complete {
                let mut details = r.stderr_tail(10);
                if !r.stdin_complete {
                    details.insert(
                        0,
                        format!("it stopped reading after {} bytes of the image", r.sent),
                    );
                }
                return Err(push_error(format!(
                    "failed to import {reference} into node {node}: `{}` exited with code {}",
                    cmd.join(" "),
                    r.exit_code
                ))
                .with_details(details)
                .with_hint("check the node's disk space and containerd (`docker exec NODE crictl info`), or use `--load registry`"));
            }
            let t = transfer.get_or_insert_with(Transfer::default);
            t.bytes = Some(t.bytes.unwrap_or(0) + r.sent);
        }
        Ok(Delivered {
            image: Self::image_ref(image),
            transfer,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

impl Deliver for ArchiveImport {
    fn mode(&self) -> &'static str {
        "archive"
    }

    fn present<'a>(&'a self, image: &'a LocalImage) -> BoxFuture<'a, Result<Option<ImageRef>>> {
        Box::pin(self.lookup(image))
    }

    fn deliver<'a>(&'a self, image: &'a LocalImage) -> BoxFuture<'a, Result<Delivered>> {
        Box::pin(self.import(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_are_bounded() {
        let mut b = Vec::new();
        keep_tail(&mut b, &vec![b'a'; KEEP]);
        keep_tail(&mut b, b"xyz");
        assert_eq!(b.len(), KEEP);
        assert!(b.ends_with(b"axyz"));
    }

    #[test]
    fn the_stderr_tail_is_the_last_lines_in_order() {
        let r = ExecResult {
            exit_code: 1,
            sent: 0,
            stdin_complete: true,
            stdout: String::new(),
            stderr: "one\ntwo\nthree\n".into(),
        };
        assert_eq!(r.stderr_tail(2), ["two", "three"]);
        assert_eq!(r.stderr_tail(10), ["one", "two", "three"]);
    }

    #[test]
    fn the_default_commands_are_kinds_ctr_import_and_list() {
        let engine = Engine {
            // Never used: building the commands talks to nobody.
            docker: Docker::connect_with_http(
                "http://127.0.0.1:9",
                1,
                bollard::API_DEFAULT_VERSION,
            )
            .unwrap(),
            endpoint: crate::docker::Endpoint {
                host: "unix:///nonexistent.sock".into(),
                source: crate::docker::Source::Default,
            },
        };
        let a = ArchiveImport::new(
            &engine,
            vec![("n1".into(), "overlayfs".into())],
            "linux/arm64",
        );
        assert_eq!(
            a.import.join(" "),
            "ctr --namespace=k8s.io images import --platform linux/arm64 --digests --snapshotter={snapshotter} -"
        );
        assert_eq!(
            a.present.join(" "),
            "ctr --namespace=k8s.io images ls -q name=={ref}"
        );
    }

    #[test]
    fn containerd_names() {
        let img = LocalImage {
            service: "api".into(),
            repository: "pulsewatch-api".into(),
            tag: "0123456789ab".into(),
            hash: String::new(),
        };
        assert_eq!(
            ArchiveImport::containerd_name(&img),
            "docker.io/library/pulsewatch-api:0123456789ab"
        );
    }

    /// `containerd config dump` as kind's node images print it: containerd 1.x
    /// (config version 2) and 2.x (version 3), with the snapshotter kind's entrypoint
    /// chose (kind v0.32.0: images/base/files/usr/local/bin/entrypoint,
    /// pkg/cluster/nodeutils/util_test.go).
    #[test]
    fn the_snapshotter_is_read_like_kind_reads_it() {
        let v2 = "version = 2\nroot = \"/var/lib/containerd\"\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    sandbox_image = \"registry.k8s.io/pause:3.10\"\n    [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n      snapshotter = \"native\"\n      default_runtime_name = \"runc\"\n";
        assert_eq!(parse_snapshotter(v2).unwrap(), "native");
        let v3 = "version = 3\nroot = \"/var/lib/containerd\"\n[plugins]\n  [plugins.'io.containerd.cri.v1.images']\n    snapshotter = 'fuse-overlayfs'\n    disable_snapshot_annotations = true\n  [plugins.'io.containerd.grpc.v1.cri']\n    disable_tcp_service = true\n";
        assert_eq!(parse_snapshotter(v3).unwrap(), "fuse-overlayfs");
        let v4 = v3
            .replace("version = 3", "version = 4")
            .replace("fuse-overlayfs", "overlayfs");
        assert_eq!(parse_snapshotter(&v4).unwrap(), "overlayfs");
        let e = parse_snapshotter("version = 5\n").unwrap_err();
        assert!(e.contains("unknown containerd config version 5"), "{e}");
        let e = parse_snapshotter("version = 3\n").unwrap_err();
        assert!(
            e.contains("plugins.io.containerd.cri.v1.images.snapshotter"),
            "{e}"
        );
        assert!(parse_snapshotter("not toml [").is_err());
    }
}
