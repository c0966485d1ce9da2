//! Build contexts: walking a context directory with its ignore file applied, the
//! content hash over what a build can see, the stat cache that makes re-hashing an
//! unchanged context cheap, and the streamed tar the engine receives.
//!
//! Owns: reading the context from disk and the cache file under
//! `$XDG_CACHE_HOME/pulsedev/contexts/`. Must not talk to Docker (the tar is handed
//! over as a byte stream) and never holds a whole context in memory.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::Stream;
use sha2::{Digest, Sha256};

use super::dockerignore::{self, Matcher};
use crate::error::{Error, ErrorKind, Result};

/// What the build sees besides the files; part of the content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildInputs {
    /// Dockerfile path relative to the context, `/`-separated.
    pub dockerfile: String,
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `linux/<arch>`.
    pub platform: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Dir,
    Symlink(PathBuf),
}

/// One path that is sent, with the stat fields the cache compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the context root, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    /// Permission bits as the tar carries them (`normalised_mode`).
    pub mode: u32,
    pub stat: Stat,
}

/// The stat fields that must all be equal for a cached file hash to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub size: u64,
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub ino: u64,
    pub dev: u64,
}

impl Stat {
    fn of(m: &std::fs::Metadata) -> Stat {
        Stat {
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
            ino: m.ino(),
            dev: m.dev(),
        }
    }
}

/// A scanned context: the root and every path that will be sent, in tar order.
#[derive(Debug, Clone)]
pub struct Context {
    pub root: PathBuf,
    pub dockerfile: String,
    pub entries: Vec<Entry>,
    /// The SHA-256 of each file entry (by index) as `content_hash` hashed it. The tar
    /// sends each file only if its bytes still have this hash, so the image tag (made
    /// from these) describes exactly what the engine received.
    pub file_hashes: std::sync::OnceLock<Vec<Option<[u8; 32]>>>,
}

fn build_error(message: String) -> Error {
    Error::new(ErrorKind::ImageBuildFailed, message)
}

/// Which paths of a build context are sent: the ignore file a build uses, chosen by
/// BuildKit's rule, compiled. The one place that decides; the context walk (`scan`) and
/// anything that watches a context for changes ask `includes` / `may_descend`.
///
/// The rule (moby/buildkit frontend/dockerui/config.go: `ReadEntrypoint` reads
/// `<Dockerfile>.dockerignore` from the Dockerfile's own directory and, when it was
/// read, `dockerIgnorePatterns` never looks at the context's `.dockerignore`; buildx
/// build/opt.go sends the Dockerfile's directory and base name for that; docs:
/// docs.docker.com/build/concepts/context/#filename-and-location, "A
/// Dockerfile-specific ignore-file takes precedence over the .dockerignore file at the
/// root of the build context if both exist"):
/// - `<dir>/<name>.dockerignore` next to the Dockerfile `<dir>/<name>` (the full
///   file name plus `.dockerignore`: `api/Dockerfile.dockerignore`,
///   `api/Containerfile.dockerignore`) when that file exists, even when empty (the
///   built-in frontend reads it with cache/util/fsutil.go `ReadFile`, whose `io.ReadAll`
///   gives a non-nil empty slice; only a `# syntax=` frontend, over gRPC, would see nil
///   and fall back);
/// - otherwise `.dockerignore` at the context root; otherwise nothing is left out.
///
/// Either file that is not a regular file (a FIFO, a directory) is refused, where
/// BuildKit would skip it: sending the whole context instead could send what the file
/// was meant to keep out (docs/DECISIONS.md, issue 13's "smaller ones").
///
/// The two are never merged, and a `.dockerignore` in a subdirectory (the Dockerfile's
/// included) means nothing. What is always sent: with the root `.dockerignore`, that
/// file and the Dockerfile (as the docker CLI adds them; the engine drops them again
/// when they are ignored); with a Dockerfile-specific file, only the Dockerfile, which
/// the classic builder pulsedev talks to reads from the context (BuildKit sends it
/// apart, so a specific file should not exclude its own Dockerfile: see
/// docs/DECISIONS.md, "One build context for api and worker").
#[derive(Debug, Clone, Default)]
pub struct Filter {
    matcher: Matcher,
    /// The ignore file the patterns came from, relative to the context, if any.
    pub ignore_file: Option<String>,
}

impl Filter {
    /// The filter of a build of the context `root` with the Dockerfile `dockerfile`
    /// (relative to `root`, `/`-separated). The file it was read from is `ignore_file`:
    /// a watcher must look at that file too, which may exclude itself.
    pub fn for_build(root: &Path, dockerfile: &str) -> Result<Filter> {
        let cleaned = dockerignore::clean(dockerfile);
        let dockerfile = cleaned.as_str();
        let specific = format!("{dockerfile}.dockerignore");
        for (name, always_sent) in [
            (specific.as_str(), vec![dockerfile]),
            (".dockerignore", vec![".dockerignore", dockerfile]),
        ] {
            let path = root.join(name);
            match read_regular(&path) {
                Ok(text) => {
                    let matcher = Matcher::from_ignore_file(&text, &always_sent).map_err(|e| {
                        build_error(format!("invalid {}: {e}", path.display()))
                            .with_hint("fix the pattern; see https://docs.docker.com/build/concepts/context/#dockerignore-files")
                    })?;
                    return Ok(Filter {
                        matcher,
                        ignore_file: Some(name.to_string()),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(build_error(format!(
                        "failed to read {}: {e}",
                        path.display()
                    )));
                }
            }
        }
        Ok(Filter::default())
    }

    /// Whether `path` (relative to the context, `/`-separated) is sent.
    pub fn includes(&self, path: &str) -> bool {
        !self.matcher.excluded(path)
    }

    /// For a directory that is not sent: whether something below it may still be,
    /// so a walk (or a watch) must look inside.
    pub fn may_descend(&self, dir: &str) -> bool {
        self.matcher.may_descend(dir)
    }
}

/// Walks `root`, applying the ignore file `Filter` picks. Symlinks are recorded, not followed.
pub fn scan(root: &Path, dockerfile: &Path) -> Result<Context> {
    let meta = std::fs::metadata(root).map_err(|e| {
        build_error(format!(
            "failed to read the build context {}: {e}",
            root.display()
        ))
        .with_hint("check `context` of the service in pulsedev.toml")
    })?;
    if !meta.is_dir() {
        return Err(build_error(format!(
            "the build context {} is not a directory",
            root.display()
        )));
    }
    let df = dockerfile
        .to_str()
        .ok_or_else(|| build_error(format!("{} is not UTF-8", dockerfile.display())))?;
    let df = dockerignore::clean(df);
    if df.starts_with("../") || df == ".." || df.starts_with('/') || df == "." {
        return Err(build_error(format!(
            "the Dockerfile {df} must be inside the build context {}",
            root.display()
        ))
        .with_hint("give `dockerfile` relative to the service's `context`"));
    }
    if !root.join(&df).is_file() {
        return Err(
            build_error(format!("no Dockerfile at {}", root.join(&df).display()))
                .with_hint("create it, or set `dockerfile` of the service in pulsedev.toml"),
        );
    }
    let filter = Filter::for_build(root, &df)?;
    let mut entries = Vec::new();
    walk(root, "", &filter, &mut entries)?;
    Ok(Context {
        root: root.to_path_buf(),
        dockerfile: df,
        entries,
        file_hashes: std::sync::OnceLock::new(),
    })
}

/// Reads a small text file that must be a regular file: a FIFO (or device) put at its
/// name is refused instead of blocking the open or the read for ever.
fn read_regular(path: &Path) -> io::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is not a regular file",
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    Ok(text)
}

fn walk(root: &Path, rel: &str, filter: &Filter, out: &mut Vec<Entry>) -> Result<()> {
    let dir = if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(rel)
    };
    let read_err = |e: io::Error| build_error(format!("failed to read {}: {e}", dir.display()));
    let mut names = Vec::new();
    for item in std::fs::read_dir(&dir).map_err(read_err)? {
        let item = item.map_err(read_err)?;
        let name = match item.file_name().into_string() {
            Ok(name) => name,
            Err(n) => {
                // A name that is not UTF-8 is fine when .dockerignore leaves it out
                // (matched with the invalid bytes shown as U+FFFD, which `*`, `?` and
                // literal prefixes match as the docker CLI's byte-wise matcher would).
                let lossy = n.to_string_lossy().into_owned();
                let path = if rel.is_empty() {
                    lossy
                } else {
                    format!("{rel}/{lossy}")
                };
                let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
                let looked_at = filter.includes(&path) || (is_dir && filter.may_descend(&path));
                if !looked_at {
                    continue;
                }
                return Err(build_error(format!(
                    "{} holds a file name that is not UTF-8: {n:?}",
                    dir.display()
                ))
                .with_hint("rename it, or exclude it in the build's ignore file (.dockerignore)"));
            }
        };
        names.push(name);
    }
    names.sort_unstable();
    for name in names {
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let full = root.join(&path);
        let meta = std::fs::symlink_metadata(&full)
            .map_err(|e| build_error(format!("failed to stat {}: {e}", full.display())))?;
        let ft = meta.file_type();
        if !filter.includes(&path) {
            if ft.is_dir() && filter.may_descend(&path) {
                walk(root, &path, filter, out)?;
            }
            continue;
        }
        let kind = if ft.is_dir() {
            EntryKind::Dir
        } else if ft.is_symlink() {
            let target = std::fs::read_link(&full)
                .map_err(|e| build_error(format!("failed to read {}: {e}", full.display())))?;
            EntryKind::Symlink(target)
        } else if ft.is_file() {
            EntryKind::File
        } else {
            // Sockets, FIFOs, devices: a build cannot use them.
            continue;
        };
        let is_dir = kind == EntryKind::Dir;
        let mode = normalised_mode(&kind, meta.mode());
        out.push(Entry {
            path: path.clone(),
            kind,
            mode,
            stat: Stat::of(&meta),
        });
        if is_dir {
            walk(root, &path, filter, out)?;
        }
    }
    Ok(())
}

/// The mode a path is sent with: 0755 for directories and for files any execute bit
/// is set on, 0644 for other files, whatever the user's umask left on disk. With umask
/// 027 or 077 the files on disk are unreadable to "other", and COPY keeps that mode, so
/// the app's uid 10001 could not read or run them. The hash uses the same modes, so it
/// changes only when what the image gets changes. Symlinks keep theirs (the tar's link
/// mode has no effect). Docker's CLI keeps disk modes on unix but not on Windows, where
/// they mean nothing: moby's archive package (pkg/archive, now moby/go-archive)
/// `chmodTarEntry` in archive_windows.go sends every entry as 0755.
/// See docs/DECISIONS.md, "Build context file modes".
pub fn normalised_mode(kind: &EntryKind, on_disk: u32) -> u32 {
    match kind {
        EntryKind::Dir => 0o755,
        EntryKind::File if on_disk & 0o111 != 0 => 0o755,
        EntryKind::File => 0o644,
        EntryKind::Symlink(_) => on_disk & 0o7777,
    }
}

/// File hashes remembered by stat, one cache file per build (context and Dockerfile).
///
/// A hash is reused only when size, mtime, ctime, inode and device are all equal.
/// Files changed within `RACY_SECONDS` of the scan are never stored: a later write in
/// the same timestamp tick could otherwise keep every stat field equal (git's
/// "racily clean" problem).
#[derive(Debug, Default)]
pub struct StatCache {
    file: Option<PathBuf>,
    entries: HashMap<String, (Stat, [u8; 32])>,
    /// Entries to write back: only those seen in this scan.
    fresh: HashMap<String, (Stat, [u8; 32])>,
    pub hits: usize,
    pub misses: usize,
}

const RACY_SECONDS: i64 = 2;
const CACHE_HEADER: &str = "pulsedev-stat-cache 1";

impl StatCache {
    /// A cache that remembers nothing (tests, `--no-cache` style callers).
    pub fn disabled() -> StatCache {
        StatCache::default()
    }

    /// The cache file for the build of `root` with `dockerfile` under `cache_dir`
    /// (normally `state::Dirs::cache`). One per Dockerfile, not per directory: builds
    /// that share a context (api and worker) see different files, and each save keeps
    /// only what its own scan saw.
    pub fn load(cache_dir: &Path, root: &Path, dockerfile: &str) -> StatCache {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let mut key = Sha256::new();
        key.update(root.as_os_str().as_encoded_bytes());
        key.update([0]);
        key.update(dockerfile.as_bytes());
        let key = hex::encode(key.finalize());
        let file = cache_dir.join("contexts").join(&key[..32]);
        let mut cache = StatCache {
            file: Some(file.clone()),
            ..StatCache::default()
        };
        let Ok(text) = std::fs::read_to_string(&file) else {
            return cache;
        };
        let mut lines = text.split('\n');
        if lines.next() != Some(CACHE_HEADER) {
            return cache;
        }
        for line in lines {
            if let Some((path, entry)) = parse_cache_line(line) {
                cache.entries.insert(path, entry);
            }
        }
        cache
    }

    /// Writes the entries seen in this scan (atomically: temp file, then rename).
    pub fn save(&self, scan_started: SystemTime) -> io::Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let cutoff = scan_started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64)
            - RACY_SECONDS;
        let mut text = String::with_capacity(self.fresh.len() * 120);
        text.push_str(CACHE_HEADER);
        text.push('\n');
        let mut paths: Vec<&String> = self.fresh.keys().collect();
        paths.sort_unstable();
        for path in paths {
            let (s, h) = &self.fresh[path];
            if s.mtime.0 >= cutoff || s.ctime.0 >= cutoff || path.contains(['\n', '\t']) {
                continue;
            }
            text.push_str(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
                hex::encode(h),
                s.size,
                s.mtime.0,
                s.mtime.1,
                s.ctime.0,
                s.ctime.1,
                s.ino,
                s.dev,
                path
            ));
        }
        let dir = file.parent().expect("cache file has a parent");
        // 0700: the cache lists the context's file names (crate::state::private_dir).
        crate::state::private_dir(dir).map_err(|e| io::Error::other(e.message.clone()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.persist(file).map_err(|e| e.error)?;
        Ok(())
    }

    fn lookup(&self, path: &str, stat: &Stat) -> Option<[u8; 32]> {
        self.entries
            .get(path)
            .filter(|(s, _)| s == stat)
            .map(|(_, h)| *h)
    }
}

fn parse_cache_line(line: &str) -> Option<(String, (Stat, [u8; 32]))> {
    let mut f = line.splitn(9, '\t');
    let mut hash = [0u8; 32];
    hex::decode_to_slice(f.next()?, &mut hash).ok()?;
    let mut n = || f.next()?.parse::<i64>().ok();
    let size = n()? as u64;
    let mtime = (n()?, n()?);
    let ctime = (n()?, n()?);
    let ino = n()? as u64;
    let dev = n()? as u64;
    let path = f.next()?.to_string();
    Some((
        path,
        (
            Stat {
                size,
                mtime,
                ctime,
                ino,
                dev,
            },
            hash,
        ),
    ))
}

fn hash_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// The content hash of a context plus its build inputs, hex. Reads only the files
/// whose stat changed since the cache was written; misses are hashed in parallel.
pub fn content_hash(ctx: &Context, inputs: &BuildInputs, cache: &mut StatCache) -> Result<String> {
    let mut file_hashes: Vec<Option<[u8; 32]>> = vec![None; ctx.entries.len()];
    let mut misses = Vec::new();
    for (i, e) in ctx.entries.iter().enumerate() {
        if e.kind == EntryKind::File {
            match cache.lookup(&e.path, &e.stat) {
                Some(h) => {
                    file_hashes[i] = Some(h);
                    cache.hits += 1;
                }
                None => {
                    misses.push(i);
                    cache.misses += 1;
                }
            }
        }
    }
    if !misses.is_empty() {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .min(misses.len())
            .max(1);
        let next = AtomicUsize::new(0);
        let results: Vec<Vec<(usize, io::Result<[u8; 32]>)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        let mut out = Vec::new();
                        loop {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&i) = misses.get(k) else { break };
                            out.push((i, hash_file(&ctx.root.join(&ctx.entries[i].path))));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("hash thread panicked"))
                .collect()
        });
        for (i, r) in results.into_iter().flatten() {
            let h = r.map_err(|e| {
                build_error(format!(
                    "failed to read {}: {e}",
                    ctx.root.join(&ctx.entries[i].path).display()
                ))
            })?;
            file_hashes[i] = Some(h);
        }
    }

    let mut h = Sha256::new();
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(b"pulsedev-context-v1");
    for (e, fh) in ctx.entries.iter().zip(&file_hashes) {
        field(e.path.as_bytes());
        field(&e.mode.to_le_bytes());
        match &e.kind {
            EntryKind::Dir => field(b"dir"),
            EntryKind::File => {
                field(b"file");
                field(fh.as_ref().expect("every file hashed"));
            }
            EntryKind::Symlink(target) => {
                field(b"symlink");
                field(target.as_os_str().as_encoded_bytes());
            }
        }
        if let (EntryKind::File, Some(fh)) = (&e.kind, fh) {
            cache.fresh.insert(e.path.clone(), (e.stat, *fh));
        }
    }
    let _ = ctx.file_hashes.set(file_hashes);
    field(b"inputs");
    field(inputs.dockerfile.as_bytes());
    for (k, v) in &inputs.build_args {
        field(k.as_bytes());
        field(v.as_bytes());
    }
    field(b"target");
    field(inputs.target.as_deref().unwrap_or("").as_bytes());
    field(b"platform");
    field(inputs.platform.as_bytes());
    Ok(hex::encode(h.finalize()))
}

/// Why the tar could not be produced (the context changed under it), for the build's
/// error: the engine only sees an aborted upload.
pub type UploadFailure = Arc<std::sync::Mutex<Option<String>>>;

/// The context as an uncompressed tar, produced on a blocking thread and handed over
/// in chunks through a small bounded channel: memory stays at a few hundred KiB
/// whatever the context's size. Dropping the stream stops the producer. When the
/// context changed since it was hashed the stream ends with an error (before the
/// changed file's last bytes, so the engine never gets a complete context) and the
/// reason is left in `failure`.
pub fn tar_stream(
    ctx: Arc<Context>,
    failure: UploadFailure,
) -> impl Stream<Item = io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let result = write_tar(&ctx, &mut writer);
        match result {
            Ok(()) => {
                let _ = writer.flush();
            }
            Err(e) => {
                if let Ok(mut f) = failure.lock() {
                    f.get_or_insert(e.to_string());
                }
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// Writes the tar of `ctx` to `w` (the streaming producer and tests use it).
pub fn write_tar(ctx: &Context, w: &mut dyn Write) -> io::Result<()> {
    let mut b = tar::Builder::new(w);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let hashes = ctx.file_hashes.get();
    for (i, e) in ctx.entries.iter().enumerate() {
        let full = ctx.root.join(&e.path);
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mode(e.mode);
        header.set_mtime(e.stat.mtime.0.max(0) as u64);
        match &e.kind {
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                b.append_data(&mut header, format!("{}/", e.path), io::empty())?;
            }
            EntryKind::Symlink(target) => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                b.append_link(&mut header, &e.path, target)?;
            }
            EntryKind::File => {
                // The file as it was scanned and hashed, or an error: opened without
                // following a link (a file swapped for a symlink to an outside file) and
                // without blocking (a FIFO put in its place), checked to be the same
                // inode, and its bytes hashed as they go out.
                let f = open_scanned(&full, &e.path, &e.stat)?;
                let size = e.stat.size;
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                b.append_data(
                    &mut header,
                    &e.path,
                    Verified {
                        inner: f.take(size),
                        remaining: size,
                        hasher: Sha256::new(),
                        want: hashes.and_then(|h| h[i]),
                        path: &e.path,
                    },
                )?;
            }
        }
    }
    b.finish()?;
    Ok(())
}

fn changed(path: &str, why: &str) -> io::Error {
    io::Error::other(format!("{path} {why} after it was hashed"))
}

/// Opens the file entry `path` for the tar, refusing anything but the regular file
/// the scan saw.
fn open_scanned(full: &Path, path: &str, stat: &Stat) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(full)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => changed(path, "became a symbolic link"),
            _ if e.kind() == io::ErrorKind::NotFound => changed(path, "was removed"),
            _ => io::Error::new(e.kind(), format!("failed to read {path}: {e}")),
        })?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(changed(
            path,
            "was replaced by something that is not a regular file (a FIFO, socket or device)",
        ));
    }
    if (m.dev(), m.ino()) != (stat.dev, stat.ino) {
        return Err(changed(path, "was replaced by another file"));
    }
    Ok(f)
}

/// Yields exactly `remaining` bytes of the file, hashing them; the last bytes are only
/// handed out once the hash is known to be `want`, so a file that changed since it was
/// hashed never reaches the engine complete.
struct Verified<'a, R> {
    inner: R,
    remaining: u64,
    hasher: Sha256,
    want: Option<[u8; 32]>,
    path: &'a str,
}

impl<R: Read> Read for Verified<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let max = buf.len().min(self.remaining as usize);
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(changed(self.path, "shrank"));
        }
        self.hasher.update(&buf[..n]);
        self.remaining -= n as u64;
        if self.remaining == 0
            && let Some(want) = self.want
        {
            let got: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            if got != want {
                return Err(changed(self.path, "changed"));
            }
        }
        Ok(n)
    }
}

const CHUNK: usize = 64 * 1024;

struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(Bytes::from(chunk)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the tar reader went away"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(root: &Path, rel: &str, data: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    fn inputs() -> BuildInputs {
        BuildInputs {
            dockerfile: "Dockerfile".into(),
            build_args: BTreeMap::new(),
            target: None,
            platform: "linux/amd64".into(),
        }
    }

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "Dockerfile", "FROM scratch\nCOPY . /\n");
        write(
            r,
            ".dockerignore",
            "**/*.log\nnode_modules\ndocs\n!docs/keep.md\nDockerfile\n",
        );
        write(r, "src/main.rs", "fn main() {}\n");
        write(r, "src/debug.log", "noise");
        write(r, "node_modules/x/index.js", "x");
        write(r, "docs/keep.md", "keep");
        write(r, "docs/drop.md", "drop");
        std::os::unix::fs::symlink("src/main.rs", r.join("link")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("outside")).unwrap();
        d
    }

    fn paths(ctx: &Context) -> Vec<&str> {
        ctx.entries.iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn scan_applies_dockerignore_and_keeps_symlinks() {
        let d = fixture();
        let ctx = scan(d.path(), Path::new("Dockerfile")).unwrap();
        assert_eq!(
            paths(&ctx),
            vec![
                ".dockerignore",
                "Dockerfile",
                "docs/keep.md",
                "link",
                "outside",
                "src",
                "src/main.rs"
            ]
        );
        let link = ctx.entries.iter().find(|e| e.path == "outside").unwrap();
        assert_eq!(link.kind, EntryKind::Symlink("/etc/passwd".into()));
    }

    /// BuildKit's rule (moby/buildkit frontend/dockerui/config.go, `ReadEntrypoint` and
    /// `dockerIgnorePatterns`): `<Dockerfile>.dockerignore` next to the Dockerfile wins
    /// over the context's `.dockerignore`, whole (never merged); without it the root file
    /// applies; an ignore file anywhere else means nothing.
    #[test]
    fn the_ignore_file_is_chosen_as_buildkit_chooses_it() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, ".dockerignore", "*.md\nsvc/gen\n");
        write(r, "svc/Dockerfile", "FROM scratch\n");
        write(r, "svc/Containerfile", "FROM scratch\n");
        write(r, "svc/.dockerignore", "svc/src\n");
        write(r, "svc/src/a.js", "a");
        write(r, "svc/gen/b.js", "b");
        write(r, "other/c.js", "c");
        write(r, "README.md", "r");
        let sent = |df: &str| {
            let ctx = scan(r, Path::new(df)).unwrap();
            paths(&ctx)
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let filter = |df: &str| Filter::for_build(r, df).unwrap();

        // No Dockerfile-specific file: the root .dockerignore (sent itself, as the docker
        // CLI sends it); the one in svc/ is an ordinary file.
        assert_eq!(
            filter("svc/Dockerfile").ignore_file.as_deref(),
            Some(".dockerignore")
        );
        let root_rule = sent("svc/Dockerfile");
        assert!(
            !root_rule.contains(&"README.md".to_string()),
            "{root_rule:?}"
        );
        assert!(
            !root_rule.contains(&"svc/gen/b.js".to_string()),
            "{root_rule:?}"
        );
        assert!(
            root_rule.contains(&"svc/src/a.js".to_string()),
            "{root_rule:?}"
        );
        assert!(root_rule.contains(&".dockerignore".to_string()));

        // The Dockerfile-specific file replaces the root one entirely: README.md and
        // svc/gen, which only the root file leaves out, are sent now.
        write(
            r,
            "svc/Dockerfile.dockerignore",
            "other\n.dockerignore\nsvc/Dockerfile.dockerignore\n",
        );
        let f = filter("svc/Dockerfile");
        assert_eq!(
            f.ignore_file.as_deref(),
            Some("svc/Dockerfile.dockerignore")
        );
        // The Dockerfile's path is cleaned first, as the engine's is.
        assert_eq!(
            filter("./svc//Dockerfile").ignore_file.as_deref(),
            Some("svc/Dockerfile.dockerignore")
        );
        assert!(f.includes("README.md") && f.includes("svc/gen/b.js"));
        assert!(!f.includes("other/c.js") && !f.includes("other"));
        let specific = sent("svc/Dockerfile");
        assert!(specific.contains(&"README.md".to_string()), "{specific:?}");
        assert!(
            specific.contains(&"svc/gen/b.js".to_string()),
            "{specific:?}"
        );
        assert!(
            !specific.iter().any(|p| p.starts_with("other")),
            "{specific:?}"
        );
        // Neither ignore file is forced into the context (the engine needs neither):
        // only the Dockerfile is, which the classic builder reads from the context.
        assert!(
            !specific.contains(&".dockerignore".to_string()),
            "{specific:?}"
        );
        assert!(!specific.contains(&"svc/Dockerfile.dockerignore".to_string()));
        write(r, "svc/Dockerfile.dockerignore", "svc\n");
        let own = sent("svc/Dockerfile");
        assert!(own.contains(&"svc/Dockerfile".to_string()), "{own:?}");
        assert!(!own.contains(&"svc/src/a.js".to_string()), "{own:?}");

        // The name is the Dockerfile's full name plus .dockerignore: another Dockerfile
        // in the same directory has its own (none here, so the root file applies).
        assert_eq!(
            filter("svc/Containerfile").ignore_file.as_deref(),
            Some(".dockerignore")
        );
        write(r, "svc/Containerfile.dockerignore", "README.md\n");
        assert_eq!(
            filter("svc/Containerfile").ignore_file.as_deref(),
            Some("svc/Containerfile.dockerignore")
        );
        assert!(!filter("svc/Containerfile").includes("README.md"));
        assert!(filter("svc/Containerfile").includes("svc/gen/b.js"));

        // An empty Dockerfile-specific file exists, so it still wins: nothing left out.
        write(r, "svc/Dockerfile.dockerignore", "");
        let empty = filter("svc/Dockerfile");
        assert_eq!(
            empty.ignore_file.as_deref(),
            Some("svc/Dockerfile.dockerignore")
        );
        assert!(empty.includes("README.md") && empty.includes("svc/gen/b.js"));

        // Without any: everything is sent. A bad pattern names the file it is in.
        std::fs::remove_file(r.join(".dockerignore")).unwrap();
        std::fs::remove_file(r.join("svc/Containerfile.dockerignore")).unwrap();
        assert_eq!(filter("svc/Containerfile").ignore_file, None);
        write(r, "svc/Dockerfile.dockerignore", "[z\n");
        let e = Filter::for_build(r, "svc/Dockerfile").unwrap_err();
        assert!(
            e.message.contains("svc/Dockerfile.dockerignore"),
            "{}",
            e.message
        );
        // Not a regular file: refused, not skipped (which would send everything).
        std::fs::remove_file(r.join("svc/Dockerfile.dockerignore")).unwrap();
        std::fs::create_dir(r.join("svc/Dockerfile.dockerignore")).unwrap();
        let e = Filter::for_build(r, "svc/Dockerfile").unwrap_err();
        assert!(e.message.contains("not a regular file"), "{}", e.message);
    }

    /// Copies the repository's app/ (without node_modules) so that a test can change
    /// real files and hash them with the real service definitions.
    fn copy_app(to: &Path) {
        fn copy(from: &Path, to: &Path) {
            std::fs::create_dir_all(to).unwrap();
            for e in std::fs::read_dir(from).unwrap() {
                let e = e.unwrap();
                if e.file_name() == "node_modules" {
                    continue;
                }
                let (src, dst) = (e.path(), to.join(e.file_name()));
                if e.file_type().unwrap().is_dir() {
                    copy(&src, &dst);
                } else {
                    std::fs::copy(&src, &dst).unwrap();
                }
            }
        }
        copy(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("app"),
            &to.join("app"),
        );
    }

    /// Issue 12: api and worker share the context app/ and the package app/shared. A
    /// change in one service's files leaves the other's content hash (so its image and
    /// its rollout) alone; a change in the shared package changes both; tests,
    /// node_modules and the other services' contexts change neither.
    #[test]
    fn each_app_image_hashes_only_what_it_holds() {
        let d = tempfile::tempdir().unwrap();
        copy_app(d.path());
        let config = crate::config::Config::defaults(d.path());
        config.check_services(true, false).unwrap();
        let hashes = || -> BTreeMap<String, String> {
            config
                .services
                .iter()
                .map(|(name, svc)| {
                    let ctx = scan(&svc.context, &svc.dockerfile).unwrap();
                    let inputs = BuildInputs {
                        dockerfile: ctx.dockerfile.clone(),
                        ..inputs()
                    };
                    let h = content_hash(&ctx, &inputs, &mut StatCache::disabled()).unwrap();
                    (name.clone(), h)
                })
                .collect()
        };
        let app = d.path().join("app");
        let edit = |rel: &str| {
            let p = app.join(rel);
            assert!(p.is_file() || !p.exists(), "{rel}");
            let mut text = std::fs::read_to_string(&p).unwrap_or_default();
            text.push_str("\n// changed\n");
            write(&app, rel, &text);
        };
        let changed = |before: &BTreeMap<String, String>| -> Vec<String> {
            let after = hashes();
            after
                .iter()
                .filter(|(k, v)| before[*k] != **v)
                .map(|(k, _)| k.clone())
                .collect()
        };
        // The api and the worker read different ignore files out of one context.
        let api = &config.services["api"];
        let worker = &config.services["worker"];
        assert_eq!(api.context, worker.context);
        assert_eq!(
            Filter::for_build(&api.context, "api/Dockerfile")
                .unwrap()
                .ignore_file
                .as_deref(),
            Some("api/Dockerfile.dockerignore")
        );
        for (rel, want) in [
            ("worker/src/runner.js", vec!["worker"]),
            ("worker/package.json", vec!["worker"]),
            ("worker/Dockerfile", vec!["worker"]),
            ("api/src/app.js", vec!["api"]),
            ("api/package-lock.json", vec!["api"]),
            ("api/Dockerfile", vec!["api"]),
            ("shared/src/tracing.js", vec!["api", "worker"]),
            ("shared/src/new-module.js", vec!["api", "worker"]),
            ("shared/package.json", vec!["api", "worker"]),
            ("web/public/app.js", vec!["web"]),
            ("migrations/sql/V1__monitors.sql", vec!["migrations"]),
            // Not in any image.
            ("api/test/app.test.js", vec![]),
            ("worker/test/runner.test.js", vec![]),
            ("shared/test/health.test.js", vec![]),
            ("api/node_modules/x/index.js", vec![]),
            ("shared/node_modules/x/index.js", vec![]),
            ("README.md", vec![]),
        ] {
            let before = hashes();
            edit(rel);
            assert_eq!(changed(&before), want, "after changing app/{rel}");
        }
    }

    #[test]
    fn dockerfile_must_exist_and_be_inside() {
        let d = fixture();
        let e = scan(d.path(), Path::new("nope/Dockerfile")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::ImageBuildFailed);
        assert!(e.message.contains("no Dockerfile"), "{}", e.message);
        let e = scan(d.path(), Path::new("../Dockerfile")).unwrap_err();
        assert!(
            e.message.contains("inside the build context"),
            "{}",
            e.message
        );
    }

    #[test]
    fn hash_follows_content_not_ignored_files_nor_mtime() {
        let d = fixture();
        let r = d.path();
        let h = |c: &mut StatCache| {
            content_hash(&scan(r, Path::new("Dockerfile")).unwrap(), &inputs(), c).unwrap()
        };
        let mut none = StatCache::disabled();
        let base = h(&mut none);
        // An ignored file changes: same hash.
        write(r, "src/debug.log", "more noise");
        write(r, "docs/drop.md", "changed");
        assert_eq!(h(&mut none), base);
        // A touch (same content): same hash.
        let f = File::options()
            .append(true)
            .open(r.join("src/main.rs"))
            .unwrap();
        f.set_modified(SystemTime::now()).unwrap();
        assert_eq!(h(&mut none), base);
        // A sent file changes: new hash.
        write(r, "src/main.rs", "fn main() { println!(); }\n");
        let changed = h(&mut none);
        assert_ne!(changed, base);
        // Mode bits are part of what the build sees.
        std::fs::set_permissions(
            r.join("src/main.rs"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert_ne!(h(&mut none), changed);
    }

    /// What a umask leaves on disk is not what is sent: the tar carries 0644/0755, the
    /// hash covers exactly those modes, and only the execute bit makes a difference.
    #[test]
    fn modes_are_normalised_in_the_tar_and_the_hash_alike() {
        let d = fixture();
        let r = d.path();
        let h = || {
            content_hash(
                &scan(r, Path::new("Dockerfile")).unwrap(),
                &inputs(),
                &mut StatCache::disabled(),
            )
            .unwrap()
        };
        let chmod = |rel: &str, mode: u32| {
            std::fs::set_permissions(r.join(rel), std::fs::Permissions::from_mode(mode)).unwrap()
        };
        write(r, "src/run.sh", "#!/bin/sh\n");
        chmod("src/run.sh", 0o755);
        let umask_022 = h();
        // The same files as umask 077 leaves them (and a group-writable one).
        for (rel, mode) in [
            ("src", 0o700),
            ("src/main.rs", 0o600),
            ("src/run.sh", 0o700),
            ("Dockerfile", 0o664),
        ] {
            chmod(rel, mode);
        }
        assert_eq!(h(), umask_022);
        let ctx = scan(r, Path::new("Dockerfile")).unwrap();
        let mut tar_bytes = Vec::new();
        write_tar(&ctx, &mut tar_bytes).unwrap();
        let mut sent = BTreeMap::new();
        for e in tar::Archive::new(&tar_bytes[..]).entries().unwrap() {
            let e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            sent.insert(path, e.header().mode().unwrap());
        }
        assert_eq!(sent["src/"], 0o755);
        assert_eq!(sent["src/main.rs"], 0o644);
        assert_eq!(sent["src/run.sh"], 0o755);
        assert_eq!(sent["Dockerfile"], 0o644);
        for e in &ctx.entries {
            let key = if e.kind == EntryKind::Dir {
                format!("{}/", e.path)
            } else {
                e.path.clone()
            };
            assert_eq!(sent[&key], e.mode, "the hash saw what the tar sends: {key}");
        }
        // Losing the execute bit is a change the image sees.
        chmod("src/run.sh", 0o600);
        assert_ne!(h(), umask_022);
    }

    #[test]
    fn hash_covers_build_inputs() {
        let d = fixture();
        let ctx = scan(d.path(), Path::new("Dockerfile")).unwrap();
        let mut c = StatCache::disabled();
        let base = content_hash(&ctx, &inputs(), &mut c).unwrap();
        let mut i = inputs();
        i.platform = "linux/arm64".into();
        assert_ne!(content_hash(&ctx, &i, &mut c).unwrap(), base);
        let mut i = inputs();
        i.build_args.insert("A".into(), "1".into());
        assert_ne!(content_hash(&ctx, &i, &mut c).unwrap(), base);
        let mut i = inputs();
        i.target = Some("runtime".into());
        assert_ne!(content_hash(&ctx, &i, &mut c).unwrap(), base);
    }

    #[test]
    fn stat_cache_skips_reading_unchanged_files_and_sees_changes() {
        let d = fixture();
        let r = d.path();
        let cache_dir = tempfile::tempdir().unwrap();
        // Age the files so they are not "racily clean".
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        for rel in ["src/main.rs", "Dockerfile", ".dockerignore", "docs/keep.md"] {
            File::options()
                .append(true)
                .open(r.join(rel))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        // ctime is "now" after set_modified; pretend the scan happens later.
        let later = SystemTime::now() + std::time::Duration::from_secs(10);

        let mut c = StatCache::load(cache_dir.path(), r, "Dockerfile");
        let ctx = scan(r, Path::new("Dockerfile")).unwrap();
        let first = content_hash(&ctx, &inputs(), &mut c).unwrap();
        assert_eq!((c.hits, c.misses), (0, 4));
        c.save(later).unwrap();
        // The cache names the context's files: private, like the rest of the cache.
        let dir = c.file.as_ref().unwrap().parent().unwrap();
        let mode = std::fs::metadata(dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", dir.display());

        let mut c = StatCache::load(cache_dir.path(), r, "Dockerfile");
        let second = content_hash(&ctx, &inputs(), &mut c).unwrap();
        assert_eq!((c.hits, c.misses), (4, 0));
        assert_eq!(first, second);

        // Same size, new content: the stat differs, so it is read again.
        write(r, "src/main.rs", "fn main() {}\r");
        let ctx = scan(r, Path::new("Dockerfile")).unwrap();
        let mut c = StatCache::load(cache_dir.path(), r, "Dockerfile");
        let third = content_hash(&ctx, &inputs(), &mut c).unwrap();
        assert_eq!((c.hits, c.misses), (3, 1));
        assert_ne!(third, first);
    }

    /// api and worker share one context directory: each build keeps its own stat
    /// cache, so one build's save does not drop what the other's scan cached.
    #[test]
    fn builds_sharing_a_context_keep_separate_stat_caches() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(r, "a/Dockerfile", "FROM scratch\n");
        write(r, "a/Dockerfile.dockerignore", "b\n");
        write(r, "b/Dockerfile", "FROM scratch\n");
        write(r, "b/Dockerfile.dockerignore", "a\n");
        write(r, "a/src.txt", "a");
        write(r, "b/src.txt", "b");
        let old = SystemTime::now() - std::time::Duration::from_secs(60);
        for rel in [
            "a/Dockerfile",
            "a/Dockerfile.dockerignore",
            "a/src.txt",
            "b/Dockerfile",
            "b/Dockerfile.dockerignore",
            "b/src.txt",
        ] {
            File::options()
                .append(true)
                .open(r.join(rel))
                .unwrap()
                .set_modified(old)
                .unwrap();
        }
        let later = SystemTime::now() + std::time::Duration::from_secs(10);
        let cache_dir = tempfile::tempdir().unwrap();
        let run = |df: &str| {
            let mut c = StatCache::load(cache_dir.path(), r, df);
            let ctx = scan(r, Path::new(df)).unwrap();
            content_hash(&ctx, &inputs(), &mut c).unwrap();
            c.save(later).unwrap();
            (c.hits, c.misses)
        };
        assert_eq!(run("a/Dockerfile"), (0, 3));
        assert_eq!(run("b/Dockerfile"), (0, 3));
        assert_eq!(run("a/Dockerfile"), (3, 0));
        assert_eq!(run("b/Dockerfile"), (3, 0));
    }

    #[test]
    fn racily_clean_entries_are_not_stored() {
        let d = fixture();
        let cache_dir = tempfile::tempdir().unwrap();
        let mut c = StatCache::load(cache_dir.path(), d.path(), "Dockerfile");
        let ctx = scan(d.path(), Path::new("Dockerfile")).unwrap();
        content_hash(&ctx, &inputs(), &mut c).unwrap();
        c.save(SystemTime::now()).unwrap();
        let mut c = StatCache::load(cache_dir.path(), d.path(), "Dockerfile");
        content_hash(&ctx, &inputs(), &mut c).unwrap();
        assert_eq!(c.hits, 0, "files written just now must be re-read");
    }

    #[test]
    fn tar_holds_exactly_the_scanned_entries() {
        let d = fixture();
        let ctx = scan(d.path(), Path::new("Dockerfile")).unwrap();
        let mut buf = Vec::new();
        write_tar(&ctx, &mut buf).unwrap();
        let mut a = tar::Archive::new(&buf[..]);
        let mut seen = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches('/')
                .to_string();
            assert_eq!(e.header().uid().unwrap(), 0);
            if path == "src/main.rs" {
                let mut s = String::new();
                e.read_to_string(&mut s).unwrap();
                assert_eq!(s, "fn main() {}\n");
            }
            if path == "outside" {
                assert_eq!(e.link_name().unwrap().unwrap(), Path::new("/etc/passwd"));
            }
            seen.push(path);
        }
        assert_eq!(seen, paths(&ctx));
    }

    #[tokio::test]
    async fn tar_stream_matches_write_tar_and_handles_long_names() {
        use futures::StreamExt;
        let d = fixture();
        let long = format!("{}/{}.txt", "d".repeat(120), "f".repeat(150));
        write(d.path(), &long, &"z".repeat(200_000));
        let ctx = Arc::new(scan(d.path(), Path::new("Dockerfile")).unwrap());
        let mut direct = Vec::new();
        write_tar(&ctx, &mut direct).unwrap();
        let mut streamed = Vec::new();
        let mut s = Box::pin(tar_stream(ctx, UploadFailure::default()));
        while let Some(chunk) = s.next().await {
            let chunk = chunk.unwrap();
            assert!(chunk.len() <= CHUNK);
            streamed.extend_from_slice(&chunk);
        }
        assert_eq!(streamed.len(), direct.len());
        let mut a = tar::Archive::new(&streamed[..]);
        assert!(
            a.entries()
                .unwrap()
                .any(|e| e.unwrap().path().unwrap().to_string_lossy() == long)
        );
    }

    /// Issue 13: the context changing between hashing and sending. Each change is an
    /// error naming the file, the outside file's content is never sent, and nothing
    /// blocks on a FIFO.
    #[test]
    fn a_context_changed_after_hashing_is_refused_not_sent() {
        let outside = tempfile::tempdir().unwrap();
        let secret = outside.path().join("id_rsa");
        std::fs::write(&secret, "OUTSIDE-PRIVATE-KEY\n").unwrap();
        type Mutation = Box<dyn Fn(&Path)>;
        let swap_link: Mutation = Box::new({
            let secret = secret.clone();
            move |p: &Path| {
                std::fs::remove_file(p).unwrap();
                std::os::unix::fs::symlink(&secret, p).unwrap();
            }
        });
        let swap_fifo: Mutation = Box::new(|p: &Path| {
            std::fs::remove_file(p).unwrap();
            let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        });
        let remove: Mutation = Box::new(|p: &Path| std::fs::remove_file(p).unwrap());
        let rewrite_in_place: Mutation = Box::new(|p: &Path| {
            // Same inode, same size, other bytes.
            let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.write_all(b"fn main() {}\r").unwrap();
        });
        let replace: Mutation = Box::new(|p: &Path| {
            let tmp = p.with_extension("new");
            std::fs::write(&tmp, "fn main() {}\n").unwrap();
            std::fs::rename(&tmp, p).unwrap();
        });
        for (mutate, says) in [
            (swap_link, "became a symbolic link"),
            (swap_fifo, "not a regular file"),
            (remove, "was removed"),
            (rewrite_in_place, "src/main.rs changed after it was hashed"),
            (replace, "was replaced by another file"),
        ] {
            let d = fixture();
            let ctx = scan(d.path(), Path::new("Dockerfile")).unwrap();
            content_hash(&ctx, &inputs(), &mut StatCache::disabled()).unwrap();
            mutate(&d.path().join("src/main.rs"));
            let mut buf = Vec::new();
            let e = write_tar(&ctx, &mut buf).unwrap_err();
            assert!(e.to_string().contains(says), "{says}: {e}");
            assert!(e.to_string().contains("src/main.rs"), "{e}");
            let sent = String::from_utf8_lossy(&buf);
            assert!(!sent.contains("OUTSIDE-PRIVATE-KEY"), "{says}");
            assert!(
                !sent.contains("fn main() {}\r"),
                "{says}: changed bytes sent"
            );
        }
    }

    /// The same while the tar is being streamed: a file rewritten after its first
    /// chunks went out fails the stream before its last bytes, and says why.
    #[tokio::test]
    async fn a_file_changed_during_the_upload_ends_the_stream_with_the_reason() {
        use futures::StreamExt;
        let d = fixture();
        let big = d.path().join("big.bin");
        std::fs::write(&big, vec![b'a'; 4 << 20]).unwrap();
        let ctx = scan(d.path(), Path::new("Dockerfile")).unwrap();
        content_hash(&ctx, &inputs(), &mut StatCache::disabled()).unwrap();
        let failure = UploadFailure::default();
        let mut s = Box::pin(tar_stream(Arc::new(ctx), failure.clone()));
        // The producer is at most a few chunks ahead (bounded channel): change the end
        // of the file it has not read yet.
        let first = s.next().await.unwrap().unwrap();
        assert!(!first.is_empty());
        {
            use std::io::{Seek, SeekFrom};
            let mut f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
            f.seek(SeekFrom::Start((4 << 20) - 10)).unwrap();
            f.write_all(b"bbbbbbbbbb").unwrap();
        }
        let mut sent = first.len();
        let mut error = None;
        while let Some(chunk) = s.next().await {
            match chunk {
                Ok(c) => sent += c.len(),
                Err(e) => {
                    error = Some(e.to_string());
                    break;
                }
            }
        }
        let error = error.expect("the stream fails");
        assert!(
            error.contains("big.bin changed after it was hashed"),
            "{error}"
        );
        assert!(sent < (4 << 20) + 512, "the file was not sent complete");
        assert_eq!(failure.lock().unwrap().as_deref(), Some(error.as_str()));
    }

    /// Issue 13 (should fix 8): a `.dockerignore` that is a FIFO is refused at once,
    /// and a file name that is not UTF-8 is fine when `.dockerignore` leaves it out.
    #[test]
    fn a_fifo_dockerignore_and_excluded_non_utf8_names() {
        use std::os::unix::ffi::OsStrExt;
        let d = fixture();
        std::fs::remove_file(d.path().join(".dockerignore")).ok();
        let c = std::ffi::CString::new(
            d.path()
                .join(".dockerignore")
                .as_os_str()
                .as_encoded_bytes(),
        )
        .unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = scan(d.path(), Path::new("Dockerfile")).unwrap_err();
        assert!(e.message.contains("not a regular file"), "{}", e.message);

        let d = fixture();
        let odd = std::ffi::OsStr::from_bytes(b"junk-\xff.tmp");
        std::fs::write(d.path().join(odd), "x").unwrap();
        let e = scan(d.path(), Path::new("Dockerfile")).unwrap_err();
        assert!(e.message.contains("not UTF-8"), "{}", e.message);
        let ignore = std::fs::read_to_string(d.path().join(".dockerignore")).unwrap();
        std::fs::write(
            d.path().join(".dockerignore"),
            format!("{ignore}\njunk-*\n"),
        )
        .unwrap();
        let ctx = scan(d.path(), Path::new("Dockerfile")).unwrap();
        assert!(paths(&ctx).iter().all(|p| !p.starts_with("junk")));
    }
}
