//! Host port probing: can we bind 127.0.0.1:<port>, and if not, who holds it.

use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortState {
    Free,
    /// Held by a listener; the holder when /proc lets us see it.
    InUse(Option<Holder>),
    /// Binding needs privileges we lack (ports below 1024 for non-root).
    PermissionDenied,
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub command: String,
}

/// Tries to bind 127.0.0.1:`port` and releases it at once.
pub fn probe(port: u16, proc_root: &Path) -> PortState {
    match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
        Ok(_) => PortState::Free,
        Err(e) => match e.kind() {
            std::io::ErrorKind::AddrInUse => PortState::InUse(holder(port, proc_root)),
            std::io::ErrorKind::PermissionDenied => PortState::PermissionDenied,
            _ => PortState::Other(e.to_string()),
        },
    }
}

/// The process listening on TCP `port`: the socket inode from /proc/net/tcp{,6}, then
/// the process whose fd table links to `socket:[inode]`.
pub fn holder(port: u16, proc_root: &Path) -> Option<Holder> {
    let inodes: Vec<u64> = ["net/tcp", "net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(proc_root.join(f)).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let mut pids: Vec<u32> = std::fs::read_dir(proc_root)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if targets.iter().any(|t| link.as_os_str() == t.as_str()) {
                return Some(Holder {
                    pid,
                    command: command_of(&proc_root.join(pid.to_string())),
                });
            }
        }
    }
    None
}

/// Inodes of sockets in LISTEN state (st 0A) on `port` in a /proc/net/tcp table.
pub fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            let local = f.get(1)?;
            let st = f.get(3)?;
            let inode = f.get(9)?.parse().ok()?;
            let hex_port = local.rsplit(':').next()?;
            let p = u16::from_str_radix(hex_port, 16).ok()?;
            (p == port && *st == "0A" && inode != 0).then_some(inode)
        })
        .collect()
}

fn command_of(proc_pid: &Path) -> String {
    if let Ok(raw) = std::fs::read(proc_pid.join("cmdline")) {
        let parts: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect();
        if !parts.is_empty() {
            let line = parts.join(" ");
            return if line.chars().count() > 80 {
                format!("{}…", line.chars().take(80).collect::<String>())
            } else {
                line
            };
        }
    }
    std::fs::read_to_string(proc_pid.join("comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 424242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 515151 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0
";

    #[test]
    fn only_listening_sockets_on_the_port_count() {
        assert_eq!(listening_inodes(TCP, 8080), vec![424242]);
        assert_eq!(listening_inodes(TCP, 80), vec![777]);
        assert!(listening_inodes(TCP, 443).is_empty());
    }

    /// A fake /proc: net/tcp, a process whose fd 3 is the listening socket, and one
    /// whose fd table we may not read.
    #[test]
    fn holder_found_in_a_fake_proc_tree() {
        let root = tempfile::tempdir().unwrap();
        let p = root.path();
        std::fs::create_dir_all(p.join("net")).unwrap();
        std::fs::write(p.join("net/tcp"), TCP).unwrap();
        std::fs::write(p.join("net/tcp6"), "  sl  local_address\n").unwrap();
        std::fs::create_dir_all(p.join("17/fd")).unwrap();
        std::fs::write(p.join("17/cmdline"), b"sshd\0-D\0").unwrap();
        std::os::unix::fs::symlink("socket:[1]", p.join("17/fd/3")).unwrap();
        std::fs::create_dir_all(p.join("812/fd")).unwrap();
        std::fs::write(
            p.join("812/cmdline"),
            b"nginx: master process\0-g\0daemon off;\0",
        )
        .unwrap();
        std::os::unix::fs::symlink("/dev/null", p.join("812/fd/0")).unwrap();
        std::os::unix::fs::symlink("socket:[424242]", p.join("812/fd/6")).unwrap();
        std::fs::create_dir_all(p.join("self")).unwrap(); // not a pid: ignored

        assert_eq!(
            holder(8080, p),
            Some(Holder {
                pid: 812,
                command: "nginx: master process -g daemon off;".into()
            })
        );
        // Listening, but no process we can see holds it.
        assert_eq!(holder(80, p), None);
        assert_eq!(holder(9999, p), None);
    }

    #[test]
    fn comm_is_the_fallback_for_an_empty_cmdline() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cmdline"), b"").unwrap();
        std::fs::write(root.path().join("comm"), "kthreadd\n").unwrap();
        assert_eq!(command_of(root.path()), "kthreadd");
    }

    #[test]
    fn a_port_held_by_this_process_is_in_use_with_our_pid() {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        match probe(port, Path::new("/proc")) {
            PortState::InUse(Some(h)) => assert_eq!(h.pid, std::process::id()),
            other => panic!("expected in use by us, got {other:?}"),
        }
        drop(l);
        assert_eq!(probe(port, Path::new("/proc")), PortState::Free);
    }
}
