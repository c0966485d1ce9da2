//! A real registry for tests: Debian's `docker-registry` (distribution 2.8) served on
//! a free loopback port from a temporary storage root, and a stand-in for the
//! `registry:3` image built FROM scratch around the same binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BINARY: &str = "/usr/bin/docker-registry";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `docker-registry serve` as a child process; killed on drop.
pub struct LocalRegistry {
    pub port: u16,
    pub root: PathBuf,
    pub log: PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl LocalRegistry {
    pub fn start() -> LocalRegistry {
        assert!(
            Path::new(BINARY).exists(),
            "{BINARY} is missing: `apt-get install -y docker-registry`"
        );
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("storage");
        let log = dir.path().join("registry.log");
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
                root.display()
            ),
        )
        .unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
            .stderr(Stdio::from(
                std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
            ))
            .spawn()
            .unwrap();
        let r = LocalRegistry {
            port,
            root,
            log,
            child,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the registry did not start:\n{}",
                r.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Digests of the blobs whose upload the registry completed, from its access
    /// log (`PUT /v2/<name>/blobs/uploads/<id>?digest=sha256:…`), in order.
    pub fn uploads(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"PUT /v2/") && l.contains("/blobs/uploads/"))
            .filter_map(|l| {
                let i = l.find("digest=sha256")?;
                let d = &l[i + "digest=".len()..];
                let end = d.find(|c: char| !(c.is_ascii_alphanumeric() || c == ':' || c == '%'))?;
                Some(d[..end].replace("%3A", ":"))
            })
            .collect()
    }

    /// Blobs in the storage root with their sizes.
    pub fn blobs(&self) -> BTreeSet<(String, u64)> {
        let mut out = BTreeSet::new();
        let base = self.root.join("docker/registry/v2/blobs/sha256");
        let Ok(prefixes) = std::fs::read_dir(&base) else {
            return out;
        };
        for p in prefixes.flatten() {
            for b in std::fs::read_dir(p.path()).unwrap().flatten() {
                if let Ok(m) = std::fs::metadata(b.path().join("data")) {
                    out.insert((
                        format!("sha256:{}", b.file_name().to_string_lossy()),
                        m.len(),
                    ));
                }
            }
        }
        out
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a build context for an image that runs `docker-registry` on :5000, built
/// FROM scratch (the binary links only libc): a stand-in for `registry:3`.
pub fn stand_in_context(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy(BINARY, dir.join("registry")).unwrap();
    for lib in [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
    ] {
        let real = std::fs::canonicalize(lib).unwrap();
        std::fs::copy(real, dir.join(Path::new(lib).file_name().unwrap())).unwrap();
    }
    std::fs::write(
        dir.join("config.yml"),
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: /var/lib/registry\nhttp:\n  addr: :5000\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\n\
         COPY registry /bin/registry\n\
         COPY libc.so.6 /lib/x86_64-linux-gnu/libc.so.6\n\
         COPY ld-linux-x86-64.so.2 /lib64/ld-linux-x86-64.so.2\n\
         COPY config.yml /etc/docker/registry/config.yml\n\
         EXPOSE 5000\n\
         ENTRYPOINT [\"/bin/registry\"]\n\
         CMD [\"serve\", \"/etc/docker/registry/config.yml\"]\n",
    )
    .unwrap();
}
