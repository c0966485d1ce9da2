//! Prune: delete what pulsedev applied to a stack earlier but is no longer desired.
//!
//! Owns: finding candidates (list by the `pulsedev.dev/stack=<stack>` label across the
//! kinds of the desired set plus the namespaced kinds pulsedev deploys) and deleting them,
//! routing and workloads before what they depend on. Must never delete an object that
//! lacks the stack label, that pulsedev did not apply itself (no `pulsedev` Apply entry in
//! its managedFields: e.g. a PVC a StatefulSet made from a labelled template, or a
//! ReplicaSet), that has a controlling owner, or that is in the desired set.
//!
//! Call it with the whole desired set of the stack: what is missing from it is deleted,
//! Namespaces and CRDs included (with everything in them).

use std::collections::{BTreeSet, HashSet};

use ::kube::Api;
use ::kube::api::{DeleteParams, DynamicObject, ListParams};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::apply::{ApplyReport, group_of};
use super::discovery::parse_gvk;
use super::{Engine, FIELD_MANAGER, STACK_LABEL, cancellable, describe};
use crate::error::{Error, ErrorKind, Result};

/// Namespaced kinds pulsedev deploys; listed even when the desired set has none of them
/// any more (the last one was removed from a chart).
pub const PRUNE_KINDS: [(&str, &str); 15] = [
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("apps/v1", "DaemonSet"),
    ("batch/v1", "Job"),
    ("batch/v1", "CronJob"),
    ("networking.k8s.io/v1", "Ingress"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("policy/v1", "PodDisruptionBudget"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
];

/// What prune did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct PruneReport {
    /// `Deployment pulsewatch-dev/old-api`, in deletion order.
    pub deleted: Vec<String>,
    /// Labelled and not desired, but not applied by pulsedev (or owned by another
    /// object): left alone, listed so a person can look.
    pub left_alone: Vec<String>,
}

/// An object prune will delete.
struct Doomed {
    group: super::apply::Group,
    label: String,
    api: Api<DynamicObject>,
    name: String,
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

impl Engine {
    /// Deletes objects labelled `pulsedev.dev/stack=<stack>` that are not in `desired`
    /// (see the module docs for what is never deleted), across the desired kinds and
    /// [`PRUNE_KINDS`].
    pub async fn prune(
        &self,
        stack: &str,
        desired: &ApplyReport,
        cancel: &CancellationToken,
    ) -> Result<PruneReport> {
        self.prune_kinds(stack, desired, &PRUNE_KINDS, cancel).await
    }

    /// [`Engine::prune`] with another list of always-listed kinds.
    pub async fn prune_kinds(
        &self,
        stack: &str,
        desired: &ApplyReport,
        kinds: &[(&str, &str)],
        cancel: &CancellationToken,
    ) -> Result<PruneReport> {
        cancellable(cancel, self.prune_inner(stack, desired, kinds)).await?
    }

    async fn prune_inner(
        &self,
        stack: &str,
        desired: &ApplyReport,
        extra: &[(&str, &str)],
    ) -> Result<PruneReport> {
        if stack.is_empty() {
            return Err(Error::internal("prune needs a stack name"));
        }
        let failed = |what: String| Error::new(ErrorKind::ApplyFailed, what);
        let keep: HashSet<_> = desired.applied.iter().map(|a| a.key()).collect();
        // One entry per (group, kind): API versions of a kind list the same objects.
        let mut kinds: Vec<(String, String)> = Vec::new();
        let mut seen_kinds = BTreeSet::new();
        let mut all: Vec<(String, String)> = desired
            .applied
            .iter()
            .map(|a| (a.api_version.clone(), a.kind.clone()))
            .chain(extra.iter().map(|(v, k)| (v.to_string(), k.to_string())))
            .collect();
        all.sort();
        for (av, kind) in all {
            let gvk = parse_gvk(&av, &kind);
            if seen_kinds.insert((gvk.group, kind.clone())) {
                kinds.push((av, kind));
            }
        }
        let selector = format!("{STACK_LABEL}={stack}");
        let mut doomed: Vec<Doomed> = Vec::new();
        let mut report = PruneReport::default();
        for (av, kind) in &kinds {
            let resolved = self.discovery.resolve(av, kind).await.map_err(|e| {
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
                if !labelled || o.metadata.deletion_timestamp.is_some() {
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
                let owned = o
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|r| r.controller == Some(true));
                if owned || !applied_by_pulsedev(&o) {
                    report.left_alone.push(shown(kind, &o));
                    continue;
                }
                let api = if r.namespaced {
                    Api::namespaced_with(self.client.clone(), &ns, &r.resource)
                } else {
                    Api::all_with(self.client.clone(), &r.resource)
                };
                doomed.push(Doomed {
                    group: group_of(av, kind),
                    label: shown(kind, &o),
                    api,
                    name,
                });
            }
        }
        // Routing before workloads before what they use; namespaces last.
        doomed.sort_by(|a, b| b.group.cmp(&a.group).then_with(|| a.label.cmp(&b.label)));
        let params = DeleteParams::background();
        for Doomed {
            label, api, name, ..
        } in doomed
        {
            match api.delete(&name, &params).await {
                Ok(_) => {}
                Err(::kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => {
                    return Err(failed(format!("failed to prune {label}: {}", describe(&e)))
                        .with_details(
                            report
                                .deleted
                                .iter()
                                .map(|d| format!("deleted {d}"))
                                .collect(),
                        ));
                }
            }
            self.say(&format!("pruned {label}"));
            report.deleted.push(label);
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::Applied;
    use crate::kube::testing::{Exchange, Scenario, apps_v1, core_v1, fixtures};
    use serde_json::{Value, json};

    const NS: &str = "pulsewatch-dev";
    const SELECTOR: &str = "pulsedev.dev/stack=pulsewatch";

    fn managed(mut v: Value, manager: &str, operation: &str) -> Value {
        v["metadata"]["managedFields"] = json!([{
            "manager": manager,
            "operation": operation,
            "apiVersion": v["apiVersion"],
            "time": "2026-11-26T05:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {}}}
        }]);
        v
    }

    fn labelled(mut v: Value, stack: Option<&str>) -> Value {
        match stack {
            Some(s) => v["metadata"]["labels"]["pulsedev.dev/stack"] = json!(s),
            None => {
                v["metadata"]["labels"]
                    .as_object_mut()
                    .map(|l| l.remove("pulsedev.dev/stack"));
            }
        }
        v
    }

    fn object(api_version: &str, kind: &str, name: &str) -> Value {
        json!({"apiVersion": api_version, "kind": kind,
               "metadata": {"name": name, "namespace": NS, "resourceVersion": "77",
                            "labels": {"pulsedev.dev/stack": "pulsewatch"}}})
    }

    fn list(kind: &str, items: Vec<Value>) -> Value {
        json!({"apiVersion": "v1", "kind": format!("{kind}List"),
               "metadata": {"resourceVersion": "900"}, "items": items})
    }

    fn applied(api_version: &str, kind: &str, name: &str) -> Applied {
        Applied {
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: Some(NS.into()),
            name: name.into(),
            resource_version: Some("1".into()),
            generation: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn prune_deletes_only_labelled_leftovers_that_pulsedev_applied() {
        let dep = |name: &str| fixtures::deployment(NS, name, (1, 1), 1, (1, 1, 1));
        let desired = ApplyReport {
            applied: vec![
                applied("apps/v1", "Deployment", "api"),
                applied("v1", "ConfigMap", "api-config"),
            ],
            targets: vec![],
        };
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/apis/apps/v1").ok(apps_v1()))
            .then(
                Exchange::get("/apis/apps/v1/deployments")
                    .query("labelSelector", SELECTOR)
                    .ok(list(
                        "Deployment",
                        vec![
                            managed(dep("api"), "pulsedev", "Apply"),
                            managed(dep("old-api"), "pulsedev", "Apply"),
                            // Made by hand with the label: not ours to delete.
                            managed(dep("hand-made"), "kubectl-client-side-apply", "Update"),
                            // The server-side filter is not trusted blindly.
                            labelled(managed(dep("other-stack"), "pulsedev", "Apply"), Some("other")),
                        ],
                    )),
            )
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(
                Exchange::get("/api/v1/configmaps")
                    .query("labelSelector", SELECTOR)
                    .ok(list(
                        "ConfigMap",
                        vec![
                            managed(object("v1", "ConfigMap", "api-config"), "pulsedev", "Apply"),
                            labelled(managed(object("v1", "ConfigMap", "kube-root-ca.crt"), "pulsedev", "Apply"), None),
                        ],
                    )),
            )
            .then(
                Exchange::get("/api/v1/services")
                    .query("labelSelector", SELECTOR)
                    .ok(list("Service", vec![managed(object("v1", "Service", "old-api"), "pulsedev", "Apply")])),
            )
            .then(
                Exchange::delete("/apis/apps/v1/namespaces/pulsewatch-dev/deployments/old-api")
                    .check(|seen| assert_eq!(seen.body["propagationPolicy"], "Background"))
                    .ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                               "details": {"name": "old-api", "group": "apps", "kind": "deployments", "uid": "uid-old-api"}})),
            )
            // Gone already: fine.
            .then(
                Exchange::delete("/api/v1/namespaces/pulsewatch-dev/services/old-api")
                    .reply(404, crate::kube::testing::not_found("services", "old-api")),
            )
            .start();
        let report = Engine::new(client)
            .prune_kinds(
                "pulsewatch",
                &desired,
                &[("v1", "Service")],
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(
            report,
            PruneReport {
                deleted: vec![
                    "Deployment pulsewatch-dev/old-api".into(),
                    "Service pulsewatch-dev/old-api".into()
                ],
                left_alone: vec!["Deployment pulsewatch-dev/hand-made".into()],
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_deleted_when_everything_is_desired() {
        let desired = ApplyReport {
            applied: vec![applied("v1", "ConfigMap", "api-config")],
            targets: vec![],
        };
        let (client, mock) = Scenario::new()
            .then(Exchange::get("/api/v1").ok(core_v1()))
            .then(
                Exchange::get("/api/v1/configmaps")
                    .query("labelSelector", SELECTOR)
                    .ok(list(
                        "ConfigMap",
                        vec![managed(
                            object("v1", "ConfigMap", "api-config"),
                            "pulsedev",
                            "Apply",
                        )],
                    )),
            )
            .start();
        let report = Engine::new(client)
            .prune_kinds("pulsewatch", &desired, &[], &CancellationToken::new())
            .await
            .unwrap();
        mock.finish().await;
        assert_eq!(report, PruneReport::default());
    }
}
