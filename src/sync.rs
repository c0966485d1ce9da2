//! Live update: changed files of a service's build context copied into its running
//! containers without a rebuild, as `kubectl cp` copies into a pod (a tar stream over
//! exec into `tar -xmf -`; kubernetes/kubectl pkg/cmd/cp/cp.go `copyToPod`), deletions
//! too.
//!
//! Owns: deciding from a list of changed paths whether the service can be updated in
//! place or needs a new image ([`plan`], pure), and doing it in every running pod of the
//! service ([`live_update`]). The rules (which local path goes to which container
//! directory, what always needs a rebuild) come from the service's config
//! (`[services.<name>.live_update]`, `config::LiveUpdate`). Must not: watch files, build
//! images, roll out (that is `pulsedev dev`'s loop), or print.
//!
//! Where it writes must be writable: the charts keep `readOnlyRootFilesystem` and, in
//! dev only, mount a writable emptyDir at `liveUpdate.path`, seeded from the image
//! (docs/DECISIONS.md "Live update"). A rule whose `to` is elsewhere fails with tar's
//! "Read-only file system" and a hint naming the chart value.

use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Service;
use crate::error::{Error, ErrorKind, Result};
use crate::kube::Engine;
use crate::kube::exec::{self, Io, Target};

/// What to do with one service's changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Copy `copies` (local file → absolute container path) and delete `deletes`
    /// (absolute container paths) in every running pod.
    Sync {
        copies: Vec<(PathBuf, String)>,
        deletes: Vec<String>,
    },
    /// The change needs a new image: `path` (relative to the context) and why.
    Rebuild { path: PathBuf, reason: String },
}

/// The outcome of [`live_update`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The files are in every running pod of the service.
    Synced(Report),
    /// Nothing was copied: the change needs a rebuild (`path`, `reason`).
    NeedsRebuild { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub service: String,
    /// Container paths written.
    pub copied: Vec<String>,
    /// Container paths removed.
    pub deleted: Vec<String>,
    /// The pods updated.
    pub pods: Vec<String>,
    pub took: Duration,
}

impl Report {
    /// One line for the loop's output, e.g. `synced 2 files into api (1 pod) in 140 ms`.
    pub fn summary(&self) -> String {
        let files = self.copied.len() + self.deleted.len();
        format!(
            "synced {files} file{} into {} ({} pod{}) in {} ms",
            if files == 1 { "" } else { "s" },
            self.service,
            self.pods.len(),
            if self.pods.len() == 1 { "" } else { "s" },
            self.took.as_millis()
        )
    }
}

/// Whether `path` is `base` or lies under it (component-wise).
fn under(path: &Path, base: &Path) -> bool {
    path.starts_with(base)
}

/// Decides what `changed` (paths relative to the service's build context, as a watcher
/// reports them, existing or deleted) needs. Any path that needs a rebuild makes the
/// whole change a rebuild: a half-synced change would run code against the old
/// dependencies.
pub fn plan(service: &Service, changed: &[PathBuf]) -> Plan {
    let lu = &service.live_update;
    let mut copies = Vec::new();
    let mut deletes = Vec::new();
    for rel in changed {
        let rebuild = |reason: String| Plan::Rebuild {
            path: rel.clone(),
            reason,
        };
        if rel.as_os_str().is_empty()
            || rel.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            return rebuild("the path is not inside the build context".into());
        }
        let specific_ignore = format!("{}.dockerignore", service.dockerfile.display());
        if rel == &service.dockerfile
            || rel == Path::new(".dockerignore")
            || rel == Path::new(&specific_ignore)
        {
            return rebuild("the image's build definition changed".into());
        }
        if let Some(r) = lu.rebuild_on.iter().find(|r| under(rel, Path::new(r))) {
            return rebuild(format!("`{r}` needs a rebuild (live_update.rebuild_on)"));
        }
        let Some(rule) = lu
            .sync
            .iter()
            .filter(|r| under(rel, Path::new(&r.from)))
            .max_by_key(|r| Path::new(&r.from).components().count())
        else {
            return rebuild(if lu.sync.is_empty() {
                "the service has no live update rules".into()
            } else {
                "the path is outside the live update rules (live_update.sync)".into()
            });
        };
        let rest = rel
            .strip_prefix(&rule.from)
            .expect("the rule's path is a prefix");
        let mut target = rule.to.clone();
        for part in rest.components() {
            target.push('/');
            target.push_str(&part.as_os_str().to_string_lossy());
        }
        let local = service.context.join(rel);
        match std::fs::symlink_metadata(&local) {
            Ok(_) => copies.push((local, target)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => deletes.push(target),
            Err(e) => {
                return rebuild(format!("cannot read {}: {e}", local.display()));
            }
        }
    }
    copies.sort_by(|a, b| a.1.cmp(&b.1));
    copies.dedup_by(|a, b| a.1 == b.1);
    deletes.sort();
    deletes.dedup();
    Plan::Sync { copies, deletes }
}

/// The tar stream of `copies`: each local file (or directory, recursively; symlinks
/// as symlinks) under its container path relative to `/`, modes kept, no owner (tar
/// run as the container's user writes files as that user).
fn archive(copies: &[(PathBuf, String)]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    for (local, target) in copies {
        let name = target.trim_start_matches('/');
        let meta = std::fs::symlink_metadata(local)?;
        if meta.is_dir() {
            builder.append_dir_all(name, local)?;
        } else {
            builder.append_path_with_name(local, name)?;
        }
    }
    builder.into_inner()
}

/// The command run in each pod: remove the deleted paths, then unpack stdin at `/`
/// (`-m`: the files get the time of the copy, so watchers see them change; as
/// `kubectl cp` runs it). Paths go as arguments after `$0`, never into the script.
fn command(has_copies: bool, deletes: &[String]) -> Vec<String> {
    let script = match (has_copies, deletes.is_empty()) {
        (true, true) => "exec tar -xmf - -C /",
        (true, false) => "rm -rf -- \"$@\" && exec tar -xmf - -C /",
        (false, _) => "exec rm -rf -- \"$@\"",
    };
    let mut cmd = vec![
        "sh".to_string(),
        "-c".to_string(),
        script.to_string(),
        "pulsedev-sync".to_string(),
    ];
    cmd.extend(deletes.iter().cloned());
    cmd
}

/// Live-updates service `name` (its pods in `namespace`) with `changed` (paths relative
/// to its build context): copies and deletes in every running pod, or says that the
/// change needs a rebuild. This is the function `pulsedev dev` calls per debounced batch
/// of changes.
///
/// Errors: `pod-unavailable` (no running pod, or one went away mid-copy), `exec-failed`
/// (tar or rm failed in the container; the message carries its stderr), `interrupted`.
pub async fn live_update(
    engine: &Engine,
    namespace: &str,
    name: &str,
    service: &Service,
    changed: &[PathBuf],
    cancel: &CancellationToken,
) -> Result<Outcome> {
    let started = Instant::now();
    let (copies, deletes) = match plan(service, changed) {
        Plan::Rebuild { path, reason } => return Ok(Outcome::NeedsRebuild { path, reason }),
        Plan::Sync { copies, deletes } => (copies, deletes),
    };
    let container = service
        .live_update
        .container
        .clone()
        .unwrap_or_else(|| name.to_string());
    let selector = service
        .live_update
        .selector
        .clone()
        .unwrap_or_else(|| format!("app.kubernetes.io/instance={name}"));
    let pods = exec::running_pods(engine.client(), namespace, &selector, &container).await?;
    let bytes = archive(&copies).map_err(|e| {
        Error::new(
            ErrorKind::ExecFailed,
            format!("failed to pack the changed files of {name}: {e}"),
        )
    })?;
    let command = command(!copies.is_empty(), &deletes);
    let runs = pods
        .iter()
        .map(|target| copy_into(engine, target, &command, &bytes, !copies.is_empty(), cancel));
    for r in futures::future::join_all(runs).await {
        r?;
    }
    Ok(Outcome::Synced(Report {
        service: name.to_string(),
        copied: copies.into_iter().map(|(_, t)| t).collect(),
        deleted: deletes,
        pods: pods.into_iter().map(|t| t.pod).collect(),
        took: started.elapsed(),
    }))
}

async fn copy_into(
    engine: &Engine,
    target: &Target,
    command: &[String],
    bytes: &[u8],
    with_stdin: bool,
    cancel: &CancellationToken,
) -> Result<()> {
    let mut stdin = bytes;
    let (mut out, mut err) = (tokio::io::sink(), tokio::io::sink());
    let exit = exec::run(
        engine.client(),
        target,
        command,
        Io {
            stdin: if with_stdin {
                Some(&mut stdin as &mut (dyn tokio::io::AsyncRead + Unpin + Send))
            } else {
                None
            },
            stdout: &mut out,
            stderr: &mut err,
            tty: false,
        },
        cancel,
    )
    .await?;
    let read_only = exit.stderr_tail.contains("Read-only file system");
    exit.check(target, "copy the changed files into the container")
        .map(drop)
        .map_err(|e| {
            if read_only {
                e.with_hint("live update writes only where the chart mounts its writable volume: make live_update.sync's `to` the chart's liveUpdate.path, with liveUpdate.enabled in the dev values")
            } else {
                e
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{LiveUpdate, SyncRule};

    fn service(dir: &Path) -> Service {
        Service {
            context: dir.to_path_buf(),
            dockerfile: "Dockerfile".into(),
            chart: None,
            build_args: Default::default(),
            target: None,
            live_update: LiveUpdate {
                sync: vec![
                    SyncRule {
                        from: "src".into(),
                        to: "/app/src".into(),
                    },
                    SyncRule {
                        from: "src/static".into(),
                        to: "/srv/static".into(),
                    },
                ],
                rebuild_on: vec!["package.json".into(), "src/generated".into()],
                container: None,
                selector: None,
            },
        }
    }

    #[test]
    fn sources_sync_and_dependency_changes_rebuild() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src/static")).unwrap();
        std::fs::write(dir.path().join("src/a.js"), "a").unwrap();
        std::fs::write(dir.path().join("src/static/i.html"), "i").unwrap();
        let s = service(dir.path());
        let p = |paths: &[&str]| plan(&s, &paths.iter().map(PathBuf::from).collect::<Vec<_>>());
        assert_eq!(
            p(&["src/a.js", "src/static/i.html", "src/gone.js", "src/a.js"]),
            Plan::Sync {
                copies: vec![
                    (dir.path().join("src/a.js"), "/app/src/a.js".into()),
                    // The longest matching rule wins.
                    (
                        dir.path().join("src/static/i.html"),
                        "/srv/static/i.html".into()
                    ),
                ],
                deletes: vec!["/app/src/gone.js".into()],
            }
        );
        for (path, why) in [
            ("package.json", "live_update.rebuild_on"),
            ("src/generated/x.js", "live_update.rebuild_on"),
            ("Dockerfile", "build definition"),
            (".dockerignore", "build definition"),
            ("README.md", "outside the live update rules"),
            ("../outside", "not inside the build context"),
        ] {
            match p(&["src/a.js", path]) {
                Plan::Rebuild { path: got, reason } => {
                    assert_eq!(got, PathBuf::from(path));
                    assert!(reason.contains(why), "{path}: {reason}");
                }
                other => panic!("{path}: {other:?}"),
            }
        }
        let mut none = s.clone();
        none.live_update = LiveUpdate::default();
        assert!(matches!(
            plan(&none, &[PathBuf::from("src/a.js")]),
            Plan::Rebuild { reason, .. } if reason.contains("no live update rules")
        ));
    }

    /// The api's built-in rules in its shared context app/: its sources sync, while
    /// the shared package, its dependency files and its Dockerfile-specific ignore file
    /// need a new image.
    #[test]
    fn the_apis_default_rules_in_the_shared_context() {
        let root = tempfile::tempdir().unwrap();
        let mut api = crate::config::Config::defaults(root.path()).services["api"].clone();
        api.context = root.path().join("app");
        std::fs::create_dir_all(api.context.join("api/src")).unwrap();
        std::fs::write(api.context.join("api/src/app.js"), "x").unwrap();
        assert_eq!(
            plan(&api, &[PathBuf::from("api/src/app.js")]),
            Plan::Sync {
                copies: vec![(api.context.join("api/src/app.js"), "/app/src/app.js".into())],
                deletes: vec![],
            }
        );
        for path in [
            "shared/src/config.js",
            "api/package-lock.json",
            "api/Dockerfile",
            "api/Dockerfile.dockerignore",
        ] {
            assert!(
                matches!(plan(&api, &[PathBuf::from(path)]), Plan::Rebuild { .. }),
                "{path}"
            );
        }
    }

    #[test]
    fn the_command_takes_paths_as_arguments_never_in_the_script() {
        let tricky = "/app/src/$(touch pwned); x.js".to_string();
        let cmd = command(true, std::slice::from_ref(&tricky));
        assert_eq!(
            cmd[..4],
            [
                "sh",
                "-c",
                "rm -rf -- \"$@\" && exec tar -xmf - -C /",
                "pulsedev-sync"
            ]
        );
        assert_eq!(cmd[4], tricky);
        assert_eq!(command(true, &[])[2], "exec tar -xmf - -C /");
        assert_eq!(
            command(false, std::slice::from_ref(&tricky))[2],
            "exec rm -rf -- \"$@\""
        );
    }

    #[test]
    fn the_archive_holds_the_files_under_their_container_paths_with_modes() {
        use std::io::Read as _;
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("run.sh");
        std::fs::write(&f, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bytes = archive(&[(f, "/app/src/run.sh".into())]).unwrap();
        let mut a = tar::Archive::new(bytes.as_slice());
        let mut entries = a.entries().unwrap();
        let mut e = entries.next().unwrap().unwrap();
        assert_eq!(e.path().unwrap(), Path::new("app/src/run.sh"));
        assert_eq!(e.header().mode().unwrap() & 0o777, 0o755);
        let mut text = String::new();
        e.read_to_string(&mut text).unwrap();
        assert_eq!(text, "#!/bin/sh\n");
        assert!(entries.next().is_none());
    }
}
