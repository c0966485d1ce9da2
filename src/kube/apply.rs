//! Server-side apply of a set of manifests, in an order that works the first time:
//! Namespaces, then CRDs (wait Established, then rediscover until their kinds resolve),
//! then the rest in dependency groups (foundation: config, RBAC, policy; workloads and
//! Services; routing, admission and custom resources). Objects within a group are
//! independent and go concurrently; groups go one after the other.
//!
//! Owns: the ordering, the resolution of every kind through discovery (never a guessed
//! plural), stamping the stack label, and the SSA request (field manager `pulsedev`,
//! force). Must not delete anything (that is `prune`) or decide readiness (`wait`).

use std::collections::BTreeSet;

use ::kube::Api;
use ::kube::api::{DynamicObject, Patch, PatchParams};
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::discovery::{Resolved, parse_gvk};
use super::manifest::Manifest;
use super::wait::{Target, TargetKind};
use super::webhook::WebhookGate;
use super::{Engine, FIELD_MANAGER, STACK_LABEL, cancellable, describe, human_duration};
use crate::error::{Error, ErrorKind, Result};

/// How to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Value of the `pulsedev.dev/stack` label stamped on every object (prune finds
    /// objects by it). Empty: leave labels as rendered.
    pub stack: String,
    /// Namespace of namespaced objects that name none (what `helm template -n` means).
    pub default_namespace: String,
    /// Webhooks that must answer before objects they serve are applied.
    pub gates: Vec<WebhookGate>,
}

impl ApplyOptions {
    pub fn new(stack: &str, default_namespace: &str) -> ApplyOptions {
        ApplyOptions {
            stack: stack.to_string(),
            default_namespace: default_namespace.to_string(),
            gates: Vec::new(),
        }
    }

    pub fn with_gate(mut self, gate: WebhookGate) -> ApplyOptions {
        self.gates.push(gate);
        self
    }
}

/// One applied object, as the server returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub api_version: String,
    pub kind: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
    pub name: String,
    pub resource_version: Option<String>,
    pub generation: Option<i64>,
}

impl Applied {
    /// (group, kind, namespace, name): what identifies an object across API versions.
    pub fn key(&self) -> (String, String, String, String) {
        let gvk = parse_gvk(&self.api_version, &self.kind);
        (
            gvk.group,
            self.kind.clone(),
            self.namespace.clone().unwrap_or_default(),
            self.name.clone(),
        )
    }
}

/// What `apply` did, in apply order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub applied: Vec<Applied>,
    /// The workloads among them to wait for (CRDs were already waited for).
    pub targets: Vec<Target>,
}

impl ApplyReport {
    pub fn targets(&self) -> Vec<Target> {
        self.targets.clone()
    }

    /// Adds another report (several `apply` calls make one desired set for `prune`).
    pub fn extend(&mut self, other: ApplyReport) {
        self.applied.extend(other.applied);
        self.targets.extend(other.targets);
    }
}

/// The dependency groups, in apply order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Group {
    Namespaces,
    Crds,
    /// What workloads refer to: config, identities, RBAC, storage, policy, classes.
    Foundation,
    /// Workloads and the Services in front of them.
    Workloads,
    /// Routing, admission (webhook configurations only once their servers exist),
    /// aggregated APIs, and custom resources (often served by a webhook).
    Routing,
}

impl Group {
    const ALL: [Group; 5] = [
        Group::Namespaces,
        Group::Crds,
        Group::Foundation,
        Group::Workloads,
        Group::Routing,
    ];

    fn words(self) -> &'static str {
        match self {
            Group::Namespaces => "namespaces",
            Group::Crds => "custom resource definitions",
            Group::Foundation => "configuration, identities and policies",
            Group::Workloads => "workloads and services",
            Group::Routing => "routing, admission and custom resources",
        }
    }
}

/// API groups that ship with Kubernetes; kinds of any other group are custom resources.
pub(crate) const BUILTIN_GROUPS: [&str; 18] = [
    "",
    "apps",
    "batch",
    "autoscaling",
    "policy",
    "networking.k8s.io",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
    "node.k8s.io",
    "admissionregistration.k8s.io",
    "apiregistration.k8s.io",
    "apiextensions.k8s.io",
    "certificates.k8s.io",
    "flowcontrol.apiserver.k8s.io",
    "resource.k8s.io",
];

pub(crate) fn group_of(api_version: &str, kind: &str) -> Group {
    let group = parse_gvk(api_version, kind).group;
    match kind {
        "Namespace" if group.is_empty() => Group::Namespaces,
        "CustomResourceDefinition" if group == "apiextensions.k8s.io" => Group::Crds,
        "ConfigMap"
        | "Secret"
        | "ServiceAccount"
        | "PersistentVolumeClaim"
        | "PersistentVolume"
        | "ResourceQuota"
        | "LimitRange"
            if group.is_empty() =>
        {
            Group::Foundation
        }
        "ClusterRole"
        | "ClusterRoleBinding"
        | "Role"
        | "RoleBinding"
        | "StorageClass"
        | "PriorityClass"
        | "NetworkPolicy"
        | "PodDisruptionBudget"
        | "IngressClass"
        | "RuntimeClass" => Group::Foundation,
        "Ingress"
        | "MutatingWebhookConfiguration"
        | "ValidatingWebhookConfiguration"
        | "ValidatingAdmissionPolicy"
        | "ValidatingAdmissionPolicyBinding"
        | "APIService" => Group::Routing,
        _ if !BUILTIN_GROUPS.contains(&group.as_str()) => Group::Routing,
        _ => Group::Workloads,
    }
}

fn apply_failed(message: String, details: Vec<String>) -> Error {
    Error::new(ErrorKind::ApplyFailed, message).with_details(details)
}

impl Engine {
    /// Applies `manifests` with server-side apply (field manager `pulsedev`, force), in
    /// dependency order (see the module docs), and returns what the server stored.
    ///
    /// Every kind is resolved through discovery first; a kind the cluster does not serve
    /// (and no CRD in `manifests` defines) fails the whole apply before anything is
    /// written (`apply-failed`). CRDs are waited for until Established and discovery
    /// serves their kinds. Webhook `gates` run before the first object they cover.
    pub async fn apply(
        &self,
        manifests: &[Manifest],
        options: &ApplyOptions,
        cancel: &CancellationToken,
    ) -> Result<ApplyReport> {
        cancellable(cancel, self.apply_all(manifests, options, cancel)).await?
    }

    async fn apply_all(
        &self,
        manifests: &[Manifest],
        options: &ApplyOptions,
        cancel: &CancellationToken,
    ) -> Result<ApplyReport> {
        // Kinds the CRDs of this set will define: allowed to be unknown for now.
        let crd_kinds: BTreeSet<(String, String)> = manifests
            .iter()
            .filter(|m| group_of(m.api_version(), m.kind()) == Group::Crds)
            .filter_map(|m| {
                let spec = m.object.data.get("spec")?;
                let group = spec.get("group")?.as_str()?;
                let kind = spec.get("names")?.get("kind")?.as_str()?;
                Some((group.to_string(), kind.to_string()))
            })
            .collect();
        let mut ordered: Vec<&Manifest> = manifests.iter().collect();
        ordered.sort_by_key(|m| group_of(m.api_version(), m.kind()));

        // Resolve everything we can before writing anything.
        let mut resolved: Vec<Option<Resolved>> = Vec::with_capacity(ordered.len());
        let mut unknown = Vec::new();
        for m in &ordered {
            let r = self
                .discovery
                .resolve(m.api_version(), m.kind())
                .await
                .map_err(|e| {
                    apply_failed(
                        format!(
                            "failed to discover {} from the API server: {}",
                            m.api_version(),
                            describe(&e)
                        ),
                        vec![],
                    )
                })?;
            let gvk = parse_gvk(m.api_version(), m.kind());
            if r.is_none() && !crd_kinds.contains(&(gvk.group, gvk.kind)) {
                unknown.push(format!(
                    "{}: kind {} of apiVersion {} is not served by this cluster",
                    m.origin(),
                    m.kind(),
                    m.api_version()
                ));
            }
            resolved.push(r);
        }
        if !unknown.is_empty() {
            return Err(apply_failed(
                format!(
                    "failed to apply: {} object{} of unknown kind",
                    unknown.len(),
                    if unknown.len() == 1 { "" } else { "s" }
                ),
                unknown,
            )
            .with_hint(
                "check apiVersion and kind, or install the CRD that defines the kind first",
            ));
        }

        let mut report = ApplyReport::default();
        let mut gated = vec![false; options.gates.len()];
        for group in Group::ALL {
            let members: Vec<usize> = (0..ordered.len())
                .filter(|&i| group_of(ordered[i].api_version(), ordered[i].kind()) == group)
                .collect();
            if members.is_empty() {
                continue;
            }
            for (g, gate) in options.gates.iter().enumerate() {
                if !gated[g] && members.iter().any(|&i| gate.covers(ordered[i])) {
                    self.gate_webhook(gate, cancel).await?;
                    gated[g] = true;
                }
            }
            self.say(&format!("applying {} ({})", group.words(), members.len()));
            let results: Vec<(usize, std::result::Result<Applied, String>)> =
                // `copied()`: a closure over `&usize` makes the future fail `Send`
                // inference where `up` runs it on the multi-threaded runtime.
                futures::stream::iter(members.iter().copied().map(|i| {
                    let r = resolved[i].as_ref().expect("resolved above");
                    let m = ordered[i];
                    async move { (i, self.apply_one(m, r, options).await) }
                }))
                .buffer_unordered(self.timing.concurrency.max(1))
                .collect()
                .await;
            let mut results = results;
            results.sort_by_key(|(i, _)| *i);
            let mut failures = Vec::new();
            for (_, r) in results {
                match r {
                    Ok(a) => report.applied.push(a),
                    Err(e) => failures.push(e),
                }
            }
            if !failures.is_empty() {
                return Err(apply_failed(
                    format!(
                        "failed to apply {} of {} {}",
                        failures.len(),
                        members.len(),
                        group.words()
                    ),
                    failures,
                )
                .with_hint(
                    "the API server's messages above name the object and field; \
                     `pulsedev render` prints what was applied",
                ));
            }
            if group == Group::Crds {
                let crds: Vec<Target> = members
                    .iter()
                    .map(|&i| {
                        Target::new(TargetKind::CustomResourceDefinition, "", ordered[i].name())
                    })
                    .collect();
                self.wait_ready(&crds, self.timing.crd_established, cancel)
                    .await?;
                // Established is not yet served: ask discovery until the new kinds resolve.
                for i in 0..ordered.len() {
                    if resolved[i].is_none() {
                        resolved[i] = Some(self.rediscover(ordered[i]).await?);
                    }
                }
            }
        }
        let applied_manifests: Vec<Manifest> = ordered.iter().map(|m| (*m).clone()).collect();
        report.targets = Target::from_manifests(&applied_manifests, &options.default_namespace)
            .into_iter()
            .filter(|t| t.kind != TargetKind::CustomResourceDefinition)
            .collect();
        Ok(report)
    }

    /// After a CRD is Established, discovery may still lag: ask again until the kind is
    /// served, for at most `timing.discovery_catch_up`.
    async fn rediscover(&self, m: &Manifest) -> Result<Resolved> {
        let (av, kind) = (m.api_version(), m.kind());
        let deadline = Instant::now() + self.timing.discovery_catch_up;
        loop {
            self.discovery.forget(av);
            match self.discovery.resolve(av, kind).await {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(e) => self.say(&format!("discovery of {av}: {}", describe(&e))),
            }
            if Instant::now() >= deadline {
                return Err(apply_failed(
                    format!(
                        "failed to apply {m}: kind {kind} of {av} is still not served {} after its CRD became Established",
                        human_duration(self.timing.discovery_catch_up)
                    ),
                    vec![m.origin()],
                )
                .with_hint("check that the CRD serves this version (spec.versions[].served), then run `pulsedev up` again"));
            }
            self.say(&format!("waiting for discovery to serve {kind} ({av})"));
            tokio::time::sleep(self.timing.poll).await;
        }
    }

    /// One server-side apply. The error is a line naming the object, its origin and the
    /// server's message.
    async fn apply_one(
        &self,
        m: &Manifest,
        r: &Resolved,
        options: &ApplyOptions,
    ) -> std::result::Result<Applied, String> {
        let mut obj: DynamicObject = m.object.clone();
        let namespace = r.namespaced.then(|| {
            m.namespace()
                .unwrap_or(&options.default_namespace)
                .to_string()
        });
        obj.metadata.namespace = namespace.clone();
        // Fields the server owns; a manifest copied from `kubectl get` may carry them.
        obj.metadata.resource_version = None;
        obj.metadata.uid = None;
        obj.metadata.creation_timestamp = None;
        obj.metadata.managed_fields = None;
        if !options.stack.is_empty() {
            obj.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(STACK_LABEL.to_string(), options.stack.clone());
        }
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &r.resource),
            None => Api::all_with(self.client.clone(), &r.resource),
        };
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let shown = match &namespace {
            Some(ns) => format!("{} {ns}/{}", m.kind(), m.name()),
            None => format!("{} {}", m.kind(), m.name()),
        };
        match api.patch(m.name(), &params, &Patch::Apply(&obj)).await {
            Ok(stored) => Ok(Applied {
                api_version: m.api_version().to_string(),
                kind: m.kind().to_string(),
                namespace,
                name: m.name().to_string(),
                resource_version: stored.metadata.resource_version,
                generation: stored.metadata.generation,
            }),
            Err(e) => Err(format!("{shown} ({}): {}", m.origin(), describe(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::Timing;
    use crate::kube::manifest::parse;
    use crate::kube::testing::{
        Exchange, Scenario, apiextensions_v1, apps_v1, core_v1, resource_list,
    };
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const STREAM: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  namespace: pulsewatch-dev
spec:
  size: 3
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: pulsewatch-dev
spec:
  replicas: 1
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: "localhost:5001/pulsewatch/api:dev"}]
---
apiVersion: v1
kind: Service
metadata:
  name: api
spec:
  selector: {app: api}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: api-config
  namespace: pulsewatch-dev
data: {LOG_LEVEL: debug}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}
  versions:
    - name: v1
      served: true
      storage: true
      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
---
apiVersion: v1
kind: Namespace
metadata:
  name: pulsewatch-dev
"#;

    /// The CRD as the server returns it, with the given conditions.
    pub(crate) fn crd(name: &str, established: bool) -> Value {
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
            CustomResourceDefinition, CustomResourceDefinitionCondition,
            CustomResourceDefinitionStatus,
        };
        let cond = |t: &str, s: bool, reason: &str| CustomResourceDefinitionCondition {
            type_: t.into(),
            status: if s { "True" } else { "False" }.into(),
            reason: Some(reason.into()),
            message: Some(format!("{reason} condition")),
            ..Default::default()
        };
        let mut c = CustomResourceDefinition::default();
        c.metadata.name = Some(name.into());
        c.metadata.resource_version = Some("2001".into());
        c.status = Some(CustomResourceDefinitionStatus {
            conditions: Some(vec![
                cond("NamesAccepted", true, "NoConflicts"),
                cond(
                    "Established",
                    established,
                    if established {
                        "InitialNamesAccepted"
                    } else {
                        "Installing"
                    },
                ),
            ]),
            ..Default::default()
        });
        serde_json::to_value(c).unwrap()
    }

    fn ssa(path: &str) -> Exchange {
        Exchange::patch(path)
            .query("fieldManager", "pulsedev")
            .query("force", "true")
            .check(|seen| {
                assert_eq!(
                    seen.content_type.as_deref(),
                    Some("application/apply-patch+yaml"),
                    "{seen}"
                );
                assert_eq!(
                    seen.body["metadata"]["labels"]["pulsedev.dev/stack"], "pulsewatch",
                    "{seen}: the stack label is stamped"
                );
            })
            .echo()
    }

    fn engine(client: ::kube::Client, lines: Arc<Mutex<Vec<String>>>) -> Engine {
        Engine::new(client)
            .with_timing(Timing {
                poll: Duration::from_secs(1),
                ..Timing::default()
            })
            .with_progress(move |l| lines.lock().unwrap().push(l.to_string()))
    }

    #[tokio::test(start_paused = true)]
    async fn applies_in_order_waits_for_the_crd_and_for_discovery_to_catch_up() {
        let ms = parse("stack.yaml", STREAM).unwrap();
        let widgets_missing = Exchange::get("/apis/example.com/v1").fail(
            404,
            "NotFound",
            "the server could not find the requested resource",
        );
        let (client, mock) = Scenario::new()
            // Discovery of every kind before anything is written, in apply order.
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(Exchange::get("/apis/apiextensions.k8s.io/v1").ok(apiextensions_v1()))
            .then(Exchange::get("/apis/apps/v1").ok(apps_v1()))
            .then(widgets_missing)
            // Namespaces, then CRDs.
            .then(ssa("/api/v1/namespaces/pulsewatch-dev"))
            .then(
                ssa("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com")
                    .check(|seen| assert!(seen.body["metadata"].get("namespace").is_none())),
            )
            // The CRD becomes Established on the second look...
            .then(
                Exchange::get(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
                )
                .ok(crd("widgets.example.com", false)),
            )
            .then(
                Exchange::get(
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
                )
                .ok(crd("widgets.example.com", true)),
            )
            // ...and discovery serves the kind one request later.
            .then(Exchange::get("/apis/example.com/v1").fail(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
            .then(Exchange::get("/apis/example.com/v1").ok(resource_list(
                "example.com/v1",
                &[("widgets", "Widget", true)],
            )))
            .then(ssa(
                "/api/v1/namespaces/pulsewatch-dev/configmaps/api-config",
            ))
            // Workloads and Services are independent: concurrently, any order.
            .any_order(vec![
                ssa("/apis/apps/v1/namespaces/pulsewatch-dev/deployments/api"),
                // No namespace in the manifest: the default namespace is filled in.
                ssa("/api/v1/namespaces/pulsewatch-dev/services/api")
                    .check(|seen| assert_eq!(seen.body["metadata"]["namespace"], "pulsewatch-dev")),
            ])
            .then(ssa(
                "/apis/example.com/v1/namespaces/pulsewatch-dev/widgets/w1",
            ))
            .start();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let report = engine(client, lines.clone())
            .apply(
                &ms,
                &ApplyOptions::new("pulsewatch", "pulsewatch-dev"),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;
        let order: Vec<String> = report
            .applied
            .iter()
            .map(|a| format!("{} {}", a.kind, a.name))
            .collect();
        assert_eq!(
            order,
            [
                "Namespace pulsewatch-dev",
                "CustomResourceDefinition widgets.example.com",
                "ConfigMap api-config",
                "Deployment api",
                "Service api",
                "Widget w1"
            ]
        );
        assert_eq!(report.applied[0].resource_version.as_deref(), Some("1001"));
        assert_eq!(
            report.targets(),
            [Target::new(TargetKind::Deployment, "pulsewatch-dev", "api")]
        );
        let lines = lines.lock().unwrap().join("\n");
        assert!(
            lines.contains("crd widgets.example.com: not Established yet"),
            "{lines}"
        );
        assert!(
            lines.contains("waiting for discovery to serve Widget"),
            "{lines}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unknown_kind_fails_before_anything_is_written() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: api}\n---\napiVersion: apps/v1\nkind: Deploymnet\nmetadata: {name: api}\n";
        let ms = parse("charts/api", text).unwrap();
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(Exchange::get("/apis/apps/v1").ok(apps_v1()))
            .then(Exchange::get("/apis/monitoring.coreos.com/v1").fail(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
            .start();
        let e = Engine::new(client)
            .apply(
                &ms,
                &ApplyOptions::new("pulsewatch", "pulsewatch-dev"),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "apply-failed");
        assert_eq!(e.message, "failed to apply: 2 objects of unknown kind");
        assert_eq!(
            e.details,
            [
                "charts/api document 3: kind Deploymnet of apiVersion apps/v1 is not served by this cluster",
                "charts/api document 2: kind ServiceMonitor of apiVersion monitoring.coreos.com/v1 is not served by this cluster",
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rejected_objects_are_all_reported_with_the_servers_message() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: db}\ntype: Opaque\ndata: {password: not-base64!}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: api}\n";
        let ms = parse("dev/x.yaml", text).unwrap();
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .any_order(vec![
                ssa("/api/v1/namespaces/pulsewatch-dev/configmaps/a"),
                Exchange::patch("/api/v1/namespaces/pulsewatch-dev/secrets/db").fail(
                    400,
                    "BadRequest",
                    "Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 3",
                ),
                ssa("/api/v1/namespaces/pulsewatch-dev/serviceaccounts/api"),
            ])
            .start();
        let e = Engine::new(client)
            .apply(
                &ms,
                &ApplyOptions::new("pulsewatch", "pulsewatch-dev"),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "apply-failed");
        assert_eq!(
            e.message,
            "failed to apply 1 of 3 configuration, identities and policies"
        );
        assert_eq!(
            e.details,
            [
                "Secret pulsewatch-dev/db (dev/x.yaml document 2): Secret in version \"v1\" cannot be handled as a Secret: illegal base64 data at input byte 3 (400 BadRequest)"
            ]
        );
    }

    #[test]
    fn groups_follow_dependencies() {
        let g = group_of;
        assert_eq!(g("v1", "Namespace"), Group::Namespaces);
        assert_eq!(
            g("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            Group::Crds
        );
        assert_eq!(g("v1", "Secret"), Group::Foundation);
        assert_eq!(
            g("rbac.authorization.k8s.io/v1", "RoleBinding"),
            Group::Foundation
        );
        assert_eq!(
            g("networking.k8s.io/v1", "NetworkPolicy"),
            Group::Foundation
        );
        assert_eq!(g("apps/v1", "StatefulSet"), Group::Workloads);
        assert_eq!(g("v1", "Service"), Group::Workloads);
        assert_eq!(g("batch/v1", "Job"), Group::Workloads);
        assert_eq!(g("networking.k8s.io/v1", "Ingress"), Group::Routing);
        assert_eq!(
            g(
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration"
            ),
            Group::Routing
        );
        assert_eq!(g("cert-manager.io/v1", "ClusterIssuer"), Group::Routing);
        let _ = json!(null);
    }
}
