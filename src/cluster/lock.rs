//! Advisory file locks (flock) so that parallel pulsedev processes on one machine —
//! CI jobs, two terminals — do not write the same files at once.
//!
//! Owns: taking and releasing locks. The lock is released when the value is dropped
//! or the process dies (the kernel drops flock locks with the descriptor).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::state;

#[derive(Debug)]
pub struct FileLock {
    file: File,
    pub path: PathBuf,
}

fn open(path: &Path) -> Result<File> {
    if let Some(dir) = path.parent() {
        state::private_dir(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| state::io_error("open the lock file", path, e))
}

fn flock(file: &File, op: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl FileLock {
    /// Takes the lock if free; `Ok(Err(pid))` names the holder when it is not
    /// (as far as the holder wrote its pid).
    pub fn try_exclusive(path: &Path) -> Result<std::result::Result<FileLock, Option<u32>>> {
        let mut file = open(path)?;
        match flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
            Ok(()) => {
                let mut lock = FileLock {
                    file,
                    path: path.to_path_buf(),
                };
                lock.write_pid();
                Ok(Ok(lock))
            }
            Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                Ok(Err(text.trim().parse().ok()))
            }
            Err(e) => Err(state::io_error("lock", path, e)),
        }
    }

    /// Waits for the lock (on a blocking thread, so the runtime keeps going).
    pub async fn exclusive(path: &Path) -> Result<FileLock> {
        let path = path.to_path_buf();
        tokio::task::spawn_blocking(move || {
            let file = open(&path)?;
            flock(&file, libc::LOCK_EX).map_err(|e| state::io_error("lock", &path, e))?;
            let mut lock = FileLock { file, path };
            lock.write_pid();
            Ok(lock)
        })
        .await
        .map_err(|e| crate::error::Error::internal(format!("lock task failed: {e}")))?
    }

    fn write_pid(&mut self) {
        let _ = self.file.set_len(0);
        let _ = self.file.rewind();
        let _ = write!(self.file, "{}", std::process::id());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_lock_names_its_holder_and_frees_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x/.lock");
        let held = FileLock::try_exclusive(&p).unwrap().unwrap();
        match FileLock::try_exclusive(&p).unwrap() {
            Err(pid) => assert_eq!(pid, Some(std::process::id())),
            Ok(_) => panic!("taken twice"),
        }
        drop(held);
        let again = FileLock::exclusive(&p).await.unwrap();
        assert_eq!(again.path, p);
    }
}
