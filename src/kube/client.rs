//! The Kubernetes client: built from pulsedev's own kubeconfig file and a named context,
//! never from `~/.kube/config` or `KUBECONFIG`, so pulsedev cannot touch a cluster it did
//! not make.
//!
//! Owns: reading a kubeconfig (the cluster module decides where it lives) and turning
//! it into a `kube::Client`. Must not create or change kubeconfig files.

use std::path::Path;

use ::kube::Client;
use ::kube::config::{Config, KubeConfigOptions, Kubeconfig};

use crate::error::{Error, ErrorKind, Result};

/// The context kind writes for cluster `name`.
pub fn context_name(name: &str) -> String {
    format!("kind-{name}")
}

/// A client for `context` in the kubeconfig file at `path`.
///
/// Errors: `not-ready` when the file does not exist (the cluster was never made, or was
/// removed), `config-invalid` when it cannot be read or lacks the context.
pub async fn connect(path: &Path, context: &str) -> Result<Client> {
    if !path.exists() {
        return Err(Error::new(
            ErrorKind::NotReady,
            format!(
                "the cluster does not exist (no kubeconfig at {})",
                path.display()
            ),
        )
        .with_hint("run `pulsedev up` to create it"));
    }
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
        Error::new(
            ErrorKind::ConfigInvalid,
            format!("failed to read the kubeconfig {}: {e}", path.display()),
        )
        .with_hint("run `pulsedev up` to rewrite it, or `pulsedev reset` to start over")
    })?;
    let options = KubeConfigOptions {
        context: Some(context.to_string()),
        ..KubeConfigOptions::default()
    };
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::ConfigInvalid,
                format!(
                    "failed to use context `{context}` of the kubeconfig {}: {e}",
                    path.display()
                ),
            )
            .with_hint("run `pulsedev up` to rewrite it, or `pulsedev reset` to start over")
        })?;
    Client::try_from(config).map_err(|e| {
        Error::internal(format!(
            "failed to build a Kubernetes client for `{context}`: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"apiVersion: v1
kind: Config
clusters:
- name: kind-pulsedev
  cluster:
    server: https://127.0.0.1:41234
    insecure-skip-tls-verify: true
contexts:
- name: kind-pulsedev
  context:
    cluster: kind-pulsedev
    user: kind-pulsedev
current-context: kind-pulsedev
users:
- name: kind-pulsedev
  user:
    token: not-a-real-token
"#;

    #[tokio::test]
    async fn connects_from_a_file_and_context_without_network() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let client = connect(&path, "kind-pulsedev").await.unwrap();
        assert_eq!(client.default_namespace(), "default");
    }

    #[tokio::test]
    async fn a_missing_file_means_no_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let Err(e) = connect(&dir.path().join("nope"), "kind-pulsedev").await else {
            panic!("connected without a kubeconfig");
        };
        assert_eq!(e.id(), "not-ready");
        assert!(e.message.contains("does not exist"), "{}", e.message);
        assert_eq!(e.hint.as_deref(), Some("run `pulsedev up` to create it"));
    }

    #[tokio::test]
    async fn an_unknown_context_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, KUBECONFIG).unwrap();
        let Err(e) = connect(&path, "kind-other").await else {
            panic!("connected to an unknown context");
        };
        assert_eq!(e.id(), "config-invalid");
        assert!(e.message.contains("kind-other"), "{}", e.message);
    }

    #[test]
    fn context_names() {
        assert_eq!(context_name("dev"), "kind-dev");
    }
}
