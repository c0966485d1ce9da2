//! The inventory of a stack: which kinds pulsedev ever applied to it, and in which
//! namespaces, so prune finds every leftover and not only the kinds of a fixed list.
//!
//! Shaped like a KEP-3659 ApplySet parent (kubernetes/enhancements
//! keps/sig-cli/3659-kubectl-apply-prune): a ConfigMap `kube-system/pulsedev-<stack>`
//! labelled `applyset.kubernetes.io/id` (the KEP's hash of name, namespace, kind and
//! group) and annotated with `applyset.kubernetes.io/contains-group-kinds` (`Kind.group`,
//! comma-separated, sorted) and `applyset.kubernetes.io/additional-namespaces`, tooling
//! `pulsedev/v1` (kubectl refuses to prune an ApplySet of another tool, see
//! kubectl's staging/src/k8s.io/kubectl/pkg/cmd/apply/applyset.go). Members are found
//! by the stack label `pulsedev.dev/stack=<stack>` (one label value per stack, the
//! equivalent of the KEP's `applyset.kubernetes.io/part-of`).
//!
//! Owns: reading, extending (before an apply writes anything) and shrinking (after a
//! prune succeeded) that record, and waiting out Terminating namespaces and CRDs before
//! an apply writes into them. Like kubectl, the record only grows before an apply and
//! only shrinks after a prune, so a crash or Ctrl-C at any point never forgets a kind.

use std::collections::{BTreeMap, BTreeSet};

use ::kube::Api;
use ::kube::api::PostParams;
use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use sha2::{Digest, Sha256};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::{ApplyOptions, BUILTIN_GROUPS};
use super::discovery::parse_gvk;
use super::manifest::Manifest;
use super::{Engine, cancellable, describe, human_duration};
use crate::error::{Error, ErrorKind, Result};

/// Where the inventory lives: a namespace every cluster has and pulsedev never prunes.
pub const INVENTORY_NAMESPACE: &str = "kube-system";
const ID_LABEL: &str = "applyset.kubernetes.io/id";
const TOOLING: &str = "applyset.kubernetes.io/tooling";
const GROUP_KINDS: &str = "applyset.kubernetes.io/contains-group-kinds";
const NAMESPACES: &str = "applyset.kubernetes.io/additional-namespaces";

/// Kinds the pre-inventory pulsedev pruned by a fixed list: seeded into a new
/// inventory so objects applied by that version are still found once.
const LEGACY_KINDS: [(&str, &str); 15] = [
    ("", "ConfigMap"),
    ("", "Secret"),
    ("", "Service"),
    ("", "ServiceAccount"),
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("policy", "PodDisruptionBudget"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
];

/// (group, kind); the core group is "".
pub type GroupKind = (String, String);

/// What a stack may have in the cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub kinds: BTreeSet<GroupKind>,
    pub namespaces: BTreeSet<String>,
}

/// `Deployment.apps`, `Namespace` (core): the KEP's group-kind notation.
fn encode_kind((group, kind): &GroupKind) -> String {
    if group.is_empty() {
        kind.clone()
    } else {
        format!("{kind}.{group}")
    }
}

fn decode_kind(s: &str) -> Option<GroupKind> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    Some(match s.split_once('.') {
        Some((kind, group)) => (group.to_string(), kind.to_string()),
        None => (String::new(), s.to_string()),
    })
}

fn split_list(v: Option<&String>) -> impl Iterator<Item = &str> {
    v.map(String::as_str)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

impl Inventory {
    fn from_config_map(cm: &ConfigMap) -> Inventory {
        let a = cm.metadata.annotations.clone().unwrap_or_default();
        Inventory {
            kinds: split_list(a.get(GROUP_KINDS))
                .filter_map(decode_kind)
                .collect(),
            namespaces: split_list(a.get(NAMESPACES)).map(str::to_string).collect(),
        }
    }

    fn annotations(&self) -> BTreeMap<String, String> {
        let kinds: BTreeSet<String> = self.kinds.iter().map(encode_kind).collect();
        BTreeMap::from([
            (TOOLING.to_string(), "pulsedev/v1".to_string()),
            (
                GROUP_KINDS.to_string(),
                kinds.into_iter().collect::<Vec<_>>().join(","),
            ),
            (
                NAMESPACES.to_string(),
                self.namespaces
                    .iter()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(","),
            ),
        ])
    }

    /// Whether `other` adds nothing to this one.
    fn covers(&self, other: &Inventory) -> bool {
        other.kinds.is_subset(&self.kinds) && other.namespaces.is_subset(&self.namespaces)
    }

    fn union(&self, other: &Inventory) -> Inventory {
        Inventory {
            kinds: self.kinds.union(&other.kinds).cloned().collect(),
            namespaces: self.namespaces.union(&other.namespaces).cloned().collect(),
        }
    }
}

/// The inventory ConfigMap's name for `stack`.
pub fn inventory_name(stack: &str) -> String {
    format!("pulsedev-{stack}")
}

/// The KEP-3659 ApplySet id of a parent: `applyset-<b64url(sha256(name.ns.kind.group))>-v1`.
pub fn applyset_id(name: &str, namespace: &str, kind: &str, group: &str) -> String {
    let digest = Sha256::digest(format!("{name}.{namespace}.{kind}.{group}").as_bytes());
    format!(
        "applyset-{}-v1",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

fn failed(message: String) -> Error {
    Error::new(ErrorKind::ApplyFailed, message)
}

/// A custom resource's group (not one Kubernetes ships).
pub(crate) fn is_custom_group(group: &str) -> bool {
    !BUILTIN_GROUPS.contains(&group)
}

impl Engine {
    fn inventory_api(&self) -> Api<ConfigMap> {
        Api::namespaced(self.client.clone(), INVENTORY_NAMESPACE)
    }

    /// The recorded inventory of `stack`; `None` when there is none yet.
    pub async fn inventory(&self, stack: &str) -> Result<Option<Inventory>> {
        match self.inventory_api().get_opt(&inventory_name(stack)).await {
            Ok(cm) => Ok(cm.as_ref().map(Inventory::from_config_map)),
            Err(e) => Err(failed(format!(
                "failed to read the inventory {INVENTORY_NAMESPACE}/{}: {}",
                inventory_name(stack),
                describe(&e)
            ))),
        }
    }

    /// Writes `f(current)` as the inventory of `stack` when it differs (read, change,
    /// replace with the read resourceVersion; a conflict reads again).
    async fn update_inventory(
        &self,
        stack: &str,
        f: impl Fn(Option<&Inventory>) -> Inventory,
    ) -> Result<()> {
        let _one_writer = self.inventory_lock.lock().await;
        let api = self.inventory_api();
        let name = inventory_name(stack);
        let write_failed = |e: &::kube::Error| {
            failed(format!(
                "failed to record the inventory {INVENTORY_NAMESPACE}/{name}: {}",
                describe(e)
            ))
            .with_hint("pulsedev records what it applies before applying it; check that the API server accepts ConfigMaps in kube-system")
        };
        for _ in 0..5 {
            let current = api.get_opt(&name).await.map_err(|e| write_failed(&e))?;
            let before = current.as_ref().map(Inventory::from_config_map);
            let next = f(before.as_ref());
            if before.as_ref() == Some(&next) {
                return Ok(());
            }
            let result = match current {
                None => {
                    let mut cm = ConfigMap::default();
                    cm.metadata.name = Some(name.clone());
                    cm.metadata.namespace = Some(INVENTORY_NAMESPACE.into());
                    cm.metadata.labels = Some(BTreeMap::from([(
                        ID_LABEL.to_string(),
                        applyset_id(&name, INVENTORY_NAMESPACE, "ConfigMap", ""),
                    )]));
                    cm.metadata.annotations = Some(next.annotations());
                    api.create(&PostParams::default(), &cm).await.map(|_| ())
                }
                Some(mut cm) => {
                    let mut a = cm.metadata.annotations.take().unwrap_or_default();
                    a.extend(next.annotations());
                    cm.metadata.annotations = Some(a);
                    api.replace(&name, &PostParams::default(), &cm)
                        .await
                        .map(|_| ())
                }
            };
            match result {
                Ok(()) => return Ok(()),
                Err(::kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(write_failed(&e)),
            }
        }
        Err(failed(format!(
            "failed to record the inventory {INVENTORY_NAMESPACE}/{name}: it kept changing under pulsedev (5 conflicts)"
        ))
        .with_hint("another process writes it; run `pulsedev up` again"))
    }

    /// Adds `more` to the inventory of `stack` (a new inventory also gets the kinds the
    /// pre-inventory pulsedev pruned).
    pub async fn extend_inventory(&self, stack: &str, more: &Inventory) -> Result<()> {
        self.update_inventory(stack, |current| match current {
            Some(c) if c.covers(more) => c.clone(),
            Some(c) => c.union(more),
            None => {
                let mut seeded = more.clone();
                seeded.kinds.extend(
                    LEGACY_KINDS
                        .iter()
                        .map(|(g, k)| (g.to_string(), k.to_string())),
                );
                seeded
            }
        })
        .await
    }

    /// Replaces the inventory of `stack` with `now` (after a prune succeeded).
    pub(crate) async fn shrink_inventory(&self, stack: &str, now: &Inventory) -> Result<()> {
        self.update_inventory(stack, |_| now.clone()).await
    }

    /// What an apply of `manifests` must do before it writes: record their kinds and
    /// namespaces in the stack's inventory, then wait until none of the namespaces and
    /// CRDs they go into is Terminating (a write there would be refused with 403
    /// NamespaceTerminating or 405 "create not allowed while custom resource definition
    /// is terminating"). Nothing to do for an apply without a stack.
    pub async fn before_apply(
        &self,
        manifests: &[Manifest],
        options: &ApplyOptions,
        cancel: &CancellationToken,
    ) -> Result<()> {
        cancellable(cancel, self.before_apply_inner(manifests, options)).await?
    }

    async fn before_apply_inner(
        &self,
        manifests: &[Manifest],
        options: &ApplyOptions,
    ) -> Result<()> {
        if options.stack.is_empty() {
            return Ok(());
        }
        // Scopes of the kinds the CRDs of this set define (not served yet).
        let crd_scopes: BTreeMap<GroupKind, bool> = manifests
            .iter()
            .filter(|m| m.kind() == "CustomResourceDefinition")
            .filter_map(|m| {
                let spec = m.object.data.get("spec")?;
                let group = spec.get("group")?.as_str()?.to_string();
                let kind = spec.get("names")?.get("kind")?.as_str()?.to_string();
                let namespaced = spec.get("scope").and_then(|s| s.as_str()) != Some("Cluster");
                Some(((group, kind), namespaced))
            })
            .collect();
        let mut record = Inventory::default();
        let mut namespaces = BTreeSet::new();
        let mut crds = BTreeSet::new();
        for m in manifests {
            let gvk = parse_gvk(m.api_version(), m.kind());
            let gk = (gvk.group.clone(), gvk.kind.clone());
            let resolved = self
                .discovery
                .resolve(m.api_version(), m.kind())
                .await
                .map_err(|e| {
                    failed(format!(
                        "failed to discover {} from the API server: {}",
                        m.api_version(),
                        describe(&e)
                    ))
                })?;
            let namespaced = match &resolved {
                Some(r) => r.namespaced,
                None => crd_scopes.get(&gk).copied().unwrap_or(true),
            };
            if namespaced {
                let ns = m.namespace().unwrap_or(&options.default_namespace);
                record.namespaces.insert(ns.to_string());
                namespaces.insert(ns.to_string());
            }
            match (gvk.group.as_str(), gvk.kind.as_str()) {
                ("", "Namespace") => {
                    namespaces.insert(m.name().to_string());
                }
                ("apiextensions.k8s.io", "CustomResourceDefinition") => {
                    crds.insert(m.name().to_string());
                }
                (group, _) if is_custom_group(group) => {
                    if let Some(r) = &resolved {
                        crds.insert(format!("{}.{group}", r.resource.plural));
                    }
                }
                _ => {}
            }
            record.kinds.insert(gk);
        }
        self.extend_inventory(&options.stack, &record).await?;
        let ns_api: Api<Namespace> = Api::all(self.client.clone());
        for ns in &namespaces {
            self.wait_not_terminating(&ns_api, "namespace", ns).await?;
        }
        let crd_api: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        for crd in &crds {
            self.wait_not_terminating(&crd_api, "custom resource definition", crd)
                .await?;
        }
        Ok(())
    }

    /// Returns once `name` is absent or not being deleted; polls while it is
    /// Terminating, for at most `timing.deletion`.
    async fn wait_not_terminating<K>(&self, api: &Api<K>, what: &str, name: &str) -> Result<()>
    where
        K: ::kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let deadline = Instant::now() + self.timing.deletion;
        loop {
            let o = api
                .get_opt(name)
                .await
                .map_err(|e| failed(format!("failed to read {what} {name}: {}", describe(&e))))?;
            let Some(o) = o else { return Ok(()) };
            if o.meta().deletion_timestamp.is_none() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let finalizers = o.meta().finalizers.clone().unwrap_or_default();
                return Err(failed(format!(
                    "{what} {name} is still being deleted after {}; nothing can be applied into it until it is gone",
                    human_duration(self.timing.deletion)
                ))
                .with_details(if finalizers.is_empty() {
                    vec![]
                } else {
                    vec![format!("finalizers left: {}", finalizers.join(", "))]
                })
                .with_hint(format!(
                    "see what holds it with `kubectl get {} {name} -o yaml` (status.conditions, finalizers), then run `pulsedev up` again",
                    if what == "namespace" { "namespace" } else { "crd" }
                )));
            }
            self.say(&format!(
                "{what} {name} is being deleted: waiting for it to be gone before applying into it"
            ));
            tokio::time::sleep(self.timing.poll).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::Timing;
    use crate::kube::manifest::parse;
    use crate::kube::testing::{Exchange, Scenario, apiextensions_v1, core_v1, not_found};
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const INVENTORY: &str = "/api/v1/namespaces/kube-system/configmaps/pulsedev-pulsewatch";
    const CRD: &str = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com";

    const SET: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: monitoring}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: dashboards}\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w1}\n";

    /// A Namespace being deleted, as pkg/registry/core/namespace/storage returns it.
    fn terminating_namespace() -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "monitoring", "uid": "u1", "deletionTimestamp": "2026-11-26T05:01:00Z"},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}})
    }

    /// A CRD being deleted (apiextensions-apiserver registry/customresourcedefinition/etcd.go).
    fn terminating_crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com", "uid": "u2", "deletionTimestamp": "2026-11-26T05:01:00Z",
                "finalizers": ["customresourcecleanup.apiextensions.k8s.io"]},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"}, "versions": []},
            "status": {"conditions": [{"type": "Terminating", "status": "True", "reason": "InstanceDeletionInProgress"}]}})
    }

    #[tokio::test(start_paused = true)]
    async fn before_apply_records_first_then_waits_out_a_terminating_namespace_and_crd() {
        let ms = parse("addon", SET).unwrap();
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(Exchange::get("/apis/apiextensions.k8s.io/v1").ok(apiextensions_v1()))
            .then(Exchange::get("/apis/example.com/v1").fail(404, "NotFound", "the server could not find the requested resource"))
            // Recorded before anything is written; a new inventory also gets the old kinds.
            .then(Exchange::get(INVENTORY).reply(404, not_found("configmaps", "pulsedev-pulsewatch")))
            .then(
                Exchange::post("/api/v1/namespaces/kube-system/configmaps")
                    .check(|seen| {
                        let a = &seen.body["metadata"]["annotations"];
                        let kinds = a["applyset.kubernetes.io/contains-group-kinds"].as_str().unwrap();
                        for k in ["Namespace", "ConfigMap", "CustomResourceDefinition.apiextensions.k8s.io", "Widget.example.com", "Deployment.apps", "RoleBinding.rbac.authorization.k8s.io"] {
                            assert!(kinds.split(',').any(|x| x == k), "{k}: {kinds}");
                        }
                        assert_eq!(a["applyset.kubernetes.io/additional-namespaces"], "monitoring");
                        assert_eq!(a["applyset.kubernetes.io/tooling"], "pulsedev/v1");
                        assert!(seen.body["metadata"]["labels"]["applyset.kubernetes.io/id"].as_str().unwrap().starts_with("applyset-"));
                    })
                    .echo(),
            )
            // Then every namespace and CRD it goes into, until none is Terminating.
            .then(Exchange::get("/api/v1/namespaces/monitoring").ok(terminating_namespace()))
            .then(Exchange::get("/api/v1/namespaces/monitoring").ok(terminating_namespace()))
            .then(Exchange::get("/api/v1/namespaces/monitoring").reply(404, not_found("namespaces", "monitoring")))
            .then(Exchange::get(CRD).ok(terminating_crd()))
            .then(Exchange::get(CRD).reply(404, not_found("customresourcedefinitions.apiextensions.k8s.io", "widgets.example.com")))
            // A second apply of the same set: the inventory covers it, nothing is written.
            .then(Exchange::get(INVENTORY).ok(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "pulsedev-pulsewatch", "namespace": "kube-system", "resourceVersion": "9",
                    "annotations": {"applyset.kubernetes.io/contains-group-kinds": "ConfigMap,CustomResourceDefinition.apiextensions.k8s.io,Namespace,Widget.example.com",
                        "applyset.kubernetes.io/additional-namespaces": "monitoring"}}})))
            .then(Exchange::get("/api/v1/namespaces/monitoring").ok(json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "monitoring"}, "status": {"phase": "Active"}})))
            .then(Exchange::get(CRD).reply(404, not_found("customresourcedefinitions.apiextensions.k8s.io", "widgets.example.com")))
            .start();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = lines.clone();
        let engine = Engine::new(client)
            .with_timing(Timing {
                poll: Duration::from_secs(1),
                ..Timing::default()
            })
            .with_progress(move |l| sink.lock().unwrap().push(l.to_string()));
        let options = ApplyOptions::new("pulsewatch", "monitoring");
        engine
            .before_apply(&ms, &options, &CancellationToken::new())
            .await
            .unwrap();
        engine
            .before_apply(&ms, &options, &CancellationToken::new())
            .await
            .unwrap();
        mock.finish().await;
        let lines = lines.lock().unwrap().join("\n");
        assert!(
            lines.contains("namespace monitoring is being deleted: waiting for it to be gone before applying into it"),
            "{lines}"
        );
        assert!(
            lines.contains("custom resource definition widgets.example.com is being deleted"),
            "{lines}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_namespace_that_stays_terminating_fails_with_its_finalizers() {
        let ms = parse(
            "addon",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: dashboards}\n",
        )
        .unwrap();
        let mut s = Scenario::new()
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(
                Exchange::get(INVENTORY).ok(json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "pulsedev-pulsewatch", "namespace": "kube-system",
                    "annotations": {"applyset.kubernetes.io/contains-group-kinds": "ConfigMap",
                        "applyset.kubernetes.io/additional-namespaces": "monitoring"}}})),
            );
        for _ in 0..4 {
            s = s.then(Exchange::get("/api/v1/namespaces/monitoring").ok(terminating_namespace()));
        }
        let (client, mock) = s.start();
        let e = Engine::new(client)
            .with_timing(Timing {
                poll: Duration::from_secs(1),
                deletion: Duration::from_secs(3),
                ..Timing::default()
            })
            .before_apply(
                &ms,
                &ApplyOptions::new("pulsewatch", "monitoring"),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "apply-failed");
        assert_eq!(
            e.message,
            "namespace monitoring is still being deleted after 3s; nothing can be applied into it until it is gone"
        );
        assert!(
            e.hint
                .as_deref()
                .unwrap()
                .contains("kubectl get namespace monitoring -o yaml")
        );
    }

    #[test]
    fn group_kinds_round_trip_in_the_keps_notation() {
        let inv = Inventory {
            kinds: [
                ("".to_string(), "Namespace".to_string()),
                ("apps".into(), "Deployment".into()),
                ("monitoring.coreos.com".into(), "ServiceMonitor".into()),
            ]
            .into(),
            namespaces: ["monitoring".to_string(), "pulsewatch-dev".into()].into(),
        };
        let a = inv.annotations();
        assert_eq!(
            a[GROUP_KINDS],
            "Deployment.apps,Namespace,ServiceMonitor.monitoring.coreos.com"
        );
        assert_eq!(a[NAMESPACES], "monitoring,pulsewatch-dev");
        assert_eq!(a[TOOLING], "pulsedev/v1");
        let mut cm = ConfigMap::default();
        cm.metadata.annotations = Some(a);
        assert_eq!(Inventory::from_config_map(&cm), inv);
    }

    #[test]
    fn the_applyset_id_follows_the_kep() {
        // KEP-3659: base64 URL encoding without padding of sha256("<name>.<namespace>.<kind>.<group>").
        let digest = Sha256::digest(b"pulsedev-pulsewatch.kube-system.ConfigMap.");
        let id = applyset_id("pulsedev-pulsewatch", "kube-system", "ConfigMap", "");
        assert_eq!(
            id,
            format!(
                "applyset-{}-v1",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
            )
        );
        assert!(!id.contains('=') && !id.contains('+') && !id.contains('/'));
    }
}
