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
    /// Makes sure the engine has `image` (the kind node image): `Ok(false)` when it
    /// already had it, else pulls it, reporting progress, and returns `Ok(true)`.
    fn ensure_image<'a>(
        &'a self,
        image: &'a str,
        progress: &'a (dyn Fn(&PullProgress) + Send + Sync),
    ) -> BoxFuture<'a, Result<bool>>;
}

/// How far a pull has come, summed over the layers the engine reported so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    pub layers: usize,
    pub layers_done: usize,
    pub bytes: u64,
    pub total: u64,
}

impl std::fmt::Display for PullProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{} layers", self.layers_done, self.layers)?;
        if self.total > 0 {
            write!(
                f,
                ", {:.0}/{:.0} MB",
                self.bytes as f64 / 1e6,
                self.total as f64 / 1e6
            )?;
        }
        Ok(())
    }
}

/// `fromImage` and `tag` of the engine's pull call for a reference, as the docker CLI
/// sends them (docker/cli: the API client's ImagePull, `getAPITagFromNamedRef`): a
/// digest wins over a tag, so `name:tag@sha256:…` pulls exactly that digest.
pub fn pull_params(image: &str) -> (String, String) {
    let (named, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    // A ':' after the last '/' starts the tag (one before it is a registry port).
    let slash = named.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match named[slash..].rfind(':') {
        Some(i) => (&named[..slash + i], Some(&named[slash + i + 1..])),
        None => (named, None),
    };
    let tag = digest.or(tag).unwrap_or("latest");
    (name.to_string(), tag.to_string())
}

/// Makes sure the engine at `host` has `image` (`what` names it in errors): `Ok(false)`
/// when it had it, else pulls it, reporting progress, and returns `Ok(true)`. The node
/// image before `kind create`, and what `pulsedev fetch` brings (base images, the
/// registry image).
pub async fn pull_if_missing(
    docker: &Docker,
    host: &str,
    image: &str,
    what: &str,
    progress: &(dyn Fn(&PullProgress) + Send + Sync),
) -> Result<bool> {
    let err = |w: String, e: bollard::errors::Error| {
        Error::new(
            ErrorKind::DockerUnreachable,
            format!("failed to {w} on {host}: {e}"),
        )
    };
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(false),
        Err(e) if is_not_found(&e) => {}
        Err(e) => return Err(err(format!("inspect the image {image}"), e)),
    }
    let (from_image, tag) = pull_params(image);
    let opts = bollard::query_parameters::CreateImageOptionsBuilder::default()
        .from_image(&from_image)
        .tag(&tag)
        .build();
    // Said before the first byte moves: the pull has started.
    progress(&PullProgress::default());
    let mut stream = docker.create_image(Some(opts), None, None);
    let mut layers: HashMap<String, (u64, u64, bool)> = HashMap::new();
    while let Some(item) = stream.next().await {
        let info = item.map_err(|e| {
            Error::new(
                ErrorKind::ImagePullFailed,
                format!("failed to pull {what} {image} on {host}: {e}"),
            )
            .with_hint(format!(
                "check the network and the Docker engine's proxy settings, then run `docker pull {image}` to see the engine's own error; once the image is there, `pulsedev up` goes on"
            ))
        })?;
        // Per-layer lines carry the layer id; the others are about the image.
        let Some(id) = info.id.filter(|id| id.len() == 12) else {
            continue;
        };
        let status = info.status.unwrap_or_default();
        let entry = layers.entry(id).or_default();
        if let Some(d) = info.progress_detail
            && status.starts_with("Downloading")
        {
            entry.0 = d.current.unwrap_or(0).max(0) as u64;
            entry.1 = d.total.unwrap_or(0).max(0) as u64;
        }
        if matches!(status.as_str(), "Pull complete" | "Already exists") {
            entry.2 = true;
            entry.0 = entry.1;
        }
        progress(&PullProgress {
            layers: layers.len(),
            layers_done: layers.values().filter(|l| l.2).count(),
            bytes: layers.values().map(|l| l.0).sum(),
            total: layers.values().map(|l| l.1).sum(),
        });
    }
    Ok(true)
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

    fn ensure_image<'a>(
        &'a self,
        image: &'a str,
        progress: &'a (dyn Fn(&PullProgress) + Send + Sync),
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(pull_if_missing(
            &self.docker,
            &self.host,
            image,
            "the kind node image",
            progress,
        ))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_parameters_follow_the_docker_cli() {
        let p = |s: &str| pull_params(s);
        assert_eq!(
            p("kindest/node:v1.36.1@sha256:3489"),
            ("kindest/node".into(), "sha256:3489".into())
        );
        assert_eq!(
            p("kindest/node:v1.36.1"),
            ("kindest/node".into(), "v1.36.1".into())
        );
        assert_eq!(p("kindest/node"), ("kindest/node".into(), "latest".into()));
        assert_eq!(
            p("127.0.0.1:5000/kindest/node@sha256:ab"),
            ("127.0.0.1:5000/kindest/node".into(), "sha256:ab".into())
        );
        assert_eq!(
            p("127.0.0.1:5000/node"),
            ("127.0.0.1:5000/node".into(), "latest".into())
        );
        let shown = PullProgress {
            layers: 9,
            layers_done: 3,
            bytes: 412_000_000,
            total: 1_000_000_000,
        };
        assert_eq!(shown.to_string(), "3/9 layers, 412/1000 MB");
    }
}
