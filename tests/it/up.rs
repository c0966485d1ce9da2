//! `pulsedev up` end to end on this machine: the real binary, a real Docker engine
//! (fixture services built FROM scratch, a registry container standing in for
//! `registry:3`, a busybox node container), the real Helm engine over the real charts,
//! a recording fake `kind`, and the stateful fake API server.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::apiserver::{CERT_MANAGER_CRDS, FakeApiServer, Options};
use crate::fakes::{self, FAKE_KIND};
use crate::harness::{Pd, Run, docker_host, free_ports, repo_root};
use crate::support;

const SERVICES: [&str; 4] = ["api", "migrations", "web", "worker"];

/// Everything one `up` test needs, removed again on drop.
pub(crate) struct World {
    pub(crate) pd: Pd,
    pub(crate) api: FakeApiServer,
    pub(crate) name: String,
    host: String,
    kind_dir: PathBuf,
    /// Removes the node, the registry container and the network on drop.
    _node: NodeWorld,
}

/// What kind would have made, standing in: the control-plane node container of cluster
/// `name` (labelled as kind labels it) on its own network, and the registry stand-in
/// image. Dropping it removes the node, the registry container and the network.
pub(crate) struct NodeWorld {
    pub(crate) host: String,
    pub(crate) name: String,
    pub(crate) network: String,
    pub(crate) registry_image: String,
}

impl NodeWorld {
    /// The node runs `image` (which must keep running), or the busybox node stand-in.
    pub(crate) fn start(host: &str, name: &str, image: Option<&str>) -> NodeWorld {
        let network = format!("{name}-net");
        let registry_image = fakes::rt().block_on(async {
            let d = fakes::docker(host).await;
            let _ = d
                .create_network(bollard::models::NetworkCreateRequest {
                    name: network.clone(),
                    ..Default::default()
                })
                .await;
            let node = format!("{name}-control-plane");
            let labels = [
                ("io.x-k8s.kind.cluster", name),
                ("io.x-k8s.kind.role", "control-plane"),
            ];
            match image {
                Some(image) => fakes::run_container_of(&d, image, &node, &labels).await,
                None => fakes::run_container(&d, &node, &labels).await,
            }
            d.connect_network(
                &network,
                bollard::models::NetworkConnectRequest {
                    container: node.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let engine = support::docker::engine("node world").await.unwrap();
            let ctx = tempfile::tempdir().unwrap();
            support::registry::stand_in_context(ctx.path());
            support::build::build(&engine, "registry-stand-in", ctx.path())
                .await
                .reference()
        });
        NodeWorld {
            host: host.to_string(),
            name: name.to_string(),
            network,
            registry_image,
        }
    }
}

impl Drop for NodeWorld {
    fn drop(&mut self) {
        fakes::rt().block_on(async {
            let d = fakes::docker(&self.host).await;
            fakes::remove_container(&d, &format!("{}-control-plane", self.name)).await;
            fakes::remove_container(&d, &format!("pulsedev-{}-registry", self.name)).await;
            let _ = d.remove_network(&self.network).await;
        });
    }
}

pub(crate) fn tgz(entries: &[(&str, String)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (path, text) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_size(text.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, path, text.as_bytes()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn chart(name: &str, version: &str, templates: &[(&str, String)]) -> Vec<u8> {
    let mut entries = vec![(
        format!("{name}/Chart.yaml"),
        format!(
            "apiVersion: v2\nname: {name}\nversion: {}\n",
            version.trim_start_matches('v')
        ),
    )];
    for (file, text) in templates {
        // `crds/…` is the chart's CRD folder (rendered only with --include-crds).
        let path = if file.starts_with("crds/") {
            format!("{name}/{file}")
        } else {
            format!("{name}/templates/{file}")
        };
        entries.push((path, text.clone()));
    }
    let refs: Vec<(&str, String)> = entries
        .iter()
        .map(|(p, t)| (p.as_str(), t.clone()))
        .collect();
    tgz(&refs)
}

/// Like most charts' templates, without a namespace: `helm template -n` and the apply
/// engine's default namespace decide where it goes.
fn deployment(name: &str, app: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{app.kubernetes.io/name: {app}}}\nspec:\n  selector: {{matchLabels: {{app.kubernetes.io/name: {app}}}}}\n  template:\n    metadata: {{labels: {{app.kubernetes.io/name: {app}}}}}\n    spec:\n      containers: [{{name: {app}, image: \"{image}\"}}]\n"
    )
}

fn statefulset(name: &str, app: &str, image: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: {name}\nspec:\n  serviceName: {name}\n  selector: {{matchLabels: {{app.kubernetes.io/name: {app}}}}}\n  template:\n    metadata: {{labels: {{app.kubernetes.io/name: {app}}}}}\n    spec:\n      containers: [{{name: {app}, image: \"{image}\"}}]\n"
    )
}

fn crd(group: &str, kind: &str, plural: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{kind: {kind}, plural: {plural}, singular: {}, listKind: {kind}List}}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n",
        kind.to_lowercase()
    )
}

/// Stand-ins for the observability add-on charts: the operator chart brings the
/// monitoring CRDs, Grafana (with its Ingress) and, standing in for the operator, the
/// Prometheus and Alertmanager StatefulSets; the others one workload each.
fn seed_observability_charts(cache: &Path) {
    let pins = pulsedev::stack::load_pins(repo_root()).unwrap();
    let dir = cache.join("pulsedev/charts");
    std::fs::create_dir_all(&dir).unwrap();
    for (key, c) in pins.iter().filter(|(_, c)| c.optional.is_some()) {
        let mut templates = Vec::new();
        if c.chart == "kube-prometheus-stack" {
            templates.push((
                "crds/monitoring.yaml".to_string(),
                format!(
                    "{}---\n{}",
                    crd("monitoring.coreos.com", "ServiceMonitor", "servicemonitors"),
                    crd("monitoring.coreos.com", "PrometheusRule", "prometheusrules")
                ),
            ));
            templates.push(("grafana-ingress.yaml".to_string(), "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: grafana\n  namespace: {{ .Release.Namespace }}\nspec:\n  ingressClassName: nginx\n  rules:\n    - host: grafana.pulsewatch.localhost\n      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: grafana, port: {number: 80}}}}]}\n".to_string()));
        }
        for w in &c.wait {
            let (kind, name) = w.split_once('/').unwrap();
            let text = match kind {
                "Deployment" => deployment(name, name, "stand-in:1"),
                _ => statefulset(name, name, "stand-in:1"),
            };
            templates.push((format!("{name}.yaml"), text));
        }
        assert!(!templates.is_empty(), "{key}");
        std::fs::write(
            dir.join(format!("{}-{}.tgz", c.chart, c.version)),
            chart(
                &c.chart,
                &c.version,
                &templates
                    .iter()
                    .map(|(f, t)| (f.as_str(), t.clone()))
                    .collect::<Vec<_>>(),
            ),
        )
        .unwrap();
    }
}

/// The platform charts `up` would fetch, as small stand-ins in pulsedev's chart cache.
fn seed_platform_charts(cache: &Path) {
    let dir = cache.join("pulsedev/charts");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, bytes) in platform_chart_archives() {
        std::fs::write(dir.join(file), bytes).unwrap();
    }
}

/// Small stand-ins for the platform charts `up` fetches: (archive file name, bytes).
pub(crate) fn platform_chart_archives() -> Vec<(String, Vec<u8>)> {
    let pins = pulsedev::stack::load_pins(repo_root()).unwrap();
    let mut out = Vec::new();
    let ingress = &pins["ingress"];
    out.push((
        format!("{}-{}.tgz", ingress.chart, ingress.version),
        chart(
            &ingress.chart,
            &ingress.version,
            &[(
                "controller.yaml",
                deployment(
                    "nginx-ingress-controller",
                    "nginx-ingress",
                    "nginx/nginx-ingress:5.6.2",
                ),
            )],
        ),
    ));
    let cm = &pins["cert-manager"];
    // The CRDs without the Namespace document (manifests/dev makes the namespace).
    let crds: String = CERT_MANAGER_CRDS
        .split("\n---")
        .filter(|d| d.contains("CustomResourceDefinition"))
        .map(|d| format!("---{d}\n"))
        .collect();
    out.push((
        format!("{}-{}.tgz", cm.chart, cm.version),
        chart(
            &cm.chart,
            &cm.version,
            &[
                ("crds.yaml", crds),
                ("controller.yaml", deployment("cert-manager", "cert-manager", "quay.io/jetstack/cert-manager-controller:v1.21.1")),
                ("webhook.yaml", deployment("cert-manager-webhook", "webhook", "quay.io/jetstack/cert-manager-webhook:v1.21.1")),
                (
                    "cainjector.yaml",
                    deployment(
                        "cert-manager-cainjector",
                        "cainjector",
                        "quay.io/jetstack/cert-manager-cainjector:v1.21.1",
                    ),
                ),
                (
                    "startupapicheck.yaml",
                    "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: startupapicheck\n  annotations: {helm.sh/hook: post-install}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: \"x:1\"}]\n".to_string(),
                ),
            ],
        ),
    ));
    out
}

/// The project's manifests for a sandbox whose platform charts are stand-ins: every
/// file is the repository's (symlinked) except manifests/platform/pins.toml, a copy
/// without the pinned SHA-256s (those name the real release archives, which a stand-in
/// is not), so the stand-ins are trusted as pulsedev's own downloads are.
pub(crate) fn stand_in_manifests(work: &Path) {
    let repo = repo_root().join("manifests");
    let dir = work.join("manifests");
    std::fs::create_dir_all(dir.join("platform")).unwrap();
    for e in std::fs::read_dir(&repo).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "platform" {
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
    for e in std::fs::read_dir(repo.join("platform")).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "pins.toml" {
            std::os::unix::fs::symlink(e.path(), dir.join("platform").join(e.file_name())).unwrap();
        }
    }
    std::fs::copy(
        repo.join("platform/pins.toml"),
        dir.join("platform/pins.toml"),
    )
    .unwrap();
    unpin_charts(&dir.join("platform/pins.toml"));
}

/// Clears every pinned chart SHA-256 of the pins file at `path` (a sandbox's copy).
pub(crate) fn unpin_charts(path: &Path) {
    let pins = std::fs::read_to_string(path).unwrap();
    let unpinned = regex::Regex::new(r#"(?m)^sha256 = "[0-9a-f]{64}"$"#)
        .unwrap()
        .replace_all(&pins, r#"sha256 = """#);
    std::fs::write(path, unpinned.as_ref()).unwrap();
}

/// What pulsedev keeps after downloading each archive in `dir` itself: its SHA-256 in
/// `<archive>.sha256` (`stack::recorded_digest`).
pub(crate) fn record_downloads(dir: &Path) {
    use sha2::Digest;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "tgz") {
            let digest = hex::encode(sha2::Sha256::digest(std::fs::read(&path).unwrap()));
            std::fs::write(
                pulsedev::stack::recorded_digest(&path),
                format!("{digest}\n"),
            )
            .unwrap();
        }
    }
}

/// A service context FROM scratch: busybox and one file whose content we change.
fn write_service(dir: &Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    // A fresh nonce: images of earlier test runs must not make this one's skip.
    std::fs::write(
        dir.join("app.txt"),
        format!("{name} {}\n", support::build::nonce()),
    )
    .unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY app.txt /app.txt\nUSER 10001:10001\nCMD [\"/bin/busybox\", \"sleep\", \"3600\"]\n",
    )
    .unwrap();
}

impl World {
    /// None (after a notice) when no Docker engine answers outside CI.
    pub(crate) fn new(opts: impl FnOnce(Options) -> Options) -> Option<World> {
        let host = docker_host()?;
        let name = fakes::unique("up");
        let node = NodeWorld::start(&host, &name, None);
        let network = node.network.clone();
        let registry_image = node.registry_image.clone();

        let api = FakeApiServer::start(opts(Options::new(&name)));
        let [http, https, registry] = free_ports();
        let pd = fakes::with_node_image(Pd::new(), &host)
            .tool("kind", FAKE_KIND)
            .tool("docker", fakes::FAKE_DOCKER_CLI)
            .with_helm()
            .env("DOCKER_HOST", &host)
            .env("FAKE_API", api.url())
            .env("PULSEDEV_REGISTRY_IMAGE", registry_image)
            .env("KIND_EXPERIMENTAL_DOCKER_NETWORK", &network)
            .args(&[
                "--name",
                &name,
                "--http-port",
                &http.to_string(),
                "--https-port",
                &https.to_string(),
                "--registry-port",
                &registry.to_string(),
            ]);
        let kind_dir = pd.home.path().join("kind");
        std::fs::create_dir_all(&kind_dir).unwrap();
        let mut pd = pd.env("FAKE_KIND_DIR", kind_dir.display().to_string());
        for (k, v) in api.kind_credentials() {
            pd = pd.env(k, v);
        }
        seed_platform_charts(&pd.home.path().join("cache"));
        seed_observability_charts(&pd.home.path().join("cache"));
        record_downloads(&pd.home.path().join("cache/pulsedev/charts"));
        stand_in_manifests(pd.work.path());
        let mut toml = String::new();
        for s in SERVICES {
            write_service(&pd.work.path().join("svc").join(s), s);
            toml.push_str(&format!(
                "[services.{s}]\ncontext = \"svc/{s}\"\nchart = \"manifests/charts/{s}\"\n"
            ));
        }
        pd.write("pulsedev.toml", &toml);
        Some(World {
            pd,
            api,
            name,
            host,
            kind_dir,
            _node: node,
        })
    }

    fn up(&self, extra: &[&str]) -> Run {
        let mut args = vec!["up", "--output", "json", "--timeout", "60"];
        args.extend_from_slice(extra);
        self.pd.run_with(&args)
    }

    pub(crate) fn change(&self, service: &str, text: &str) {
        std::fs::write(
            self.pd
                .work
                .path()
                .join("svc")
                .join(service)
                .join("app.txt"),
            text,
        )
        .unwrap();
    }
}

fn step<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no step {name} in {doc:#}"))
}

fn secs(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not seconds: {v}"))
}

/// Every secret value the fake API server holds, raw and base64.
fn secret_values(api: &FakeApiServer) -> Vec<String> {
    use base64::Engine as _;
    let mut out = Vec::new();
    for s in api.objects_of("Secret") {
        for field in ["data", "stringData"] {
            if let Some(map) = s[field].as_object() {
                for v in map.values() {
                    let v = v.as_str().unwrap_or_default().to_string();
                    // The server folds stringData into data (ssa.rs `round_trip`): judge
                    // a value by its decoded length, so a short non-secret such as the
                    // database user name is not taken for a secret.
                    let raw = match field {
                        "data" => base64::engine::general_purpose::STANDARD
                            .decode(&v)
                            .map(|r| String::from_utf8_lossy(&r).into_owned())
                            .unwrap_or_else(|_| v.clone()),
                        _ => v.clone(),
                    };
                    if raw.len() < 16 {
                        continue;
                    }
                    if raw != v {
                        out.push(raw);
                    }
                    out.push(v);
                }
            }
        }
    }
    out
}

#[test]
fn up_brings_the_stack_up_converges_and_rolls_out_only_what_changed() {
    let Some(w) = World::new(|o| o) else { return };

    // First run: everything is made.
    let first = w.up(&[]);
    let doc = first.json();
    assert_eq!(first.code, 0, "{doc:#}\n{}", first.stderr);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["cluster"]["name"], w.name.as_str());
    assert_eq!(doc["cluster"]["context"], format!("kind-{}", w.name));
    let urls: Vec<&str> = doc["urls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        urls.iter()
            .any(|u| u.starts_with("https://api.pulsewatch.localhost:")),
        "{urls:?}"
    );
    assert!(
        urls.iter()
            .any(|u| u.starts_with("https://pulsewatch.localhost:")),
        "{urls:?}"
    );
    for s in [
        "preflight",
        "tools",
        "cluster",
        "images",
        "registry",
        "deliver",
        "namespaces",
        "platform-charts",
        "ingress-controller",
        "cert-manager",
        "data-stores",
        "local-ca",
        "migrations",
        "services",
        "prune",
    ] {
        assert_ne!(step(&doc, s)["status"], "failed", "{s}: {doc:#}");
        assert_ne!(step(&doc, s)["status"], "not-run", "{s}: {doc:#}");
    }
    assert_eq!(step(&doc, "cluster")["status"], "done");
    assert_eq!(step(&doc, "images")["status"], "done");
    // Nothing in the image cache (no `fetch`): the nodes pull the workload images, as
    // before; nothing is rendered or imported for them.
    let workload = step(&doc, "workload-images");
    assert_eq!(workload["status"], "skipped", "{workload}");
    assert!(
        workload["detail"]
            .as_str()
            .unwrap()
            .contains("the nodes pull them"),
        "{workload}"
    );
    // The image builds run while the cluster is made: both start together.
    assert_eq!(
        step(&doc, "images")["start"],
        step(&doc, "cluster")["start"]
    );
    // Dependencies: migrations after the data stores and the delivered images; the
    // services after the migrations, the local CA and the ingress controller.
    let end = |s: &str| secs(&step(&doc, s)["end"]);
    let start = |s: &str| secs(&step(&doc, s)["start"]);
    assert!(start("migrations") >= end("data-stores") && start("migrations") >= end("deliver"));
    for before in ["migrations", "local-ca", "ingress-controller"] {
        assert!(
            start("services") >= end(before),
            "services started before {before}"
        );
    }
    // The platform and the data stores overlap.
    assert!(
        start("data-stores") < end("cert-manager") && start("cert-manager") < end("data-stores")
    );
    // What reached the API server: images from the local registry, by digest.
    let api_dep = w
        .api
        .object("Deployment", "pulsewatch-dev", "api")
        .expect("api deployed");
    let image = api_dep["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        image.starts_with(&format!("localhost:{}/pulsewatch-api:", step_port(&doc))),
        "{image}"
    );
    assert!(image.contains("@sha256:"), "{image}");
    // The HTTPS port is not 443 here: the web's API URL and the api's CORS origin carry it.
    let https = doc["cluster"]["ports"]["https"].as_u64().unwrap();
    let api_config = w
        .api
        .object("ConfigMap", "pulsewatch-dev", "api")
        .unwrap()
        .to_string();
    assert!(
        api_config.contains(&format!("https://pulsewatch.localhost:{https}")),
        "{api_config}"
    );
    let web_config = w
        .api
        .object("ConfigMap", "pulsewatch-dev", "web")
        .unwrap()
        .to_string();
    assert!(
        web_config.contains(&format!("https://api.pulsewatch.localhost:{https}")),
        "{web_config}"
    );
    let migrations_jobs = w.api.objects_of("Job");
    assert_eq!(migrations_jobs.len(), 1, "one migrations Job");
    // kind was asked to create exactly this cluster, once.
    let calls = fakes::kind_calls(&w.kind_dir);
    assert_eq!(
        calls
            .iter()
            .filter(|c| c.starts_with("create cluster"))
            .count(),
        1,
        "{calls:?}"
    );
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with(&format!("create cluster --name {}", w.name))),
        "{calls:?}"
    );
    assert!(w.api.unexpected().is_empty(), "{:?}", w.api.unexpected());

    // Second run: nothing to build, deliver or roll out.
    let applies_before = w.api.applies().len();
    let second = w.up(&[]);
    let doc2 = second.json();
    assert_eq!(second.code, 0, "{doc2:#}\n{}", second.stderr);
    assert_eq!(step(&doc2, "cluster")["status"], "skipped");
    assert_eq!(step(&doc2, "images")["status"], "skipped");
    assert_eq!(step(&doc2, "deliver")["status"], "skipped");
    assert_eq!(doc2["rolled_out"], serde_json::json!([]));
    let changed: Vec<String> = w.api.applies()[applies_before..]
        .iter()
        .filter(|a| a.changed)
        .map(|a| format!("{} {}/{}", a.kind, a.namespace, a.name))
        .collect();
    assert!(changed.is_empty(), "a second up changed {changed:?}");

    // One service changed: that image is rebuilt and that Deployment rolled out.
    w.change("api", &format!("api {}\n", support::build::nonce()));
    let third = w.up(&[]);
    let doc3 = third.json();
    assert_eq!(third.code, 0, "{doc3:#}\n{}", third.stderr);
    assert_eq!(step(&doc3, "images")["detail"], "built api");
    assert_eq!(
        doc3["rolled_out"],
        serde_json::json!(["Deployment/pulsewatch-dev/api"])
    );
    let new_image = w.api.object("Deployment", "pulsewatch-dev", "api").unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_image, image);

    // No secret value ever reached any output.
    let secrets = secret_values(&w.api);
    assert!(
        secrets.len() >= 3,
        "the dev secrets exist: {}",
        secrets.len()
    );
    for run in [&first, &second, &third] {
        for s in &secrets {
            assert!(
                !run.stdout.contains(s.as_str()) && !run.stderr.contains(s.as_str()),
                "a secret leaked"
            );
        }
    }

    // The human summary of a converged stack.
    let human = w.pd.run_with(&["up", "--timeout", "60"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(
        human
            .stdout
            .starts_with(&format!("PulseWatch is up on cluster {}", w.name)),
        "{}",
        human.stdout
    );
    assert!(
        human
            .stdout
            .contains("nothing was rolled out: everything was current")
    );
    assert!(human.stdout.contains("`pulsedev trust`"));

    // A new registry port takes effect on the same cluster (it is not part of its
    // definition): the registry moves, the images follow.
    let [port, _, _] = free_ports();
    let moved = w.pd.run_with(&[
        "--registry-port",
        &port.to_string(),
        "up",
        "--output",
        "json",
        "--timeout",
        "60",
    ]);
    assert_eq!(moved.code, 0, "{}\n{}", moved.stdout, moved.stderr);
    let m = moved.json();
    assert_eq!(m["cluster"]["registry_port"], port);
    assert_eq!(step(&m, "cluster")["status"], "skipped");
    let image = w.api.object("Deployment", "pulsewatch-dev", "api").unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(image.starts_with(&format!("localhost:{port}/")), "{image}");

    // reset: the cluster is deleted and made again, then everything converges.
    let reset =
        w.pd.run_with(&["reset", "--yes", "--output", "json", "--timeout", "60"]);
    assert_eq!(reset.code, 0, "{}\n{}", reset.stdout, reset.stderr);
    assert!(
        reset.stderr.contains("reset deletes the cluster"),
        "{}",
        reset.stderr
    );
    assert_eq!(reset.json()["cluster"]["created"], true);
    let calls = fakes::kind_calls(&w.kind_dir);
    let last_delete = calls
        .iter()
        .rposition(|c| c.starts_with("delete cluster"))
        .expect("reset deleted");
    let last_create = calls
        .iter()
        .rposition(|c| c.starts_with("create cluster"))
        .unwrap();
    assert!(last_delete < last_create, "{calls:?}");

    // down removes what pulsedev made; a second down finds nothing.
    let down = w.pd.run_with(&["down", "--output", "json"]);
    assert_eq!(down.code, 0, "{}", down.stderr);
    let d = down.json();
    assert_eq!(d["down"]["cluster_deleted"], true, "{d:#}");
    assert_eq!(d["down"]["registry_removed"], true, "{d:#}");
    assert!(!fakes::state_dir(w.pd.home.path(), &w.name).exists());
    let again = w.pd.run_with(&["down"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("nothing to remove"),
        "{}",
        again.stdout
    );
}

fn step_port(doc: &Value) -> u64 {
    doc["cluster"]["registry_port"].as_u64().unwrap()
}

/// The whole of `up` over HTTPS, as on kind: the fake kind writes the kubeconfig kind
/// writes (the cluster CA, the admin's client certificate and key; fakes.rs FAKE_KIND)
/// and the API server refuses any request without that certificate (apiserver/tls.rs),
/// so cluster readiness, apply, webhook gates, waits, prune and a rollout all go
/// through pulsedev's TLS client as they would on a real cluster.
#[test]
fn up_runs_over_https_with_the_kubeconfig_kind_writes() {
    let Some(w) = World::new(|o| o.tls()) else {
        return;
    };
    assert!(w.api.url().starts_with("https://"), "{}", w.api.url());
    let first = w.up(&[]);
    let doc = first.json();
    assert_eq!(first.code, 0, "{doc:#}\n{}", first.stderr);
    for s in [
        "cluster",
        "namespaces",
        "ingress-controller",
        "cert-manager",
        "data-stores",
        "local-ca",
        "migrations",
        "services",
        "prune",
    ] {
        assert_ne!(step(&doc, s)["status"], "failed", "{s}: {doc:#}");
        assert_ne!(step(&doc, s)["status"], "not-run", "{s}: {doc:#}");
    }
    assert_eq!(step(&doc, "cluster")["status"], "done");
    // The kubeconfig pulsedev used is kind's: certificates, no token.
    let kubeconfig =
        std::fs::read_to_string(fakes::state_dir(w.pd.home.path(), &w.name).join("kubeconfig"))
            .unwrap();
    for field in [
        "certificate-authority-data: ",
        "client-certificate-data: ",
        "client-key-data: ",
        &format!("server: {}", w.api.url()),
    ] {
        assert!(kubeconfig.contains(field), "{field}: {kubeconfig}");
    }
    assert!(!kubeconfig.contains("token"), "{kubeconfig}");
    // Every request carried the admin's certificate: none was the anonymous user's.
    let refused: Vec<String> = w
        .api
        .calls()
        .iter()
        .filter(|c| c.status == 403)
        .map(|c| c.line())
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert!(
        w.api
            .object("Deployment", "pulsewatch-dev", "api")
            .is_some()
    );

    // A changed service rolls out over HTTPS too, through the controller's many passes.
    w.change("api", &format!("api {}\n", support::build::nonce()));
    let again = w.up(&[]);
    let doc2 = again.json();
    assert_eq!(again.code, 0, "{doc2:#}\n{}", again.stderr);
    assert_eq!(
        doc2["rolled_out"],
        serde_json::json!(["Deployment/pulsewatch-dev/api"])
    );
    let d = w.api.object("Deployment", "pulsewatch-dev", "api").unwrap();
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    assert_eq!(d["status"]["updatedReplicas"], d["spec"]["replicas"]);
    assert_eq!(d["status"]["availableReplicas"], d["spec"]["replicas"]);
    assert!(w.api.unexpected().is_empty(), "{:?}", w.api.unexpected());
}

#[test]
fn a_failing_migrations_job_stops_the_services_with_its_reason() {
    let Some(w) = World::new(|o| o.fail_jobs("migrations")) else {
        return;
    };
    let run = w.up(&[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["id"], "migrations-failed", "{doc:#}");
    assert_eq!(step(&doc, "migrations")["status"], "failed");
    assert_eq!(step(&doc, "services")["status"], "not-run");
    assert!(
        w.api
            .object("Deployment", "pulsewatch-dev", "api")
            .is_none(),
        "the services were not deployed"
    );
    let text = doc["error"].to_string();
    assert!(
        text.contains("V2__check_results.sql"),
        "the Job's log tail is shown: {text}"
    );

    // Fixed outside the image (say, the database was not ready): the next `up` runs the
    // Job again instead of finding it Failed.
    w.api.configure(|o| o.failing_jobs.clear());
    let again = w.up(&[]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(
        again.stderr.contains("deleted the failed Job"),
        "{}",
        again.stderr
    );
    assert!(
        w.api
            .object("Deployment", "pulsewatch-dev", "api")
            .is_some()
    );
}

/// Issue 13: an API server that quotes the request body in its 422 (as a webhook or a
/// field.Invalid does) must not make pulsedev print the dev password: not in the
/// progress lines, the step table, the error, -v output or the JSON document.
#[test]
fn a_server_echoing_the_secret_it_was_sent_never_gets_it_printed() {
    let Some(w) = World::new(|o| {
        o.fault_echoing(
            "POST",
            "/secrets",
            422,
            "Invalid",
            "Secret \"pulsewatch-db\" is invalid: admission webhook \"policy.example.com\" denied the request: ",
            2,
        )
    }) else {
        return;
    };
    let human = w.pd.run_with(&["-v", "up", "--timeout", "60"]);
    let json = w.up(&["-v"]);
    let mut echoed = Vec::new();
    w.api.configure(|o| echoed = o.faults[0].echoed.clone());
    assert_eq!(
        echoed.len(),
        2,
        "both runs sent a Secret the server echoed:\n{}\n{}",
        human.stderr,
        json.stdout
    );
    for (run, body) in [(&human, &echoed[0]), (&json, &echoed[1])] {
        assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
        let sent: Value = serde_json::from_str(body).unwrap();
        let password = sent["stringData"]["password"].as_str().unwrap();
        assert!(password.len() >= 32, "{body}");
        let all = format!("{}\n{}", run.stdout, run.stderr);
        assert!(
            all.contains("policy.example.com"),
            "the server's message is still shown: {all}"
        );
        assert!(!all.contains(password), "the password leaked:\n{all}");
        assert!(
            all.contains("[redacted secret pulsewatch-db:password]"),
            "{all}"
        );
    }
    assert_eq!(
        json.json()["error"]["id"],
        "apply-failed",
        "{}",
        json.stdout
    );
}

#[test]
fn ctrl_c_during_up_undoes_the_cluster_this_run_created() {
    let Some(w) = World::new(|o| o.ready_after(Duration::from_secs(120))) else {
        return;
    };
    let child =
        w.pd.command_with(&["up", "--timeout", "300"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    // Wait until the run is waiting for readiness (the cluster exists by then).
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while w.api.objects_of("Deployment").is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("error[interrupted]"), "{stderr}");
    let calls = fakes::kind_calls(&w.kind_dir);
    assert!(
        calls
            .iter()
            .any(|c| c.starts_with(&format!("delete cluster --name {}", w.name))),
        "the cluster this run made was deleted: {calls:?}"
    );
    // The registry container this run made is gone too.
    let rt = fakes::rt();
    let gone = rt.block_on(async {
        let d = fakes::docker(&w.host).await;
        fakes::container_state(&d, &format!("pulsedev-{}-registry", w.name)).await
    });
    assert_eq!(gone, None, "{stderr}");
}

/// The same flow on a real kind cluster, with the real app, through the real ingress
/// and the local CA (the e2e workflow runs it on a hosted runner).
#[test]
#[ignore = "needs docker, kind and network"]
fn up_on_a_real_kind_cluster() {
    let name = std::env::var("PULSEDEV_E2E_NAME").unwrap_or_else(|_| "e2e-rust".into());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(crate::harness::BIN)
            .args(["--name", &name])
            .args(args)
            .current_dir(repo_root())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.code(), stdout, stderr)
    };
    let (code, stdout, stderr) = run(&["up", "--ci", "--output", "json"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca = ca_dir.path().join("ca.crt");
    let (code, _, stderr) = run(&["trust", "--ci", "--out", ca.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stderr}");
    let pem = std::fs::read(&ca).unwrap();
    let rt = fakes::rt();
    for url in doc["urls"].as_array().unwrap() {
        let url = url.as_str().unwrap();
        let parsed = reqwest::Url::parse(url).unwrap();
        let host = parsed.host_str().unwrap().to_string();
        let port = parsed.port().unwrap_or(443);
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .resolve(&host, std::net::SocketAddr::from(([127, 0, 0, 1], port)))
            .build()
            .unwrap();
        let path = if host.starts_with("api.") {
            "/health"
        } else {
            "/"
        };
        let status = rt.block_on(async {
            let mut last = None;
            for _ in 0..20 {
                match client.get(format!("{url}{path}")).send().await {
                    Ok(r) if r.status().is_success() => return r.status(),
                    Ok(r) => last = Some(r.status().to_string()),
                    Err(e) => last = Some(e.to_string()),
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
            panic!("{url}{path} never answered 2xx: {last:?}");
        });
        assert!(status.is_success());
    }
    let (code, stdout, stderr) = run(&["up", "--ci", "--output", "json"]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let again: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(step(&again, "images")["status"], "skipped");
    assert_eq!(again["rolled_out"], serde_json::json!([]));
    let (code, _, stderr) = run(&["down", "--ci"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn up_with_observability_runs_beside_the_data_stores_without_delaying_the_services() {
    let Some(w) = World::new(|o| o) else { return };
    let run = w.up(&["--with", "observability"]);
    let doc = run.json();
    assert_eq!(run.code, 0, "{doc:#}\n{}", run.stderr);
    assert_eq!(step(&doc, "observability")["status"], "done", "{doc:#}");
    assert_eq!(
        step(&doc, "monitoring-objects")["status"],
        "done",
        "{doc:#}"
    );
    // In parallel with the data stores...
    let s = |n: &str| secs(&step(&doc, n)["start"]);
    let e = |n: &str| secs(&step(&doc, n)["end"]);
    assert!(
        s("observability") < e("data-stores") && s("data-stores") < e("observability"),
        "{doc:#}"
    );
    // ...and nothing the services wait for waits for it.
    let needs = |n: &str| -> Vec<String> {
        step(&doc, n)["needs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    };
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec!["services".to_string()];
    while let Some(n) = todo.pop() {
        for d in needs(&n) {
            if seen.insert(d.clone()) {
                todo.push(d);
            }
        }
    }
    assert!(
        !seen.contains("observability"),
        "services depend on observability: {seen:?}"
    );
    // Grafana's URL on the same local TLS; the scrape and the dashboards applied.
    let urls = doc["urls"].to_string();
    assert!(
        urls.contains("https://grafana.pulsewatch.localhost:"),
        "{urls}"
    );
    assert!(
        w.api
            .object("ServiceMonitor", "pulsewatch-dev", "api")
            .is_some()
    );
    assert!(
        w.api
            .object("Secret", "monitoring", "grafana-admin")
            .is_some()
    );
    let config = w.api.object("ConfigMap", "pulsewatch-dev", "api").unwrap();
    assert!(
        config.to_string().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "the api exports traces: {config}"
    );
    for secret in secret_values(&w.api) {
        assert!(
            !run.stdout.contains(&secret) && !run.stderr.contains(&secret),
            "a secret leaked"
        );
    }
    // status lists the observability components.
    let status = w.pd.run_with(&["status", "--output", "json"]);
    assert_eq!(status.code, 0, "{}\n{}", status.stdout, status.stderr);
    assert!(
        status.stdout.contains("\"observability\""),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("monitoring/otel-collector"),
        "{}",
        status.stdout
    );
    // Without the flag the next up removes the add-on again (prune).
    let off = w.up(&[]);
    assert_eq!(off.code, 0, "{}", off.stderr);
    assert!(
        w.api
            .object("Deployment", "monitoring", "otel-collector")
            .is_none(),
        "{}",
        off.stdout
    );
}

/// Issue 11: turning observability off prunes the monitoring namespace and CRDs, and
/// waits until the (lagging) namespace and CRD controllers are done; turning it on again
/// right after works (no 403 NamespaceTerminating, no custom resource lost to a
/// terminating CRD).
#[test]
fn turning_observability_off_waits_for_its_namespace_and_crds_so_turning_it_on_again_works() {
    let Some(w) = World::new(|mut o| {
        o.deletion_lag = 3;
        o
    }) else {
        return;
    };
    let kinds = |w: &World| -> String {
        w.api
            .object("ConfigMap", "kube-system", "pulsedev-pulsewatch")
            .and_then(|i| {
                i["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default()
    };
    let on = w.up(&["--with", "observability"]);
    assert_eq!(on.code, 0, "{}", on.stderr);
    let recorded_on = kinds(&w);

    let off = w.up(&[]);
    let doc = off.json();
    assert_eq!(off.code, 0, "{doc:#}\n{}", off.stderr);
    // Gone, not Terminating, when `up` returns.
    assert!(
        w.api.object("Namespace", "", "monitoring").is_none(),
        "{:#}",
        w.api.object("Namespace", "", "monitoring").unwrap()
    );
    assert!(
        w.api
            .objects_of("CustomResourceDefinition")
            .iter()
            .all(|c| c["spec"]["group"] != "monitoring.coreos.com")
    );
    assert!(w.api.objects_of("ServiceMonitor").is_empty());
    let recorded_off = kinds(&w);

    // At once: nothing is Terminating any more, so this apply is not refused.
    let again = w.up(&["--with", "observability"]);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(
        w.api
            .object("ServiceMonitor", "pulsewatch-dev", "api")
            .is_some_and(|o| o["metadata"]["deletionTimestamp"].is_null())
    );
    assert!(w.api.object("Namespace", "", "monitoring").is_some());

    // The report says what went; the inventory grew and shrank with the add-on.
    let detail = step(&doc, "prune")["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.starts_with("removed "), "{detail}");
    for what in [
        "1 Namespace",
        "2 CustomResourceDefinition",
        "(namespaces monitoring)",
    ] {
        assert!(detail.contains(what), "{what}: {detail}");
    }
    assert!(
        recorded_on.contains("ServiceMonitor.monitoring.coreos.com"),
        "{recorded_on}"
    );
    assert!(
        !recorded_off.is_empty() && !recorded_off.contains("monitoring.coreos.com"),
        "{recorded_off}"
    );
}

#[test]
fn a_platform_chart_that_cannot_be_fetched_fails_with_its_id() {
    let Some(w) = World::new(|o| o) else { return };
    let pins = pulsedev::stack::load_pins(repo_root()).unwrap();
    let cm = &pins["cert-manager"];
    std::fs::remove_file(
        w.pd.home
            .path()
            .join("cache/pulsedev/charts")
            .join(format!("{}-{}.tgz", cm.chart, cm.version)),
    )
    .unwrap();
    // The Helm engine of the tests has no `pull`, like a helm without network.
    let run = w.up(&[]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["error"]["id"], "chart-fetch-failed", "{doc:#}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cert-manager chart v1.21.1")
    );
    assert!(doc["error"]["hint"].as_str().unwrap().contains("network"));
    assert_eq!(step(&doc, "platform-charts")["status"], "failed");
    assert_eq!(step(&doc, "cert-manager")["status"], "not-run");
}

#[test]
fn ctrl_c_after_a_failure_still_exits_130_and_keeps_the_failure() {
    let Some(w) = World::new(|o| o) else { return };
    let pins = pulsedev::stack::load_pins(repo_root()).unwrap();
    let cm = &pins["cert-manager"];
    std::fs::remove_file(
        w.pd.home
            .path()
            .join("cache/pulsedev/charts")
            .join(format!("{}-{}.tgz", cm.chart, cm.version)),
    )
    .unwrap();
    // kind hangs, so the run is still busy when platform-charts has already failed.
    let mut child =
        w.pd.command_with(&["up", "--timeout", "60"])
            .env("FAKE_KIND_MODE", "hang")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let lines = crate::harness::stderr_lines(&mut child);
    // The signal goes out once both are observable, however slow the machine: the
    // failure's line on stderr and the hanging kind's pid file.
    let mut seen = String::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !seen.contains("platform-charts: FAILED") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push_str(&(line + "\n")),
            Err(_) => panic!("platform-charts did not fail:\n{seen}"),
        }
    }
    while !w.kind_dir.join("hang.pid").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "kind never hung:\n{seen}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let rest: Vec<String> = lines.iter().collect();
    let stderr = seen + &rest.join("\n");
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("error[interrupted]"), "{stderr}");
    assert!(
        stderr.contains("before that: chart-fetch-failed"),
        "{stderr}"
    );
    let calls = fakes::kind_calls(&w.kind_dir);
    assert!(
        calls.iter().any(|c| c.starts_with("delete cluster")),
        "{calls:?}"
    );
}

/// A `helm` that pulls from a local folder (`helm pull CHART --repo URL --version V
/// --destination DIR` writes `DIR/CHART-V.tgz`, as helm does) and leaves everything
/// else to the Helm engine of the tests, which cannot pull.
fn pulling_helm(dir: &Path, repo: &Path) -> String {
    let bin = dir.join("pulling-helm");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = pull ]; then\n  chart=$2; version=; dest=\n  \
         while [ $# -gt 0 ]; do case $1 in --version) version=$2; shift;; \
         --destination) dest=$2; shift;; esac; shift; done\n  \
         echo \"$chart $version\" >> {calls}\n  \
         exec cp \"{repo}/$chart-$version.tgz\" \"$dest/\"\nfi\nexec {shim}/helm \"$@\"\n",
        calls = dir.join("pulls").display(),
        repo = repo.display(),
        shim = crate::harness::helm_shim_dir().display(),
    );
    std::fs::write(bin.join("helm"), script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("helm"), std::fs::Permissions::from_mode(0o755)).unwrap();
    format!(
        "{}:{}",
        bin.display(),
        crate::harness::helm_shim_dir().display()
    )
}

/// Only an archive pulsedev downloaded itself is used for a pin without a SHA-256: one
/// in the cache without the record of that download (planted, copied in, or its record
/// deleted) is downloaded again and recorded, not trusted. Once recorded, a change
/// behind pulsedev's back is refused and the archive removed. Before, a planted archive
/// was trusted with a warning, and deleting its record re-trusted it.
#[test]
fn unpinned_platform_charts_are_used_only_as_pulsedev_downloaded_them() {
    use sha2::Digest;
    let Some(w) = World::new(|o| o) else { return };
    let pins = pulsedev::stack::load_pins(repo_root()).unwrap();
    let cm = &pins["cert-manager"];
    let archive =
        w.pd.home
            .path()
            .join("cache/pulsedev/charts")
            .join(format!("{}-{}.tgz", cm.chart, cm.version));
    let record = pulsedev::stack::recorded_digest(&archive);
    // The repository serves the good archive; the cache holds a planted one, no record.
    let repo = w.pd.home.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    let good = std::fs::read(&archive).unwrap();
    std::fs::write(repo.join(archive.file_name().unwrap()), &good).unwrap();
    let mut planted = good.clone();
    planted.extend_from_slice(b"planted");
    std::fs::write(&archive, &planted).unwrap();
    std::fs::remove_file(&record).unwrap();
    let path = format!(
        "{}:{}",
        pulling_helm(w.pd.home.path(), &repo),
        w.pd.env_of("PATH")
    );
    let run = |args: &[&str]| {
        let mut all = vec!["up", "--output", "json", "--timeout", "60"];
        all.extend_from_slice(args);
        let out = w.pd.command_with(&all).env("PATH", &path).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let first = run(&[]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first
            .stderr
            .contains("no record of being downloaded by pulsedev; downloading it again"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("has no pinned SHA-256; recorded"),
        "{}",
        first.stderr
    );
    let pulls = std::fs::read_to_string(w.pd.home.path().join("pulls")).unwrap();
    assert_eq!(pulls, format!("cert-manager {}\n", cm.version));
    assert_eq!(std::fs::read(&archive).unwrap(), good);
    assert_eq!(
        std::fs::read_to_string(&record).unwrap().trim(),
        hex::encode(sha2::Sha256::digest(&good))
    );
    // The recorded archive changes behind pulsedev's back: refused, and removed.
    std::fs::write(&archive, &planted).unwrap();
    let second = run(&[]);
    assert_eq!(second.code, 3, "{}\n{}", second.stdout, second.stderr);
    let doc = second.json();
    assert_eq!(doc["error"]["id"], "tool-checksum-mismatch");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("recorded at its download"),
        "{doc:#}"
    );
    assert!(!archive.exists() && !record.exists());
}

/// The committed pins name the real release archives: a stand-in that is not one is
/// refused by `up` and by `render` (which reads the same cache), and removed.
#[test]
fn a_chart_that_is_not_the_pinned_release_is_refused() {
    let Some(w) = World::new(|o| o) else { return };
    let committed = repo_root().join("manifests/platform/pins.toml");
    let pins = pulsedev::stack::load_pins(repo_root()).unwrap();
    let cm = &pins["cert-manager"];
    assert_eq!(cm.sha256.len(), 64, "cert-manager's digest is pinned");
    let sandbox_pins = w.pd.work.path().join("manifests/platform/pins.toml");
    std::fs::copy(&committed, &sandbox_pins).unwrap();
    let archive =
        w.pd.home
            .path()
            .join("cache/pulsedev/charts")
            .join(format!("{}-{}.tgz", cm.chart, cm.version));
    let render = w.pd.run_with(&["render", "--env", "dev"]);
    assert_eq!(render.code, 3, "{}", render.stderr);
    assert!(render.stderr.contains("error[tool-checksum-mismatch]"));
    assert!(
        render
            .stderr
            .contains("pinned in manifests/platform/pins.toml"),
        "{}",
        render.stderr
    );
    assert!(!archive.exists(), "removed, so the next up downloads it");
    record_downloads(&w.pd.home.path().join("cache/pulsedev/charts"));
    seed_platform_charts(&w.pd.home.path().join("cache"));
    let run = w.up(&[]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["error"]["id"], "tool-checksum-mismatch", "{doc:#}");
    assert!(!archive.exists());
}

/// An archive whose digest matches its record but whose Chart.yaml names another
/// chart or version (copied in under the pinned file name) is not used.
#[test]
fn a_cached_archive_must_hold_the_pinned_chart_and_version() {
    let Some(w) = World::new(|o| o) else { return };
    let pins = pulsedev::stack::load_pins(repo_root()).unwrap();
    let ingress = &pins["ingress"];
    let dir = w.pd.home.path().join("cache/pulsedev/charts");
    let archive = dir.join(format!("{}-{}.tgz", ingress.chart, ingress.version));
    std::fs::write(
        &archive,
        chart(
            &ingress.chart,
            "0.0.1",
            &[(
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: old\n".to_string(),
            )],
        ),
    )
    .unwrap();
    record_downloads(&dir);
    let run = w.pd.run_with(&["render", "--env", "dev"]);
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "the archive cached as the nginx-ingress chart {} holds the chart nginx-ingress 0.0.1",
            ingress.version
        )),
        "{}",
        run.stderr
    );
    assert!(!archive.exists());
}

#[test]
fn up_waits_for_the_tls_certificates_to_be_issued() {
    // cert-manager never issues the web's TLS certificate: its Secret never appears and
    // the Certificate stays Ready=False.
    let Some(w) = World::new(|o| o.never_issue("pulsewatch-web-tls")) else {
        return;
    };
    let run = w.up(&["--timeout", "3"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let doc = run.json();
    assert_eq!(doc["error"]["id"], "rollout-timeout", "{doc:#}");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains(
            "certificate pulsewatch-dev/pulsewatch-web-tls is not ready: not ready after 3s: DoesNotExist: Issuing certificate as Secret does not exist"
        ),
        "{doc:#}"
    );
    assert_eq!(step(&doc, "local-ca")["status"], "failed");
    assert_eq!(step(&doc, "services")["status"], "not-run");
}

/// Cluster, images and platform charts fail side by side: every failed step keeps its
/// own reason (kind's output included) in JSON and in the human summary, not only the
/// run's first failure.
#[test]
fn every_failed_step_keeps_its_own_reason() {
    let Some(w) = World::new(|o| o) else { return };
    let pins = pulsedev::stack::load_pins(repo_root()).unwrap();
    let cm = &pins["cert-manager"];
    std::fs::remove_file(
        w.pd.home
            .path()
            .join("cache/pulsedev/charts")
            .join(format!("{}-{}.tgz", cm.chart, cm.version)),
    )
    .unwrap();
    std::fs::write(
        w.pd.work.path().join("svc/api/Dockerfile"),
        "FROM scratch\nCOPY missing-file /x\n",
    )
    .unwrap();
    let json =
        w.pd.command_with(&["up", "--output", "json", "--timeout", "60"])
            .env("FAKE_KIND_MODE", "fail")
            .output()
            .unwrap();
    let doc: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json.status.code(), Some(1), "{doc:#}");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["name"], w.name.as_str());
    let cluster = &step(&doc, "cluster")["error"];
    assert_eq!(cluster["id"], "cluster-create-failed", "{doc:#}");
    assert!(
        cluster["details"].as_array().unwrap().iter().any(|d| d
            .as_str()
            .unwrap()
            .contains("failed to init node with kubeadm")),
        "kind's own output is kept: {cluster:#}"
    );
    assert_eq!(
        step(&doc, "images")["error"]["id"],
        "image-build-failed",
        "{doc:#}"
    );
    assert_eq!(
        step(&doc, "platform-charts")["error"]["id"],
        "chart-fetch-failed",
        "{doc:#}"
    );
    // Preflight is on the same timeline as the other steps.
    let pre = step(&doc, "preflight");
    assert_eq!(secs(&pre["start"]), 0.0);
    assert!(
        secs(&step(&doc, "tools")["start"]) >= secs(&pre["end"]),
        "{doc:#}"
    );

    let human =
        w.pd.command_with(&["up", "--timeout", "60"])
            .env("FAKE_KIND_MODE", "fail")
            .output()
            .unwrap();
    assert_eq!(human.status.code(), Some(1));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&human.stdout),
        String::from_utf8_lossy(&human.stderr)
    );
    for id in [
        "cluster-create-failed",
        "image-build-failed",
        "chart-fetch-failed",
    ] {
        assert!(
            all.contains(&format!("error[{id}]")),
            "{id} missing:\n{all}"
        );
    }
    assert!(all.contains("failed to init node with kubeadm"), "{all}");
}

/// A terminal's view of `up`, through tmux: the real binary on a real pseudo-terminal
/// (`tmux new-session -x COLS`), read back with `capture-pane -J` (lines the terminal
/// wrapped are joined again, so a line that filled the last column and ran into the
/// next one shows as one). With `resize`, the window changes width once the first
/// step has finished. Returns the screen once the run printed its exit marker, and the
/// exit code.
fn up_in_tmux(w: &World, cols: u16, resize: Option<u16>) -> (String, i32) {
    use std::os::unix::fs::PermissionsExt;
    let session = fakes::unique("tty");
    let script = w.pd.home.path().join(format!("{session}.sh"));
    let cmd = w.pd.command_with(&["up", "--timeout", "60"]);
    let quote = |s: &std::ffi::OsStr| format!("'{}'", s.to_string_lossy().replace('\'', r"'\''"));
    let mut text = String::from("#!/bin/sh\n");
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            text.push_str(&format!("export {}={}\n", k.to_string_lossy(), quote(v)));
        }
    }
    text.push_str("unset CI\nexport TERM=xterm-256color\n");
    text.push_str(&format!("cd {}\n", quote(w.pd.work.path().as_os_str())));
    text.push_str(&quote(cmd.get_program()));
    for a in cmd.get_args() {
        text.push(' ');
        text.push_str(&quote(a));
    }
    text.push_str("\necho \"EXIT=$?\"\nexec sleep 600\n");
    std::fs::write(&script, text).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let tmux = |args: &[&str]| {
        std::process::Command::new("tmux")
            .args(["-L", &session, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux runs")
    };
    let started = tmux(&[
        "new-session",
        "-d",
        "-x",
        &cols.to_string(),
        "-y",
        "50",
        "-s",
        &session,
        script.to_str().unwrap(),
    ]);
    assert!(started.status.success(), "{started:?}");
    let capture = || {
        let out = tmux(&["capture-pane", "-p", "-J", "-t", &session, "-S", "-300"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut resized = resize.is_none();
    let screen = loop {
        let screen = capture();
        if screen.contains("EXIT=") {
            break screen;
        }
        if !resized && screen.lines().any(|l| l.starts_with("  tools ")) {
            let to = resize.unwrap().to_string();
            let out = tmux(&["resize-window", "-t", &session, "-x", &to]);
            assert!(out.status.success(), "{out:?}");
            resized = true;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit marker:\n{screen}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = tmux(&["kill-server"]);
    let code = screen
        .lines()
        .find_map(|l| l.trim().strip_prefix("EXIT="))
        .and_then(|c| c.parse().ok())
        .unwrap_or(-1);
    (screen, code)
}

/// `up` on a terminal (80 and 160 columns, and one resized while it runs): each step
/// ends with exactly one final line of its own, no spinner is left above the summary,
/// and no line runs into the next.
#[test]
fn up_on_a_terminal_leaves_one_final_line_per_step_and_no_stale_spinner() {
    let Some(w) = World::new(|o| o) else { return };
    let final_line =
        regex::Regex::new(r"^  (\S+) +(done|skipped|FAILED|not run) \(\d+\.\ds\)").unwrap();
    let spinner = regex::Regex::new(r"(?m)^[\u{2800}-\u{28FF}] ").unwrap();
    for (cols, resize) in [(80u16, None), (160, None), (160, Some(90u16))] {
        let (screen, code) = up_in_tmux(&w, cols, resize);
        assert_eq!(code, 0, "{cols} columns:\n{screen}");
        let mut finals: std::collections::BTreeMap<String, usize> = Default::default();
        for line in screen.lines() {
            if let Some(c) = final_line.captures(line) {
                *finals.entry(c[1].to_string()).or_default() += 1;
            }
            // Two lines run together: a final line with another step's line inside.
            assert!(
                line.matches(" (0.").count() + line.matches("s): ").count() <= 2,
                "{cols} columns, lines run together: {line:?}\n{screen}"
            );
        }
        let summary = screen
            .split("PulseWatch is up on cluster")
            .nth(1)
            .unwrap_or("");
        for step in [
            "tools",
            "cluster",
            "images",
            "deliver",
            "migrations",
            "services",
            "prune",
        ] {
            assert_eq!(
                finals.get(step),
                Some(&1),
                "{cols} columns, {step}:\n{screen}"
            );
            assert!(
                summary.contains(&format!("  {step} ")),
                "{step} not in the summary"
            );
        }
        assert!(
            !spinner.is_match(&screen),
            "{cols} columns, a spinner was left:\n{screen}"
        );
    }
}

/// `reset --keep-data`: the database is dumped from the old cluster's Postgres pod,
/// the cluster is made again, and the dump is restored into the new one, then removed;
/// when the new cluster fails to come up, the dump is kept and its path named. The pod
/// is a real PostgreSQL (tests/it/db.rs) behind the fake API server's exec endpoint.
#[test]
fn reset_keep_data_dumps_recreates_and_restores() {
    let Some(engine) = fakes::rt().block_on(support::docker::engine("reset_keep_data")) else {
        return;
    };
    let pg = fakes::rt().block_on(crate::db::postgres(&engine));
    let container = pg.container.clone();
    let Some(w) = World::new(|o| o.exec_into("postgres", &container)) else {
        return;
    };
    let run = w.up(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    crate::db::wait_ready(&pg);
    let seed = w.pd.run_with(&[
        "db", "psql", "--", "-v", "ON_ERROR_STOP=1", "-c",
        "create table notes(id int primary key, body text); insert into notes values (1, 'survives the reset')",
    ]);
    assert_eq!(seed.code, 0, "{}", seed.stderr);

    let reset =
        w.pd.run_with(&["reset", "--keep-data", "--yes", "--timeout", "60"]);
    assert_eq!(reset.code, 0, "{}", reset.stderr);
    assert!(
        reset.stderr.contains("kept the data of pulsewatch"),
        "{}",
        reset.stderr
    );
    assert!(
        reset.stderr.contains("restored the kept data"),
        "{}",
        reset.stderr
    );
    assert!(!reset.stderr.contains(crate::db::PASSWORD));
    // In order: pg_dump in the old cluster, the cluster made again, pg_restore of every
    // byte of the dump; the dump removed after the restore.
    let execs = w.api.execs();
    let dump = execs
        .iter()
        .position(|e| e.command.contains(&"pg_dump".to_string()));
    let restore = execs
        .iter()
        .position(|e| e.command.contains(&"pg_restore".to_string()));
    let (dump, restore) = (dump.expect("a pg_dump"), restore.expect("a pg_restore"));
    assert!(dump < restore, "{execs:#?}");
    assert!(execs[restore].stdin_bytes > 0);
    let kind_calls = fakes::kind_calls(&w.kind_dir);
    assert!(
        kind_calls.iter().any(|c| c.starts_with("delete cluster")),
        "{kind_calls:?}"
    );
    let state = w.pd.home.path().join("state/pulsedev");
    let left: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".dump"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let check =
        w.pd.run_with(&["db", "psql", "--", "-At", "-c", "select body from notes"]);
    assert_eq!(check.stdout, "survives the reset\n", "{}", check.stderr);

    // The new cluster fails (the api crash-loops): the dump stays, and the error says
    // where.
    w.api.configure(|o| o.crash_looping.push("api".into()));
    let reset =
        w.pd.run_with(&["reset", "--keep-data", "--yes", "--timeout", "60"]);
    assert_eq!(reset.code, 1, "{}", reset.stderr);
    assert!(
        reset.stderr.contains("error[pod-crash-looping]"),
        "{}",
        reset.stderr
    );
    let kept: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "dump"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(
        reset
            .stderr
            .contains(&format!("the data is kept in {}", kept[0].display())),
        "{}",
        reset.stderr
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&kept[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
