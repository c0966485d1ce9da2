//! The few API-server calls the cluster step makes itself: are the nodes Ready, and
//! the KEP-1755 ConfigMap that tells tools where the local registry is.
//!
//! Owns: the narrow `ClusterApi` trait and a minimal kube implementation that talks
//! only through pulsedev's own kubeconfig. Everything else about the API server
//! (apply, waits, diagnosis) belongs to `kube`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::error::{Error, ErrorKind, Result};

/// Readiness of the cluster's nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub ready: Vec<String>,
    /// Nodes that are not Ready, with the reason the Ready condition gives.
    pub not_ready: Vec<(String, String)>,
}

impl NodeStatus {
    pub fn all_ready(&self) -> bool {
        !self.ready.is_empty() && self.not_ready.is_empty()
    }
}

pub trait ClusterApi: Send + Sync {
    /// Lists the nodes and their Ready condition.
    fn nodes(&self) -> BoxFuture<'_, Result<NodeStatus>>;
    /// Server-side applies a ConfigMap (field manager `pulsedev`).
    fn apply_config_map(
        &self,
        namespace: &str,
        name: &str,
        data: BTreeMap<String, String>,
    ) -> BoxFuture<'_, Result<()>>;
}

/// `ClusterApi` through kube, from pulsedev's kubeconfig of one cluster.
#[derive(Debug, Clone)]
pub struct KubeApi {
    pub kubeconfig: PathBuf,
    pub context: String,
}

impl KubeApi {
    async fn client(&self) -> Result<kube::Client> {
        client(&self.kubeconfig, &self.context).await
    }
}

/// A client for `context` of the kubeconfig at `path` (never the user's default).
pub async fn client(path: &Path, context: &str) -> Result<kube::Client> {
    let fail = |why: String| {
        Error::new(
            ErrorKind::ClusterCreateFailed,
            format!(
                "failed to load the kubeconfig {} (context {context}): {why}",
                path.display()
            ),
        )
    };
    let kc = Kubeconfig::read_from(path).map_err(|e| fail(e.to_string()))?;
    let opts = KubeConfigOptions {
        context: Some(context.to_string()),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .map_err(|e| fail(e.to_string()))?;
    crate::kube::client::direct_to_loopback(&mut config);
    kube::Client::try_from(config).map_err(|e| fail(e.to_string()))
}

fn api_error(what: &str, e: kube::Error) -> Error {
    Error::new(
        ErrorKind::ClusterCreateFailed,
        format!("failed to {what}: {e}"),
    )
}

impl ClusterApi for KubeApi {
    fn nodes(&self) -> BoxFuture<'_, Result<NodeStatus>> {
        Box::pin(async move {
            let nodes: Api<Node> = Api::all(self.client().await?);
            let list = nodes
                .list(&ListParams::default())
                .await
                .map_err(|e| api_error("list the cluster's nodes", e))?;
            let mut status = NodeStatus {
                ready: Vec::new(),
                not_ready: Vec::new(),
            };
            for n in list.items {
                let name = n.metadata.name.unwrap_or_default();
                let ready = n
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .into_iter()
                    .find(|c| c.type_ == "Ready");
                match ready {
                    Some(c) if c.status == "True" => status.ready.push(name),
                    Some(c) => status.not_ready.push((
                        name,
                        c.reason
                            .or(c.message)
                            .unwrap_or_else(|| format!("Ready={}", c.status)),
                    )),
                    None => status
                        .not_ready
                        .push((name, "no Ready condition yet".to_string())),
                }
            }
            Ok(status)
        })
    }

    fn apply_config_map(
        &self,
        namespace: &str,
        name: &str,
        data: BTreeMap<String, String>,
    ) -> BoxFuture<'_, Result<()>> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Box::pin(async move {
            let cms: Api<ConfigMap> = Api::namespaced(self.client().await?, &namespace);
            let cm = serde_json::json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": namespace},
                "data": data,
            });
            cms.patch(
                &name,
                &PatchParams::apply("pulsedev").force(),
                &Patch::Apply(&cm),
            )
            .await
            .map_err(|e| api_error(&format!("apply the ConfigMap {namespace}/{name}"), e))?;
            Ok(())
        })
    }
}
