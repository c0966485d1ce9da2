//! Server-side apply of a set of manifests, in an order that works the first time:
//! Namespaces, then CRDs (wait Established, then rediscover until their kinds resolve),
//! then the rest in dependency groups (foundation: config, RBAC, policy; workloads and
//! Services; admission webhook configurations; routing, admission policies and custom
//! resources). Objects within a group are independent and go concurrently; groups go one
//! after the other. Objects a webhook configuration of the set intercepts wait until it
//! serves (`admission`).
//!
//! Owns: the ordering, the resolution of every kind through discovery (never a guessed
//! plural), stamping the stack label, the SSA request (field manager `pulsedev`, force,
//! `fieldValidation=Strict` as kubectl sends by default), saying the API server's
//! warnings, and recreating an object whose immutable fields changed where that keeps
//! data (see [`recreate_policy`]). Must not delete anything else (that is `prune`) or
//! decide readiness (`wait`).

use std::collections::BTreeSet;

use ::kube::Api;
use ::kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::admission::{Candidate, hooks_of};
use super::client::with_warnings;
use super::discovery::{Resolved, parse_gvk};
use super::manifest::Manifest;
use super::wait::{Target, TargetKind};
use super::webhook::{Backoff, WebhookGate};
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
    /// Retry timing of the gates of webhook configurations in the set (`admission`).
    pub admission_backoff: Backoff,
}

impl ApplyOptions {
    pub fn new(stack: &str, default_namespace: &str) -> ApplyOptions {
        ApplyOptions {
            stack: stack.to_string(),
            default_namespace: default_namespace.to_string(),
            gates: Vec::new(),
            admission_backoff: Backoff::default(),
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
    /// Admission webhook configurations: once their servers are applied, before what
    /// they intercept (which is gated on them, see `admission`).
    Admission,
    /// Routing, admission policies, aggregated APIs, and custom resources (often
    /// served by a webhook).
    Routing,
}

impl Group {
    const ALL: [Group; 6] = [
        Group::Namespaces,
        Group::Crds,
        Group::Foundation,
        Group::Workloads,
        Group::Admission,
        Group::Routing,
    ];

    fn words(self) -> &'static str {
        match self {
            Group::Namespaces => "namespaces",
            Group::Crds => "custom resource definitions",
            Group::Foundation => "configuration, identities and policies",
            Group::Workloads => "workloads and services",
            Group::Admission => "admission webhook configurations",
            Group::Routing => "routing, admission policies and custom resources",
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
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration"
            if group == "admissionregistration.k8s.io" =>
        {
            Group::Admission
        }
        "Ingress"
        | "ValidatingAdmissionPolicy"
        | "ValidatingAdmissionPolicyBinding"
        | "APIService" => Group::Routing,
        _ if !BUILTIN_GROUPS.contains(&group.as_str()) => Group::Routing,
        _ => Group::Workloads,
    }
}

/// Whether a failed write is the API server refusing to change an immutable field: a
/// 422 Invalid whose causes (or message) say "field is immutable" (apimachinery
/// pkg/api/validation `ValidateImmutableField`, used for Deployment/Job selectors, Job
/// templates, Service clusterIP) or forbid the update (kubernetes pkg/apis/apps/validation
/// `ValidateStatefulSetUpdate`: "updates to statefulset spec for fields other than ...
/// are forbidden"; pkg/apis/core/validation `ValidatePersistentVolumeClaimUpdate`:
/// "spec is immutable after creation ...").
pub(crate) fn is_immutable_refusal(status: &::kube::core::Status) -> bool {
    if status.code != 422 {
        return false;
    }
    let says = |m: &str| {
        m.contains("field is immutable")
            || m.contains("is immutable after creation")
            || (m.contains("updates to") && m.contains("are forbidden"))
    };
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default();
    causes.iter().any(|c| {
        (c.reason == "FieldValueInvalid" || c.reason == "FieldValueForbidden") && says(&c.message)
    }) || (causes.is_empty() && says(&status.message))
}

/// How an object whose immutable fields changed is replaced, when it may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recreate {
    /// Delete with `propagationPolicy: Orphan` (kubectl `--cascade=orphan`): the pods
    /// (and a StatefulSet's PersistentVolumeClaims) stay; the new object adopts the pods
    /// its selector matches.
    Orphan,
    /// Delete with its dependents in the background (a Job's pods are disposable).
    Background,
}

/// The labels of namespace `ns` as the set declares them, for webhooks'
/// namespaceSelectors, plus `kubernetes.io/metadata.name`, which the API server adds to
/// every namespace (the NamespaceDefaultLabelName feature, GA in 1.22).
fn namespace_labels(set: &[&Manifest], ns: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut labels: serde_json::Map<String, serde_json::Value> = set
        .iter()
        .find(|m| group_of(m.api_version(), m.kind()) == Group::Namespaces && m.name() == ns)
        .and_then(|m| m.object.metadata.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    labels.insert("kubernetes.io/metadata.name".into(), ns.into());
    labels
}

/// Which kinds pulsedev recreates on an immutable-field refusal. PersistentVolumeClaims
/// never (deleting one deletes its data), nor any kind not listed.
pub(crate) fn recreate_policy(api_version: &str, kind: &str) -> Option<Recreate> {
    let group = parse_gvk(api_version, kind).group;
    match (group.as_str(), kind) {
        ("apps", "StatefulSet" | "Deployment" | "DaemonSet" | "ReplicaSet") => {
            Some(Recreate::Orphan)
        }
        ("batch", "Job") | ("", "Service") => Some(Recreate::Background),
        _ => None,
    }
}

/// What one apply gives: the object stored and the server's warnings, or a line naming
/// the object and what went wrong.
type OneResult = std::result::Result<(Applied, Vec<String>), String>;

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
        let hooks: Vec<_> = ordered.iter().flat_map(|m| hooks_of(m)).collect();
        let ns_labels = |ns: &str| namespace_labels(&ordered, ns);
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
            if group > Group::Admission && !hooks.is_empty() {
                let candidates: Vec<Candidate> = members
                    .iter()
                    .filter_map(|&i| {
                        let r = resolved[i].as_ref()?;
                        Some(Candidate {
                            manifest: ordered[i],
                            resolved: r,
                            object: prepared(ordered[i], r, options),
                        })
                    })
                    .collect();
                self.gate_admission(&hooks, &candidates, &ns_labels, &options.admission_backoff)
                    .await?;
            }
            self.say(&format!("applying {} ({})", group.words(), members.len()));
            let results: Vec<(usize, OneResult)> =
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
            for (i, r) in results {
                match r {
                    Ok((a, warnings)) => {
                        let what = format!("{} ({})", shown(&a), ordered[i].origin());
                        for w in &warnings {
                            self.warn(&what, w);
                        }
                        report.applied.push(a);
                    }
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

    /// One server-side apply, and the API server's warnings about it. The error is a
    /// line naming the object, its origin and the server's message. An immutable-field
    /// refusal recreates the object where [`recreate_policy`] allows it.
    async fn apply_one(&self, m: &Manifest, r: &Resolved, options: &ApplyOptions) -> OneResult {
        let obj = prepared(m, r, options);
        let namespace = obj.metadata.namespace.clone();
        let api: Api<DynamicObject> = match &namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &r.resource),
            None => Api::all_with(self.client.clone(), &r.resource),
        };
        // Strict, as kubectl sends by default: a duplicate field is an error, not a
        // warning (k8s.io/apiserver pkg/endpoints/handlers/patch.go, applyPatcher).
        let params = PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict();
        let shown = match &namespace {
            Some(ns) => format!("{} {ns}/{}", m.kind(), m.name()),
            None => format!("{} {}", m.kind(), m.name()),
        };
        let failed = |e: &::kube::Error| format!("{shown} ({}): {}", m.origin(), describe(e));
        let (first, mut warnings) =
            with_warnings(api.patch(m.name(), &params, &Patch::Apply(&obj))).await;
        let stored = match first {
            Ok(stored) => stored,
            Err(::kube::Error::Api(s)) if is_immutable_refusal(&s) => {
                let e = ::kube::Error::Api(s);
                let Some(policy) = recreate_policy(m.api_version(), m.kind()) else {
                    let mut line = failed(&e);
                    if m.kind() == "PersistentVolumeClaim" {
                        line.push_str(&format!(
                            "; pulsedev never deletes a PersistentVolumeClaim (its volume's data \
                             would go): delete it yourself (`kubectl delete pvc -n {} {}`) or run \
                             `pulsedev reset`, then `pulsedev up`",
                            namespace.as_deref().unwrap_or_default(),
                            m.name()
                        ));
                    }
                    return Err(line);
                };
                self.say(&format!(
                    "recreating {shown}: {} ({})",
                    describe(&e),
                    match policy {
                        Recreate::Orphan =>
                            "deleted with --cascade=orphan: its pods and volumes stay",
                        Recreate::Background => "deleted with its dependents",
                    }
                ));
                self.delete_and_wait(&api, m.name(), policy)
                    .await
                    .map_err(|e| format!("{shown} ({}): {e}", m.origin()))?;
                let (again, more) =
                    with_warnings(api.patch(m.name(), &params, &Patch::Apply(&obj))).await;
                warnings.extend(more);
                let stored = again.map_err(|e| failed(&e))?;
                self.say(&format!("recreated {shown}"));
                stored
            }
            Err(e) => return Err(failed(&e)),
        };
        Ok((
            Applied {
                api_version: m.api_version().to_string(),
                kind: m.kind().to_string(),
                namespace,
                name: m.name().to_string(),
                resource_version: stored.metadata.resource_version,
                generation: stored.metadata.generation,
            },
            warnings,
        ))
    }

    /// Deletes `name` with `policy` and waits until the API server no longer has it (it
    /// may carry finalizers), for at most `timing.recreate`.
    async fn delete_and_wait(
        &self,
        api: &Api<DynamicObject>,
        name: &str,
        policy: Recreate,
    ) -> std::result::Result<(), String> {
        let params = DeleteParams {
            propagation_policy: Some(match policy {
                Recreate::Orphan => PropagationPolicy::Orphan,
                Recreate::Background => PropagationPolicy::Background,
            }),
            ..DeleteParams::default()
        };
        let uid = match api.delete(name, &params).await {
            Ok(either) => either.left().and_then(|o| o.metadata.uid),
            Err(::kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => {
                return Err(format!(
                    "failed to delete it to recreate it: {}",
                    describe(&e)
                ));
            }
        };
        let deadline = Instant::now() + self.timing.recreate;
        loop {
            match api.get_opt(name).await {
                Ok(None) => return Ok(()),
                // Another object of the same name: the old one is gone.
                Ok(Some(o)) if uid.is_some() && o.metadata.uid != uid => return Ok(()),
                Ok(Some(_)) => {}
                Err(e) => {
                    return Err(format!(
                        "failed to read it after deleting it: {}",
                        describe(&e)
                    ));
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "deleted to be recreated, but still there after {} (a finalizer?)",
                    human_duration(self.timing.recreate)
                ));
            }
            tokio::time::sleep(self.timing.poll).await;
        }
    }
}

/// The object to send for `m`: its namespace filled in, server-owned fields dropped, the
/// stack label stamped.
fn prepared(m: &Manifest, r: &Resolved, options: &ApplyOptions) -> DynamicObject {
    let mut obj: DynamicObject = m.object.clone();
    obj.metadata.namespace = r.namespaced.then(|| {
        m.namespace()
            .unwrap_or(&options.default_namespace)
            .to_string()
    });
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
    obj
}

/// `Deployment ns/name` or `ClusterRole name`.
fn shown(a: &Applied) -> String {
    match &a.namespace {
        Some(ns) => format!("{} {ns}/{}", a.kind, a.name),
        None => format!("{} {}", a.kind, a.name),
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
            .query("fieldValidation", "Strict")
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

    /// The 422 a real API server answers to a changed volumeClaimTemplates (kubernetes
    /// pkg/apis/apps/validation ValidateStatefulSetUpdate, as kubectl shows it).
    fn sts_forbidden(name: &str) -> Value {
        let what = "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("StatefulSet.apps \"{name}\" is invalid: spec: {what}"),
            "reason": "Invalid", "code": 422,
            "details": {"name": name, "group": "apps", "kind": "StatefulSet",
                "causes": [{"reason": "FieldValueForbidden", "message": what, "field": "spec"}]}})
    }

    const STS: &str = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: postgres, namespace: pulsewatch-dev}\nspec:\n  serviceName: postgres\n  selector: {matchLabels: {app: postgres}}\n  template: {metadata: {labels: {app: postgres}}}\n  volumeClaimTemplates: [{metadata: {name: data}, spec: {resources: {requests: {storage: 2Gi}}}}]\n";

    #[tokio::test(start_paused = true)]
    async fn a_statefulset_with_changed_immutable_fields_is_recreated_keeping_pods_and_claims() {
        let ms = parse("dev/postgres.yaml", STS).unwrap();
        let path = "/apis/apps/v1/namespaces/pulsewatch-dev/statefulsets/postgres";
        let old = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "postgres", "namespace": "pulsewatch-dev", "uid": "old-uid",
                "deletionTimestamp": "2026-11-30T12:00:00Z", "finalizers": ["example.com/hold"]}});
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/apis/apps/v1").ok(apps_v1()))
            .then(Exchange::patch(path).reply(422, sts_forbidden("postgres")))
            .then(
                Exchange::delete(path)
                    .check(|seen| {
                        assert_eq!(seen.body["propagationPolicy"], "Orphan", "{seen}");
                    })
                    .ok(old.clone()),
            )
            // A finalizer holds it for one more look.
            .then(Exchange::get(path).ok(old))
            .then(Exchange::get(path).fail(
                404,
                "NotFound",
                "statefulsets.apps \"postgres\" not found",
            ))
            .then(ssa(path))
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
        assert_eq!(report.applied.len(), 1);
        let lines = lines.lock().unwrap().join("\n");
        assert!(
            lines.contains("recreating StatefulSet pulsewatch-dev/postgres: StatefulSet.apps \"postgres\" is invalid: spec: Forbidden"),
            "{lines}"
        );
        assert!(lines.contains("its pods and volumes stay"), "{lines}");
        assert!(
            lines.contains("recreated StatefulSet pulsewatch-dev/postgres"),
            "{lines}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_claim_is_never_deleted_and_the_error_says_what_to_do() {
        let text = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {storageClassName: fast, resources: {requests: {storage: 1Gi}}}\n";
        let ms = parse("dev/pvc.yaml", text).unwrap();
        let what = "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims";
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(
                Exchange::patch("/api/v1/namespaces/pulsewatch-dev/persistentvolumeclaims/data")
                    .reply(
                        422,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "message": format!("PersistentVolumeClaim \"data\" is invalid: spec: Forbidden: {what}"),
                            "reason": "Invalid", "code": 422,
                            "details": {"name": "data", "kind": "PersistentVolumeClaim",
                                "causes": [{"reason": "FieldValueForbidden", "message": format!("Forbidden: {what}"), "field": "spec"}]}}),
                    ),
            )
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
        assert_eq!(e.details.len(), 1);
        let d = &e.details[0];
        assert!(d.starts_with("PersistentVolumeClaim pulsewatch-dev/data (dev/pvc.yaml document 1): PersistentVolumeClaim \"data\" is invalid"), "{d}");
        assert!(
            d.contains("pulsedev never deletes a PersistentVolumeClaim"),
            "{d}"
        );
        assert!(
            d.contains("`kubectl delete pvc -n pulsewatch-dev data`"),
            "{d}"
        );
        assert!(d.contains("`pulsedev reset`"), "{d}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_object_that_never_goes_away_fails_the_recreate_on_time() {
        let ms = parse("dev/postgres.yaml", STS).unwrap();
        let path = "/apis/apps/v1/namespaces/pulsewatch-dev/statefulsets/postgres";
        let held = json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "postgres", "namespace": "pulsewatch-dev", "uid": "old-uid"}});
        let mut scenario = Scenario::new()
            .then(Exchange::get("/apis/apps/v1").ok(apps_v1()))
            .then(Exchange::patch(path).reply(422, sts_forbidden("postgres")))
            .then(Exchange::delete(path).ok(held.clone()));
        // poll 1 s, recreate budget 3 s: looks at 0, 1, 2 and 3 s.
        for _ in 0..4 {
            scenario = scenario.then(Exchange::get(path).ok(held.clone()));
        }
        let (client, mock) = scenario.start();
        let e = Engine::new(client)
            .with_timing(Timing {
                poll: Duration::from_secs(1),
                recreate: Duration::from_secs(3),
                ..Timing::default()
            })
            .apply(
                &ms,
                &ApplyOptions::new("pulsewatch", "pulsewatch-dev"),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(
            e.details,
            [
                "StatefulSet pulsewatch-dev/postgres (dev/postgres.yaml document 1): deleted to be recreated, but still there after 3s (a finalizer?)"
            ]
        );
    }

    /// What the DELETE of a recreate can meet: the object already gone (404: nothing to
    /// wait for), the server refusing (the recreate fails, nothing re-applied), and
    /// another object of the same name by the next read (a new uid: the old one is gone,
    /// as kubectl's `wait --for=delete` reads it, staging/src/k8s.io/kubectl/pkg/cmd/wait/
    /// delete.go `IsDeleted`).
    #[tokio::test(start_paused = true)]
    async fn a_recreate_tells_gone_refused_and_replaced_apart() {
        let ms = parse("dev/postgres.yaml", STS).unwrap();
        let path = "/apis/apps/v1/namespaces/pulsewatch-dev/statefulsets/postgres";
        async fn apply(ms: &[Manifest], scenario: Scenario) -> Result<ApplyReport> {
            let (client, mock) = scenario.start();
            let r = Engine::new(client)
                .apply(
                    ms,
                    &ApplyOptions::new("pulsewatch", "pulsewatch-dev"),
                    &CancellationToken::new(),
                )
                .await;
            mock.finish().await;
            r
        }
        let start = || {
            Scenario::new()
                .then(Exchange::get("/apis/apps/v1").ok(apps_v1()))
                .then(Exchange::patch(path).reply(422, sts_forbidden("postgres")))
        };
        // Gone already: applied again at once.
        let gone = start()
            .then(Exchange::delete(path).fail(
                404,
                "NotFound",
                "statefulsets.apps \"postgres\" not found",
            ))
            .then(ssa(path));
        assert_eq!(apply(&ms, gone).await.unwrap().applied.len(), 1);
        // Refused: the recreate fails with the server's reason, nothing applied again.
        let refused = start().then(Exchange::delete(path).fail(
            403,
            "Forbidden",
            "statefulsets.apps \"postgres\" is forbidden: User cannot delete",
        ));
        let e = apply(&ms, refused).await.unwrap_err();
        assert!(
            e.details[0].contains("failed to delete it to recreate it")
                && e.details[0].contains("forbidden"),
            "{:?}",
            e.details
        );
        // Replaced: the next read finds a new uid under the name, so the old is gone.
        let object = |uid: &str| {
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
                "metadata": {"name": "postgres", "namespace": "pulsewatch-dev", "uid": uid}})
        };
        let replaced = start()
            .then(Exchange::delete(path).ok(object("old-uid")))
            .then(Exchange::get(path).ok(object("new-uid")))
            .then(ssa(path));
        assert_eq!(apply(&ms, replaced).await.unwrap().applied.len(), 1);
    }

    /// The API server never calls webhooks for webhook configurations themselves
    /// (k8s.io/apiserver pkg/admission/plugin/webhook/predicates/rules
    /// `IsExemptAdmissionConfigurationResource`): a configuration whose Fail-policy hook
    /// matches everything is applied without waiting for its own service, which the
    /// set has not deployed yet.
    #[tokio::test(start_paused = true)]
    async fn a_webhook_configuration_is_not_gated_on_its_own_hook() {
        let ms = parse(
            "hook.yaml",
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\n\
             metadata: {name: everything}\nwebhooks:\n- name: all.example.com\n  failurePolicy: Fail\n  \
             clientConfig: {service: {namespace: hooks, name: hook}}\n  \
             rules: [{apiGroups: [\"*\"], apiVersions: [\"*\"], resources: [\"*\"], operations: [\"*\"]}]\n  \
             sideEffects: None\n  admissionReviewVersions: [v1]\n",
        )
        .unwrap();
        let path =
            "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/everything";
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/apis/admissionregistration.k8s.io/v1").ok(
                crate::kube::testing::resource_list(
                    "admissionregistration.k8s.io/v1",
                    &[(
                        "validatingwebhookconfigurations",
                        "ValidatingWebhookConfiguration",
                        false,
                    )],
                ),
            ))
            .then(ssa(path))
            .start();
        let report = Engine::new(client)
            .apply(
                &ms,
                &ApplyOptions::new("pulsewatch", "pulsewatch-dev"),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(report.applied.len(), 1);
    }

    /// A gate runs only before objects it covers: a set without an Ingress never probes
    /// the ingress controller's webhook (which may not be installed at all).
    #[tokio::test(start_paused = true)]
    async fn a_gate_is_not_probed_for_a_set_it_does_not_cover() {
        let ms = parse(
            "cm.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {a: b}\n",
        )
        .unwrap();
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(ssa("/api/v1/namespaces/pulsewatch-dev/configmaps/settings"))
            .start();
        let options = ApplyOptions::new("pulsewatch", "pulsewatch-dev")
            .with_gate(crate::kube::WebhookGate::ingress("pulsewatch-dev", "nginx"));
        let report = Engine::new(client)
            .apply(&ms, &options, &CancellationToken::new())
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(report.applied.len(), 1);
    }

    #[test]
    fn a_namespaces_labels_come_from_that_namespace_in_the_set() {
        let ms = parse(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: a, labels: {team: a}}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: a, labels: {team: cm}}\n---\n\
             apiVersion: v1\nkind: Namespace\nmetadata: {name: b, labels: {team: b}}\n",
        )
        .unwrap();
        let set: Vec<&Manifest> = ms.iter().collect();
        let labels = |ns: &str| serde_json::Value::Object(namespace_labels(&set, ns));
        assert_eq!(
            labels("b"),
            json!({"team": "b", "kubernetes.io/metadata.name": "b"})
        );
        assert_eq!(
            labels("a"),
            json!({"team": "a", "kubernetes.io/metadata.name": "a"})
        );
        // Not in the set: only the label the API server adds.
        assert_eq!(labels("c"), json!({"kubernetes.io/metadata.name": "c"}));
    }

    #[test]
    fn immutable_refusals_are_told_from_other_invalid_answers() {
        let st = |v: Value| -> ::kube::core::Status { serde_json::from_value(v).unwrap() };
        assert!(is_immutable_refusal(&st(sts_forbidden("x"))));
        // Deployment selector (ValidateImmutableField): FieldValueInvalid "field is immutable".
        let dep = json!({"code": 422, "reason": "Invalid",
            "message": "Deployment.apps \"api\" is invalid: spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"x\"}}: field is immutable",
            "details": {"causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: {\"matchLabels\":{\"app\":\"x\"}}: field is immutable", "field": "spec.selector"}]}});
        assert!(is_immutable_refusal(&st(dep.clone())));
        // The same cause on another code is not one.
        let mut other = dep.clone();
        other["code"] = json!(400);
        assert!(!is_immutable_refusal(&st(other)));
        // A range error is Invalid too, but nothing to recreate.
        let range = json!({"code": 422, "reason": "Invalid",
            "message": "ConfigMap ... spec.template.spec.volumes[0].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive",
            "details": {"causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive", "field": "spec.template.spec.volumes[0].configMap.defaultMode"}]}});
        assert!(!is_immutable_refusal(&st(range)));
        // A cause of another reason that happens to say it does not count.
        let required = json!({"code": 422, "reason": "Invalid", "message": "field is immutable",
            "details": {"causes": [{"reason": "FieldValueRequired", "message": "field is immutable", "field": "spec"}]}});
        assert!(!is_immutable_refusal(&st(required)));
        // Both halves of the StatefulSet sentence are needed.
        for message in [
            "Forbidden: updates to spec.foo need a restart",
            "Forbidden: host ports are forbidden",
        ] {
            let one = json!({"code": 422, "reason": "Invalid", "message": message,
                "details": {"causes": [{"reason": "FieldValueForbidden", "message": message, "field": "spec"}]}});
            assert!(!is_immutable_refusal(&st(one)), "{message}");
        }
        // No causes: the message decides.
        assert!(is_immutable_refusal(&st(
            json!({"code": 422, "reason": "Invalid", "message": "Job.batch \"m\" is invalid: spec.template: field is immutable"})
        )));
        assert!(!is_immutable_refusal(&st(
            json!({"code": 422, "reason": "Invalid", "message": "spec.replicas: must be greater than or equal to 0"})
        )));
    }

    #[test]
    fn only_kinds_whose_data_survives_are_recreated() {
        assert_eq!(
            recreate_policy("apps/v1", "StatefulSet"),
            Some(Recreate::Orphan)
        );
        assert_eq!(
            recreate_policy("apps/v1", "Deployment"),
            Some(Recreate::Orphan)
        );
        assert_eq!(
            recreate_policy("apps/v1", "DaemonSet"),
            Some(Recreate::Orphan)
        );
        assert_eq!(
            recreate_policy("apps/v1", "ReplicaSet"),
            Some(Recreate::Orphan)
        );
        assert_eq!(
            recreate_policy("batch/v1", "Job"),
            Some(Recreate::Background)
        );
        assert_eq!(recreate_policy("v1", "Service"), Some(Recreate::Background));
        assert_eq!(recreate_policy("v1", "PersistentVolumeClaim"), None);
        assert_eq!(recreate_policy("v1", "PersistentVolume"), None);
        // A kind of the same name in another group is not ours to recreate.
        assert_eq!(recreate_policy("example.com/v1", "StatefulSet"), None);
        assert_eq!(recreate_policy("example.com/v1", "Service"), None);
        assert_eq!(recreate_policy("example.com/v1", "Job"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn objects_a_new_webhook_intercepts_wait_until_it_serves() {
        let text = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec: {ingressClassName: nginx, rules: [{host: pulsewatch.localhost}]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: ingress-admission}
webhooks:
- name: validate.nginx.ingress.kubernetes.io
  clientConfig: {service: {namespace: ingress, name: ingress-admission}}
  rules: [{apiGroups: [networking.k8s.io], apiVersions: [v1], resources: [ingresses], operations: [CREATE, UPDATE]}]
  sideEffects: None
  admissionReviewVersions: [v1]
"#;
        let ms = parse("platform/ingress", text).unwrap();
        let slices = "/apis/discovery.k8s.io/v1/namespaces/ingress/endpointslices";
        let slice_list = |ready: Option<bool>| {
            let endpoints = match ready {
                None => json!([]),
                Some(r) => json!([{"addresses": ["10.244.0.7"], "conditions": {"ready": r}}]),
            };
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {},
                "items": [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": "ingress-admission-x1", "namespace": "ingress",
                        "labels": {"kubernetes.io/service-name": "ingress-admission"}},
                    "addressType": "IPv4", "endpoints": endpoints}]})
        };
        let ingress = "/apis/networking.k8s.io/v1/namespaces/pulsewatch-dev/ingresses/web";
        let refused = "Internal error occurred: failed calling webhook \"validate.nginx.ingress.kubernetes.io\": failed to call webhook: Post \"https://ingress-admission.ingress.svc:443/networking/v1/ingresses?timeout=10s\": dial tcp 10.96.0.12:443: connect: connection refused";
        let dry = || Exchange::patch(ingress).query("dryRun", "All");
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/apis/admissionregistration.k8s.io/v1").ok(resource_list(
                "admissionregistration.k8s.io/v1",
                &[("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", false)],
            )))
            .then(Exchange::get("/apis/networking.k8s.io/v1").ok(resource_list(
                "networking.k8s.io/v1",
                &[("ingresses", "Ingress", true)],
            )))
            .then(ssa("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/ingress-admission"))
            .then(Exchange::get(slices).query("labelSelector", "kubernetes.io/service-name=ingress-admission").ok(slice_list(None)))
            .then(Exchange::get(slices).ok(slice_list(Some(false))))
            .then(Exchange::get(slices).ok(slice_list(Some(true))))
            .then(dry().fail(500, "InternalError", refused))
            .then(Exchange::get(slices).ok(slice_list(Some(true))))
            .then(dry().echo())
            .then(ssa(ingress).check(|seen| assert!(!seen.query.contains_key("dryRun"), "{seen}")))
            .start();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut options = ApplyOptions::new("pulsewatch", "pulsewatch-dev");
        options.admission_backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            jitter: 0.0,
        };
        engine(client, lines.clone())
            .apply(&ms, &options, &CancellationToken::new())
            .await
            .unwrap();
        mock.finish().await;
        let lines = lines.lock().unwrap().join("\n");
        let who = "webhook validate.nginx.ingress.kubernetes.io (ValidatingWebhookConfiguration ingress-admission) gates Ingress pulsewatch-dev/web: not ready yet";
        assert!(
            lines.contains(&format!(
                "{who} (service ingress/ingress-admission has no ready endpoints); retrying in 1.0s"
            )),
            "{lines}"
        );
        assert!(
            lines.contains("connect: connection refused (500 InternalError)); retrying in 2.0s"),
            "{lines}"
        );
        assert!(
            lines.contains("ValidatingWebhookConfiguration ingress-admission): ready"),
            "{lines}"
        );
    }

    /// A webhook that serves and denies the object: its dry-run answer is the webhook's
    /// verdict, not a sign that it is still starting, so the gate ends at once and the
    /// apply reports the denial (`apply-failed`). The API server wraps a denial as
    /// k8s.io/apiserver pkg/admission/plugin/webhook/errors/statuserror.go `ToStatusErr`
    /// does: `admission webhook "<name>" denied the request: <message>`, at least 400; the
    /// message is ingress-nginx's admission check of a duplicate host and path.
    #[tokio::test(start_paused = true)]
    async fn a_webhook_that_denies_the_object_ends_the_gate_and_fails_the_apply() {
        let text = r#"apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec: {ingressClassName: nginx, rules: [{host: pulsewatch.localhost}]}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: ingress-admission}
webhooks:
- name: validate.nginx.ingress.kubernetes.io
  clientConfig: {service: {namespace: ingress, name: ingress-admission}}
  rules: [{apiGroups: [networking.k8s.io], apiVersions: [v1], resources: [ingresses], operations: [CREATE, UPDATE]}]
  sideEffects: None
  admissionReviewVersions: [v1]
"#;
        let ms = parse("platform/ingress", text).unwrap();
        let slices = "/apis/discovery.k8s.io/v1/namespaces/ingress/endpointslices";
        let ready = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {},
            "items": [{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": "ingress-admission-x1", "namespace": "ingress",
                    "labels": {"kubernetes.io/service-name": "ingress-admission"}},
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["10.244.0.7"], "conditions": {"ready": true}}]}]});
        let ingress = "/apis/networking.k8s.io/v1/namespaces/pulsewatch-dev/ingresses/web";
        let denied = "admission webhook \"validate.nginx.ingress.kubernetes.io\" denied the request: host \"pulsewatch.localhost\" and path \"/\" is already defined in ingress pulsewatch-dev/old-web";
        // No `reason`: the webhook's status carries none and the field is omitempty.
        let denial = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": denied, "code": 400});
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/apis/admissionregistration.k8s.io/v1").ok(resource_list(
                "admissionregistration.k8s.io/v1",
                &[("validatingwebhookconfigurations", "ValidatingWebhookConfiguration", false)],
            )))
            .then(Exchange::get("/apis/networking.k8s.io/v1").ok(resource_list(
                "networking.k8s.io/v1",
                &[("ingresses", "Ingress", true)],
            )))
            .then(ssa("/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/ingress-admission"))
            .then(Exchange::get(slices).ok(ready))
            .then(Exchange::patch(ingress).query("dryRun", "All").reply(400, denial.clone()))
            .then(
                Exchange::patch(ingress)
                    .query("fieldManager", "pulsedev")
                    .query("force", "true")
                    .reply(400, denial),
            )
            .start();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let mut options = ApplyOptions::new("pulsewatch", "pulsewatch-dev");
        options.admission_backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(2),
            cap: Duration::from_secs(60),
            jitter: 0.0,
        };
        let e = engine(client, lines.clone())
            .apply(&ms, &options, &CancellationToken::new())
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "apply-failed");
        assert!(
            e.details.iter().any(|d| d.contains(denied)),
            "{:?}",
            e.details
        );
        // Answered at the first try: no retry, and no "ready" after a wait that never was.
        let lines = lines.lock().unwrap().join("\n");
        assert!(!lines.contains("retrying"), "{lines}");
        assert!(!lines.contains("): ready"), "{lines}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_webhook_that_never_serves_is_webhook_not_ready_within_its_cap() {
        let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: probe}\n---\napiVersion: admissionregistration.k8s.io/v1\nkind: MutatingWebhookConfiguration\nmetadata: {name: m}\nwebhooks:\n- name: m.example.com\n  clientConfig: {service: {namespace: sys, name: hook}}\n  rules: [{apiGroups: [\"\"], apiVersions: [v1], resources: [configmaps], operations: [CREATE]}]\n";
        let ms = parse("x.yaml", text).unwrap();
        // The ConfigMap is in an earlier group than the configuration: not gated.
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(
                Exchange::get("/apis/admissionregistration.k8s.io/v1").ok(resource_list(
                    "admissionregistration.k8s.io/v1",
                    &[(
                        "mutatingwebhookconfigurations",
                        "MutatingWebhookConfiguration",
                        false,
                    )],
                )),
            )
            .then(ssa("/api/v1/namespaces/pulsewatch-dev/configmaps/probe"))
            .then(ssa(
                "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/m",
            ))
            .start();
        engine(client, Arc::default())
            .apply(
                &ms,
                &ApplyOptions::new("pulsewatch", "pulsewatch-dev"),
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;

        // A custom resource after it, whose service never gets an endpoint.
        let text = "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {name: v}\nwebhooks:\n- name: v.example.com\n  clientConfig: {service: {namespace: sys, name: hook}}\n  rules: [{apiGroups: [example.com], apiVersions: [\"*\"], resources: [\"*\"], operations: [\"*\"]}]\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n";
        let ms = parse("y.yaml", text).unwrap();
        let slices = "/apis/discovery.k8s.io/v1/namespaces/sys/endpointslices";
        let empty = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {}, "items": []});
        let mut scenario = Scenario::new()
            .then(
                Exchange::get("/apis/admissionregistration.k8s.io/v1").ok(resource_list(
                    "admissionregistration.k8s.io/v1",
                    &[(
                        "validatingwebhookconfigurations",
                        "ValidatingWebhookConfiguration",
                        false,
                    )],
                )),
            )
            .then(Exchange::get("/apis/example.com/v1").ok(resource_list(
                "example.com/v1",
                &[("widgets", "Widget", true)],
            )))
            .then(ssa(
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/v",
            ));
        // 1 s, then 2 s delays up to a 5 s cap: looks at 0, 1, 3 and 5 s (the last one
        // exactly at the cap is still within it).
        for _ in 0..4 {
            scenario = scenario.then(Exchange::get(slices).ok(empty.clone()));
        }
        let (client, mock) = scenario.start();
        let mut options = ApplyOptions::new("pulsewatch", "pulsewatch-dev");
        options.admission_backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(2),
            cap: Duration::from_secs(5),
            jitter: 0.0,
        };
        let e = engine(client, Arc::default())
            .apply(&ms, &options, &CancellationToken::new())
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "webhook-not-ready");
        assert_eq!(
            e.message,
            "the webhook v.example.com (ValidatingWebhookConfiguration v) did not admit a dry-run of Widget pulsewatch-dev/w within 5s (4 attempts)"
        );
        assert_eq!(e.details, ["service sys/hook has no ready endpoints"]);
    }

    #[tokio::test(start_paused = true)]
    async fn another_invalid_answer_for_a_recreatable_kind_deletes_nothing() {
        let text =
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec: {replicas: -1}\n";
        let ms = parse("charts/api", text).unwrap();
        let message = "Deployment.apps \"api\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0";
        // Any DELETE would be an unexpected request and fail the scenario.
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/apis/apps/v1").ok(apps_v1()))
            .then(
                Exchange::patch("/apis/apps/v1/namespaces/pulsewatch-dev/deployments/api").reply(
                    422,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message,
                        "reason": "Invalid", "code": 422,
                        "details": {"name": "api", "group": "apps", "kind": "Deployment",
                            "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0", "field": "spec.replicas"}]}}),
                ),
            )
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
        assert_eq!(
            e.details,
            [format!(
                "Deployment pulsewatch-dev/api (charts/api document 1): {message} (422 Invalid)"
            )]
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
            Group::Admission
        );
        assert_eq!(
            g(
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfiguration"
            ),
            Group::Admission
        );
        assert_eq!(
            g(
                "admissionregistration.k8s.io/v1",
                "ValidatingAdmissionPolicy"
            ),
            Group::Routing
        );
        assert_eq!(g("cert-manager.io/v1", "ClusterIssuer"), Group::Routing);
        // A custom resource that shares a built-in kind's name is a custom resource: it
        // goes after its CRD, never with the namespaces, CRDs, config or webhooks.
        for kind in [
            "Namespace",
            "CustomResourceDefinition",
            "ConfigMap",
            "PersistentVolumeClaim",
            "MutatingWebhookConfiguration",
        ] {
            assert_eq!(g("example.com/v1", kind), Group::Routing, "{kind}");
        }
        let _ = json!(null);
    }
}
