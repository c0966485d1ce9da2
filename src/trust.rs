//! The local CA: export its certificate to a file, and, only when asked, add it to the
//! OS trust store (and take it out again). Never in CI.
//!
//! Owns: where the certificate goes and how the OS store is updated. Must not touch the
//! CA's private key: only `ca.crt` of the CA Secret is ever read.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, ErrorKind, Result};

/// The Secret cert-manager fills for the CA Certificate (manifests/platform/local-ca).
pub const CA_NAMESPACE: &str = "cert-manager";
pub const CA_SECRET: &str = "pulsewatch-local-ca";

/// An OS trust store pulsedev knows how to update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// Directory of extra anchors, or None for the macOS keychain.
    pub dir: Option<PathBuf>,
    /// Command that rebuilds the store after a change (argv).
    pub update: Vec<String>,
    pub label: &'static str,
}

/// The store of this machine, from what exists on it.
pub fn detect(exists: &dyn Fn(&Path) -> bool) -> Option<Store> {
    if cfg!(target_os = "macos") {
        return Some(Store {
            dir: None,
            update: vec![],
            label: "the macOS System keychain",
        });
    }
    let candidates = [
        (
            "/usr/local/share/ca-certificates",
            "update-ca-certificates",
            "Debian/Ubuntu ca-certificates",
        ),
        (
            "/etc/pki/ca-trust/source/anchors",
            "update-ca-trust",
            "Fedora/RHEL ca-trust",
        ),
        (
            "/etc/ca-certificates/trust-source/anchors",
            "trust extract-compat",
            "Arch p11-kit trust",
        ),
    ];
    candidates
        .iter()
        .find(|(dir, _, _)| exists(Path::new(dir)))
        .map(|(dir, cmd, label)| Store {
            dir: Some(PathBuf::from(dir)),
            update: cmd.split(' ').map(str::to_string).collect(),
            label,
        })
}

fn anchor_name(cluster: &str) -> String {
    format!("pulsedev-{cluster}.crt")
}

fn run(argv: &[String]) -> Result<()> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .map_err(|e| {
            Error::new(
                ErrorKind::ToolMissing,
                format!("failed to run `{}`: {e}", argv.join(" ")),
            )
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let denied = stderr.contains("Permission denied") || stderr.contains("not permitted");
    Err(
        Error::internal(format!("`{}` failed: {}", argv.join(" "), stderr.trim())).with_hint(
            if denied {
                "changing the OS trust store needs root: run the same command with sudo"
            } else {
                "see the command's message above"
            },
        ),
    )
}

fn copy_denied(e: &std::io::Error, target: &Path) -> Error {
    let mut err = Error::internal(format!("failed to write {}: {e}", target.display()));
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        err = err.with_hint(
            "changing the OS trust store needs root: run `sudo pulsedev trust --install`",
        );
    }
    err
}

/// Adds the certificate `pem` (just read from the cluster and written to `cert`) to
/// the store as `pulsedev-<cluster>.crt` and rebuilds the store. Returns what was
/// done, for the user. The anchor is written from `pem`, never re-read from `cert`:
/// that file sits in a directory the user controls, and a root run must not copy
/// whatever it points at by then into the trust store.
pub fn install(store: &Store, pem: &[u8], cert: &Path, cluster: &str) -> Result<String> {
    match &store.dir {
        Some(dir) => {
            let target = dir.join(anchor_name(cluster));
            // The store directory is root's: the anchor stays root's (no sudo owner).
            // SAFETY: geteuid/getegid have no preconditions.
            let me = unsafe {
                crate::state::Owner {
                    uid: libc::geteuid(),
                    gid: libc::getegid(),
                }
            };
            crate::state::write_atomic_io(&target, pem, 0o644, me)
                .map_err(|e| copy_denied(&e, &target))?;
            if !store.update.is_empty() {
                run(&store.update)?;
            }
            Ok(format!(
                "added {} to {} (undo: `pulsedev trust --uninstall`)",
                target.display(),
                store.label
            ))
        }
        None => {
            run(&[
                "security".into(),
                "add-trusted-cert".into(),
                "-d".into(),
                "-r".into(),
                "trustRoot".into(),
                "-k".into(),
                "/Library/Keychains/System.keychain".into(),
                cert.display().to_string(),
            ])?;
            Ok(format!(
                "added {} to {} (undo: `pulsedev trust --uninstall`)",
                cert.display(),
                store.label
            ))
        }
    }
}

/// Removes what `install` added; nothing to remove is fine.
pub fn uninstall(store: &Store, cert: &Path, cluster: &str) -> Result<String> {
    match &store.dir {
        Some(dir) => {
            let target = dir.join(anchor_name(cluster));
            match std::fs::remove_file(&target) {
                Ok(()) => {
                    if !store.update.is_empty() {
                        run(&store.update)?;
                    }
                    Ok(format!("removed {} from {}", target.display(), store.label))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(format!(
                    "nothing to remove: {} is not in {}",
                    anchor_name(cluster),
                    store.label
                )),
                Err(e) => Err(copy_denied(&e, &target)),
            }
        }
        None => {
            run(&[
                "security".into(),
                "remove-trusted-cert".into(),
                "-d".into(),
                cert.display().to_string(),
            ])?;
            Ok(format!("removed {} from {}", cert.display(), store.label))
        }
    }
}

/// Where `write_cert` writes: pulsedev's own state directory (checked to be the
/// user's, see `state::check_owned`) or a file the user named with `--out`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dest {
    State,
    UserPath,
}

/// Writes the CA certificate (public, so 0644), atomically and without following a
/// symbolic link at `path`, owned by the user pulsedev runs for (the invoking user
/// under sudo).
pub fn write_cert(path: &Path, pem: &[u8], dest: Dest) -> Result<()> {
    write_cert_as(path, pem, dest, crate::state::Owner::of_process())
}

/// `write_cert` for an explicit owner (tests).
pub fn write_cert_as(
    path: &Path,
    pem: &[u8],
    dest: Dest,
    owner: crate::state::Owner,
) -> Result<()> {
    if !pem.starts_with(b"-----BEGIN CERTIFICATE-----") {
        return Err(Error::new(
            ErrorKind::NotReady,
            "the local CA Secret does not hold a PEM certificate yet",
        )
        .with_hint("wait for cert-manager to issue it (`pulsedev status`), then run again"));
    }
    match dest {
        Dest::State => crate::state::write_state_file(path, pem, 0o644, owner),
        Dest::UserPath => crate::state::write_atomic(path, pem, 0o644, owner),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &[u8] = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    #[cfg(target_os = "linux")]
    fn store_detection_follows_the_distribution() {
        let debian = detect(&|p| p == Path::new("/usr/local/share/ca-certificates")).unwrap();
        assert_eq!(debian.update, vec!["update-ca-certificates"]);
        let fedora = detect(&|p| p == Path::new("/etc/pki/ca-trust/source/anchors")).unwrap();
        assert_eq!(fedora.update, vec!["update-ca-trust"]);
        assert_eq!(detect(&|_| false), None);
    }

    #[test]
    fn install_and_uninstall_in_a_directory_store() {
        let store_dir = tempfile::tempdir().unwrap();
        let marker = store_dir.path().join("updated");
        let store = Store {
            dir: Some(store_dir.path().to_path_buf()),
            update: vec!["touch".into(), marker.display().to_string()],
            label: "a test store",
        };
        let cert = store_dir.path().join("ca.crt");
        write_cert(&cert, PEM, Dest::UserPath).unwrap();
        let said = install(&store, PEM, &cert, "demo").unwrap();
        assert!(said.contains("pulsedev-demo.crt"));
        assert_eq!(
            std::fs::read(store_dir.path().join("pulsedev-demo.crt")).unwrap(),
            PEM
        );
        assert!(marker.exists(), "the store was rebuilt");
        std::fs::remove_file(&marker).unwrap();
        assert!(
            uninstall(&store, &cert, "demo")
                .unwrap()
                .starts_with("removed")
        );
        assert!(!store_dir.path().join("pulsedev-demo.crt").exists());
        assert!(marker.exists());
        assert!(
            uninstall(&store, &cert, "demo")
                .unwrap()
                .starts_with("nothing to remove")
        );
    }

    #[test]
    fn a_failing_update_command_is_reported() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store {
            dir: Some(store_dir.path().to_path_buf()),
            update: vec!["false".into()],
            label: "a test store",
        };
        let cert = store_dir.path().join("ca.crt");
        write_cert(&cert, PEM, Dest::UserPath).unwrap();
        let e = install(&store, PEM, &cert, "demo").unwrap_err();
        assert!(e.message.contains("`false` failed"), "{}", e.message);
    }

    #[test]
    fn only_a_pem_certificate_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_cert(&dir.path().join("ca.crt"), b"garbage", Dest::State).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotReady);
        assert!(!dir.path().join("ca.crt").exists());
    }

    /// The attack of issue 13: the user's `ca.crt` replaced by a symlink to a file
    /// every login shell runs, then `sudo pulsedev trust --install`. The write must
    /// replace the link, leave its target alone, and leave a file the user owns.
    #[test]
    fn a_symlinked_ca_crt_is_replaced_not_written_through_and_stays_the_users() {
        use std::os::unix::fs::MetadataExt;
        let t = tempfile::tempdir().unwrap();
        let profile = t.path().join("profile.d-zz.sh");
        std::fs::write(&profile, "# system file\n").unwrap();
        let state = t.path().join("state/pulsedev/dev");
        std::fs::create_dir_all(&state).unwrap();
        let cert = state.join("ca.crt");
        std::os::unix::fs::symlink(&profile, &cert).unwrap();
        // Root acting for another user (sudo): the files must end up that user's.
        // Run unprivileged, the invoking user is this process's own.
        let root = unsafe { libc::geteuid() } == 0;
        let user = if root {
            crate::state::Owner {
                uid: 4242,
                gid: 4343,
            }
        } else {
            unsafe {
                crate::state::Owner {
                    uid: libc::geteuid(),
                    gid: libc::getegid(),
                }
            }
        };
        if root {
            std::os::unix::fs::chown(&state, Some(user.uid), Some(user.gid)).unwrap();
        }
        write_cert_as(&cert, PEM, Dest::State, user).unwrap();
        assert_eq!(
            std::fs::read_to_string(&profile).unwrap(),
            "# system file\n",
            "the link's target must be untouched"
        );
        let meta = std::fs::symlink_metadata(&cert).unwrap();
        assert!(
            meta.file_type().is_file(),
            "the link was replaced by a file"
        );
        assert_eq!(std::fs::read(&cert).unwrap(), PEM);
        assert_eq!((meta.uid(), meta.gid()), (user.uid, user.gid));
        assert_eq!(meta.mode() & 0o777, 0o644);
    }

    /// A state directory that belongs to a third user (or is a symlink) is refused:
    /// the names in it are theirs to point anywhere.
    #[test]
    fn a_state_directory_of_someone_else_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let me = unsafe {
            crate::state::Owner {
                uid: libc::geteuid(),
                gid: libc::getegid(),
            }
        };
        let elsewhere = t.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        let linked = t.path().join("linked");
        std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();
        let e = write_cert_as(&linked.join("ca.crt"), PEM, Dest::State, me);
        // The directory itself is a link: write_state_file checks the parent of the
        // file, which is `linked`.
        let e = e.unwrap_err();
        assert!(e.message.contains("symbolic link"), "{}", e.message);
        assert!(!elsewhere.join("ca.crt").exists());
        if me.uid == 0 {
            let theirs = t.path().join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            std::os::unix::fs::chown(&theirs, Some(4242), Some(4242)).unwrap();
            let user = crate::state::Owner {
                uid: 1000,
                gid: 1000,
            };
            let e = write_cert_as(&theirs.join("ca.crt"), PEM, Dest::State, user).unwrap_err();
            assert!(e.message.contains("belongs to uid 4242"), "{}", e.message);
            assert!(e.hint.as_deref().unwrap().contains("chown"));
            assert!(!theirs.join("ca.crt").exists());
        }
    }

    /// The anchor in the store is written from the bytes read from the cluster, not
    /// re-read from the user's file (which they could swap for a link meanwhile).
    #[test]
    fn install_writes_the_anchor_from_the_pem_not_from_the_users_file() {
        let store_dir = tempfile::tempdir().unwrap();
        let store = Store {
            dir: Some(store_dir.path().to_path_buf()),
            update: vec![],
            label: "a test store",
        };
        let secret = store_dir.path().join("shadow");
        std::fs::write(&secret, "root:secret\n").unwrap();
        let cert = store_dir.path().join("ca.crt");
        std::os::unix::fs::symlink(&secret, &cert).unwrap();
        install(&store, PEM, &cert, "demo").unwrap();
        assert_eq!(
            std::fs::read(store_dir.path().join("pulsedev-demo.crt")).unwrap(),
            PEM
        );
    }
}
