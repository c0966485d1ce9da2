//! A cluster's node containers as Docker sees them: listing them by kind's label,
//! starting stopped ones (after a Docker or machine restart), writing a file inside
//! one (containerd's registry hosts), and joining a container to the cluster network.
//!
//! Owns: the narrow `Nodes` trait and its bollard implementation. Must not create or
//! delete clusters (kind does) nor build or push images (`images` does).

use std::collections::HashMap;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerSummaryStateEnum, NetworkConnectRequest};
use bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use futures::future::BoxFuture;

use crate::error::{Error, ErrorKind, Result};

/// The label kind puts on every container of a cluster (kind v0.32.0:
/// pkg/cluster/internal/providers/docker/constants.go, `clusterLabelKey`).
pub const KIND_CLUSTER_LABEL: &str = "io.x-k8s.kind.cluster";
/// The label holding a container's role (same file, `nodeRoleLabelKey`): `control-plane`,
/// `worker`, or `external-load-balancer` for the envoy container kind adds in front of
/// several control-plane nodes (pkg/cluster/constants/constants.go).
pub const KIND_ROLE_LABEL: &str = "io.x-k8s.kind.role";

/// A container of a kind cluster: a Kubernetes node, or kind's load balancer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: String,
    pub name: String,
    /// Docker's state word: running, exited, created, paused, …
    pub state: String,
    /// The `io.x-k8s.kind.role` label ("" when absent).
    pub role: String,
}

impl Node {
    pub fn running(&self) -> bool {
        self.state == "running"
    }

    /// A Kubernetes node (runs containerd and the kubelet), not kind's external load
    /// balancer: roles `control-plane` and `worker` only, as kind's own
    /// `nodeutils.InternalNodes` selects them (kind v0.32.0:
    /// pkg/cluster/nodeutils/roles.go). Images and registry hosts go only there.
    pub fn is_internal(&self) -> bool {
        matches!(self.role.as_str(), "control-plane" | "worker")
    }
}

/// The Kubernetes nodes among a cluster's containers (see `Node::is_internal`).
pub fn internal(nodes: Vec<Node>) -> Vec<Node> {
    nodes.into_iter().filter(Node::is_internal).collect()
}

/// The Docker calls cluster management makes, and nothing more.
pub trait Nodes: Send + Sync {
    /// Every container (running or not) labelled for `cluster`, kind's load balancer
    /// included (it must be started too), sorted by name. `internal` keeps the nodes.
    fn list(&self, cluster: &str) -> BoxFuture<'_, Result<Vec<Node>>>;
    fn start(&self, container: &str) -> BoxFuture<'_, Result<()>>;
    /// Writes `content` to `path` inside the running `container` (parents created).
    fn write_file(&self, container: &str, path: &str, content: &str) -> BoxFuture<'_, Result<()>>;
    /// Connects `container` to `network`; `Ok(false)` when it already was.
    fn connect(&self, network: &str, container: &str) -> BoxFuture<'_, Result<bool>>;
    /// Removes a container by name, forcefully; `Ok(false)` when there was none.
    fn remove(&self, container: &str) -> BoxFuture<'_, Result<bool>>;
}

/// `Nodes` on a real engine.
#[derive(Debug, Clone)]
pub struct DockerNodes {
    pub docker: Docker,
    /// For messages: which engine.
    pub host: String,
}

impl DockerNodes {
    fn err(&self, what: String, e: bollard::errors::Error) -> Error {
        Error::new(
            ErrorKind::DockerUnreachable,
            format!("failed to {what} on {}: {e}", self.host),
        )
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

fn state_word(s: Option<ContainerSummaryStateEnum>) -> String {
    use ContainerSummaryStateEnum as S;
    match s {
        Some(S::RUNNING) => "running",
        Some(S::EXITED) => "exited",
        Some(S::CREATED) => "created",
        Some(S::PAUSED) => "paused",
        Some(S::RESTARTING) => "restarting",
        Some(S::REMOVING) => "removing",
        Some(S::DEAD) => "dead",
        Some(S::STOPPING) => "stopping",
        Some(S::EMPTY) | None => "unknown",
    }
    .to_string()
}

impl Nodes for DockerNodes {
    fn list(&self, cluster: &str) -> BoxFuture<'_, Result<Vec<Node>>> {
        let filter = format!("{KIND_CLUSTER_LABEL}={cluster}");
        Box::pin(async move {
            let opts = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&HashMap::from([("label", vec![filter.as_str()])]))
                .build();
            let list = self
                .docker
                .list_containers(Some(opts))
                .await
                .map_err(|e| self.err(format!("list the containers labelled {filter}"), e))?;
            let mut nodes: Vec<Node> = list
                .into_iter()
                .map(|c| Node {
                    id: c.id.unwrap_or_default(),
                    name: c
                        .names
                        .and_then(|n| n.into_iter().next())
                        .unwrap_or_default()
                        .trim_start_matches('/')
                        .to_string(),
                    state: state_word(c.state),
                    role: c
                        .labels
                        .and_then(|mut l| l.remove(KIND_ROLE_LABEL))
                        .unwrap_or_default(),
                })
                .collect();
            nodes.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(nodes)
        })
    }

    fn start(&self, container: &str) -> BoxFuture<'_, Result<()>> {
        let container = container.to_string();
        Box::pin(async move {
            self.docker
                .start_container(&container, None)
                .await
                .map_err(|e| {
                    self.err(format!("start the container {container}"), e)
                        .with_hint(format!("start it yourself with `docker start {container}` and look at `docker logs {container}`"))
                })
        })
    }

    fn write_file(&self, container: &str, path: &str, content: &str) -> BoxFuture<'_, Result<()>> {
        let (container, path, content) =
            (container.to_string(), path.to_string(), content.to_string());
        Box::pin(async move {
            let dir = path.rsplit_once('/').map_or(".", |(d, _)| d).to_string();
            // The content travels as an argument, not over stdin: hosts.toml is tiny,
            // and this avoids the hijacked-stdin EOF pitfalls.
            let cmd = vec![
                "sh".to_string(),
                "-c".to_string(),
                "mkdir -p \"$1\" && printf '%s' \"$3\" > \"$2\"".to_string(),
                "sh".to_string(),
                dir,
                path.clone(),
                content,
            ];
            let what = || format!("write {path} in the container {container}");
            let exec = self
                .docker
                .create_exec(
                    &container,
                    CreateExecOptions {
                        cmd: Some(cmd),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| self.err(what(), e))?;
            let mut text = String::new();
            if let StartExecResults::Attached { mut output, .. } = self
                .docker
                .start_exec(&exec.id, None)
                .await
                .map_err(|e| self.err(what(), e))?
            {
                while let Some(chunk) = output.next().await {
                    match chunk {
                        Ok(c) => text.push_str(&String::from_utf8_lossy(&c.into_bytes())),
                        Err(e) => return Err(self.err(what(), e)),
                    }
                }
            }
            let inspect = self
                .docker
                .inspect_exec(&exec.id)
                .await
                .map_err(|e| self.err(what(), e))?;
            match inspect.exit_code {
                Some(0) => Ok(()),
                code => Err(Error::new(
                    ErrorKind::ClusterCreateFailed,
                    format!(
                        "failed to {}: the command exited with {}",
                        what(),
                        code.map_or("no code".into(), |c| c.to_string())
                    ),
                )
                .with_details(text.lines().map(str::to_string).collect())),
            }
        })
    }

    fn connect(&self, network: &str, container: &str) -> BoxFuture<'_, Result<bool>> {
        let (network, container) = (network.to_string(), container.to_string());
        Box::pin(async move {
            let what = || format!("connect the container {container} to the network {network}");
            let info = self
                .docker
                .inspect_container(&container, None::<InspectContainerOptions>)
                .await
                .map_err(|e| self.err(what(), e))?;
            let already = info
                .network_settings
                .and_then(|n| n.networks)
                .is_some_and(|n| n.contains_key(&network));
            if already {
                return Ok(false);
            }
            self.docker
                .connect_network(
                    &network,
                    NetworkConnectRequest {
                        container: container.clone(),
                        endpoint_config: None,
                    },
                )
                .await
                .map_err(|e| self.err(what(), e))?;
            Ok(true)
        })
    }

    fn remove(&self, container: &str) -> BoxFuture<'_, Result<bool>> {
        let container = container.to_string();
        Box::pin(async move {
            let opts = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match self.docker.remove_container(&container, Some(opts)).await {
                Ok(()) => Ok(true),
                Err(e) if is_not_found(&e) => Ok(false),
                Err(e) => Err(self.err(format!("remove the container {container}"), e)),
            }
        })
    }
}
