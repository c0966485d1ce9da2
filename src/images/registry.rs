//! The local registry: its container (named for the cluster, published on
//! 127.0.0.1:<port>, on the `kind` network), presence checks over the registry's
//! HTTP API, and pushes through the engine so only missing layers move.
//!
//! Owns: the registry container's lifecycle and `Deliver` in registry mode. Must
//! not touch the kind nodes (the cluster code writes containerd's hosts.toml and the
//! `local-registry-hosting` ConfigMap) nor build anything.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{
    ContainerCreateBody, HostConfig, NetworkConnectRequest, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use futures::StreamExt;
use futures::future::BoxFuture;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::build::LocalImage;
use super::deliver::{Deliver, Delivered, ImageRef, Transfer};
use crate::docker::Engine;
use crate::error::{Error, ErrorKind, Result};

/// `registry:3`, pinned by digest (the distribution 3.x image kind's own
/// local-registry recipe runs). Configurable: tests use a stand-in built FROM scratch.
pub const DEFAULT_IMAGE: &str =
    "registry:3@sha256:1be55279f18a2fe1a74edf2664cac61c1bea305b7b4642dab412e7affdcb3e33";
/// Label marking what pulsedev made for a cluster (doctor treats their ports as ours).
pub const CLUSTER_LABEL: &str = "dev.pulsedev.cluster";
/// The port the registry listens on inside its container.
const CONTAINER_PORT: &str = "5000/tcp";

/// The registry container `ensure` makes or reuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySpec {
    pub cluster: String,
    /// Host port on 127.0.0.1.
    pub port: u16,
    pub image: String,
    /// Docker network to join (kind's is `kind`); skipped while it does not exist.
    pub network: Option<String>,
}

impl RegistrySpec {
    pub fn new(cluster: &str, port: u16) -> RegistrySpec {
        RegistrySpec {
            cluster: cluster.to_string(),
            port,
            image: DEFAULT_IMAGE.to_string(),
            network: Some("kind".to_string()),
        }
    }
}

/// The longest DNS label (RFC 1123): the registry's container name is the host name
/// containerd's hosts.toml on every node pulls from over the kind network.
const DNS_LABEL_MAX: usize = 63;

/// `pulsedev-<cluster>-registry` when that fits in a DNS label (cluster names up to 45
/// characters), else `pulsedev-<first 36 characters>-registry-<8 hex of SHA-256(cluster)>`:
/// 63 characters, deterministic, and never equal to another cluster's name (a short
/// form ends in `-registry`, a hashed one in hex; two hashed ones differ in the hash).
pub fn container_name(cluster: &str) -> String {
    let plain = legacy_container_name(cluster);
    if plain.len() <= DNS_LABEL_MAX {
        return plain;
    }
    use sha2::Digest;
    let hash = hex::encode(sha2::Sha256::digest(cluster.as_bytes()));
    // Cluster names are ASCII (config::check_name), so byte slicing is safe.
    let room = DNS_LABEL_MAX - "pulsedev-".len() - "-registry-".len() - 8;
    let prefix = cluster[..room.min(cluster.len())].trim_end_matches('-');
    format!("pulsedev-{prefix}-registry-{}", &hash[..8])
}

/// The name releases before the DNS-label limit gave the container; for a cluster
/// name over 45 characters it differs from `container_name`, and such a container is
/// replaced by `ensure` and removed by `remove` (its host name never resolved on the
/// nodes, so it never served a pull).
pub fn legacy_container_name(cluster: &str) -> String {
    format!("pulsedev-{cluster}-registry")
}

/// Both names of the registry container, the current one first (one when they agree).
pub fn container_names(cluster: &str) -> Vec<String> {
    let mut names = vec![container_name(cluster)];
    let legacy = legacy_container_name(cluster);
    if legacy != names[0] {
        names.push(legacy);
    }
    names
}

/// What `ensure` found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryState {
    pub container: String,
    pub id: String,
    pub created: bool,
    pub started: bool,
    /// The network it is on, when `spec.network` exists.
    pub network: Option<String>,
}

fn push_error(message: String) -> Error {
    Error::new(ErrorKind::ImagePushFailed, message)
}

/// Creates or reuses the registry container, starts it if stopped, joins the
/// network when it exists, and waits until the registry answers. Safe to repeat.
pub async fn ensure(engine: &Engine, spec: &RegistrySpec) -> Result<RegistryState> {
    let docker = &engine.docker;
    let name = container_name(&spec.cluster);
    let mut created = false;
    // A container an older pulsedev made under the over-long name: replace it.
    let legacy = legacy_container_name(&spec.cluster);
    if legacy != name {
        remove_named(engine, &legacy, &spec.cluster).await?;
    }
    let existing = match docker.inspect_container(&name, None).await {
        Ok(c) => Some(c),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(e) => {
            return Err(push_error(format!(
                "failed to inspect container {name}: {e}"
            )));
        }
    };
    let existing = match existing {
        Some(c) => {
            let labels = c
                .config
                .as_ref()
                .and_then(|c| c.labels.clone())
                .unwrap_or_default();
            if labels.get(CLUSTER_LABEL) != Some(&spec.cluster) {
                return Err(push_error(format!(
                    "a container named {name} exists but pulsedev did not make it (no {CLUSTER_LABEL}={} label)",
                    spec.cluster
                ))
                .with_hint(format!("remove it with `docker rm -f {name}`, or choose another cluster name with `--name`")));
            }
            let bound = c
                .host_config
                .as_ref()
                .and_then(|h| h.port_bindings.as_ref())
                .and_then(|b| b.get(CONTAINER_PORT).cloned().flatten())
                .and_then(|b| b.first().and_then(|p| p.host_port.clone()));
            let image = c
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            if bound.as_deref() != Some(spec.port.to_string().as_str()) || image != spec.image {
                // Ours, but made with other settings: replace it (the registry is a cache).
                remove(engine, &spec.cluster).await?;
                None
            } else {
                Some(c)
            }
        }
        None => None,
    };
    let (id, running) = match existing {
        Some(c) => (
            c.id.unwrap_or_default(),
            c.state.and_then(|s| s.running).unwrap_or(false),
        ),
        None => {
            created = true;
            (
                create(&super::long_calls(engine), &name, spec).await?,
                false,
            )
        }
    };
    let mut started = false;
    if !running {
        docker
            .start_container(&name, None)
            .await
            .map_err(|e| start_error(&name, spec.port, e))?;
        started = true;
    }
    let network = match &spec.network {
        Some(net) => connect_network(engine, &name, net)
            .await?
            .then(|| net.clone()),
        None => None,
    };
    wait_ready(spec.port, Duration::from_secs(20)).await?;
    Ok(RegistryState {
        container: name,
        id,
        created,
        started,
        network,
    })
}

async fn create(docker: &Docker, name: &str, spec: &RegistrySpec) -> Result<String> {
    let body = ContainerCreateBody {
        image: Some(spec.image.clone()),
        labels: Some(HashMap::from([(
            CLUSTER_LABEL.to_string(),
            spec.cluster.clone(),
        )])),
        exposed_ports: Some(vec![CONTAINER_PORT.to_string()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                CONTAINER_PORT.to_string(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_string()),
                    host_port: Some(spec.port.to_string()),
                }]),
            )])),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ALWAYS),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let options = || {
        Some(bollard::query_parameters::CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        })
    };
    match docker.create_container(options(), body.clone()).await {
        Ok(r) => Ok(r.id),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => {
            // The image is missing: pull it once, then create.
            let mut pull = docker.create_image(
                Some(bollard::query_parameters::CreateImageOptions {
                    from_image: Some(spec.image.clone()),
                    ..Default::default()
                }),
                None,
                None,
            );
            while let Some(item) = pull.next().await {
                item.map_err(|e| {
                    push_error(format!(
                        "failed to pull the registry image {}: {e}",
                        spec.image
                    ))
                    .with_hint(
                        "check the network, or set the registry image to one present locally",
                    )
                })?;
            }
            docker
                .create_container(options(), body)
                .await
                .map(|r| r.id)
                .map_err(|e| push_error(format!("failed to create container {name}: {e}")))
        }
        Err(e) => Err(push_error(format!(
            "failed to create container {name}: {e}"
        ))),
    }
}

fn start_error(name: &str, port: u16, e: bollard::errors::Error) -> Error {
    let text = e.to_string();
    if text.contains("address already in use") || text.contains("port is already allocated") {
        Error::new(
            ErrorKind::PortInUse,
            format!("port {port} on 127.0.0.1 is in use, so the registry {name} cannot start"),
        )
        .with_hint("free the port, or choose another with `--registry-port`")
    } else {
        push_error(format!("failed to start container {name}: {text}"))
    }
}

/// Connects `container` to `network` unless it is already on it. Returns false when
/// the network does not exist (yet): the cluster step calls this again after kind
/// has made it.
pub async fn connect_network(engine: &Engine, container: &str, network: &str) -> Result<bool> {
    let docker = &engine.docker;
    let net = match docker.inspect_network(network, None).await {
        Ok(n) => n,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(false),
        Err(e) => {
            return Err(push_error(format!(
                "failed to inspect network {network}: {e}"
            )));
        }
    };
    let c = docker
        .inspect_container(container, None)
        .await
        .map_err(|e| push_error(format!("failed to inspect container {container}: {e}")))?;
    let on = c
        .network_settings
        .and_then(|n| n.networks)
        .is_some_and(|n| {
            n.contains_key(network)
                || net
                    .id
                    .as_ref()
                    .is_some_and(|id| n.values().any(|e| e.network_id.as_ref() == Some(id)))
        });
    if !on {
        docker
            .connect_network(
                network,
                NetworkConnectRequest {
                    container: container.to_string(),
                    endpoint_config: None,
                },
            )
            .await
            .map_err(|e| {
                push_error(format!(
                    "failed to connect {container} to the docker network {network}: {e}"
                ))
            })?;
    }
    Ok(true)
}

/// Whether the registry container of `cluster` exists (running or not) under its
/// current name.
pub async fn exists(engine: &Engine, cluster: &str) -> Result<bool> {
    let name = container_name(cluster);
    match engine.docker.inspect_container(&name, None).await {
        Ok(_) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(Error::internal(format!(
            "failed to inspect container {name}: {e}"
        ))),
    }
}

/// Removes the registry container of `cluster` (under its current name, and under the
/// legacy one when that differs) with its anonymous /var/lib/registry volume; absent
/// is fine.
pub async fn remove(engine: &Engine, cluster: &str) -> Result<bool> {
    let mut removed = false;
    for name in container_names(cluster) {
        removed |= remove_named(engine, &name, cluster).await?;
    }
    Ok(removed)
}

/// Removes the container `name` if it exists; a legacy name is removed only when
/// the container carries our label for `cluster`.
async fn remove_named(engine: &Engine, name: &str, cluster: &str) -> Result<bool> {
    if name != container_name(cluster) {
        match engine.docker.inspect_container(name, None).await {
            Ok(c) => {
                let ours = c
                    .config
                    .and_then(|c| c.labels)
                    .is_some_and(|l| l.get(CLUSTER_LABEL).map(String::as_str) == Some(cluster));
                if !ours {
                    return Ok(false);
                }
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(false),
            Err(e) => {
                return Err(Error::internal(format!(
                    "failed to inspect container {name}: {e}"
                )));
            }
        }
    }
    match engine
        .docker
        .remove_container(
            name,
            Some(bollard::query_parameters::RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            }),
        )
        .await
    {
        Ok(()) => Ok(true),
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => Ok(false),
        Err(e) => Err(Error::internal(format!(
            "failed to remove container {name}: {e}"
        ))),
    }
}

/// Polls `GET /v2/` until the registry answers (200, or 401 when it wants auth).
pub async fn wait_ready(port: u16, timeout: Duration) -> Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + timeout;
    loop {
        let last = match request(addr, "GET", "/v2/", None).await {
            Ok((200 | 401, _)) => return Ok(()),
            Ok((code, _)) => format!("HTTP {code}"),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(push_error(format!(
                "the registry on 127.0.0.1:{port} did not answer within {}s ({last})",
                timeout.as_secs()
            ))
            .with_hint("look at its log with `docker logs` on the registry container"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// The manifest digest of `repository:tag` in the registry on `port`, if it has it.
pub async fn manifest_digest(port: u16, repository: &str, tag: &str) -> Result<Option<String>> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let path = format!("/v2/{repository}/manifests/{tag}");
    let (code, headers) = request(addr, "HEAD", &path, Some(MANIFEST_TYPES))
        .await
        .map_err(|e| {
            push_error(format!(
                "failed to ask the registry on {addr} for {path}: {e}"
            ))
        })?;
    match code {
        200 => Ok(headers
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("docker-content-digest"))
            .map(|(_, v)| v)),
        404 => Ok(None),
        other => Err(push_error(format!(
            "the registry on {addr} answered HTTP {other} for HEAD {path}"
        ))),
    }
}

/// One HTTP/1.1 request without a body on loopback; returns status and headers.
/// Small on purpose: the registry is local and plain HTTP, and this avoids an HTTP
/// client dependency for two calls.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<(u16, Vec<(String, String)>)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
        if let Some(a) = accept {
            req.push_str(&format!("Accept: {a}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut chunk).await?;
            if n == 0 || buf.len() > 64 * 1024 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let text = String::from_utf8_lossy(&buf);
        let head = text.split("\r\n\r\n").next().unwrap_or_default();
        let mut lines = head.split("\r\n");
        let code = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| std::io::Error::other("not an HTTP response"))?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        Ok((code, headers))
    };
    tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer within 5s"))?
}

/// Registry mode: tag `localhost:<port>/<repository>:<tag>` and push through the
/// engine, which uploads only the layers the registry lacks.
#[derive(Debug, Clone)]
pub struct RegistryPush {
    docker: Docker,
    port: u16,
}

impl RegistryPush {
    pub fn new(engine: &Engine, port: u16) -> RegistryPush {
        RegistryPush {
            docker: super::long_calls(engine),
            port,
        }
    }

    /// `localhost:<port>`: the name both the host engine and (through containerd's
    /// hosts.toml mirror) the kind nodes use for the registry.
    pub fn host(&self) -> String {
        format!("localhost:{}", self.port)
    }

    async fn push(&self, image: &LocalImage) -> Result<Delivered> {
        let started = Instant::now();
        if let Some(found) = self.lookup(image).await? {
            return Ok(Delivered {
                image: found,
                transfer: None,
                seconds: started.elapsed().as_secs_f64(),
            });
        }
        let remote = format!("{}/{}", self.host(), image.repository);
        let local = image.reference();
        self.docker
            .tag_image(
                &local,
                Some(bollard::query_parameters::TagImageOptions {
                    repo: Some(remote.clone()),
                    tag: Some(image.tag.clone()),
                }),
            )
            .await
            .map_err(|e| {
                push_error(format!(
                    "failed to tag {local} as {remote}:{}: {e}",
                    image.tag
                ))
            })?;
        let mut stream = self.docker.push_image(
            &remote,
            Some(bollard::query_parameters::PushImageOptions {
                tag: Some(image.tag.clone()),
                ..Default::default()
            }),
            None,
        );
        let mut summary = PushSummary::default();
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| {
                push_error(format!("failed to push {remote}:{}: {e}", image.tag)).with_hint(
                    format!(
                        "check that the registry answers: `curl http://127.0.0.1:{}/v2/`",
                        self.port
                    ),
                )
            })?;
            summary.record(
                info.status.as_deref().unwrap_or_default(),
                info.progress_detail.as_ref().and_then(|p| p.total),
            );
        }
        let digest = match summary.digest.clone() {
            Some(d) => Some(d),
            None => manifest_digest(self.port, &image.repository, &image.tag).await?,
        };
        Ok(Delivered {
            image: ImageRef {
                repository: remote,
                tag: image.tag.clone(),
                digest,
            },
            transfer: Some(Transfer {
                bytes: None,
                layers_sent: summary.pushed,
                layers_present: summary.existed,
            }),
            seconds: started.elapsed().as_secs_f64(),
        })
    }

    async fn lookup(&self, image: &LocalImage) -> Result<Option<ImageRef>> {
        Ok(manifest_digest(self.port, &image.repository, &image.tag)
            .await?
            .map(|digest| ImageRef {
                repository: format!("{}/{}", self.host(), image.repository),
                tag: image.tag.clone(),
                digest: Some(digest),
            }))
    }
}

/// What the push stream said: layers pushed and already there, and the digest of
/// the final `<tag>: digest: sha256:… size: N` line.
#[derive(Debug, Default, PartialEq, Eq)]
struct PushSummary {
    pushed: usize,
    existed: usize,
    digest: Option<String>,
}

impl PushSummary {
    fn record(&mut self, status: &str, _total: Option<i64>) {
        match status {
            "Pushed" => self.pushed += 1,
            "Layer already exists" => self.existed += 1,
            s => {
                if let Some(rest) = s.split(" digest: ").nth(1)
                    && let Some(d) = rest.split_whitespace().next()
                    && d.starts_with("sha256:")
                {
                    self.digest = Some(d.to_string());
                }
            }
        }
    }
}

impl Deliver for RegistryPush {
    fn mode(&self) -> &'static str {
        "registry"
    }

    fn present<'a>(&'a self, image: &'a LocalImage) -> BoxFuture<'a, Result<Option<ImageRef>>> {
        Box::pin(self.lookup(image))
    }

    fn deliver<'a>(&'a self, image: &'a LocalImage) -> BoxFuture<'a, Result<Delivered>> {
        Box::pin(self.push(image))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_stream_summary() {
        let mut s = PushSummary::default();
        for status in [
            "The push refers to repository [localhost:5001/pulsewatch-api]",
            "Preparing",
            "Preparing",
            "Waiting",
            "Layer already exists",
            "Pushing",
            "Pushed",
            "0123456789ab: digest: sha256:aaaa size: 739",
        ] {
            s.record(status, None);
        }
        assert_eq!(
            s,
            PushSummary {
                pushed: 1,
                existed: 1,
                digest: Some("sha256:aaaa".into())
            }
        );
    }

    #[test]
    fn names() {
        assert_eq!(container_name("pulsedev"), "pulsedev-pulsedev-registry");
        assert_eq!(container_names("pulsedev"), ["pulsedev-pulsedev-registry"]);
        let spec = RegistrySpec::new("ci-1", 5001);
        assert_eq!(spec.network.as_deref(), Some("kind"));
        assert!(spec.image.starts_with("registry:3@sha256:"));
    }

    #[tokio::test]
    async fn raw_http_against_a_tiny_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\nDocker-Content-Digest: sha256:beef\r\nContent-Length: 10\r\n\r\n",
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 2048];
                let n = s.read(&mut buf).await.unwrap();
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                assert!(
                    req.starts_with("HEAD /v2/pulsewatch-api/manifests/t1 HTTP/1.1\r\n"),
                    "{req}"
                );
                assert!(req.contains("application/vnd.oci.image.manifest.v1+json"));
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        assert_eq!(
            manifest_digest(port, "pulsewatch-api", "t1").await.unwrap(),
            Some("sha256:beef".into())
        );
        assert_eq!(
            manifest_digest(port, "pulsewatch-api", "t1").await.unwrap(),
            None
        );
    }

    /// Every valid cluster name (config::check_name: up to 50 of [a-z0-9-]) gives a
    /// registry name that is one DNS label, as containerd's hosts.toml needs.
    #[test]
    fn registry_names_are_dns_labels_for_the_longest_cluster_names() {
        let dns_label = |n: &str| {
            n.len() <= 63
                && !n.starts_with('-')
                && !n.ends_with('-')
                && n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        let longest = "a".repeat(50);
        assert!(crate::config::check_name(&longest).is_ok());
        let mut seen = std::collections::BTreeSet::new();
        for name in [
            longest.clone(),
            format!("{}b", "a".repeat(49)),
            format!("{}-{}", "a".repeat(34), "b".repeat(15)),
            "a".repeat(45),
            "a".repeat(46),
            format!("{}-x", "a".repeat(34)),
            "x".to_string(),
        ] {
            let n = container_name(&name);
            assert!(dns_label(&n), "{name} -> {n} ({} chars)", n.len());
            assert_eq!(n, container_name(&name), "deterministic");
            assert!(seen.insert(n.clone()), "{n} given twice");
        }
        assert_eq!(container_name(&"a".repeat(45)).len(), 63);
        assert_eq!(
            container_name(&"a".repeat(45)),
            format!("pulsedev-{}-registry", "a".repeat(45))
        );
        let long = container_name(&longest);
        assert_eq!(long.len(), 63, "{long}");
        assert!(long.starts_with(&format!("pulsedev-{}-registry-", "a".repeat(36))));
        // A hashed name can never be the short name of another cluster.
        assert!(!long.ends_with("-registry"));
        assert_eq!(
            container_names(&longest),
            [long, format!("pulsedev-{longest}-registry")]
        );
    }
}
