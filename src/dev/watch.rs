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

/// One tree the watcher covers: a service's build context (directories its build's
/// ignore rules can send something from) or a chart/values directory (all of it).
#[derive(Debug)]
struct Tree {
    root: PathBuf,
    /// The context's Dockerfile (relative to `root`); `None` for a chart directory.
    dockerfile: Option<String>,
    /// The context's filter, read when the watch started and again when its ignore file
    /// changes. `None`: every directory (a chart directory, or an ignore file that cannot
    /// be read or parsed: the build will say so, and whatever it becomes is seen).
    filter: Option<context::Filter>,
}

impl Tree {
    fn context(root: &Path, dockerfile: &str) -> Tree {
        Tree {
            root: root.to_path_buf(),
            dockerfile: Some(dockerfile.to_string()),
            filter: context::Filter::for_build(root, dockerfile).ok(),
        }
    }

    fn charts(root: &Path) -> Tree {
        Tree {
            root: root.to_path_buf(),
            dockerfile: None,
            filter: None,
        }
    }

    /// Whether `dir` (absolute) may hold a path this tree cares about: the build sends
    /// it, or sends something below it (`Filter::may_descend`, the rule the context
    /// walk follows too).
    fn wants(&self, dir: &Path) -> bool {
        let Ok(rel) = dir.strip_prefix(&self.root) else {
            return false;
        };
        let rel = rel.to_string_lossy();
        match &self.filter {
            _ if rel.is_empty() => true,
            None => true,
            Some(f) => f.includes(&rel) || f.may_descend(&rel),
        }
    }

    /// Whether `path` is one of the files that decide the context's filter: both
    /// candidate ignore files (a Dockerfile-specific one may appear and take over).
    fn decides_filter(&self, path: &Path) -> bool {
        let Some(df) = &self.dockerfile else {
            return false;
        };
        let Ok(rel) = path.strip_prefix(&self.root) else {
            return false;
        };
        let rel = rel.to_string_lossy();
        rel == ".dockerignore" || rel == format!("{df}.dockerignore")
    }
}

/// A running watcher: batches of changed paths arrive on `rx`.
///
/// Directories are watched one by one (inotify's non-recursive watches), and only those
/// that may hold a path a build sends (or a chart file): an ignored `node_modules` of
/// 800 directories costs no watch and wakes nobody when `npm` writes into it. A
/// directory created later is walked and watched as its create event arrives, and the
/// files found in it count as changed (they may have been written before its watch was
/// in place); a removed or renamed-away directory's watches are dropped (notify drops
/// the kernel's on the same events). An edited ignore file re-decides which directories
/// are watched. This is what Tilt's naive watcher does on Linux (tilt-dev/tilt
/// internal/watch/watcher_naive.go: `watchRecursively` skips a directory
/// `shouldSkipDir` says is ignored whole, and `loop` walks a created directory, firing
/// an event per path and adding watches as it goes).
pub struct Watch {
    watcher: notify::RecommendedWatcher,
    rx: mpsc::UnboundedReceiver<notify::Result<notify::Event>>,
    debounce: Duration,
    trees: Vec<Tree>,
    /// The directories watched now.
    watched: BTreeSet<PathBuf>,
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
    /// Starts watching every directory of `layout` that may hold a path the build sends
    /// or a chart file (directories made later are added as they appear).
    pub fn start(layout: &Layout, debounce: Duration) -> Result<Watch> {
        let (tx, rx) = mpsc::unbounded_channel();
        let watcher = notify::recommended_watcher(move |ev| {
            let _ = tx.send(ev);
        })
        .map_err(|e| watch_error(&layout.root, e))?;
        let mut trees: Vec<Tree> = layout
            .contexts
            .values()
            .map(|(d, df)| Tree::context(d, df))
            .collect();
        trees.extend(layout.charts.iter().map(|c| Tree::charts(c)));
        let mut w = Watch {
            watcher,
            rx,
            debounce,
            trees,
            watched: BTreeSet::new(),
        };
        let mut roots: Vec<PathBuf> = w.trees.iter().map(|t| t.root.clone()).collect();
        roots.sort();
        roots.dedup();
        for root in roots {
            if root.is_dir() {
                w.add_tree(&root, &mut BTreeSet::new())?;
            }
        }
        Ok(w)
    }

    /// How many directories are watched (one inotify watch each).
    pub fn watched(&self) -> usize {
        self.watched.len()
    }

    fn wants(&self, dir: &Path) -> bool {
        self.trees.iter().any(|t| t.wants(dir))
    }

    /// Watches `dir` and every directory below it that a tree wants, putting the files
    /// found below a newly watched directory into `found`. A directory gone meanwhile
    /// is skipped (its removal is an event of its own).
    fn add_tree(&mut self, dir: &Path, found: &mut BTreeSet<PathBuf>) -> Result<()> {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if !self.watched.contains(&d) {
                match self.watcher.watch(&d, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.watched.insert(d.clone());
                    }
                    Err(e) if gone(&e) => continue,
                    Err(e) => return Err(watch_error(&d, e)),
                }
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                // Symlinks are sent as links, not followed (context::scan), so a linked
                // directory's contents are never sent.
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    if self.wants(&path) {
                        stack.push(path);
                    }
                } else {
                    found.insert(path);
                }
            }
        }
        Ok(())
    }

    /// Forgets `dir` and everything watched below it (notify has already dropped the
    /// kernel watches: it does on a delete or a rename away of a watched path).
    fn forget(&mut self, dir: &Path) {
        let below: Vec<PathBuf> = self
            .watched
            .range(dir.to_path_buf()..)
            .take_while(|p| p.starts_with(dir))
            .cloned()
            .collect();
        for p in below {
            self.watched.remove(&p);
        }
    }

    /// An ignore file changed: reads the filters again and watches what they want now,
    /// dropping the watches of directories no filter wants any more.
    fn refilter(&mut self, found: &mut BTreeSet<PathBuf>) -> Result<()> {
        for t in &mut self.trees {
            if let Some(df) = &t.dockerfile {
                t.filter = context::Filter::for_build(&t.root, df).ok();
            }
        }
        let unwanted: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|d| !self.wants(d))
            .cloned()
            .collect();
        for d in unwanted {
            let _ = self.watcher.unwatch(&d);
            self.watched.remove(&d);
        }
        // Directories a filter newly wants hang below watched ones (`may_descend`
        // holds for every directory on the way to a sent path).
        let watched: Vec<PathBuf> = self.watched.iter().cloned().collect();
        for d in watched {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let p = entry.path();
                if entry.file_type().is_ok_and(|t| t.is_dir())
                    && !self.watched.contains(&p)
                    && self.wants(&p)
                {
                    self.add_tree(&p, found)?;
                }
            }
        }
        Ok(())
    }

    /// Takes one event in: its paths into `paths`, and the watches it calls for.
    fn absorb(
        &mut self,
        ev: notify::Result<notify::Event>,
        paths: &mut BTreeSet<PathBuf>,
    ) -> Result<()> {
        use notify::EventKind;
        use notify::event::{CreateKind, ModifyKind, RemoveKind, RenameMode};
        let ev = match ev {
            Ok(ev) => ev,
            Err(e) => {
                let dir = e.paths.first().cloned().unwrap_or_default();
                return Err(watch_error(&dir, e));
            }
        };
        match ev.kind {
            // Reads (access events) change nothing.
            EventKind::Access(_) => return Ok(()),
            EventKind::Remove(RemoveKind::Folder | RemoveKind::Any | RemoveKind::Other)
            | EventKind::Modify(ModifyKind::Name(RenameMode::From)) => {
                for p in &ev.paths {
                    self.forget(p);
                }
            }
            EventKind::Create(CreateKind::Folder | CreateKind::Any)
            | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
                for p in &ev.paths {
                    let is_dir = std::fs::symlink_metadata(p).is_ok_and(|m| m.is_dir());
                    if is_dir && self.wants(p) {
                        self.add_tree(p, paths)?;
                    }
                }
            }
            _ => {}
        }
        let refilter = ev
            .paths
            .iter()
            .any(|p| self.trees.iter().any(|t| t.decides_filter(p)));
        paths.extend(ev.paths);
        if refilter {
            self.refilter(paths)?;
        }
        Ok(())
    }

    /// The next batch: waits for a first event, then gathers until none came for the
    /// debounce window (at most 20 windows, so a build writing files all the time still
    /// gets a turn). `None` when the watcher ended. A watcher error in the batch (the
    /// limit ran out while adding a new directory) is returned.
    pub async fn next(&mut self) -> Option<Result<BTreeSet<PathBuf>>> {
        let mut paths = BTreeSet::new();
        let first = self.rx.recv().await?;
        if let Err(e) = self.absorb(first, &mut paths) {
            return Some(Err(e));
        }
        for _ in 0..20 {
            match tokio::time::timeout(self.debounce, self.rx.recv()).await {
                Ok(Some(ev)) => {
                    if let Err(e) = self.absorb(ev, &mut paths) {
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

/// A path that went away between its event and the watch (or was never there).
fn gone(e: &notify::Error) -> bool {
    matches!(e.kind, notify::ErrorKind::PathNotFound)
        || matches!(&e.kind, notify::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::NotFound)
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

    /// The inotify watches this process holds on directories under `dir`, as the kernel
    /// lists them (/proc/self/fdinfo of each inotify descriptor: one `inotify wd:`
    /// line per watch with the watched inode in hex; proc(5), "/proc/pid/fdinfo").
    /// Other tests' watchers in this process are left out by the inodes.
    fn kernel_watches(dir: &Path) -> BTreeSet<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let mut inodes = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            inodes.insert(std::fs::metadata(&d).unwrap().ino(), d.clone());
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.file_type().unwrap().is_dir() {
                    stack.push(e.path());
                }
            }
        }
        let mut out = BTreeSet::new();
        for fd in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
            let is_inotify = std::fs::read_link(fd.path())
                .is_ok_and(|t| t.to_string_lossy() == "anon_inode:inotify");
            if !is_inotify {
                continue;
            }
            let info = std::fs::read_to_string(Path::new("/proc/self/fdinfo").join(fd.file_name()))
                .unwrap_or_default();
            for line in info.lines().filter(|l| l.starts_with("inotify wd:")) {
                let ino = line
                    .split_whitespace()
                    .find_map(|f| f.strip_prefix("ino:"))
                    .and_then(|h| u64::from_str_radix(h, 16).ok());
                if let Some(d) = ino.and_then(|i| inodes.get(&i)) {
                    out.insert(d.clone());
                }
            }
        }
        out
    }

    /// Batches until one holds `want`; returns every path seen on the way. A minute
    /// without it fails (an event that never comes), rather than hanging the suite.
    async fn until_seen(w: &mut Watch, want: &Path) -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        let wait = async {
            while !seen.contains(want) {
                seen.extend(w.next().await.unwrap().unwrap());
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), wait)
            .await
            .is_err()
        {
            panic!("no event for {} in 60 s; seen: {seen:?}", want.display());
        }
        seen
    }

    #[tokio::test]
    async fn an_ignored_directory_gets_no_watch_and_gives_no_event() {
        let t = tempfile::tempdir().unwrap();
        let l = layout(t.path());
        let api = t.path().join("app/api");
        std::fs::create_dir_all(api.join("src/lib")).unwrap();
        std::fs::create_dir_all(api.join("node_modules/x/lib/deep")).unwrap();
        let mut w = Watch::start(&l, Duration::from_millis(50)).unwrap();
        let expected: BTreeSet<PathBuf> = [
            "app/api",
            "app/api/src",
            "app/api/src/lib",
            "manifests/charts",
            "manifests/charts/api",
            "manifests/charts/api/templates",
            "manifests/envs/dev",
        ]
        .iter()
        .map(|d| t.path().join(d))
        .collect();
        assert_eq!(kernel_watches(t.path()), expected);
        assert_eq!(w.watched(), expected.len());
        // npm writing into node_modules, then a save of a source file.
        std::fs::write(api.join("node_modules/x/index.js"), "x").unwrap();
        std::fs::create_dir_all(api.join("node_modules/y/lib")).unwrap();
        std::fs::write(api.join("node_modules/y/lib/index.js"), "y").unwrap();
        std::fs::write(api.join("src/lib/a.js"), "a").unwrap();
        let seen = until_seen(&mut w, &api.join("src/lib/a.js")).await;
        assert!(
            seen.iter()
                .all(|p| !p.starts_with(api.join("node_modules"))),
            "{seen:?}"
        );
        assert_eq!(kernel_watches(t.path()), expected);
        assert_eq!(w.watched(), expected.len());
    }

    #[tokio::test]
    async fn a_directory_made_after_the_start_is_watched_and_dropped_when_removed() {
        let t = tempfile::tempdir().unwrap();
        let l = layout(t.path());
        let api = t.path().join("app/api");
        let mut w = Watch::start(&l, Duration::from_millis(50)).unwrap();
        let at_start = kernel_watches(t.path());
        assert_eq!(w.watched(), at_start.len());
        // Made in one go, with a file: the file may be written before the new
        // directories' watches exist, and is seen all the same.
        std::fs::create_dir_all(api.join("lib/deep")).unwrap();
        std::fs::write(api.join("lib/deep/a.js"), "a").unwrap();
        until_seen(&mut w, &api.join("lib/deep/a.js")).await;
        let mut grown = at_start.clone();
        grown.extend([api.join("lib"), api.join("lib/deep")]);
        assert_eq!(kernel_watches(t.path()), grown);
        assert_eq!(w.watched(), grown.len());
        // Watched now: a later write in it is an event.
        std::fs::write(api.join("lib/deep/b.js"), "b").unwrap();
        until_seen(&mut w, &api.join("lib/deep/b.js")).await;
        // An ignored directory made later is not watched.
        std::fs::create_dir_all(api.join("node_modules/z")).unwrap();
        std::fs::remove_dir_all(api.join("lib")).unwrap();
        until_seen(&mut w, &api.join("lib")).await;
        assert_eq!(kernel_watches(t.path()), at_start);
        assert_eq!(w.watched(), at_start.len());
    }

    #[tokio::test]
    async fn an_edited_ignore_file_changes_what_is_watched() {
        let t = tempfile::tempdir().unwrap();
        let l = layout(t.path());
        let api = t.path().join("app/api");
        let mut w = Watch::start(&l, Duration::from_millis(50)).unwrap();
        let at_start = kernel_watches(t.path());
        assert!(!at_start.contains(&api.join("node_modules")));
        std::fs::write(api.join(".dockerignore"), "*.md\n").unwrap();
        until_seen(&mut w, &api.join(".dockerignore")).await;
        let mut grown = at_start.clone();
        grown.extend([api.join("node_modules"), api.join("node_modules/x")]);
        assert_eq!(kernel_watches(t.path()), grown);
        std::fs::write(api.join(".dockerignore"), "node_modules\n").unwrap();
        until_seen(&mut w, &api.join(".dockerignore")).await;
        assert_eq!(kernel_watches(t.path()), at_start);
        assert_eq!(w.watched(), at_start.len());
    }
}
