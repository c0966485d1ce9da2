//! `pulsedev status`: what exists and how ready it is — cluster reachable, platform
//! components, data stores, services (desired vs ready, image), ingress URLs — each with
//! a state word, as a table or as JSON.
//!
//! Owns: the data-driven list of what to check (so it can follow the charts), reading it
//! (read-only), and the two renderings. Readiness uses the same rules as the waits of
//! `up`, so `status` and `up` never disagree. Must not change anything on the server.

use std::path::Path;
use std::time::Duration;

use ::kube::Api;
use ::kube::api::ListParams;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodTemplateSpec, Secret};
use k8s_openapi::api::networking::v1::Ingress;
use serde::Serialize;
use serde_json::json;

use super::wait::{Poll, daemonset_state, deployment_state, statefulset_state};
use super::{Engine, describe};
use crate::error::{Error, ErrorKind};
use crate::ui::{Style, paint};

/// How long the API server may take to answer the first request.
const PING_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Category {
    Cluster,
    Platform,
    DataStore,
    Service,
    Observability,
    Ingress,
}

impl Category {
    pub fn word(self) -> &'static str {
        match self {
            Category::Cluster => "cluster",
            Category::Platform => "platform",
            Category::DataStore => "data-store",
            Category::Service => "service",
            Category::Observability => "observability",
            Category::Ingress => "ingress",
        }
    }
}

/// The workload kinds `status` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum CheckKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// One thing to check: a workload by name, or every workload matching a label selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub category: Category,
    pub kind: CheckKind,
    pub namespace: String,
    /// `Some(name)`, or `None` to use `selector`.
    pub name: Option<String>,
    pub selector: Option<String>,
    /// Installed only on request (observability): nothing found means no rows, not
    /// a `missing` one.
    pub optional: bool,
}

impl Check {
    pub fn named(category: Category, kind: CheckKind, namespace: &str, name: &str) -> Check {
        Check {
            category,
            kind,
            namespace: namespace.into(),
            name: Some(name.into()),
            selector: None,
            optional: false,
        }
    }

    pub fn selected(category: Category, kind: CheckKind, namespace: &str, selector: &str) -> Check {
        Check {
            category,
            kind,
            namespace: namespace.into(),
            name: None,
            selector: Some(selector.into()),
            optional: false,
        }
    }

    /// Every workload of `kind` in `namespace`, shown only when there are some.
    pub fn optional_all(category: Category, kind: CheckKind, namespace: &str) -> Check {
        Check {
            optional: true,
            ..Check::selected(category, kind, namespace, "")
        }
    }
}

/// What `status` looks at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusSpec {
    pub checks: Vec<Check>,
    /// Namespaces whose Ingresses give the URLs.
    pub ingress_namespaces: Vec<String>,
    /// The host port HTTPS is published on (443 is left out of URLs).
    pub https_port: u16,
    /// Where the stack's dev Secrets live, read so their values are scrubbed from output.
    pub secrets_namespace: Option<String>,
}

impl StatusSpec {
    /// The PulseWatch dev stack as the charts under manifests/ deploy it.
    pub fn pulsewatch(https_port: u16) -> StatusSpec {
        let services = ["api", "worker", "web"].map(String::from);
        StatusSpec::for_stack("pulsewatch-dev", &services, https_port)
    }

    /// The stack with these service Deployments in `app` (the configured services).
    pub fn for_stack(app: &str, services: &[String], https_port: u16) -> StatusSpec {
        use Category::*;
        use CheckKind::*;
        let mut checks = vec![
            Check::selected(
                Platform,
                Deployment,
                "platform",
                "app.kubernetes.io/name=nginx-ingress",
            ),
            Check::named(Platform, Deployment, "cert-manager", "cert-manager"),
            Check::named(
                Platform,
                Deployment,
                "cert-manager",
                "cert-manager-cainjector",
            ),
            Check::named(Platform, Deployment, "cert-manager", "cert-manager-webhook"),
            Check::named(DataStore, StatefulSet, app, "postgres"),
            Check::named(DataStore, Deployment, app, "redis"),
        ];
        checks.extend(
            services
                .iter()
                .map(|s| Check::named(Service, Deployment, app, s)),
        );
        // `up --with observability` (manifests/platform/observability).
        checks.push(Check::optional_all(Observability, Deployment, "monitoring"));
        checks.push(Check::optional_all(
            Observability,
            StatefulSet,
            "monitoring",
        ));
        StatusSpec {
            checks,
            ingress_namespaces: vec![app.into(), "monitoring".into()],
            https_port,
            secrets_namespace: Some(app.into()),
        }
    }
}

/// The state word of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    Ready,
    Progressing,
    Failed,
    Missing,
    Unreachable,
    Unknown,
}

impl State {
    pub fn word(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Progressing => "progressing",
            State::Failed => "failed",
            State::Missing => "missing",
            State::Unreachable => "unreachable",
            State::Unknown => "unknown",
        }
    }
}

/// One line of the picture.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    pub category: Category,
    /// `namespace/name`, or the cluster's name.
    pub name: String,
    pub state: State,
    /// Ready / desired replicas, for workloads.
    pub ready: Option<(i32, i32)>,
    /// Container images (workloads), or the URL (ingress), or the version (cluster).
    pub image: Vec<String>,
    /// Why it is not ready, in words.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterInfo {
    pub name: String,
    pub context: String,
    pub kubeconfig: String,
}

/// Everything `status` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusReport {
    pub ok: bool,
    pub cluster: ClusterInfo,
    pub rows: Vec<Row>,
    pub urls: Vec<String>,
}

impl StatusReport {
    fn finish(cluster: ClusterInfo, rows: Vec<Row>, urls: Vec<String>) -> StatusReport {
        let ok = rows.iter().all(|r| r.state == State::Ready);
        StatusReport {
            ok,
            cluster,
            rows,
            urls,
        }
    }

    /// The error `status` exits with when something is not ready (exit 1).
    pub fn failure(&self) -> Option<Error> {
        if self.ok {
            return None;
        }
        if let Some(c) = self
            .rows
            .iter()
            .find(|r| r.category == Category::Cluster && r.state != State::Ready)
        {
            let what = match c.state {
                State::Missing => format!(
                    "pulsedev has no cluster `{}` on this machine",
                    self.cluster.name
                ),
                _ => format!("the cluster `{}` is {}", self.cluster.name, c.state.word()),
            };
            return Some(
                Error::new(ErrorKind::NotReady, what).with_hint(match c.state {
                    State::Missing => {
                        "run `pulsedev up` to create it, or pass the `--name` it was made with"
                    }
                    _ => "run `pulsedev up` to start it",
                }),
            );
        }
        let bad: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.state != State::Ready)
            .collect();
        Some(
            Error::new(
                ErrorKind::NotReady,
                format!(
                    "{} of {} components are not ready: {}",
                    bad.len(),
                    self.rows.len(),
                    bad.iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_hint(
                "run `pulsedev up` to converge; it explains what is wrong when a wait fails",
            ),
        )
    }

    /// The `--output json` document: `ok`, `cluster`, `components`, `urls`, and `error`
    /// when not ok.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut row = json!({
                    "category": r.category,
                    "name": r.name,
                    "state": r.state,
                    "detail": r.detail,
                });
                match r.category {
                    Category::Cluster => {
                        row["version"] = json!(r.image.first());
                    }
                    Category::Ingress => {
                        row["urls"] = json!(r.image);
                    }
                    _ => {
                        row["ready"] = json!(r.ready.map(|(a, _)| a));
                        row["desired"] = json!(r.ready.map(|(_, d)| d));
                        row["images"] = json!(r.image);
                    }
                }
                row
            })
            .collect();
        let mut doc = json!({
            "ok": self.ok,
            "cluster": self.cluster,
            "components": rows,
            "urls": self.urls,
        });
        if let Some(e) = self.failure() {
            doc["error"] = crate::ui::error_json(&e);
        }
        doc
    }

    /// The human table (stdout).
    pub fn render(&self, color: bool) -> String {
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.category.word().to_string(),
                    r.name.clone(),
                    r.state.word().to_string(),
                    r.ready
                        .map(|(a, d)| format!("{a}/{d}"))
                        .unwrap_or_else(|| "-".into()),
                    if r.image.is_empty() {
                        "-".into()
                    } else {
                        r.image.join(",")
                    },
                ]
            })
            .collect();
        let header = ["CATEGORY", "NAME", "STATE", "READY", "IMAGE / URL"];
        let mut width = header.map(str::len);
        for c in &cells {
            for (i, cell) in c.iter().enumerate() {
                width[i] = width[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        let line = |cols: &[String; 5], state: Option<State>| {
            let mut s = String::new();
            for (i, cell) in cols.iter().enumerate() {
                let pad = width[i] - cell.chars().count();
                let text = match (i, state) {
                    (2, Some(st)) => paint(
                        color,
                        match st {
                            State::Ready => Style::Green,
                            State::Progressing => Style::Yellow,
                            _ => Style::Red,
                        },
                        cell,
                    ),
                    _ => cell.clone(),
                };
                s.push_str(&text);
                if i + 1 < cols.len() {
                    s.push_str(&" ".repeat(pad + 2));
                }
            }
            s.trim_end().to_string()
        };
        out.push_str(&paint(
            color,
            Style::Bold,
            &line(&header.map(String::from), None),
        ));
        out.push('\n');
        for (c, r) in cells.iter().zip(&self.rows) {
            out.push_str(&line(c, Some(r.state)));
            out.push('\n');
            if let Some(d) = &r.detail {
                out.push_str(&format!("    {d}\n"));
            }
        }
        if !self.urls.is_empty() {
            out.push_str("\nURLs:\n");
            for u in &self.urls {
                out.push_str(&format!("  {u}\n"));
            }
        }
        out
    }
}

/// Status from pulsedev's kubeconfig file: a missing file means the cluster does not
/// exist; an unreachable API server is a row, not an error.
pub async fn collect(
    kubeconfig: &Path,
    name: &str,
    context: &str,
    spec: &StatusSpec,
) -> StatusReport {
    let cluster = ClusterInfo {
        name: name.into(),
        context: context.into(),
        kubeconfig: kubeconfig.display().to_string(),
    };
    let row = |state: State, detail: String| Row {
        category: Category::Cluster,
        name: name.into(),
        state,
        ready: None,
        image: vec![],
        detail: Some(detail),
    };
    if !kubeconfig.exists() {
        let r = row(
            State::Missing,
            format!("no kubeconfig at {}", kubeconfig.display()),
        );
        return StatusReport::finish(cluster, vec![r], vec![]);
    }
    match super::connect(kubeconfig, context).await {
        Ok(client) => {
            Engine::new(client)
                .status(name, context, kubeconfig, spec)
                .await
        }
        Err(e) => StatusReport::finish(
            cluster,
            vec![row(State::Unknown, e.message.clone())],
            vec![],
        ),
    }
}

impl Engine {
    /// Reads the picture: the cluster first (nothing else when it does not answer), then
    /// every check in order, then the Ingresses.
    pub async fn status(
        &self,
        name: &str,
        context: &str,
        kubeconfig: &Path,
        spec: &StatusSpec,
    ) -> StatusReport {
        let cluster = ClusterInfo {
            name: name.into(),
            context: context.into(),
            kubeconfig: kubeconfig.display().to_string(),
        };
        let mut rows = Vec::new();
        match tokio::time::timeout(PING_TIMEOUT, self.client.apiserver_version()).await {
            Ok(Ok(info)) => rows.push(Row {
                category: Category::Cluster,
                name: format!("{name} ({context})"),
                state: State::Ready,
                ready: None,
                image: vec![info.git_version],
                detail: None,
            }),
            failed => {
                let detail = match failed {
                    Ok(Err(e)) => describe(&e),
                    _ => format!("no answer within {}s", PING_TIMEOUT.as_secs()),
                };
                rows.push(Row {
                    category: Category::Cluster,
                    name: format!("{name} ({context})"),
                    state: State::Unreachable,
                    ready: None,
                    image: vec![],
                    detail: Some(detail),
                });
                return StatusReport::finish(cluster, rows, vec![]);
            }
        }
        // The rows quote what the cluster says (a terminated container's message, an
        // event): the stack's secret values are known to the scrubber before any is shown.
        if let Some(app) = &spec.secrets_namespace {
            super::secrets::remember_stack(&self.client, app, "monitoring", PING_TIMEOUT).await;
        }
        for check in &spec.checks {
            rows.extend(self.check(check).await);
        }
        let mut urls = Vec::new();
        for ns in &spec.ingress_namespaces {
            let (r, u) = self.ingresses(ns, spec.https_port).await;
            rows.extend(r);
            urls.extend(u);
        }
        StatusReport::finish(cluster, rows, urls)
    }

    async fn check(&self, c: &Check) -> Vec<Row> {
        let params = ListParams::default().labels(c.selector.as_deref().unwrap_or_default());
        let client = self.client.clone();
        let ns = c.namespace.as_str();
        // (name, poll, ready/desired, images) per object found.
        type Found = Vec<(String, Poll, (i32, i32), Vec<String>)>;
        let found: Result<Found, ::kube::Error> = match c.kind {
            CheckKind::Deployment => {
                let api: Api<Deployment> = Api::namespaced(client, ns);
                fetch(&api, c, &params).await.map(|v| {
                    v.into_iter()
                        .map(|d| {
                            let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                            let ready = d
                                .status
                                .as_ref()
                                .and_then(|s| s.available_replicas)
                                .unwrap_or(0);
                            let images = images(d.spec.as_ref().map(|s| &s.template));
                            (
                                d.metadata.name.clone().unwrap_or_default(),
                                deployment_state(&d),
                                (ready, desired),
                                images,
                            )
                        })
                        .collect()
                })
            }
            CheckKind::StatefulSet => {
                let api: Api<StatefulSet> = Api::namespaced(client, ns);
                fetch(&api, c, &params).await.map(|v| {
                    v.into_iter()
                        .map(|s| {
                            let desired = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                            let ready = s
                                .status
                                .as_ref()
                                .and_then(|s| s.ready_replicas)
                                .unwrap_or(0);
                            let images = images(s.spec.as_ref().map(|s| &s.template));
                            (
                                s.metadata.name.clone().unwrap_or_default(),
                                statefulset_state(&s),
                                (ready, desired),
                                images,
                            )
                        })
                        .collect()
                })
            }
            CheckKind::DaemonSet => {
                let api: Api<DaemonSet> = Api::namespaced(client, ns);
                fetch(&api, c, &params).await.map(|v| {
                    v.into_iter()
                        .map(|d| {
                            let st = d.status.clone().unwrap_or_default();
                            let images = images(d.spec.as_ref().map(|s| &s.template));
                            (
                                d.metadata.name.clone().unwrap_or_default(),
                                daemonset_state(&d),
                                (
                                    st.number_available.unwrap_or(0),
                                    st.desired_number_scheduled,
                                ),
                                images,
                            )
                        })
                        .collect()
                })
            }
        };
        let shown = |n: &str| format!("{ns}/{n}");
        let missing_name = c.name.clone().unwrap_or_else(|| {
            c.selector
                .clone()
                .map(|s| format!("[{s}]"))
                .unwrap_or_default()
        });
        match found {
            Ok(v) if v.is_empty() && c.optional => vec![],
            Ok(v) if v.is_empty() => vec![Row {
                category: c.category,
                name: shown(&missing_name),
                state: State::Missing,
                ready: None,
                image: vec![],
                detail: None,
            }],
            Ok(v) => v
                .into_iter()
                .map(|(name, poll, ready, image)| {
                    let (state, detail) = match poll {
                        Poll::Ready => (State::Ready, None),
                        Poll::Waiting(w) => (State::Progressing, Some(w)),
                        Poll::Failed { reason, message } => {
                            (State::Failed, Some(format!("{reason}: {message}")))
                        }
                    };
                    Row {
                        category: c.category,
                        name: shown(&name),
                        state,
                        ready: Some(ready),
                        image,
                        detail,
                    }
                })
                .collect(),
            Err(e) => vec![Row {
                category: c.category,
                name: shown(&missing_name),
                state: State::Unknown,
                ready: None,
                image: vec![],
                detail: Some(describe(&e)),
            }],
        }
    }

    /// One row per Ingress: ready when every TLS Secret it names exists (the certificate
    /// was issued), and its hosts as https URLs.
    async fn ingresses(&self, ns: &str, https_port: u16) -> (Vec<Row>, Vec<String>) {
        let api: Api<Ingress> = Api::namespaced(self.client.clone(), ns);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l.items,
            Err(e) => {
                return (
                    vec![Row {
                        category: Category::Ingress,
                        name: format!("{ns}/*"),
                        state: State::Unknown,
                        ready: None,
                        image: vec![],
                        detail: Some(describe(&e)),
                    }],
                    vec![],
                );
            }
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let port = if https_port == 443 {
            String::new()
        } else {
            format!(":{https_port}")
        };
        let mut rows = Vec::new();
        let mut urls = Vec::new();
        for ing in list {
            let spec = ing.spec.clone().unwrap_or_default();
            let hosts: Vec<String> = spec
                .rules
                .iter()
                .flatten()
                .filter_map(|r| r.host.clone())
                .collect();
            let row_urls: Vec<String> =
                hosts.iter().map(|h| format!("https://{h}{port}")).collect();
            let mut missing = Vec::new();
            for tls in spec.tls.iter().flatten() {
                if let Some(secret) = &tls.secret_name {
                    match secrets.get_opt(secret).await {
                        Ok(Some(_)) => {}
                        Ok(None) => missing.push(format!("TLS secret {secret} not issued yet")),
                        Err(e) => missing.push(format!("TLS secret {secret}: {}", describe(&e))),
                    }
                }
            }
            let name = ing.metadata.name.clone().unwrap_or_default();
            rows.push(Row {
                category: Category::Ingress,
                name: format!("{ns}/{name}"),
                state: if missing.is_empty() {
                    State::Ready
                } else {
                    State::Progressing
                },
                ready: None,
                image: row_urls.clone(),
                detail: (!missing.is_empty()).then(|| missing.join("; ")),
            });
            urls.extend(row_urls);
        }
        (rows, urls)
    }
}

async fn fetch<K>(api: &Api<K>, c: &Check, params: &ListParams) -> Result<Vec<K>, ::kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match &c.name {
        Some(name) => api.get_opt(name).await.map(|o| o.into_iter().collect()),
        None => api.list(params).await.map(|l| l.items),
    }
}

fn images(template: Option<&PodTemplateSpec>) -> Vec<String> {
    template
        .and_then(|t| t.spec.as_ref())
        .map(|s| {
            s.containers
                .iter()
                .filter_map(|c| c.image.clone())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::fixtures;
    use crate::kube::testing::{Exchange, Scenario, not_found};
    use serde_json::Value;

    fn with_image(mut v: Value, image: &str) -> Value {
        v["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
        v
    }

    fn version() -> Value {
        serde_json::to_value(k8s_openapi::apimachinery::pkg::version::Info {
            major: "1".into(),
            minor: "36".into(),
            git_version: "v1.36.1".into(),
            git_commit: "8f4f6c6b9a1d2e3f".into(),
            git_tree_state: "clean".into(),
            build_date: "2026-10-14T12:00:00Z".into(),
            go_version: "go1.25.3".into(),
            compiler: "gc".into(),
            platform: "linux/amd64".into(),
            ..Default::default()
        })
        .unwrap()
    }

    fn ingress(name: &str, host: &str, secret: &str) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": name, "namespace": "pulsewatch-dev", "resourceVersion": "812"},
            "spec": {
                "ingressClassName": "nginx",
                "tls": [{"hosts": [host], "secretName": secret}],
                "rules": [{"host": host, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                    "backend": {"service": {"name": name, "port": {"name": "http"}}}}]}}]
            },
            "status": {"loadBalancer": {}}
        })
    }

    fn scenario() -> Scenario {
        let ready = |ns: &str, name: &str, image: &str| {
            with_image(fixtures::deployment(ns, name, (1, 1), 1, (1, 1, 1)), image)
        };
        let get = |path: &str, body: Value| Exchange::get(path).ok(body);
        let absent = |ns: &str, name: &str| {
            Exchange::get(&format!("/api/v1/namespaces/{ns}/secrets/{name}"))
                .reply(404, not_found("secrets", name))
        };
        Scenario::new()
            .then(get("/version", version()))
            // The stack's Secrets, read for the scrubber before any row is shown.
            .then(absent("pulsewatch-dev", "pulsewatch-db"))
            .then(absent("pulsewatch-dev", "pulsewatch-app"))
            .then(absent("monitoring", "grafana-admin"))
            .then(
                Exchange::get("/apis/apps/v1/namespaces/platform/deployments")
                    .query("labelSelector", "app.kubernetes.io/name=nginx-ingress")
                    .ok(json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {},
                        "items": [ready("platform", "nginx-ingress-controller", "nginx/nginx-ingress:5.6.2")]})),
            )
            .then(get("/apis/apps/v1/namespaces/cert-manager/deployments/cert-manager", ready("cert-manager", "cert-manager", "quay.io/jetstack/cert-manager-controller:v1.21.1")))
            .then(get("/apis/apps/v1/namespaces/cert-manager/deployments/cert-manager-cainjector", ready("cert-manager", "cert-manager-cainjector", "quay.io/jetstack/cert-manager-cainjector:v1.21.1")))
            .then(get(
                "/apis/apps/v1/namespaces/cert-manager/deployments/cert-manager-webhook",
                with_image(fixtures::deployment("cert-manager", "cert-manager-webhook", (1, 1), 1, (1, 1, 0)), "quay.io/jetstack/cert-manager-webhook:v1.21.1"),
            ))
            .then(get(
                "/apis/apps/v1/namespaces/pulsewatch-dev/statefulsets/postgres",
                fixtures::statefulset("pulsewatch-dev", "postgres", 1, 1, ("postgres-6d5f", "postgres-6d5f")),
            ))
            .then(get("/apis/apps/v1/namespaces/pulsewatch-dev/deployments/redis", ready("pulsewatch-dev", "redis", "redis:8.2")))
            .then(get("/apis/apps/v1/namespaces/pulsewatch-dev/deployments/api", ready("pulsewatch-dev", "api", "localhost:5001/pulsewatch/api:dev")))
            .then(Exchange::get("/apis/apps/v1/namespaces/pulsewatch-dev/deployments/worker").reply(404, not_found("deployments.apps", "worker")))
            .then(get("/apis/apps/v1/namespaces/pulsewatch-dev/deployments/web", ready("pulsewatch-dev", "web", "localhost:5001/pulsewatch/web:dev")))
            // Observability is not installed: its optional checks find nothing and
            // show no rows.
            .then(get("/apis/apps/v1/namespaces/monitoring/deployments",
                json!({"apiVersion": "apps/v1", "kind": "DeploymentList", "metadata": {}, "items": []})))
            .then(get("/apis/apps/v1/namespaces/monitoring/statefulsets",
                json!({"apiVersion": "apps/v1", "kind": "StatefulSetList", "metadata": {}, "items": []})))
            .then(get(
                "/apis/networking.k8s.io/v1/namespaces/pulsewatch-dev/ingresses",
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressList", "metadata": {},
                    "items": [ingress("web", "pulsewatch.localhost", "pulsewatch-web-tls"),
                              ingress("api", "api.pulsewatch.localhost", "pulsewatch-api-tls")]}),
            ))
            .then(get(
                "/api/v1/namespaces/pulsewatch-dev/secrets/pulsewatch-web-tls",
                json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
                    "metadata": {"name": "pulsewatch-web-tls", "namespace": "pulsewatch-dev"},
                    "data": {"tls.crt": "LS0t", "tls.key": "LS0t", "ca.crt": "LS0t"}}),
            ))
            .then(Exchange::get("/api/v1/namespaces/pulsewatch-dev/secrets/pulsewatch-api-tls").reply(404, not_found("secrets", "pulsewatch-api-tls")))
            .then(get("/apis/networking.k8s.io/v1/namespaces/monitoring/ingresses",
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "IngressList", "metadata": {}, "items": []})))
    }

    #[tokio::test(start_paused = true)]
    async fn status_table_and_json() {
        let (client, mock) = scenario().start();
        let path = Path::new("/home/dev/.local/state/pulsedev/pulsedev/kubeconfig");
        let report = Engine::new(client)
            .status(
                "pulsedev",
                "kind-pulsedev",
                path,
                &StatusSpec::pulsewatch(443),
            )
            .await;
        mock.finish().await;
        assert!(!report.ok);
        insta::assert_snapshot!("status_human", report.render(false));
        insta::assert_json_snapshot!("status_json", report.to_json());
        let e = report.failure().unwrap();
        assert_eq!(e.id(), "not-ready");
        assert_eq!(e.exit_code(), 1);
        assert_eq!(
            e.message,
            "3 of 12 components are not ready: cert-manager/cert-manager-webhook, pulsewatch-dev/worker, pulsewatch-dev/api"
        );
        assert!(report.render(true).contains("\u{1b}[32mready\u{1b}[0m"));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreachable_api_server_is_one_row() {
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/version").fail(
                503,
                "ServiceUnavailable",
                "the server is currently unable to handle the request",
            ))
            .start();
        let report = Engine::new(client)
            .status(
                "pulsedev",
                "kind-pulsedev",
                Path::new("/k"),
                &StatusSpec::pulsewatch(8443),
            )
            .await;
        mock.finish().await;
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.rows[0].state, State::Unreachable);
        assert_eq!(
            report.failure().unwrap().message,
            "the cluster `pulsedev` is unreachable"
        );
    }

    #[tokio::test]
    async fn no_kubeconfig_means_no_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        let report = collect(
            &path,
            "pulsedev",
            "kind-pulsedev",
            &StatusSpec::pulsewatch(443),
        )
        .await;
        assert!(!report.ok);
        assert_eq!(report.rows[0].state, State::Missing);
        let e = report.failure().unwrap();
        assert_eq!(
            e.message,
            "pulsedev has no cluster `pulsedev` on this machine"
        );
        assert_eq!(
            e.hint.as_deref(),
            Some("run `pulsedev up` to create it, or pass the `--name` it was made with")
        );
        let doc = report.to_json();
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["error"]["id"], "not-ready");
    }
}
