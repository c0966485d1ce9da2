//! Day-2 data commands: `db psql`, `db dump [FILE]`, `db restore FILE`, and the dump and
//! restore around `reset --keep-data`. Everything runs in the dev Postgres pod over the
//! exec API (`kube::exec`); nothing is installed on the host.
//!
//! Owns: the commands run in the Postgres container, the dump file (created 0600 under a
//! temporary name and renamed into place only when pg_dump succeeded, so a failed dump
//! leaves no half file), progress in bytes. Must not: print or pass a credential. The
//! password never leaves the pod: the command reads it from the pod's own mounted Secret
//! files inside `sh -c` and hands it to psql/pg_dump/pg_restore in `PGPASSWORD`, so it is
//! in no argv (`ps` in the pod, the API server's audit log of the exec request) and never
//! in pulsedev's memory. The values are also registered with `redact` so that an error
//! echoing them is scrubbed.
//!
//! The pod is manifests/dev/postgres.yaml's: StatefulSet `postgres` (label
//! `app.kubernetes.io/instance=postgres`), container `postgres`, the Secret
//! `pulsewatch-db` mounted at /etc/pulsewatch/secrets/db (username, password),
//! database `pulsewatch`, listening on 127.0.0.1:5432 in the pod (as its probes use).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};
use crate::kube::Engine;
use crate::kube::exec::{self, Io, Target};

/// Where the Postgres pod keeps the Secret's files (manifests/dev/postgres.yaml).
pub const SECRET_DIR: &str = "/etc/pulsewatch/secrets/db";
pub const SECRET: &str = crate::secrets::DB_SECRET;
pub const DATABASE: &str = "pulsewatch";
pub const SELECTOR: &str = "app.kubernetes.io/instance=postgres";
pub const CONTAINER: &str = "postgres";

/// `program args…` run with the credentials of the pod's Secret files in its
/// environment, never in any argv: the script reads them, the arguments follow `$0`.
pub fn with_credentials(program: &str, args: &[String]) -> Vec<String> {
    let script = format!(
        "for f in username password; do [ -r {SECRET_DIR}/$f ] || {{ echo \"pulsedev: {SECRET_DIR}/$f is not readable in this container\" >&2; exit 2; }}; done; \
         PGUSER=\"$(cat {SECRET_DIR}/username)\" PGPASSWORD=\"$(cat {SECRET_DIR}/password)\" \
         PGHOST=127.0.0.1 PGPORT=5432 PGDATABASE={DATABASE} exec \"$@\""
    );
    let mut cmd = vec![
        "sh".to_string(),
        "-c".to_string(),
        script,
        "pulsedev-db".to_string(),
        program.to_string(),
    ];
    cmd.extend(args.iter().cloned());
    cmd
}

/// The Postgres pod of the stack in `namespace`; registers the Secret's values with
/// `redact` first, so no error can show them.
pub async fn target(engine: &Engine, namespace: &str) -> Result<Target> {
    // The secret keys only (crate::secrets::SECRET_KEYS): the username is the
    // database's name too ("pulsewatch"), and scrubbing it would mangle every namespace
    // and file name in the output.
    if let Ok(Some(v)) =
        crate::kube::secrets::read_key(engine.client(), namespace, SECRET, "password").await
    {
        crate::redact::add(SECRET, "password", &v);
    }
    exec::pick_pod(engine.client(), namespace, SELECTOR, CONTAINER)
        .await
        .map_err(|e| {
            let hint = "the dev Postgres runs only after `pulsedev up`; see `pulsedev status`";
            e.with_hint(hint)
        })
}

/// Counts the bytes that pass through a reader or writer.
struct Counted<T> {
    inner: T,
    n: Arc<AtomicU64>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        self.n.fetch_add(read as u64, Ordering::Relaxed);
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            self.n.fetch_add(*n as u64, Ordering::Relaxed);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Runs `fut` while calling `progress` with the byte count every half second.
async fn with_progress<T>(
    n: &Arc<AtomicU64>,
    progress: &(dyn Fn(u64) + Sync),
    fut: impl Future<Output = T>,
) -> T {
    tokio::pin!(fut);
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.tick().await;
    loop {
        tokio::select! {
            r = &mut fut => return r,
            _ = tick.tick() => progress(n.load(Ordering::Relaxed)),
        }
    }
}

/// `psql` in the pod with `args`; stdin, stdout and stderr are the process's own, with
/// a TTY when `tty` (the caller puts the local terminal in raw mode). Returns psql's
/// exit code.
pub async fn psql(
    engine: &Engine,
    target: &Target,
    args: &[String],
    tty: bool,
    cancel: &CancellationToken,
) -> Result<i32> {
    let mut stdin = tokio::io::stdin();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    let exit = exec::run(
        engine.client(),
        target,
        &with_credentials("psql", args),
        Io {
            stdin: Some(&mut stdin),
            stdout: &mut stdout,
            stderr: &mut stderr,
            tty,
        },
        cancel,
    )
    .await?;
    Ok(exit.code)
}

/// The default dump file name: `pulsewatch-<cluster>-<UTC time>.dump` in the current
/// directory.
pub fn default_dump_file(cluster: &str) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from(format!("{DATABASE}-{cluster}-{now}.dump"))
}

/// `pg_dump -Fc` of the database into `file`: streamed into a 0600 temporary file next
/// to it, synced, then renamed over `file`. Returns the bytes written.
///
/// Errors: `exec-failed` with pg_dump's stderr when it fails (no file is left),
/// `internal` when the file cannot be written.
pub async fn dump(
    engine: &Engine,
    target: &Target,
    file: &Path,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &CancellationToken,
) -> Result<u64> {
    let dir = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // tempfile creates it 0600 (O_EXCL) and removes it unless persisted.
    let tmp = tempfile::Builder::new()
        .prefix(".pulsedev-dump-")
        .tempfile_in(&dir)
        .map_err(|e| {
            Error::new(
                ErrorKind::Internal,
                format!("failed to create a file in {}: {e}", dir.display()),
            )
            .with_hint("pass a FILE in a directory you can write to")
        })?;
    let n = Arc::new(AtomicU64::new(0));
    let mut out = Counted {
        inner: tokio::fs::File::from_std(tmp.reopen().map_err(|e| {
            Error::internal(format!("failed to open {}: {e}", tmp.path().display()))
        })?),
        n: n.clone(),
    };
    let mut stderr = tokio::io::sink();
    let command = with_credentials(
        "pg_dump",
        &["--format=custom".to_string(), "--no-password".to_string()],
    );
    let exit = with_progress(
        &n,
        progress,
        exec::run(
            engine.client(),
            target,
            &command,
            Io {
                stdin: None,
                stdout: &mut out,
                stderr: &mut stderr,
                tty: false,
            },
            cancel,
        ),
    )
    .await?;
    exit.check(target, "dump the database with pg_dump")?;
    let file_handle = out.inner.into_std().await;
    file_handle
        .sync_all()
        .map_err(|e| Error::internal(format!("failed to write {}: {e}", tmp.path().display())))?;
    tmp.persist(file).map_err(|e| {
        Error::internal(format!(
            "failed to move the dump to {}: {}",
            file.display(),
            e.error
        ))
    })?;
    Ok(n.load(Ordering::Relaxed))
}

/// `pg_restore --clean --if-exists` of `file` into the database, streamed over stdin.
/// Returns the bytes sent.
///
/// Errors: `exec-failed` with pg_restore's stderr, `internal` when the file cannot be
/// read.
pub async fn restore(
    engine: &Engine,
    target: &Target,
    file: &Path,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &CancellationToken,
) -> Result<u64> {
    let f = tokio::fs::File::open(file).await.map_err(|e| {
        Error::new(
            ErrorKind::Internal,
            format!("failed to open {}: {e}", file.display()),
        )
        .with_hint("pass the path of a file `pulsedev db dump` wrote")
    })?;
    let n = Arc::new(AtomicU64::new(0));
    let mut input = Counted {
        inner: f,
        n: n.clone(),
    };
    let (mut out, mut err) = (tokio::io::sink(), tokio::io::sink());
    let command = with_credentials(
        "pg_restore",
        &[
            "--clean".to_string(),
            "--if-exists".to_string(),
            "--no-owner".to_string(),
            "--no-password".to_string(),
            format!("--dbname={DATABASE}"),
        ],
    );
    let exit = with_progress(
        &n,
        progress,
        exec::run(
            engine.client(),
            target,
            &command,
            Io {
                stdin: Some(&mut input),
                stdout: &mut out,
                stderr: &mut err,
                tty: false,
            },
            cancel,
        ),
    )
    .await?;
    exit.check(
        target,
        &format!("restore {} with pg_restore", file.display()),
    )?;
    Ok(n.load(Ordering::Relaxed))
}

/// `1.2 MB`: sizes in progress lines.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// The local terminal in raw mode while an interactive session runs (as kubectl's
/// term.Safe does): keys go to the remote TTY as typed, and the remote echoes them.
/// Restored when dropped.
pub struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    pub fn enter() -> Option<RawTerminal> {
        // SAFETY: tcgetattr/tcsetattr on fd 0 with a termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawTerminal { saved })
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
        let _ = std::io::stderr().flush();
    }
}

// ---------------------------------------------------------------------------------------
// The commands (`pulsedev db …`, `reset --keep-data`), called by `cli`.
// ---------------------------------------------------------------------------------------

/// The engine of the existing cluster and the stack's namespace.
async fn connect(ctx: &crate::cli::Ctx) -> Result<(Engine, String, crate::config::Config)> {
    let config = ctx.existing_cluster_config()?;
    let paths = crate::cluster::Paths::new(&crate::state::Dirs::from_process()?, &config.name);
    let context = crate::kube::context_name(&config.name);
    let client = crate::kube::connect(&paths.kubeconfig, &context).await?;
    let namespace = crate::stack::namespace(config.env);
    Ok((Engine::new(client), namespace, config))
}

/// `db psql [-- ARGS…]`.
pub async fn cmd_psql(ctx: &crate::cli::Ctx, args: Vec<String>) -> Result<()> {
    use std::io::IsTerminal as _;
    if ctx.ui.json() {
        return Err(Error::new(
            ErrorKind::Usage,
            "`db psql` writes psql's own output, not a JSON document",
        )
        .with_hint("run it without `--output json`; for data use `psql -c '…' --csv` after `--`"));
    }
    let (engine, namespace, _) = ctx.interruptible(connect(ctx)).await??;
    let target = ctx.interruptible(target(&engine, &namespace)).await??;
    let tty = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let raw = if tty { RawTerminal::enter() } else { None };
    let code = psql(&engine, &target, &args, raw.is_some(), &ctx.cancel).await;
    drop(raw);
    match code? {
        0 => Ok(()),
        code => Err(Error::new(
            ErrorKind::ExecFailed,
            format!("psql exited with code {code} in {target}"),
        )
        .with_hint("psql's own message is above")),
    }
}

/// Which way [`transfer`] moves the data.
#[derive(Clone, Copy)]
enum Direction {
    Dump,
    Restore,
}

/// Dumps to or restores from `file` under a spinner labelled `label` that shows the
/// bytes moved so far; returns their count.
async fn transfer(
    ctx: &crate::cli::Ctx,
    engine: &Engine,
    target: &Target,
    file: &Path,
    direction: Direction,
    label: &str,
) -> Result<u64> {
    let spinner = ctx.ui.spinner(label);
    let progress = |n| {
        if let Some(s) = &spinner {
            s.set_message(format!("{label}: {}", human_bytes(n)));
        }
    };
    let n = match direction {
        Direction::Dump => dump(engine, target, file, &progress, &ctx.cancel).await,
        Direction::Restore => restore(engine, target, file, &progress, &ctx.cancel).await,
    };
    if let Some(s) = &spinner {
        s.finish_and_clear();
    }
    n
}

/// `db dump [FILE]`.
pub async fn cmd_dump(ctx: &crate::cli::Ctx, file: Option<PathBuf>) -> Result<()> {
    let (engine, namespace, config) = ctx.interruptible(connect(ctx)).await??;
    let target = ctx.interruptible(target(&engine, &namespace)).await??;
    let file = file.unwrap_or_else(|| default_dump_file(&config.name));
    let n = transfer(
        ctx,
        &engine,
        &target,
        &file,
        Direction::Dump,
        "dumping the database",
    )
    .await?;
    if ctx.ui.json() {
        ctx.ui.out_json(
            &serde_json::json!({"ok": true, "file": file.display().to_string(), "bytes": n}),
        );
    } else {
        ctx.ui.info(&format!(
            "dumped {DATABASE} ({}) to {}",
            human_bytes(n),
            file.display()
        ));
    }
    Ok(())
}

/// Asks on a terminal, or wants `--yes`.
fn confirm(question: &str, what: &str) -> Result<()> {
    use std::io::IsTerminal as _;
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("{what}, and there is no terminal to ask for confirmation"),
        )
        .with_hint("pass `--yes` to confirm"));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    let _ = std::io::stdin().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(
            Error::new(ErrorKind::Declined, "declined: nothing was changed")
                .with_hint("pass `--yes` to skip the question"),
        )
    }
}

/// `db restore FILE [--yes]`.
pub async fn cmd_restore(ctx: &crate::cli::Ctx, file: PathBuf, yes: bool) -> Result<()> {
    if !file.is_file() {
        return Err(Error::new(
            ErrorKind::Usage,
            format!("{} is not a file", file.display()),
        )
        .with_hint("pass the path of a file `pulsedev db dump` wrote"));
    }
    let (engine, namespace, config) = ctx.interruptible(connect(ctx)).await??;
    if !yes {
        confirm(
            &format!(
                "This replaces the data of database {DATABASE} in cluster {} with {}. Continue?",
                config.name,
                file.display()
            ),
            &format!(
                "restore replaces the data of database {DATABASE} in cluster {}",
                config.name
            ),
        )?;
    }
    let target = ctx.interruptible(target(&engine, &namespace)).await??;
    let n = transfer(
        ctx,
        &engine,
        &target,
        &file,
        Direction::Restore,
        "restoring the database",
    )
    .await?;
    if ctx.ui.json() {
        ctx.ui.out_json(
            &serde_json::json!({"ok": true, "file": file.display().to_string(), "bytes": n}),
        );
    } else {
        ctx.ui.info(&format!(
            "restored {DATABASE} from {} ({})",
            file.display(),
            human_bytes(n)
        ));
    }
    Ok(())
}

/// `reset --keep-data`, before the reset: the data dumped to a 0600 file in pulsedev's
/// state directory (outside the cluster's own directory, which `reset` removes).
pub async fn keep_data_dump(ctx: &crate::cli::Ctx) -> Result<PathBuf> {
    let (engine, namespace, config) = ctx.interruptible(connect(ctx)).await??;
    let target = ctx
        .interruptible(target(&engine, &namespace))
        .await?
        .map_err(|e| {
            let hint = "--keep-data needs the running cluster's Postgres; run `pulsedev reset` without it to start from empty data";
            e.with_hint(hint)
        })?;
    let dirs = crate::state::Dirs::from_process()?;
    std::fs::create_dir_all(&dirs.state)
        .map_err(|e| Error::internal(format!("failed to create {}: {e}", dirs.state.display())))?;
    let file = dirs.state.join(
        default_dump_file(&config.name)
            .file_name()
            .expect("a file name"),
    );
    let n = transfer(
        ctx,
        &engine,
        &target,
        &file,
        Direction::Dump,
        "dumping the database before the reset",
    )
    .await?;
    ctx.ui.info(&format!(
        "kept the data of {DATABASE} ({}) in {}",
        human_bytes(n),
        file.display()
    ));
    Ok(file)
}

/// `reset --keep-data`, after the reset: the dump restored, then removed. If the
/// restore fails, the dump stays and the error says where it is.
pub async fn keep_data_restore(ctx: &crate::cli::Ctx, file: &Path) -> Result<()> {
    let kept = |e: Error| {
        let mut e = e.with_hint(format!(
            "the data is kept in {0}: restore it with `pulsedev db restore {0}`",
            file.display()
        ));
        e.details
            .push(format!("the dump is kept in {}", file.display()));
        e
    };
    let (engine, namespace, _) = ctx.interruptible(connect(ctx)).await?.map_err(kept)?;
    let target = ctx
        .interruptible(target(&engine, &namespace))
        .await?
        .map_err(kept)?;
    let r = transfer(
        ctx,
        &engine,
        &target,
        file,
        Direction::Restore,
        "restoring the kept data",
    )
    .await;
    r.map_err(kept)?;
    let _ = std::fs::remove_file(file);
    ctx.ui
        .info(&format!("restored the kept data of {DATABASE}"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_read_in_the_pod_and_never_in_argv() {
        let cmd = with_credentials("pg_dump", &["--format=custom".into()]);
        assert_eq!(cmd[0], "sh");
        assert!(cmd[2].contains("PGPASSWORD=\"$(cat /etc/pulsewatch/secrets/db/password)\""));
        assert!(cmd[2].ends_with("exec \"$@\""));
        assert_eq!(cmd[3..], ["pulsedev-db", "pg_dump", "--format=custom"]);
        assert!(cmd.iter().all(|a| !a.contains("password=")), "{cmd:?}");
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
