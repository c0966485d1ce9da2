//! The images the cluster's own workloads run (Postgres, Redis, the ingress controller,
//! cert-manager, the observability add-ons when on): which they are, and getting them
//! into the kind nodes from pulsedev's cache, so `up` after `pulsedev fetch` needs no
//! network. The node's containerd would otherwise pull each of them itself.
//!
//! Which: the `image` of every container and init container in what `up` applies from
//! manifests/dev and the enabled platform charts, Helm hooks left out (`up` never applies
//! them: `Shared::install_chart`), the service charts left out (their images are the ones
//! pulsedev builds and delivers itself).
//!
//! Import: for each cached image a node does not list, an OCI-layout tar streamed into
//! `ctr --namespace=k8s.io images import --platform <p> --digests --snapshotter=<s> -`
//! (the command kind's `load` runs, see `archive`). The tar's index.json names the image
//! twice, by tag and by the index digest, through the `io.containerd.image.name`
//! annotation, which containerd's importer turns into image records: containerd 2.x's
//! ctr imports through the transfer service by default, which marks each index.json
//! entry `ref-source=annotation` (core/transfer/local/import.go) and stores it under that
//! name, a full reference kept as it is (core/transfer/image/imagestore.go `Store` and
//! `imageName`, core/images/archive/reference.go `AddRefPrefix`); with `--digests` it adds
//! `import-<date>@<digest>`; `--local` does the same through client/import.go
//! `imageName`. `--platform` filters the walk to that platform (the store's
//! `ImageFilter`: `images.FilterPlatforms`). The kubelet asks CRI
//! for the pod's exact ref; CRI normalises it with `docker.ParseDockerRef`, which drops
//! the tag of a `name:tag@digest` ref (distribution/reference normalize.go), and looks
//! that up among the names of the images it knows (containerd
//! internal/cri/server/images/service.go `LocalResolve`, store/image/image.go
//! `Resolve`): hence the `name@digest` record; the `name:tag` record serves tag-only refs.
//!
//! Owns: the list of workload images, the node import. Must not download (see `oci`).

use std::collections::BTreeSet;
use std::path::Path;

use bytes::Bytes;
use futures::StreamExt;

use super::oci::{self, Cached};
use crate::config::{Config, Env};
use crate::error::{Error, ErrorKind, Result};
use crate::kube::Manifest;
use crate::stack::{self, Piece};

/// An image reference, normalised as containerd and the kubelet's CRI see it:
/// `docker.io/library/postgres:17-alpine@sha256:…`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName {
    /// Registry host (`docker.io` for Docker Hub).
    pub domain: String,
    /// Repository path in that registry (`library/postgres`).
    pub path: String,
    pub tag: Option<String>,
    /// `sha256:<hex>`
    pub digest: Option<String>,
}

impl ImageName {
    /// Parses a reference the way distribution/reference's `ParseNormalizedNamed` does:
    /// the first component is a registry when it has a '.' or ':' or is `localhost`,
    /// else the image is on docker.io, and a single-component name there is under
    /// `library/` (normalize.go `splitDockerDomain`). A tag defaults to `latest` only
    /// when there is no digest (`TagNameOnly`).
    pub fn parse(s: &str) -> std::result::Result<ImageName, String> {
        let bad = |why: &str| format!("{s:?} is not an image reference: {why}");
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                let hex = d
                    .strip_prefix("sha256:")
                    .ok_or_else(|| bad("only sha256 digests are known"))?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad("the digest is not 64 hex digits"));
                }
                (r, Some(d.to_ascii_lowercase()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[slash..].rfind(':') {
            Some(i) => (&rest[..slash + i], Some(rest[slash + i + 1..].to_string())),
            None => (rest, None),
        };
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(bad("no name"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, p))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), p.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            "docker.io".to_string()
        } else {
            domain
        };
        let path = if domain == "docker.io" && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(bad("repository names are lower case"));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) if t.is_empty() => return Err(bad("empty tag")),
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(ImageName {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }

    /// The full reference, tag and digest as given.
    pub fn full(&self) -> String {
        let mut s = self.repository();
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The names a node's containerd must hold for CRI to find this image by the
    /// pod's ref: `repo@<index digest>` (what `ParseDockerRef` leaves of a pinned ref)
    /// and `repo:tag` (a tag-only ref). `digest` is the index digest (the pin, or the
    /// one a tag resolved to at fetch).
    pub fn containerd_names(&self, digest: &str) -> Vec<String> {
        let mut names = vec![format!("{}@{digest}", self.repository())];
        if let Some(t) = &self.tag {
            names.push(format!("{}:{t}", self.repository()));
        }
        names
    }
}

impl std::fmt::Display for ImageName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.full())
    }
}

/// The images of `manifests`' pod templates (Pod, Deployment, StatefulSet, DaemonSet,
/// ReplicaSet, Job, CronJob), containers and init containers, and the `spec.image` of
/// the Prometheus Operator's Prometheus and Alertmanager, and the config-reloader its
/// flag names; Helm hooks left out; sorted and without duplicates.
pub fn images_in(manifests: &[Manifest]) -> std::result::Result<Vec<ImageName>, String> {
    let mut out = BTreeSet::new();
    for m in manifests.iter().filter(|m| !m.is_helm_hook()) {
        let data = &m.object.data;
        // The Prometheus Operator makes the StatefulSets of these from `spec.image`
        // (prometheus-operator pkg/prometheus/statefulset.go, pkg/alertmanager/statefulset.go).
        if matches!(m.kind(), "Prometheus" | "Alertmanager")
            && m.object
                .types
                .as_ref()
                .is_some_and(|t| t.api_version.starts_with("monitoring.coreos.com/"))
        {
            if let Some(image) = data.pointer("/spec/image").and_then(|v| v.as_str()) {
                out.insert(ImageName::parse(image)?);
            }
            continue;
        }
        let spec = match m.kind() {
            "Pod" => data.get("spec"),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                data.pointer("/spec/template/spec")
            }
            "CronJob" => data.pointer("/spec/jobTemplate/spec/template/spec"),
            _ => None,
        };
        let Some(spec) = spec else { continue };
        for key in ["initContainers", "containers"] {
            for c in spec
                .get(key)
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                if let Some(image) = c.get("image").and_then(|v| v.as_str()) {
                    out.insert(ImageName::parse(image)?);
                }
                // The sidecar the Prometheus Operator adds to the pods it makes
                // (prometheus-operator cmd/operator/main.go, flag
                // `--prometheus-config-reloader`).
                for arg in c
                    .get("args")
                    .and_then(|v| v.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str())
                {
                    if let Some(image) = arg.strip_prefix("--prometheus-config-reloader=") {
                        out.insert(ImageName::parse(image)?);
                    }
                }
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The pieces `up` applies that run workloads it does not build: manifests/dev and the
/// enabled platform charts (rendered from the cache), plus the files applied with
/// them. Charts not in the cache are named in the second list.
pub async fn workload_pieces(
    config: &Config,
    helm: &crate::helm::Helm,
    cache: &Path,
) -> Result<(Vec<Piece>, Vec<String>)> {
    let root = &config.root;
    let mut pieces = Vec::new();
    let mut missing = Vec::new();
    if config.env != Env::Dev {
        return Ok((pieces, missing));
    }
    for f in stack::shared_files(root, config.env)? {
        pieces.push(stack::file_piece(root, &f)?);
    }
    for c in stack::load_pins(root)?
        .values()
        .filter(|c| c.enabled(config))
    {
        match stack::render_platform_chart(root, helm, cache, c).await? {
            Some(p) => pieces.push(p),
            None => missing.push(format!("{} {}", c.chart, c.version)),
        }
    }
    Ok((pieces, missing))
}

/// The images of `pieces` (see `images_in`), the service charts' pieces skipped.
pub fn workload_images(config: &Config, pieces: &[Piece]) -> Result<Vec<ImageName>> {
    let services: BTreeSet<String> = config
        .services
        .values()
        .filter_map(|s| s.chart.as_ref())
        .map(|c| {
            c.strip_prefix(&config.root)
                .unwrap_or(c)
                .display()
                .to_string()
        })
        .collect();
    let mut manifests = Vec::new();
    for p in pieces.iter().filter(|p| !services.contains(&p.source)) {
        manifests.extend(crate::kube::parse(&p.source, &p.yaml)?);
    }
    images_in(&manifests).map_err(|e| {
        Error::new(ErrorKind::RenderFailed, e)
            .with_hint("fix the image reference in the manifest or the chart values")
    })
}

/// The workload images `up` would apply for `config`, and the platform they are
/// needed for (the engine's, which the kind nodes run on).
async fn needed(config: &Config, helm: &crate::helm::Helm, cache: &Path) -> Result<Vec<ImageName>> {
    let (pieces, _) = workload_pieces(config, helm, cache).await?;
    workload_images(config, &pieces)
}

/// `pulsedev fetch`: every workload image into the image cache for the engine's
/// platform. Returns (downloaded now, count already cached).
pub async fn fetch_all(
    config: &Config,
    helm: &crate::helm::Helm,
    cache: &Path,
    docker: &crate::docker::Engine,
    env: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<(Vec<String>, usize)> {
    oci::sweep(cache);
    let images = needed(config, helm, cache).await?;
    oci::record_workloads(cache, &images)?;
    let platform = crate::docker::platform(&docker.info().await?);
    let engine_mirrors = docker.pull_settings().await?.mirrors;
    let setting = env(oci::MIRRORS_VAR);
    let reg = oci::Registry::new(&crate::offline::Proxies::from_env(env))?;
    let mut fetched = Vec::new();
    let mut here = 0;
    for name in images {
        let mirrors = oci::mirrors(&name, setting.as_deref(), &engine_mirrors);
        let (entry, fresh) = oci::fetch(&reg, cache, &name, &platform, &mirrors).await?;
        if fresh {
            fetched.push(match &name.digest {
                Some(_) => name.full(),
                // A tag is recorded with the digest it resolved to.
                None => format!("{name} ({})", entry.index.digest),
            });
        } else {
            here += 1;
        }
    }
    Ok((fetched, here))
}

/// Whether pulsedev's image cache holds anything (`up` renders and imports only then:
/// with nothing cached the nodes pull, as before).
pub fn cache_in_use(cache: &Path) -> bool {
    std::fs::read_dir(oci::cache_root(cache).join("refs")).is_ok_and(|mut d| {
        d.any(|e| {
            e.is_ok_and(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
            })
        })
    })
}

/// `up`: imports every needed workload image the cache holds into each node that does
/// not list it. Returns (imported, not cached: the nodes pull those).
pub async fn import_all(
    config: &Config,
    helm: &crate::helm::Helm,
    cache: &Path,
    docker: &crate::docker::Engine,
    nodes: Vec<String>,
) -> Result<(Vec<String>, Vec<String>)> {
    let images = needed(config, helm, cache).await?;
    let platform = crate::docker::platform(&docker.info().await?);
    let mut entries = Vec::new();
    let mut uncached = Vec::new();
    for name in images {
        // Verified only when a node lacks it (`NodeImport::import`): a second `up`
        // hashes nothing.
        match oci::record(cache, &name, &platform) {
            Some(e) => entries.push(e),
            None => uncached.push(name.full()),
        }
    }
    let mut imported = Vec::new();
    if entries.is_empty() {
        return Ok((imported, uncached));
    }
    let import = NodeImport::detect(docker, nodes, &platform).await?;
    for e in &entries {
        if import.import(cache, e).await? > 0 {
            imported.push(e.name.full());
        }
    }
    Ok((imported, uncached))
}

/// A node stand-in's or a kind node's containerd, reached over `docker exec`.
pub struct NodeImport {
    docker: bollard::Docker,
    /// Each node with its CRI snapshotter.
    nodes: Vec<(String, String)>,
    platform: String,
}

impl NodeImport {
    /// Reads each node's snapshotter as `archive` does for app images.
    pub async fn detect(
        engine: &crate::docker::Engine,
        nodes: Vec<String>,
        platform: &str,
    ) -> Result<NodeImport> {
        let mut with = Vec::new();
        for n in nodes {
            let s = super::archive::node_snapshotter(&engine.docker, &n).await?;
            with.push((n, s));
        }
        Ok(NodeImport {
            docker: super::long_calls(engine),
            nodes: with,
            platform: platform.to_string(),
        })
    }

    async fn has(&self, node: &str, name: &str) -> Result<bool> {
        let cmd: Vec<String> = [
            "ctr",
            "--namespace=k8s.io",
            "images",
            "ls",
            "-q",
            &format!("name=={name}"),
        ]
        .map(String::from)
        .to_vec();
        let r = super::archive::exec_with_stdin(
            &self.docker,
            node,
            &cmd,
            futures::stream::empty::<std::result::Result<Bytes, std::io::Error>>(),
        )
        .await?;
        Ok(r.exit_code == 0 && r.stdout.lines().any(|l| l.trim() == name))
    }

    /// Imports `image` (a cache record) into every node that does not list it by its
    /// digest name, after checking every byte of it in the cache (`oci::cached`: a
    /// mismatch removes the entry and is `tool-checksum-mismatch`). Returns the bytes
    /// sent (0: every node had it).
    pub async fn import(&self, cache: &Path, image: &Cached) -> Result<u64> {
        let names = image.name.containerd_names(&image.index.digest);
        let mut sent = 0;
        let mut verified = false;
        for (node, snapshotter) in &self.nodes {
            if self.has(node, &names[0]).await? {
                continue;
            }
            if !verified {
                if oci::cached(cache, &image.name, &image.platform)?.as_ref() != Some(image) {
                    return Err(Error::new(
                        ErrorKind::ImagePullFailed,
                        format!(
                            "the cached image {} is incomplete (a file of it is gone)",
                            image.name
                        ),
                    )
                    .with_hint("run `pulsedev fetch` again where the registry can be reached"));
                }
                verified = true;
            }
            let cmd: Vec<String> = [
                "ctr",
                "--namespace=k8s.io",
                "images",
                "import",
                "--platform",
                &self.platform,
                "--digests",
                &format!("--snapshotter={snapshotter}"),
                "-",
            ]
            .map(String::from)
            .to_vec();
            let tar = oci::layout_tar(cache, image, &names)?;
            let r = super::archive::exec_with_stdin(&self.docker, node, &cmd, tar.boxed()).await?;
            if r.exit_code != 0 || !r.stdin_complete {
                let details = r.stderr_tail(10);
                return Err(Error::new(
                    ErrorKind::ImagePullFailed,
                    format!(
                        "failed to import {} into node {node}: `{}` exited with code {}",
                        image.name,
                        cmd.join(" "),
                        r.exit_code
                    ),
                )
                .with_details(details)
                .with_hint(
                    "check the node's disk space and containerd (`docker exec NODE crictl info`); with network, `up` lets the node pull it",
                ));
            }
            sent += r.sent;
        }
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> String {
        ImageName::parse(s).unwrap().full()
    }

    #[test]
    fn references_normalise_as_containerd_names_them() {
        assert_eq!(parse("redis:7"), "docker.io/library/redis:7");
        assert_eq!(parse("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            parse("ghcr.io/nginx/nginx-ingress:5.6.0"),
            "ghcr.io/nginx/nginx-ingress:5.6.0"
        );
        assert_eq!(
            parse(
                "127.0.0.1:5000/library/postgres@sha256:AB00000000000000000000000000000000000000000000000000000000000000"
            ),
            "127.0.0.1:5000/library/postgres@sha256:ab00000000000000000000000000000000000000000000000000000000000000"
        );
        assert_eq!(
            parse("index.docker.io/grafana/alloy:v1"),
            "docker.io/grafana/alloy:v1"
        );
        assert_eq!(parse("localhost/x:1"), "localhost/x:1");
        assert!(ImageName::parse("x@sha256:12").is_err());
        assert!(ImageName::parse("Upper/case:1").is_err());
        assert!(ImageName::parse("x:").is_err());
        let n = ImageName::parse(&format!("postgres:17-alpine@sha256:{}", "a".repeat(64))).unwrap();
        assert_eq!(
            n.containerd_names("sha256:ff"),
            [
                "docker.io/library/postgres@sha256:ff",
                "docker.io/library/postgres:17-alpine"
            ]
        );
    }

    /// The real manifests/dev: Postgres and Redis, pinned by digest; init containers,
    /// CronJobs and Pods count, Helm hooks and non-workloads do not.
    #[test]
    fn workload_images_of_the_dev_manifests_and_of_every_pod_template_kind() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let config = Config::defaults(root);
        let mut pieces = Vec::new();
        for f in stack::shared_files(root, Env::Dev).unwrap() {
            pieces.push(stack::file_piece(root, &f).unwrap());
        }
        let got: Vec<String> = workload_images(&config, &pieces)
            .unwrap()
            .iter()
            .map(ImageName::full)
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with("docker.io/library/postgres:17-alpine@sha256:"));
        assert!(got[1].starts_with("docker.io/library/redis:7.4-alpine@sha256:"));

        let yaml = "\
apiVersion: batch/v1
kind: CronJob
metadata: {name: c}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          initContainers: [{name: i, image: busybox:1}]
          containers: [{name: c, image: quay.io/a/cron:2}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: operator}
spec:
  template:
    spec:
      containers:
        - name: o
          image: quay.io/a/cron:2
          args: [--prometheus-config-reloader=quay.io/p/reloader:v1, --other=x:1]
---
apiVersion: v1
kind: Pod
metadata: {name: p}
spec:
  containers: [{name: c, image: quay.io/a/cron:2}]
---
apiVersion: batch/v1
kind: Job
metadata:
  name: hook
  annotations: {helm.sh/hook: post-install}
spec:
  template:
    spec:
      containers: [{name: c, image: quay.io/jetstack/cert-manager-startupapicheck:v1}]
---
apiVersion: monitoring.coreos.com/v1
kind: Prometheus
metadata: {name: p}
spec: {image: quay.io/prometheus/prometheus:v3.0.0}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: x}
data: {image: not-an-image}
";
        let m = crate::kube::parse("t", yaml).unwrap();
        let got: Vec<String> = images_in(&m).unwrap().iter().map(ImageName::full).collect();
        assert_eq!(
            got,
            [
                "docker.io/library/busybox:1",
                "quay.io/a/cron:2",
                "quay.io/p/reloader:v1",
                "quay.io/prometheus/prometheus:v3.0.0"
            ]
        );
    }
}
