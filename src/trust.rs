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

/// Adds `cert` to the store as `pulsedev-<cluster>.crt` and rebuilds the store.
/// Returns what was done, for the user.
pub fn install(store: &Store, cert: &Path, cluster: &str) -> Result<String> {
    match &store.dir {
        Some(dir) => {
            let target = dir.join(anchor_name(cluster));
            std::fs::copy(cert, &target).map_err(|e| copy_denied(&e, &target))?;
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

/// Writes the CA certificate (public, so 0644) and returns its path.
pub fn write_cert(path: &Path, pem: &[u8]) -> Result<()> {
    if !pem.starts_with(b"-----BEGIN CERTIFICATE-----") {
        return Err(Error::new(
            ErrorKind::NotReady,
            "the local CA Secret does not hold a PEM certificate yet",
        )
        .with_hint("wait for cert-manager to issue it (`pulsedev status`), then run again"));
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::internal(format!("failed to create {}: {e}", dir.display())))?;
    }
    std::fs::write(path, pem)
        .map_err(|e| Error::internal(format!("failed to write {}: {e}", path.display())))
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
        write_cert(&cert, PEM).unwrap();
        let said = install(&store, &cert, "demo").unwrap();
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
        write_cert(&cert, PEM).unwrap();
        let e = install(&store, &cert, "demo").unwrap_err();
        assert!(e.message.contains("`false` failed"), "{}", e.message);
    }

    #[test]
    fn only_a_pem_certificate_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let e = write_cert(&dir.path().join("ca.crt"), b"garbage").unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotReady);
        assert!(!dir.path().join("ca.crt").exists());
    }
}
