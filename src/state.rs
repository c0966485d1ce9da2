//! Where pulsedev keeps what it owns on this machine, and how those files are made.
//!
//! Owns: the XDG paths (state: `$XDG_STATE_HOME/pulsedev/<cluster>/`, fallback
//! `~/.local/state`; cache: `$XDG_CACHE_HOME/pulsedev/`, fallback `~/.cache`) and the
//! helpers that create private files (0600 from the first byte, never chmod'ed after)
//! and private directories (0700). Must not know what the files mean (that is
//! `cluster` and `tools`).

use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// The roots of pulsedev's own files on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dirs {
    /// `$XDG_STATE_HOME/pulsedev`: one directory per cluster name, plus `.lock`.
    pub state: PathBuf,
    /// `$XDG_CACHE_HOME/pulsedev`: downloaded tools.
    pub cache: PathBuf,
}

impl Dirs {
    /// Resolves the roots from the environment (a parameter so tests can drive it).
    /// Relative XDG values are ignored, as the XDG spec asks.
    pub fn resolve(env: &dyn Fn(&str) -> Option<String>, home: Option<&Path>) -> Result<Dirs> {
        let xdg = |var: &str, fallback: &str| -> Result<PathBuf> {
            if let Some(v) = env(var).filter(|v| Path::new(v).is_absolute()) {
                return Ok(PathBuf::from(v));
            }
            match home {
                Some(h) => Ok(h.join(fallback)),
                None => Err(Error::new(
                    ErrorKind::Internal,
                    format!(
                        "cannot tell where to keep pulsedev's files: neither {var} nor HOME is set"
                    ),
                )
                .with_hint(format!("set HOME, or {var} to an absolute directory"))),
            }
        };
        Ok(Dirs {
            state: xdg("XDG_STATE_HOME", ".local/state")?.join("pulsedev"),
            cache: xdg("XDG_CACHE_HOME", ".cache")?.join("pulsedev"),
        })
    }

    /// From the real process environment. Under `sudo` (e.g. `sudo pulsedev trust
    /// --install`) the invoking user's home is used, so the root process finds the
    /// user's clusters rather than root's empty state.
    pub fn from_process() -> Result<Dirs> {
        let home = sudo_user_home().or_else(dirs::home_dir);
        Dirs::resolve(&|k| std::env::var(k).ok(), home.as_deref())
    }

    /// The state directory of one cluster.
    pub fn cluster(&self, name: &str) -> PathBuf {
        self.state.join(name)
    }

    /// Where downloaded tools are cached: `<cache>/tools/<tool>/<version>/`.
    pub fn tools(&self) -> PathBuf {
        self.cache.join("tools")
    }
}

/// The home directory of the user who ran `sudo`, when this process is root because
/// of it.
fn sudo_user_home() -> Option<PathBuf> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let user = std::env::var("SUDO_USER")
        .ok()
        .filter(|u| !u.is_empty() && u != "root")?;
    let c = std::ffi::CString::new(user).ok()?;
    // SAFETY: `c` is a valid C string; getpwnam returns null or a pointer to a static
    // passwd record, read at once before any other getpw* call.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return None;
    }
    // SAFETY: non-null pw_dir of a passwd record is a NUL-terminated string.
    let dir = unsafe { std::ffi::CStr::from_ptr((*pw).pw_dir) };
    Some(PathBuf::from(dir.to_string_lossy().into_owned()))
}

/// Who the files pulsedev writes belong to: the user pulsedev works for. Under `sudo`
/// (root with `SUDO_UID`/`SUDO_GID`) that is the invoking user, so `sudo pulsedev trust
/// --install` leaves `ca.crt` in the user's state directory owned by the user (a later
/// run without sudo can replace it) and never writes into a directory someone else
/// controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// From the effective ids and the environment (parameters so tests can drive it).
    /// `SUDO_UID` counts only when we are root: sudo sets it, and a non-root process
    /// could not give files away anyway.
    pub fn resolve(euid: u32, egid: u32, env: &dyn Fn(&str) -> Option<String>) -> Owner {
        let id = |k: &str| env(k).and_then(|v| v.trim().parse::<u32>().ok());
        match (euid, id("SUDO_UID"), id("SUDO_GID")) {
            (0, Some(uid), Some(gid)) => Owner { uid, gid },
            (0, Some(uid), None) => Owner { uid, gid: uid },
            _ => Owner {
                uid: euid,
                gid: egid,
            },
        }
    }

    /// The owner for this process, decided once.
    pub fn of_process() -> Owner {
        static OWNER: std::sync::OnceLock<Owner> = std::sync::OnceLock::new();
        *OWNER.get_or_init(|| {
            // SAFETY: geteuid/getegid have no preconditions.
            let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
            Owner::resolve(euid, egid, &|k| std::env::var(k).ok())
        })
    }

    /// Gives `file` to this owner when we are root and the owner is someone else
    /// (fchown on the open file: no path to swap underneath).
    fn give(self, file: &std::fs::File, path: &Path) -> std::io::Result<()> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 || self.uid == 0 {
            return Ok(());
        }
        std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid)).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("give {} to uid {}: {e}", path.display(), self.uid),
            )
        })
    }
}

/// Creates `dir` and its missing parents with mode 0700, owned by the process's
/// [`Owner`].
pub fn private_dir(dir: &Path) -> Result<()> {
    private_dir_as(dir, Owner::of_process())
}

/// As [`private_dir`], for an explicit owner.
pub fn private_dir_as(dir: &Path, owner: Owner) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if std::fs::symlink_metadata(d).is_ok() {
            break;
        }
        missing.push(d);
        cur = d.parent();
    }
    for d in missing.into_iter().rev() {
        match DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {
                let f = std::fs::File::open(d).map_err(|e| io_error("open", d, e))?;
                owner.give(&f, d).map_err(|e| io_error("create", d, e))?;
            }
            // Another process made it meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(io_error("create the directory", d, e)),
        }
    }
    Ok(())
}

/// Refuses a directory pulsedev would write its state into when it is a symbolic link
/// or belongs to someone other than `owner` (or root): under sudo, a root process must
/// not write where another user decides what the names point at.
pub fn check_owned(dir: &Path, owner: Owner) -> Result<()> {
    let meta = std::fs::symlink_metadata(dir).map_err(|e| io_error("inspect", dir, e))?;
    use std::os::unix::fs::MetadataExt;
    let refuse = |why: String| {
        Error::new(
            ErrorKind::Internal,
            format!("refusing to write into {}: {why}", dir.display()),
        )
        .with_hint(format!(
            "pulsedev keeps its state in a private directory of the user it runs for (uid {}); remove {} or give it back to that user (`chown -R {}:{} {}`), then run again",
            owner.uid,
            dir.display(),
            owner.uid,
            owner.gid,
            dir.display()
        ))
    };
    if meta.file_type().is_symlink() {
        return Err(refuse("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(refuse("it is not a directory".into()));
    }
    if meta.uid() != owner.uid && meta.uid() != 0 {
        return Err(refuse(format!(
            "it belongs to uid {}, not to uid {} pulsedev runs for",
            meta.uid(),
            owner.uid
        )));
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: a 0600 temporary file in the same directory,
/// renamed over `path`. Readers never see a half-written file, and the content is
/// never readable by others, not even for a moment. The directory must be pulsedev's
/// (see [`check_owned`]); a symbolic link at `path` is replaced, never followed.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    write_state_file(path, bytes, 0o600, Owner::of_process())
}

/// [`write_private`] with a chosen mode and owner: the directory is created (0700) and
/// checked, then the file is written by [`write_atomic`].
pub fn write_state_file(path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir_as(dir, owner)?;
    check_owned(dir, owner)?;
    write_atomic(path, bytes, mode, owner)
}

/// Writes `bytes` to `path` by a fresh temporary file in the same directory (created
/// with O_EXCL and O_NOFOLLOW under a random name, so nothing planted can redirect the
/// write), given to `owner`, synced, then renamed over `path`. rename(2) replaces a
/// symbolic link at `path` instead of writing through it.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> Result<()> {
    write_atomic_io(path, bytes, mode, owner).map_err(|e| io_error("write", path, e))
}

/// [`write_atomic`] with the plain I/O error (callers that explain a denial).
pub fn write_atomic_io(path: &Path, bytes: &[u8], mode: u32, owner: Owner) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    loop {
        let tmp = dir.join(format!(".{name}.{:016x}.tmp", fastrand::u64(..)));
        let mut f = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(f) => f,
            // A 64-bit random name taken: someone planted it; pick another.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let result = (|| {
            owner.give(&f, path)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        return result;
    }
}

/// Creates an empty 0600 file at `path` unless one exists (for files another program,
/// like kind, writes into: they keep the mode we gave them). A symbolic link there is
/// refused (O_NOFOLLOW), not followed.
pub fn touch_private(path: &Path) -> Result<()> {
    let owner = Owner::of_process();
    if let Some(dir) = path.parent() {
        private_dir_as(dir, owner)?;
        check_owned(dir, owner)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => owner
            .give(&f, path)
            .map_err(|e| io_error("create", path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(Error::internal(format!(
                    "refusing to use {}: it is a symbolic link",
                    path.display()
                ))
                .with_hint(format!("remove {} and run again", path.display())));
            }
            Ok(())
        }
        Err(e) => Err(io_error("create", path, e)),
    }
}

/// Moves an unreadable file out of the way (`<name>.unreadable-<unix seconds>` beside
/// it) so the run can go on without it, and returns the new path. Kept, not deleted:
/// it may help to find out what broke it.
pub fn set_aside(path: &Path) -> Result<PathBuf> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let to = path.with_file_name(format!("{name}.unreadable-{secs}"));
    std::fs::rename(path, &to).map_err(|e| io_error("set aside", path, e))?;
    Ok(to)
}

/// Removes a file; a missing file is fine.
pub fn remove_file(path: &Path) -> Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("remove", path, e)),
    }
}

/// Removes a directory tree; a missing one is fine.
pub fn remove_dir(path: &Path) -> Result<bool> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_error("remove", path, e)),
    }
}

/// Reads a file, `None` when it does not exist.
pub fn read_optional(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path, e)),
    }
}

pub fn io_error(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::internal(format!("failed to {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn xdg_dirs_and_fallbacks() {
        let home = Path::new("/home/u");
        let d = Dirs::resolve(&|_| None, Some(home)).unwrap();
        assert_eq!(d.state, Path::new("/home/u/.local/state/pulsedev"));
        assert_eq!(d.cache, Path::new("/home/u/.cache/pulsedev"));
        let env = |k: &str| match k {
            "XDG_STATE_HOME" => Some("/s".to_string()),
            "XDG_CACHE_HOME" => Some("relative/ignored".to_string()),
            _ => None,
        };
        let d = Dirs::resolve(&env, Some(home)).unwrap();
        assert_eq!(d.cluster("dev"), Path::new("/s/pulsedev/dev"));
        assert_eq!(d.tools(), Path::new("/home/u/.cache/pulsedev/tools"));
        assert!(Dirs::resolve(&|_| None, None).is_err());
    }

    #[test]
    fn private_files_and_dirs() {
        let t = tempfile::tempdir().unwrap();
        // A permissive umask must not matter: the mode is set at creation.
        let old = unsafe { libc::umask(0o000) };
        let f = t.path().join("a/b/secret");
        write_private(&f, b"x").unwrap();
        let k = t.path().join("c/kubeconfig");
        touch_private(&k).unwrap();
        unsafe { libc::umask(old) };
        assert_eq!(mode(&f), 0o600);
        assert_eq!(mode(&k), 0o600);
        assert_eq!(mode(&t.path().join("a/b")), 0o700);
        write_private(&f, b"yz").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"yz");
        touch_private(&f).unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"yz", "touch keeps content");
        assert!(remove_file(&f).unwrap());
        assert!(!remove_file(&f).unwrap());
        assert_eq!(read_optional(&f).unwrap(), None);
    }

    #[test]
    fn the_owner_is_the_sudo_user_only_when_root() {
        let env = crate::test_env;
        let sudo = env(&[("SUDO_UID", "1000"), ("SUDO_GID", "1001")]);
        assert_eq!(
            Owner::resolve(0, 0, &sudo),
            Owner {
                uid: 1000,
                gid: 1001
            }
        );
        // A user who set SUDO_UID themselves gives nothing away.
        assert_eq!(
            Owner::resolve(500, 500, &sudo),
            Owner { uid: 500, gid: 500 }
        );
        assert_eq!(Owner::resolve(0, 0, &env(&[])), Owner { uid: 0, gid: 0 });
        assert_eq!(
            Owner::resolve(0, 0, &env(&[("SUDO_UID", "x")])),
            Owner { uid: 0, gid: 0 }
        );
    }

    /// Directories pulsedev creates for the invoking user are theirs, from the top
    /// missing one down (as root only: nobody else can give files away).
    #[test]
    fn directories_made_for_the_invoking_user_are_theirs() {
        use std::os::unix::fs::MetadataExt;
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let user = Owner {
            uid: 4242,
            gid: 4343,
        };
        let f = t.path().join("a/b/journal.json");
        write_state_file(&f, b"{}", 0o600, user).unwrap();
        for p in [t.path().join("a"), t.path().join("a/b"), f.clone()] {
            let m = std::fs::metadata(&p).unwrap();
            assert_eq!((m.uid(), m.gid()), (4242, 4343), "{}", p.display());
        }
        assert_eq!(mode(&t.path().join("a")), 0o700);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(t.path().join("a/b"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["journal.json"]);
    }

    #[test]
    fn a_symlink_planted_for_touch_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let k = t.path().join("kubeconfig");
        std::os::unix::fs::symlink(&target, &k).unwrap();
        let e = touch_private(&k).unwrap_err();
        assert!(e.message.contains("symbolic link"), "{}", e.message);
    }
}
