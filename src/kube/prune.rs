//! Prune: delete what pulsedev applied to a stack earlier but is no longer desired.
//!
//! Owns: finding candidates (every kind the stack's inventory records, see
//! `inventory`, plus the kinds of the desired set, listed by the
//! `pulsedev.dev/stack=<stack>` label), deleting them in reverse dependency order
//! (routing, workloads, foundation, CRDs, namespaces: apply's groups reversed) and waiting
//! until each group is gone before the next, then shrinking the inventory.
//!
//! Never deletes an object that lacks the stack label, that pulsedev did not apply itself
//! (no `pulsedev` Apply entry in its managedFields: e.g. a PVC a StatefulSet made from a
//! labelled template, or a ReplicaSet), that has a controlling owner, that is in the
//! desired set, that is in a namespace being deleted (the namespace controller removes it;
//! another stack's teardown is none of ours), that carries `helm.sh/resource-policy`
//! with any value but `delete` (Helm's rule, helm/helm pkg/kube/resource_policy.go
//! `ResourcePolicyIsKeep`), or that holds data
//! (a PersistentVolumeClaim or PersistentVolume, a Namespace with claims in it, a CRD with
//! objects of its kind that are not this stack's) unless told to with `prune_data`.
//!
//! Call it with the whole desired set of the stack: what is missing from it is deleted.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ::kube::Api;
use ::kube::api::{DeleteParams, DynamicObject, ListParams};
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim};
use serde::Serialize;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apply::{ApplyReport, Group, group_of};
use super::discovery::parse_gvk;
use super::inventory::{GroupKind, Inventory};
use super::{Engine, FIELD_MANAGER, STACK_LABEL, cancellable, describe, human_duration};
use crate::error::{Error, ErrorKind, Result};

/// Helm's annotation that keeps a resource when its release no longer has it
/// (helm/helm pkg/kube/resource_policy.go: `helm.sh/resource-policy: keep`).
pub const RESOURCE_POLICY: &str = "helm.sh/resource-policy";

/// The resource policy that keeps `o`, if any: like Helm's `ResourcePolicyIsKeep`, every
/// value but `delete` keeps (helm/helm pkg/kube/resource_policy.go).
fn kept_by_policy(o: &DynamicObject) -> Option<&str> {
    let policy = o.metadata.annotations.as_ref()?.get(RESOURCE_POLICY)?;
    (policy != "delete").then_some(policy.as_str())
}

/// How to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Delete leftovers that hold data too (PersistentVolumeClaims, PersistentVolumes,
    /// namespaces with claims in them): `pulsedev up --prune-data`.
    pub prune_data: bool,
    /// Prune one part of the stack only (`dev` re-applying one chart): only these
    /// objects, the part's previous set minus its desired one (cli-utils' prune set,
    /// kubernetes-sigs/cli-utils pkg/apply/prune/prune.go `GetPruneObjs`), may be
    /// deleted, by the same rules; every other object of the stack stays and keeps its
    /// kind and namespace in the inventory. `None`: the whole stack
    /// (`up`), where `desired` is everything the stack wants.
    pub only: Option<BTreeSet<ObjectKey>>,
}

/// (group, kind, namespace, name), as [`super::Applied::key`] makes it; namespace empty
/// for cluster-scoped objects.
pub type ObjectKey = (String, String, String, String);

/// What prune did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PruneReport {
    /// `Deployment pulsewatch-dev/old-api`, in deletion order: deleted by this run and
    /// waited for until gone.
    pub deleted: Vec<String>,
    /// Leftovers already gone when this run deleted them (404): not counted as deleted.
    pub gone: Vec<String>,
    /// Labelled and not desired, but not applied by pulsedev (or owned by another
    /// object): left alone, listed so a person can look.
    pub left_alone: Vec<String>,
    /// Leftovers annotated `helm.sh/resource-policy: keep`: never pruned.
    pub kept: Vec<String>,
    /// Leftovers kept because deleting them deletes data, with the reason (`... (holds
    /// data)`): pruned only with `prune_data`.
    pub data: Vec<String>,
    /// Leftovers in a namespace being deleted: its controller removes them.
    pub terminating: Vec<String>,
}

impl PruneReport {
    /// One line: what was removed, counted by kind, and the namespaces removed; `None`
    /// when nothing was.
    pub fn summary(&self) -> Option<String> {
        if self.deleted.is_empty() {
            return None;
        }
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        let mut namespaces = Vec::new();
        for d in &self.deleted {
            let (kind, name) = d.split_once(' ').unwrap_or((d, ""));
            *kinds.entry(kind).or_default() += 1;
            if kind == "Namespace" {
                namespaces.push(name);
            }
        }
        let counts: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        let mut line = format!("removed {}", counts.join(", "));
        if !namespaces.is_empty() {
            line.push_str(&format!(" (namespaces {})", namespaces.join(", ")));
        }
        Some(line)
    }
}

/// An object prune will delete.
struct Doomed {
    group: Group,
    label: String,
    api: Api<DynamicObject>,
    name: String,
    uid: Option<String>,
}

fn shown(kind: &str, o: &DynamicObject) -> String {
    match &o.metadata.namespace {
        Some(ns) => format!(
            "{kind} {ns}/{}",
            o.metadata.name.as_deref().unwrap_or_default()
        ),
        None => format!("{kind} {}", o.metadata.name.as_deref().unwrap_or_default()),
    }
}

/// Whether pulsedev's field manager applied this object.
fn applied_by_pulsedev(o: &DynamicObject) -> bool {
    o.metadata.managed_fields.iter().flatten().any(|f| {
        f.manager.as_deref() == Some(FIELD_MANAGER) && f.operation.as_deref() == Some("Apply")
    })
}

/// Whether deleting an object of this kind deletes data by itself.
fn holds_data((group, kind): &GroupKind) -> bool {
    group.is_empty() && (kind == "PersistentVolumeClaim" || kind == "PersistentVolume")
}

fn failed(what: String) -> Error {
    Error::new(ErrorKind::ApplyFailed, what)
}

impl Engine {
    /// Deletes objects of `stack` that are not in `desired` (see the module docs for what
    /// is never deleted), across every kind the stack's inventory records.
    pub async fn prune(
        &self,
        stack: &str,
        desired: &ApplyReport,
        cancel: &CancellationToken,
    ) -> Result<PruneReport> {
        self.prune_with(stack, desired, &PruneOptions::default(), cancel)
            .await
    }

    /// [`Engine::prune`] with options.
    pub async fn prune_with(
        &self,
        stack: &str,
        desired: &ApplyReport,
        options: &PruneOptions,
        cancel: &CancellationToken,
    ) -> Result<PruneReport> {
        cancellable(cancel, self.prune_inner(stack, desired, options)).await?
    }

    /// The keys `manifests` have in the cluster once applied: the namespace filled in as
    /// apply does (`default_namespace` for namespaced objects that name none, none for
    /// cluster-scoped ones). Objects of kinds the server does not serve are left out:
    /// none of them can exist.
    pub async fn keys_of(
        &self,
        manifests: &[super::Manifest],
        default_namespace: &str,
    ) -> Result<BTreeSet<ObjectKey>> {
        let mut out = BTreeSet::new();
        for m in manifests {
            let resolved = self
                .discovery
                .resolve(m.api_version(), m.kind())
                .await
                .map_err(|e| {
                    failed(format!(
                        "failed to prune: discovery of {}: {}",
                        m.api_version(),
                        describe(&e)
                    ))
                })?;
            let Some(r) = resolved else { continue };
            let ns = if r.namespaced {
                m.namespace().unwrap_or(default_namespace).to_string()
            } else {
                String::new()
            };
            out.insert((
                r.resource.group.clone(),
                m.kind().to_string(),
                ns,
                m.name().to_string(),
            ));
        }
        Ok(out)
    }

    /// The kinds to look through, each with an apiVersion the server serves; kinds of
    /// groups the server no longer serves have nothing left.
    async fn prune_kinds(
        &self,
        desired: &ApplyReport,
        recorded: &Inventory,
    ) -> Result<Vec<(GroupKind, String)>> {
        let mut kinds: BTreeMap<GroupKind, Option<String>> = BTreeMap::new();
        for a in &desired.applied {
            let gvk = parse_gvk(&a.api_version, &a.kind);
            kinds
                .entry((gvk.group, gvk.kind))
                .or_insert_with(|| Some(a.api_version.clone()));
        }
        for gk in &recorded.kinds {
            kinds.entry(gk.clone()).or_insert(None);
        }
        let mut preferred: Option<HashMap<String, String>> = None;
        let mut out = Vec::new();
        for (gk, av) in kinds {
            let av = match av {
                Some(av) => av,
                None if gk.0.is_empty() => "v1".to_string(),
                None => {
                    if preferred.is_none() {
                        let groups = self.client.list_api_groups().await.map_err(|e| {
                            failed(format!(
                                "failed to prune: listing the API groups: {}",
                                describe(&e)
                            ))
                        })?;
                        preferred = Some(
                            groups
                                .groups
                                .into_iter()
                                .filter_map(|g| {
                                    let v =
                                        g.preferred_version.or(g.versions.into_iter().next())?;
                                    Some((g.name, v.group_version))
                                })
                                .collect(),
                        );
                    }
                    match preferred.as_ref().and_then(|p| p.get(&gk.0)) {
                        Some(av) => av.clone(),
                        None => continue,
                    }
                }
            };
            out.push((gk, av));
        }
        Ok(out)
    }

    async fn prune_inner(
        &self,
        stack: &str,
        desired: &ApplyReport,
        options: &PruneOptions,
    ) -> Result<PruneReport> {
        if stack.is_empty() {
            return Err(Error::internal("prune needs a stack name"));
        }
        let keep: BTreeSet<_> = desired.applied.iter().map(|a| a.key()).collect();
        let recorded = self.inventory(stack).await?.unwrap_or_default();
        // What the inventory keeps after this prune: the desired set and what stays.
        let mut remaining = Inventory::default();
        for a in &desired.applied {
            let gvk = parse_gvk(&a.api_version, &a.kind);
            remaining.kinds.insert((gvk.group, gvk.kind));
            remaining.namespaces.extend(a.namespace.clone());
        }
        let selector = format!("{STACK_LABEL}={stack}");
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut ns_terminating: HashMap<String, bool> = HashMap::new();
        let mut doomed: Vec<Doomed> = Vec::new();
        let mut report = PruneReport::default();
        for (gk, av) in self.prune_kinds(desired, &recorded).await? {
            let kind = &gk.1;
            let resolved = self.discovery.resolve(&av, kind).await.map_err(|e| {
                failed(format!(
                    "failed to prune: discovery of {av}: {}",
                    describe(&e)
                ))
            })?;
            // A kind the server no longer serves has nothing left to prune.
            let Some(r) = resolved else { continue };
            let list = Api::<DynamicObject>::all_with(self.client.clone(), &r.resource)
                .list(&ListParams::default().labels(&selector))
                .await
                .map_err(|e| {
                    failed(format!(
                        "failed to prune: listing {} labelled {selector}: {}",
                        r.resource.plural,
                        describe(&e)
                    ))
                })?;
            for o in list.items {
                let labelled = o
                    .metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(STACK_LABEL))
                    .is_some_and(|v| v == stack);
                if !labelled {
                    continue;
                }
                let name = o.metadata.name.clone().unwrap_or_default();
                let ns = o.metadata.namespace.clone().unwrap_or_default();
                let key = (
                    r.resource.group.clone(),
                    kind.clone(),
                    ns.clone(),
                    name.clone(),
                );
                if keep.contains(&key) {
                    continue;
                }
                // Still there after this run, whatever happens below.
                let stays = |remaining: &mut Inventory| {
                    remaining.kinds.insert(gk.clone());
                    if !ns.is_empty() {
                        remaining.namespaces.insert(ns.clone());
                    }
                };
                // Another part of the stack's: not this prune's to judge.
                if options
                    .only
                    .as_ref()
                    .is_some_and(|only| !only.contains(&key))
                {
                    stays(&mut remaining);
                    continue;
                }
                let label = shown(kind, &o);
                if o.metadata.deletion_timestamp.is_some() {
                    // Being deleted already: it goes by itself.
                    stays(&mut remaining);
                    continue;
                }
                let owned = o
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.controller == Some(true));
                if owned || !applied_by_pulsedev(&o) {
                    report.left_alone.push(label);
                    stays(&mut remaining);
                    continue;
                }
                if !ns.is_empty() {
                    let terminating = match ns_terminating.get(&ns) {
                        Some(t) => *t,
                        None => {
                            let t = namespaces
                                .get_opt(&ns)
                                .await
                                .map_err(|e| {
                                    failed(format!(
                                        "failed to prune: reading namespace {ns}: {}",
                                        describe(&e)
                                    ))
                                })?
                                .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
                            ns_terminating.insert(ns.clone(), t);
                            t
                        }
                    };
                    if terminating {
                        report.terminating.push(label);
                        stays(&mut remaining);
                        continue;
                    }
                }
                if let Some(policy) = kept_by_policy(&o) {
                    report
                        .kept
                        .push(format!("{label} ({RESOURCE_POLICY}: {policy})"));
                    stays(&mut remaining);
                    continue;
                }
                if !options.prune_data {
                    let data = if holds_data(&gk) {
                        Some("holds data".to_string())
                    } else if gk.0.is_empty() && kind == "Namespace" {
                        let claims = Api::<PersistentVolumeClaim>::namespaced(
                            self.client.clone(),
                            &name,
                        )
                        .list(&ListParams::default())
                        .await
                        .map_err(|e| {
                            failed(format!(
                                "failed to prune: listing the claims in namespace {name}: {}",
                                describe(&e)
                            ))
                        })?;
                        let names: Vec<String> = claims
                            .items
                            .iter()
                            .filter_map(|c| c.metadata.name.clone())
                            .collect();
                        (!names.is_empty()).then(|| {
                            format!("holds data: PersistentVolumeClaims {}", names.join(", "))
                        })
                    } else {
                        None
                    };
                    if let Some(why) = data {
                        report.data.push(format!("{label} ({why})"));
                        stays(&mut remaining);
                        continue;
                    }
                }
                // Deleting a CRD deletes every object of its kind, in every namespace:
                // only when they are all this stack's (and so pruned first), unless told.
                if gk.0 == "apiextensions.k8s.io"
                    && kind == "CustomResourceDefinition"
                    && !options.prune_data
                {
                    let foreign = self.foreign_instances(&o, stack).await?;
                    if !foreign.is_empty() {
                        report.data.push(format!(
                            "{label} (deleting it would delete {} object{} pulsedev did not apply: {})",
                            foreign.len(),
                            if foreign.len() == 1 { "" } else { "s" },
                            foreign.join(", ")
                        ));
                        stays(&mut remaining);
                        continue;
                    }
                }
                let api = if r.namespaced {
                    Api::namespaced_with(self.client.clone(), &ns, &r.resource)
                } else {
                    Api::all_with(self.client.clone(), &r.resource)
                };
                doomed.push(Doomed {
                    group: group_of(&av, kind),
                    label,
                    api,
                    name,
                    uid: o.metadata.uid.clone(),
                });
            }
        }
        // Routing before workloads before what they use; namespaces last. Each group is
        // gone before the next is deleted.
        doomed.sort_by(|a, b| b.group.cmp(&a.group).then_with(|| a.label.cmp(&b.label)));
        let params = DeleteParams::background();
        let mut start = 0;
        while start < doomed.len() {
            let group = doomed[start].group;
            let end = doomed[start..]
                .iter()
                .position(|d| d.group != group)
                .map_or(doomed.len(), |p| start + p);
            let mut waiting = Vec::new();
            for d in &doomed[start..end] {
                match d.api.delete(&d.name, &params).await {
                    Ok(_) => {
                        self.say(&format!("pruned {}", d.label));
                        report.deleted.push(d.label.clone());
                        waiting.push(d);
                    }
                    // Someone (the namespace controller, a person) got there first.
                    Err(::kube::Error::Api(s)) if s.code == 404 => {
                        report.gone.push(d.label.clone());
                    }
                    Err(e) => {
                        return Err(self.prune_failed(
                            format!("failed to prune {}: {}", d.label, describe(&e)),
                            &report,
                        ));
                    }
                }
            }
            self.wait_gone(&waiting, &report).await?;
            start = end;
        }
        self.shrink_inventory(stack, &remaining).await?;
        Ok(report)
    }

    /// The objects of the kind a CRD defines that are not labelled for `stack`.
    async fn foreign_instances(&self, crd: &DynamicObject, stack: &str) -> Result<Vec<String>> {
        let spec = &crd.data["spec"];
        let group = spec["group"].as_str().unwrap_or_default();
        let kind = spec["names"]["kind"].as_str().unwrap_or_default();
        let plural = spec["names"]["plural"].as_str().unwrap_or_default();
        let Some(version) = spec["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["served"].as_bool() != Some(false))
            .and_then(|v| v["name"].as_str())
        else {
            return Ok(vec![]);
        };
        let resource = ::kube::core::ApiResource {
            group: group.to_string(),
            version: version.to_string(),
            api_version: format!("{group}/{version}"),
            kind: kind.to_string(),
            plural: plural.to_string(),
        };
        let list = match Api::<DynamicObject>::all_with(self.client.clone(), &resource)
            .list(&ListParams::default())
            .await
        {
            Ok(l) => l,
            // Not served (yet or any more): nothing of it exists.
            Err(::kube::Error::Api(s)) if s.code == 404 => return Ok(vec![]),
            Err(e) => {
                return Err(failed(format!(
                    "failed to prune: listing the {plural} of {group}: {}",
                    describe(&e)
                )));
            }
        };
        Ok(list
            .items
            .iter()
            .filter(|o| {
                o.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(STACK_LABEL))
                    .is_none_or(|v| v != stack)
            })
            .map(|o| shown(kind, o))
            .collect())
    }

    fn prune_failed(&self, message: String, report: &PruneReport) -> Error {
        failed(message)
            .with_details(
                report
                    .deleted
                    .iter()
                    .map(|d| format!("deleted {d}"))
                    .collect(),
            )
            .with_hint(
                "the inventory still lists what is left: `pulsedev up` again resumes the prune",
            )
    }

    /// Polls until every object of `deleted` is gone (404, or another object of the same
    /// name), for at most `timing.deletion`.
    async fn wait_gone(&self, deleted: &[&Doomed], report: &PruneReport) -> Result<()> {
        let deadline = Instant::now() + self.timing.deletion;
        let mut left: Vec<&Doomed> = deleted.to_vec();
        loop {
            let mut still = Vec::new();
            let mut why = Vec::new();
            for d in left {
                match d.api.get_opt(&d.name).await {
                    Ok(Some(o)) if o.metadata.uid == d.uid => {
                        let finalizers = o.metadata.finalizers.clone().unwrap_or_default();
                        why.push(if finalizers.is_empty() {
                            d.label.clone()
                        } else {
                            format!("{} (finalizers {})", d.label, finalizers.join(", "))
                        });
                        still.push(d);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        return Err(self.prune_failed(
                            format!("failed to prune: reading {}: {}", d.label, describe(&e)),
                            report,
                        ));
                    }
                }
            }
            if still.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let mut e = self.prune_failed(
                    format!(
                        "failed to prune: {} deleted object{} still there after {}: {}",
                        still.len(),
                        if still.len() == 1 { " is" } else { "s are" },
                        human_duration(self.timing.deletion),
                        why.join(", ")
                    ),
                    report,
                );
                e.hint = Some(
                    "something holds them (finalizers, a namespace's contents); see `kubectl get <kind> <name> -o yaml`, then `pulsedev up` again resumes the prune".into(),
                );
                return Err(e);
            }
            self.say(&format!(
                "waiting for {} pruned object{} to be gone: {}",
                still.len(),
                if still.len() == 1 { "" } else { "s" },
                why.join(", ")
            ));
            tokio::time::sleep(self.timing.poll).await;
            left = still;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::testing::{
        Exchange, Scenario, apiextensions_v1, core_v1, not_found, resource_list,
    };
    use crate::kube::{Applied, Timing};
    use http::Method;
    use serde_json::{Value, json};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const NS: &str = "pulsewatch-dev";
    const SELECTOR: &str = "pulsedev.dev/stack=pulsewatch";
    const INVENTORY: &str = "/api/v1/namespaces/kube-system/configmaps/pulsedev-pulsewatch";

    /// An object as the server lists it: labelled, applied by pulsedev.
    fn object(api_version: &str, kind: &str, ns: Option<&str>, name: &str) -> Value {
        let mut v = json!({"apiVersion": api_version, "kind": kind,
            "metadata": {"name": name, "resourceVersion": "77", "uid": format!("uid-{name}"),
                "labels": {"pulsedev.dev/stack": "pulsewatch"},
                "managedFields": [{"manager": "pulsedev", "operation": "Apply",
                    "apiVersion": api_version, "time": "2026-11-26T05:00:00Z",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}}]}});
        if let Some(ns) = ns {
            v["metadata"]["namespace"] = json!(ns);
        }
        v
    }

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": format!("{kind}List"),
               "metadata": {"resourceVersion": "900"}, "items": items})
    }

    /// A Namespace as the API server returns it; `terminating`: being deleted
    /// (pkg/registry/core/namespace/storage: deletionTimestamp and phase Terminating).
    fn namespace(name: &str, terminating: bool) -> Value {
        let mut v = object("v1", "Namespace", None, name);
        v["spec"] = json!({"finalizers": ["kubernetes"]});
        v["status"] = json!({"phase": if terminating { "Terminating" } else { "Active" }});
        if terminating {
            v["metadata"]["deletionTimestamp"] = json!("2026-11-26T05:01:00Z");
        }
        v
    }

    fn inventory(kinds: &str, namespaces: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "pulsedev-pulsewatch", "namespace": "kube-system", "resourceVersion": "5",
                "annotations": {"applyset.kubernetes.io/tooling": "pulsedev/v1",
                    "applyset.kubernetes.io/contains-group-kinds": kinds,
                    "applyset.kubernetes.io/additional-namespaces": namespaces}}})
    }

    fn desired() -> ApplyReport {
        ApplyReport {
            applied: vec![Applied {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                namespace: Some(NS.into()),
                name: "api-config".into(),
                resource_version: Some("1".into()),
                generation: None,
            }],
            targets: vec![],
        }
    }

    fn engine(client: ::kube::Client, lines: Arc<Mutex<Vec<String>>>) -> Engine {
        Engine::new(client)
            .with_timing(Timing {
                poll: Duration::from_secs(1),
                deletion: Duration::from_secs(10),
                ..Timing::default()
            })
            .with_progress(move |l| lines.lock().unwrap().push(l.to_string()))
    }

    fn groups() -> Value {
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [{"name": "monitoring.coreos.com",
            "versions": [{"groupVersion": "monitoring.coreos.com/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": "monitoring.coreos.com/v1", "version": "v1"}}]})
    }

    fn deleted(o: &Value) -> Value {
        let mut o = o.clone();
        o["metadata"]["deletionTimestamp"] = json!("2026-11-26T05:02:00Z");
        o
    }

    /// The scan of the scenario the tests share: everything the inventory records is
    /// listed, in (group, kind) order; what is kept or skipped is decided before any delete.
    fn scan(s: Scenario) -> Scenario {
        let mut kept = object("v1", "ConfigMap", Some(NS), "grafana-dashboards");
        kept["metadata"]["annotations"] = json!({"helm.sh/resource-policy": "keep"});
        let mut hand_made = object("v1", "ConfigMap", Some(NS), "hand-made");
        hand_made["metadata"]["managedFields"][0]["manager"] = json!("kubectl-client-side-apply");
        hand_made["metadata"]["managedFields"][0]["operation"] = json!("Update");
        // Applied by pulsedev, but now controlled by another object (its owner manages it).
        let mut owned = object("v1", "ConfigMap", Some(NS), "owned-config");
        owned["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "api",
            "uid": "uid-api", "controller": true, "blockOwnerDeletion": true
        }]);
        let mut other_stack = object("v1", "ConfigMap", Some(NS), "other-stack");
        other_stack["metadata"]["labels"]["pulsedev.dev/stack"] = json!("other");
        s.then(Exchange::get(INVENTORY).ok(inventory(
            "ConfigMap,Namespace,PersistentVolumeClaim,ServiceMonitor.monitoring.coreos.com",
            "monitoring,pulsewatch-dev",
        )))
        // ServiceMonitor is recorded, not desired: its version comes from the group list.
        .then(Exchange::get("/apis").ok(groups()))
        .then(Exchange::get("/api/v1").ok(core_v1()))
        .then(
            Exchange::get("/api/v1/configmaps")
                .query("labelSelector", SELECTOR)
                .ok(list(
                    "ConfigMap",
                    vec![
                        object("v1", "ConfigMap", Some(NS), "api-config"),
                        object("v1", "ConfigMap", Some(NS), "old-config"),
                        kept,
                        hand_made,
                        owned,
                        // The server-side filter is not trusted blindly.
                        other_stack,
                        // In another scenario's namespace that is being deleted.
                        object("v1", "ConfigMap", Some("e2e-other"), "job-config"),
                    ],
                )),
        )
        .then(Exchange::get(&format!("/api/v1/namespaces/{NS}")).ok(namespace(NS, false)))
        .then(Exchange::get("/api/v1/namespaces/e2e-other").ok(namespace("e2e-other", true)))
        .then(
            Exchange::get("/api/v1/namespaces")
                .query("labelSelector", SELECTOR)
                .ok(list("Namespace", vec![namespace("monitoring", false)])),
        )
        // A namespace holding claims would be kept; this one holds none.
        .then(
            Exchange::get("/api/v1/namespaces/monitoring/persistentvolumeclaims")
                .ok(list("PersistentVolumeClaim", vec![])),
        )
        .then(
            Exchange::get("/api/v1/persistentvolumeclaims")
                .query("labelSelector", SELECTOR)
                .ok(list(
                    "PersistentVolumeClaim",
                    vec![object("v1", "PersistentVolumeClaim", Some(NS), "old-data")],
                )),
        )
        .then(
            Exchange::get("/apis/monitoring.coreos.com/v1").ok(resource_list(
                "monitoring.coreos.com/v1",
                &[("servicemonitors", "ServiceMonitor", true)],
            )),
        )
        .then(
            Exchange::get("/apis/monitoring.coreos.com/v1/servicemonitors")
                .query("labelSelector", SELECTOR)
                .ok(list(
                    "ServiceMonitor",
                    vec![object(
                        "monitoring.coreos.com/v1",
                        "ServiceMonitor",
                        Some("monitoring"),
                        "api",
                    )],
                )),
        )
        .then(Exchange::get("/api/v1/namespaces/monitoring").ok(namespace("monitoring", false)))
    }

    const MONITOR: &str =
        "/apis/monitoring.coreos.com/v1/namespaces/monitoring/servicemonitors/api";

    #[tokio::test(start_paused = true)]
    async fn prune_finds_recorded_kinds_deletes_in_reverse_order_waits_and_shrinks_the_inventory() {
        let ns = namespace("monitoring", false);
        let (client, mock) = scan(Scenario::new())
            // Routing (custom resources) first, and gone before the next group.
            .then(
                Exchange::delete(MONITOR)
                    .check(|seen| assert_eq!(seen.body["propagationPolicy"], "Background"))
                    .ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})),
            )
            .then(Exchange::get(MONITOR).reply(404, not_found("servicemonitors.monitoring.coreos.com", "api")))
            // Foundation: already gone (the namespace controller got there first).
            .then(
                Exchange::delete(&format!("/api/v1/namespaces/{NS}/configmaps/old-config"))
                    .reply(404, not_found("configmaps", "old-config")),
            )
            // Namespaces last; Terminating for a while.
            .then(Exchange::delete("/api/v1/namespaces/monitoring").ok(deleted(&ns)))
            .then(Exchange::get("/api/v1/namespaces/monitoring").ok(deleted(&ns)))
            .then(Exchange::get("/api/v1/namespaces/monitoring").ok(deleted(&ns)))
            .then(Exchange::get("/api/v1/namespaces/monitoring").reply(404, not_found("namespaces", "monitoring")))
            // Then the inventory shrinks to what is still there.
            .then(Exchange::get(INVENTORY).ok(inventory(
                "ConfigMap,Namespace,PersistentVolumeClaim,ServiceMonitor.monitoring.coreos.com",
                "monitoring,pulsewatch-dev",
            )))
            .then(
                Exchange::new(Method::PUT, INVENTORY)
                    .check(|seen| {
                        let a = &seen.body["metadata"]["annotations"];
                        assert_eq!(a["applyset.kubernetes.io/contains-group-kinds"], "ConfigMap,PersistentVolumeClaim", "{seen}");
                        assert_eq!(a["applyset.kubernetes.io/additional-namespaces"], "e2e-other,pulsewatch-dev", "{seen}");
                        assert_eq!(seen.body["metadata"]["resourceVersion"], "5", "{seen}");
                    })
                    .echo(),
            )
            .start();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let report = engine(client, lines.clone())
            .prune("pulsewatch", &desired(), &CancellationToken::new())
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(
            report,
            PruneReport {
                deleted: vec![
                    "ServiceMonitor monitoring/api".into(),
                    "Namespace monitoring".into()
                ],
                gone: vec!["ConfigMap pulsewatch-dev/old-config".into()],
                left_alone: vec![
                    "ConfigMap pulsewatch-dev/hand-made".into(),
                    "ConfigMap pulsewatch-dev/owned-config".into(),
                ],
                kept: vec![
                    "ConfigMap pulsewatch-dev/grafana-dashboards (helm.sh/resource-policy: keep)"
                        .into(),
                ],
                data: vec!["PersistentVolumeClaim pulsewatch-dev/old-data (holds data)".into()],
                terminating: vec!["ConfigMap e2e-other/job-config".into()],
            }
        );
        assert_eq!(
            report.summary().as_deref(),
            Some("removed 1 Namespace, 1 ServiceMonitor (namespaces monitoring)")
        );
        let lines = lines.lock().unwrap().join("\n");
        assert!(
            lines.contains("waiting for 1 pruned object to be gone: Namespace monitoring"),
            "{lines}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn prune_data_deletes_claims_too() {
        let (client, mock) = Scenario::new()
            .then(Exchange::get(INVENTORY).ok(inventory("ConfigMap,PersistentVolumeClaim", NS)))
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(Exchange::get("/api/v1/configmaps").query("labelSelector", SELECTOR).ok(list("ConfigMap", vec![])))
            .then(
                Exchange::get("/api/v1/persistentvolumeclaims")
                    .query("labelSelector", SELECTOR)
                    .ok(list("PersistentVolumeClaim", vec![object("v1", "PersistentVolumeClaim", Some(NS), "old-data")])),
            )
            .then(Exchange::get(&format!("/api/v1/namespaces/{NS}")).ok(namespace(NS, false)))
            .then(Exchange::delete(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/old-data")).ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})))
            // Made again by someone else at once (a new uid): the one deleted is gone.
            .then(Exchange::get(&format!("/api/v1/namespaces/{NS}/persistentvolumeclaims/old-data")).ok({
                let mut again = object("v1", "PersistentVolumeClaim", Some(NS), "old-data");
                again["metadata"]["uid"] = json!("uid-new");
                again
            }))
            .then(Exchange::get(INVENTORY).ok(inventory("ConfigMap,PersistentVolumeClaim", NS)))
            .then(
                Exchange::new(Method::PUT, INVENTORY)
                    .check(|seen| assert_eq!(seen.body["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"], "ConfigMap"))
                    .echo(),
            )
            .start();
        let report = engine(client, Arc::default())
            .prune_with(
                "pulsewatch",
                &desired(),
                &PruneOptions {
                    prune_data: true,
                    ..PruneOptions::default()
                },
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(
            report.deleted,
            ["PersistentVolumeClaim pulsewatch-dev/old-data"]
        );
        assert!(report.data.is_empty());
    }

    /// `dev` re-applying one chart: only the chart's previous set may go. Another labelled
    /// leftover (another chart's ConfigMap, a claim) is neither deleted nor reported, and
    /// its kind stays in the inventory.
    #[tokio::test(start_paused = true)]
    async fn a_narrowed_prune_deletes_only_its_candidates_and_keeps_the_rest_recorded() {
        let (client, mock) = Scenario::new()
            .then(Exchange::get(INVENTORY).ok(inventory("ConfigMap,PersistentVolumeClaim", NS)))
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(Exchange::get("/api/v1/configmaps").query("labelSelector", SELECTOR).ok(list(
                "ConfigMap",
                vec![
                    object("v1", "ConfigMap", Some(NS), "api-config"),
                    object("v1", "ConfigMap", Some(NS), "old-config"),
                    object("v1", "ConfigMap", Some(NS), "worker-config"),
                ],
            )))
            // Asked for the candidate only (is its namespace being deleted?).
            .then(Exchange::get(&format!("/api/v1/namespaces/{NS}")).ok(namespace(NS, false)))
            .then(
                Exchange::get("/api/v1/persistentvolumeclaims")
                    .query("labelSelector", SELECTOR)
                    .ok(list("PersistentVolumeClaim", vec![object("v1", "PersistentVolumeClaim", Some(NS), "old-data")])),
            )
            .then(Exchange::delete(&format!("/api/v1/namespaces/{NS}/configmaps/old-config")).ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})))
            .then(Exchange::get(&format!("/api/v1/namespaces/{NS}/configmaps/old-config")).reply(404, not_found("configmaps", "old-config")))
            .then(Exchange::get(INVENTORY).ok(inventory("ConfigMap,PersistentVolumeClaim", NS)))
            // The claim's kind stays recorded: the inventory is as it was, not written.
            .start();
        let engine = engine(client, Arc::default());
        let only = BTreeSet::from([
            (
                String::new(),
                "ConfigMap".to_string(),
                NS.to_string(),
                "old-config".to_string(),
            ),
            (
                String::new(),
                "ConfigMap".to_string(),
                NS.to_string(),
                "api-config".to_string(),
            ),
        ]);
        let report = engine
            .prune_with(
                "pulsewatch",
                &desired(),
                &PruneOptions {
                    only: Some(only),
                    ..PruneOptions::default()
                },
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(
            report,
            PruneReport {
                deleted: vec!["ConfigMap pulsewatch-dev/old-config".into()],
                ..PruneReport::default()
            }
        );
    }

    /// The keys a chart's objects have once applied: the default namespace for a
    /// namespaced object that names none, none for a cluster-scoped one; a kind the
    /// server does not serve has none.
    #[tokio::test(start_paused = true)]
    async fn keys_of_fills_in_namespaces_as_apply_does() {
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(Exchange::get("/apis/example.com/v1").reply(404, not_found("", "")))
            .start();
        let manifests = crate::kube::parse(
            "test",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: other}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: pulsewatch-dev}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
        )
        .unwrap();
        let keys = engine(client, Arc::default())
            .keys_of(&manifests, NS)
            .await
            .unwrap();
        mock.finish().await;
        let k = |kind: &str, ns: &str, name: &str| {
            (
                String::new(),
                kind.to_string(),
                ns.to_string(),
                name.to_string(),
            )
        };
        assert_eq!(
            keys,
            BTreeSet::from([
                k("ConfigMap", NS, "a"),
                k("ConfigMap", "other", "b"),
                k("Namespace", "", "pulsewatch-dev"),
            ])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_namespace_that_never_goes_fails_with_what_was_deleted_and_keeps_the_inventory() {
        let ns = namespace("monitoring", false);
        let mut scenario = scan(Scenario::new())
            .then(Exchange::delete(MONITOR).ok(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
            .then(Exchange::get(MONITOR).reply(
                404,
                not_found("servicemonitors.monitoring.coreos.com", "api"),
            ))
            .then(
                Exchange::delete(&format!("/api/v1/namespaces/{NS}/configmaps/old-config"))
                    .reply(404, not_found("configmaps", "old-config")),
            )
            .then(Exchange::delete("/api/v1/namespaces/monitoring").ok(deleted(&ns)));
        // Polled every second for the 10 s deadline; no inventory write after.
        for _ in 0..11 {
            let mut stuck = deleted(&ns);
            stuck["metadata"]["finalizers"] = json!(["example.com/cleanup"]);
            scenario = scenario.then(Exchange::get("/api/v1/namespaces/monitoring").ok(stuck));
        }
        let (client, mock) = scenario.start();
        let e = engine(client, Arc::default())
            .prune("pulsewatch", &desired(), &CancellationToken::new())
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "apply-failed");
        assert_eq!(
            e.message,
            "failed to prune: 1 deleted object is still there after 10s: Namespace monitoring (finalizers example.com/cleanup)"
        );
        assert_eq!(
            e.details,
            [
                "deleted ServiceMonitor monitoring/api",
                "deleted Namespace monitoring"
            ]
        );
        assert!(e.hint.as_deref().unwrap().contains("resumes the prune"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_delete_fails_with_what_was_deleted_so_far() {
        let (client, mock) = scan(Scenario::new())
            .then(Exchange::delete(MONITOR).ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})))
            .then(Exchange::get(MONITOR).reply(404, not_found("servicemonitors.monitoring.coreos.com", "api")))
            .then(
                Exchange::delete(&format!("/api/v1/namespaces/{NS}/configmaps/old-config")).fail(
                    403,
                    "Forbidden",
                    "configmaps \"old-config\" is forbidden: User \"dev\" cannot delete resource \"configmaps\" in API group \"\" in the namespace \"pulsewatch-dev\"",
                ),
            )
            .start();
        let e = engine(client, Arc::default())
            .prune("pulsewatch", &desired(), &CancellationToken::new())
            .await
            .unwrap_err();
        mock.finish().await;
        assert_eq!(e.id(), "apply-failed");
        assert!(
            e.message.starts_with("failed to prune ConfigMap pulsewatch-dev/old-config: configmaps \"old-config\" is forbidden"),
            "{}",
            e.message
        );
        assert!(e.message.ends_with("(403 Forbidden)"), "{}", e.message);
        assert_eq!(e.details, ["deleted ServiceMonitor monitoring/api"]);
    }

    #[tokio::test(start_paused = true)]
    async fn ctrl_c_while_waiting_leaves_the_inventory_as_it_was() {
        let ns = namespace("monitoring", false);
        let cancel = CancellationToken::new();
        let trigger = cancel.clone();
        let (client, mock) = scan(Scenario::new())
            .then(Exchange::delete(MONITOR).ok(
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
            ))
            .then(Exchange::get(MONITOR).reply(
                404,
                not_found("servicemonitors.monitoring.coreos.com", "api"),
            ))
            .then(
                Exchange::delete(&format!("/api/v1/namespaces/{NS}/configmaps/old-config"))
                    .reply(404, not_found("configmaps", "old-config")),
            )
            .then(Exchange::delete("/api/v1/namespaces/monitoring").ok(deleted(&ns)))
            .then(
                Exchange::get("/api/v1/namespaces/monitoring")
                    .check(move |_| trigger.cancel())
                    .ok(deleted(&ns)),
            )
            .start();
        let e = engine(client, Arc::default())
            .prune("pulsewatch", &desired(), &cancel)
            .await
            .unwrap_err();
        // No PUT of the inventory: the next run lists the same kinds and resumes.
        mock.finish().await;
        assert_eq!(e.id(), "interrupted");
    }

    fn widgets_crd() -> Value {
        let mut crd = object(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            None,
            "widgets.example.com",
        );
        crd["spec"] = json!({"group": "example.com", "scope": "Namespaced",
            "names": {"kind": "Widget", "plural": "widgets"},
            "versions": [{"name": "v1beta1", "served": false, "storage": false},
                         {"name": "v1", "served": true, "storage": true}]});
        crd
    }

    /// `discover`: the first prune of an engine asks discovery; the next uses its cache.
    fn crd_scan(s: Scenario, discover: bool) -> Scenario {
        let s = s.then(Exchange::get(INVENTORY).ok(inventory("CustomResourceDefinition.apiextensions.k8s.io", "")))
            .then(Exchange::get("/apis").ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": "apiextensions.k8s.io",
                 "versions": [{"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}],
                 "preferredVersion": {"groupVersion": "apiextensions.k8s.io/v1", "version": "v1"}}]})))
            ;
        let s = if discover {
            s.then(Exchange::get("/apis/apiextensions.k8s.io/v1").ok(apiextensions_v1()))
        } else {
            s
        };
        s.then(
            Exchange::get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
                .query("labelSelector", SELECTOR)
                .ok(list("CustomResourceDefinition", vec![widgets_crd()])),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_crd_with_objects_of_others_is_kept_unless_prune_data() {
        let mut theirs = object("example.com/v1", "Widget", Some("default"), "theirs");
        theirs["metadata"]["labels"] = json!({});
        let crd_path =
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com";
        let first = crd_scan(Scenario::new(), true)
            // Every object of the kind, in every namespace, of the served version.
            .then(Exchange::get("/apis/example.com/v1/widgets").ok(list(
                "Widget",
                vec![object("example.com/v1", "Widget", Some(NS), "ours"), theirs],
            )))
            // Kept: the inventory does not change, nothing is written.
            .then(Exchange::get(INVENTORY).ok(inventory(
                "CustomResourceDefinition.apiextensions.k8s.io",
                "",
            )));
        // With --prune-data it goes.
        let (client, mock) = crd_scan(first, false)
            .then(Exchange::delete(crd_path).ok(deleted(&widgets_crd())))
            .then(Exchange::get(crd_path).reply(404, not_found("customresourcedefinitions.apiextensions.k8s.io", "widgets.example.com")))
            .then(Exchange::get(INVENTORY).ok(inventory("CustomResourceDefinition.apiextensions.k8s.io", "")))
            .then(
                Exchange::new(Method::PUT, INVENTORY)
                    .check(|seen| assert_eq!(seen.body["metadata"]["annotations"]["applyset.kubernetes.io/contains-group-kinds"], ""))
                    .echo(),
            )
            .start();
        let e = engine(client, Arc::default());
        let empty = ApplyReport::default();
        let kept = e
            .prune("pulsewatch", &empty, &CancellationToken::new())
            .await
            .unwrap();
        let pruned = e
            .prune_with(
                "pulsewatch",
                &empty,
                &PruneOptions {
                    prune_data: true,
                    ..PruneOptions::default()
                },
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(
            kept.data,
            [
                "CustomResourceDefinition widgets.example.com (deleting it would delete 1 object pulsedev did not apply: Widget default/theirs)"
            ]
        );
        assert!(kept.deleted.is_empty());
        assert_eq!(
            pruned.deleted,
            ["CustomResourceDefinition widgets.example.com"]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_crd_whose_kind_is_not_served_has_no_objects_and_a_failed_list_fails() {
        let crd_path =
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com";
        let first = crd_scan(Scenario::new(), true).then(
            Exchange::get("/apis/example.com/v1/widgets").fail(
                500,
                "InternalError",
                "etcd timed out",
            ),
        );
        let (client, mock) = crd_scan(first, false)
            .then(Exchange::get("/apis/example.com/v1/widgets").fail(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ))
            .then(Exchange::delete(crd_path).ok(deleted(&widgets_crd())))
            .then(Exchange::get(crd_path).reply(
                404,
                not_found(
                    "customresourcedefinitions.apiextensions.k8s.io",
                    "widgets.example.com",
                ),
            ))
            .then(Exchange::get(INVENTORY).ok(inventory(
                "CustomResourceDefinition.apiextensions.k8s.io",
                "",
            )))
            .then(Exchange::new(Method::PUT, INVENTORY).echo())
            .start();
        let e = engine(client, Arc::default());
        let empty = ApplyReport::default();
        let failed = e
            .prune("pulsewatch", &empty, &CancellationToken::new())
            .await
            .unwrap_err();
        assert_eq!(
            failed.message,
            "failed to prune: listing the widgets of example.com: etcd timed out (500 InternalError)"
        );
        let pruned = e
            .prune("pulsewatch", &empty, &CancellationToken::new())
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(
            pruned.deleted,
            ["CustomResourceDefinition widgets.example.com"]
        );
    }

    #[test]
    fn every_resource_policy_but_delete_keeps_like_helm() {
        let with = |policy: Option<&str>| {
            let mut v = object("v1", "ConfigMap", Some(NS), "c");
            if let Some(p) = policy {
                v["metadata"]["annotations"] = json!({RESOURCE_POLICY: p, "other": "x"});
            }
            serde_json::from_value::<DynamicObject>(v).unwrap()
        };
        assert_eq!(kept_by_policy(&with(Some("keep"))), Some("keep"));
        assert_eq!(kept_by_policy(&with(Some("Keep"))), Some("Keep"));
        assert_eq!(kept_by_policy(&with(Some(""))), Some(""));
        assert_eq!(kept_by_policy(&with(Some("delete"))), None);
        assert_eq!(kept_by_policy(&with(None)), None);
    }

    #[test]
    fn only_claims_and_volumes_of_the_core_group_hold_data() {
        let gk = |g: &str, k: &str| (g.to_string(), k.to_string());
        assert!(holds_data(&gk("", "PersistentVolumeClaim")));
        assert!(holds_data(&gk("", "PersistentVolume")));
        assert!(!holds_data(&gk("", "ConfigMap")));
        assert!(!holds_data(&gk("example.com", "PersistentVolumeClaim")));
    }

    #[test]
    fn only_pulsedevs_apply_counts_as_applied_by_pulsedev() {
        let with = |manager: &str, operation: &str| {
            let mut v = object("v1", "ConfigMap", Some(NS), "c");
            v["metadata"]["managedFields"][0]["manager"] = json!(manager);
            v["metadata"]["managedFields"][0]["operation"] = json!(operation);
            serde_json::from_value::<DynamicObject>(v).unwrap()
        };
        assert!(applied_by_pulsedev(&with("pulsedev", "Apply")));
        assert!(!applied_by_pulsedev(&with("pulsedev", "Update")));
        assert!(!applied_by_pulsedev(&with("helm", "Apply")));
    }

    #[test]
    fn the_summary_counts_kinds_and_names_namespaces() {
        let r = PruneReport {
            deleted: vec![
                "ServiceMonitor monitoring/api".into(),
                "ServiceMonitor pulsewatch-dev/api".into(),
                "CustomResourceDefinition servicemonitors.monitoring.coreos.com".into(),
                "Namespace monitoring".into(),
            ],
            gone: vec!["Deployment monitoring/grafana".into()],
            ..PruneReport::default()
        };
        assert_eq!(
            r.summary().unwrap(),
            "removed 1 CustomResourceDefinition, 1 Namespace, 2 ServiceMonitor (namespaces monitoring)"
        );
        let one = PruneReport {
            deleted: vec!["ConfigMap pulsewatch-dev/old".into()],
            ..PruneReport::default()
        };
        assert_eq!(one.summary().unwrap(), "removed 1 ConfigMap");
        assert_eq!(
            PruneReport {
                gone: r.gone,
                ..PruneReport::default()
            }
            .summary(),
            None
        );
    }
}
