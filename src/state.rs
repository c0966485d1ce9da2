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

/// Creates `dir` and its missing parents with mode 0700.
pub fn private_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("create the directory", dir, e))
}

/// Writes `bytes` to `path` atomically: a 0600 temporary file in the same directory,
/// renamed over `path`. Readers never see a half-written file, and the content is
/// never readable by others, not even for a moment.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    private_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error("write", path, e)
    })
}

/// Creates an empty 0600 file at `path` unless one exists (for files another program,
/// like kind, writes into: they keep the mode we gave them).
pub fn touch_private(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io_error("create", path, e)),
    }
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
}
