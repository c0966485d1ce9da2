//! The file watcher of `dev`: each service's build context and the charts and values,
//! with the image builder's own ignore rules, debounced.
//!
//! Owns: the notify watcher and sorting changed paths into "this service's image" and
//! "the charts". Must not build, render or apply.
//!
//! Editors that save by writing a temporary file and renaming it over the original
//! (vim's `backupcopy=no`, JetBrains' "safe write", VS Code on some filesystems) show
//! up as a create or a rename *to* the original name in the watched directory: the
//! directory is watched, not the file, so the new inode is seen like any write.
//! Temporary files that come and go within the debounce window cost one content
//! hash at most: an unchanged hash means no build.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::images::{context, dockerignore};

/// What a batch of file events means.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Changes {
    /// Service → the changed paths of its build context that a build would send
    /// (relative to the context).
    pub services: BTreeMap<String, BTreeSet<String>>,
    /// Changed chart or values files (relative to the config's root).
    pub charts: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.charts.is_empty()
    }
}

/// The directories watched and how their paths are judged.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Service → (context dir, Dockerfile relative to it).
    pub contexts: BTreeMap<String, (PathBuf, String)>,
    /// Chart and values directories.
    pub charts: Vec<PathBuf>,
    pub root: PathBuf,
}

impl Layout {
    /// The services' contexts, `manifests/charts` (every chart and the library chart
    /// they share) and `manifests/envs/<env>` (values files).
    pub fn of(config: &Config) -> Layout {
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let contexts = config
            .services
            .iter()
            .map(|(name, s)| {
                let df = dockerignore::clean(&s.dockerfile.to_string_lossy());
                (name.clone(), (canon(&s.context), df))
            })
            .collect();
        let mut charts: Vec<PathBuf> = config
            .services
            .values()
            .filter_map(|s| s.chart.as_ref())
            .filter_map(|c| c.parent().map(canon))
            .collect();
        charts.push(canon(
            &config.root.join("manifests/envs").join(config.env.as_str()),
        ));
        charts.sort();
        charts.dedup();
        Layout {
            contexts,
            charts,
            root: canon(&config.root),
        }
    }

    /// Sorts `paths` (absolute) into changes. A path in a context counts when the
    /// context's ignore rules (the builder's: `images::context::Filter`, read anew
    /// so an edited ignore file applies at once) send it to the build.
    pub fn classify(&self, paths: &BTreeSet<PathBuf>) -> Changes {
        let mut out = Changes::default();
        let mut matchers = BTreeMap::new();
        for p in paths {
            for (service, (dir, dockerfile)) in &self.contexts {
                let Ok(rel) = p.strip_prefix(dir) else {
                    continue;
                };
                let rel = rel.to_string_lossy().into_owned();
                if rel.is_empty() {
                    continue;
                }
                let filter = matchers
                    .entry(service.clone())
                    .or_insert_with(|| context::Filter::for_build(dir, dockerfile).ok());
                // An unreadable or invalid ignore file: let the build say so. The ignore
                // file itself counts (it may exclude itself: it changes what is sent).
                if filter.as_ref().is_none_or(|f| {
                    f.includes(&rel) || f.ignore_file.as_deref() == Some(rel.as_str())
                }) {
                    out.services.entry(service.clone()).or_default().insert(rel);
                }
            }
            if self.charts.iter().any(|c| p.starts_with(c)) {
                let rel = p.strip_prefix(&self.root).unwrap_or(p);
                out.charts.insert(rel.to_string_lossy().into_owned());
            }
        }
        out
    }
}

/// A running watcher: batches of changed paths arrive on `rx`.
pub struct Watch {
    _watcher: notify::RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    debounce: Duration,
}

/// The error for a watch limit used up (ENOSPC from inotify_add_watch, which notify
/// reports as `MaxFilesWatch`), with doctor's fix.
fn limit_error(dir: &Path) -> Error {
    let limits = crate::doctor::system::read_inotify(Path::new("/proc"));
    let mut fixes = crate::doctor::system::inotify_fixes(&limits);
    if fixes.is_empty() {
        // Above doctor's minimum and still used up: this context needs more.
        let now = limits.max_user_watches.unwrap_or(65_536);
        fixes.push(format!(
            "fs.inotify.max_user_watches={}",
            now.saturating_mul(2)
        ));
    }
    let fixes: Vec<String> = fixes.iter().map(|f| format!("`sudo sysctl {f}`")).collect();
    Error::new(
        ErrorKind::WatchLimitReached,
        format!(
            "cannot watch {}: the inotify watch limit is used up (fs.inotify.max_user_watches)",
            dir.display()
        ),
    )
    .with_hint(format!(
        "run {}; to keep it after a reboot add the same to /etc/sysctl.d/99-pulsedev.conf (`pulsedev doctor` checks it); other watchers (IDEs, kind's nodes) share the limit",
        fixes.join(" and ")
    ))
}

fn watch_error(dir: &Path, e: notify::Error) -> Error {
    let enospc = matches!(e.kind, notify::ErrorKind::MaxFilesWatch)
        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(libc::ENOSPC));
    if enospc {
        return limit_error(dir);
    }
    Error::internal(format!("failed to watch {}: {e}", dir.display()))
}

impl Watch {
    /// Starts watching every directory of `layout` (recursively; directories made later
    /// are added as they appear).
    pub fn start(layout: &Layout, debounce: Duration) -> Result<Watch> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |ev| {
            let _ = tx.send(ev);
        })
        .map_err(|e| watch_error(&layout.root, e))?;
        let mut dirs: Vec<&PathBuf> = layout.contexts.values().map(|(d, _)| d).collect();
        dirs.extend(layout.charts.iter());
        dirs.sort();
        dirs.dedup();
        for d in dirs {
            if d.is_dir() {
                watcher
                    .watch(d, RecursiveMode::Recursive)
                    .map_err(|e| watch_error(d, e))?;
            }
        }
        Ok(Watch {
            _watcher: watcher,
            rx,
            debounce,
        })
    }

    /// The next batch: waits for a first event, then gathers until none came for the
    /// debounce window (at most 20 windows, so a build writing files all the time still
    /// gets a turn). `None` when the watcher ended. A watcher error in the batch (the
    /// limit ran out while adding a new directory) is returned.
    pub async fn next(&mut self) -> Option<Result<BTreeSet<PathBuf>>> {
        let mut paths = BTreeSet::new();
        let first = self.rx.recv().await?;
        let absorb = |ev: notify::Result<notify::Event>, paths: &mut BTreeSet<PathBuf>| {
            match ev {
                Ok(ev) => {
                    // Reads (access events) change nothing.
                    if !matches!(ev.kind, notify::EventKind::Access(_)) {
                        paths.extend(ev.paths);
                    }
                    Ok(())
                }
                Err(e) => {
                    let dir = e.paths.first().cloned().unwrap_or_default();
                    Err(watch_error(&dir, e))
                }
            }
        };
        if let Err(e) = absorb(first, &mut paths) {
            return Some(Err(e));
        }
        for _ in 0..20 {
            match tokio::time::timeout(self.debounce, self.rx.recv()).await {
                Ok(Some(ev)) => {
                    if let Err(e) = absorb(ev, &mut paths) {
                        return Some(Err(e));
                    }
                }
                Ok(None) => break,
                Err(_) => break,
            }
        }
        Some(Ok(paths))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(dir: &Path) -> Layout {
        let api = dir.join("app/api");
        std::fs::create_dir_all(api.join("node_modules/x")).unwrap();
        std::fs::create_dir_all(dir.join("manifests/charts/api/templates")).unwrap();
        std::fs::create_dir_all(dir.join("manifests/envs/dev")).unwrap();
        std::fs::write(api.join("Dockerfile"), "FROM scratch\n").unwrap();
        std::fs::write(api.join(".dockerignore"), "node_modules\n*.md\n!KEEP.md\n").unwrap();
        Layout {
            contexts: BTreeMap::from([("api".into(), (api, "Dockerfile".into()))]),
            charts: vec![dir.join("manifests/charts"), dir.join("manifests/envs/dev")],
            root: dir.to_path_buf(),
        }
    }

    #[test]
    fn paths_the_build_ignores_change_nothing() {
        let t = tempfile::tempdir().unwrap();
        let l = layout(t.path());
        let api = t.path().join("app/api");
        let set = |ps: &[PathBuf]| ps.iter().cloned().collect::<BTreeSet<_>>();
        assert!(
            l.classify(&set(&[
                api.join("node_modules/x/index.js"),
                api.join("README.md"),
                t.path().join("elsewhere.txt"),
            ]))
            .is_empty()
        );
        let c = l.classify(&set(&[
            api.join("src/server.js"),
            api.join("KEEP.md"),
            t.path().join("manifests/envs/dev/values.yaml"),
        ]));
        assert_eq!(
            c.services["api"],
            BTreeSet::from(["KEEP.md".to_string(), "src/server.js".to_string()])
        );
        assert_eq!(
            c.charts,
            BTreeSet::from(["manifests/envs/dev/values.yaml".to_string()])
        );
    }

    #[test]
    fn an_edited_dockerignore_applies_to_the_next_batch() {
        let t = tempfile::tempdir().unwrap();
        let l = layout(t.path());
        let api = t.path().join("app/api");
        let one = BTreeSet::from([api.join("notes.txt")]);
        assert!(!l.classify(&one).is_empty());
        std::fs::write(api.join(".dockerignore"), "*.txt\n").unwrap();
        assert!(l.classify(&one).is_empty());
    }

    #[test]
    fn a_used_up_watch_limit_is_its_own_error_with_the_sysctl_fix() {
        for e in [
            notify::Error::new(notify::ErrorKind::MaxFilesWatch),
            notify::Error::io(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        ] {
            let err = watch_error(Path::new("/src/app"), e);
            assert_eq!(err.kind, ErrorKind::WatchLimitReached);
            assert_eq!(err.exit_code(), crate::error::exit::MACHINE_NOT_READY);
            assert!(err.message.contains("/src/app"), "{}", err.message);
            let hint = err.hint.clone().unwrap_or_default();
            assert!(
                hint.contains("`sudo sysctl fs.inotify.max_user_watches="),
                "{hint}"
            );
        }
        let other = watch_error(
            Path::new("/src/app"),
            notify::Error::io(std::io::Error::from_raw_os_error(libc::EACCES)),
        );
        assert_eq!(other.kind, ErrorKind::Internal);
    }

    #[tokio::test]
    async fn a_save_by_rename_is_seen_as_a_change_of_the_file() {
        let t = tempfile::tempdir().unwrap();
        let l = layout(t.path());
        let api = t.path().join("app/api");
        std::fs::write(api.join("server.js"), "one").unwrap();
        let mut w = Watch::start(&l, Duration::from_millis(50)).unwrap();
        // What vim (backupcopy=no) and "safe write" editors do.
        std::fs::write(api.join(".server.js.swp~"), "two").unwrap();
        std::fs::rename(api.join(".server.js.swp~"), api.join("server.js")).unwrap();
        let mut seen = BTreeSet::new();
        while !seen.contains(&api.join("server.js")) {
            seen.extend(w.next().await.unwrap().unwrap());
        }
        let c = l.classify(&BTreeSet::from([api.join("server.js")]));
        assert!(c.services["api"].contains("server.js"));
    }
}
