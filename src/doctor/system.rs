//! Host limits a kind cluster runs into: inotify (kubelet, file watchers), disk and
//! memory.

use std::path::Path;

pub const MIN_WATCHES: u64 = 524_288;
pub const MIN_INSTANCES: u64 = 512;
/// Below this much free space where Docker keeps its data, node images and builds
/// start failing in ways that are hard to read.
pub const MIN_FREE_DISK: u64 = 10 * GIB;
pub const MIN_MEMORY: u64 = 4 * GIB;
pub const GIB: u64 = 1 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inotify {
    pub max_user_watches: Option<u64>,
    pub max_user_instances: Option<u64>,
}

pub fn read_inotify(proc_root: &Path) -> Inotify {
    let read = |name: &str| {
        std::fs::read_to_string(proc_root.join("sys/fs/inotify").join(name))
            .ok()
            .and_then(|s| parse_limit(&s))
    };
    Inotify {
        max_user_watches: read("max_user_watches"),
        max_user_instances: read("max_user_instances"),
    }
}

pub fn parse_limit(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// The `sysctl` lines that would lift the limits that are too low, in order.
pub fn inotify_fixes(i: &Inotify) -> Vec<String> {
    let mut fixes = Vec::new();
    if i.max_user_watches.is_some_and(|v| v < MIN_WATCHES) {
        fixes.push(format!("fs.inotify.max_user_watches={MIN_WATCHES}"));
    }
    if i.max_user_instances.is_some_and(|v| v < MIN_INSTANCES) {
        fixes.push(format!("fs.inotify.max_user_instances={MIN_INSTANCES}"));
    }
    fixes
}

/// Free bytes available to unprivileged users on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a writable statvfs.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut s) };
    (rc == 0).then(|| s.f_bavail as u64 * s.f_frsize as u64)
}

/// The host's total memory from `<proc_root>/meminfo` (`MemTotal: N kB`; proc(5)).
pub fn host_memory(proc_root: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(proc_root.join("meminfo")).ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / GIB as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_fixes_name_only_what_is_low() {
        assert_eq!(parse_limit("8192\n"), Some(8192));
        assert_eq!(parse_limit("garbage"), None);
        let low = Inotify {
            max_user_watches: Some(8192),
            max_user_instances: Some(128),
        };
        assert_eq!(
            inotify_fixes(&low),
            vec![
                "fs.inotify.max_user_watches=524288",
                "fs.inotify.max_user_instances=512"
            ]
        );
        let ok = Inotify {
            max_user_watches: Some(1_048_576),
            max_user_instances: Some(512),
        };
        assert!(inotify_fixes(&ok).is_empty());
        let unknown = Inotify {
            max_user_watches: None,
            max_user_instances: None,
        };
        assert!(inotify_fixes(&unknown).is_empty());
    }

    #[test]
    fn inotify_read_from_a_fake_proc_tree() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("sys/fs/inotify");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("max_user_watches"), "65536\n").unwrap();
        std::fs::write(dir.join("max_user_instances"), "1024\n").unwrap();
        assert_eq!(
            read_inotify(root.path()),
            Inotify {
                max_user_watches: Some(65536),
                max_user_instances: Some(1024)
            }
        );
    }

    #[test]
    fn free_bytes_of_a_real_directory() {
        assert!(free_bytes(Path::new("/")).unwrap() > 0);
        assert_eq!(free_bytes(Path::new("/definitely/not/here")), None);
    }
}
