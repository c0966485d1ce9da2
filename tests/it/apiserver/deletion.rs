//! Deletion as the real API server and controllers do it, over time: finalizers,
//! Terminating namespaces and CRDs whose contents go over several reconcile passes,
//! PVC protection, the garbage collector's propagation policies, and the writes a real
//! server refuses while something is being deleted.
//!
//! One reconcile pass runs before and one after every request (`handle`); a "tick" below
//! is one pass. `Options::deletion_lag` is how many passes each controller step waits.
//!
//! Limits: no grace periods for pods (a pod without finalizers goes at once), no
//! `dryRun` deletes, no preconditions in DeleteOptions, no `finalize` subresource (the
//! namespace controller is the only one removing the `kubernetes` finalizer).

use serde_json::{Value, json};

use super::{Key, Request, Res, Response, State, fail, key, not_found_res, now_rfc3339, str_of};

/// The namespace controller's finalizer in `spec.finalizers` (k8s.io/api core/v1
/// `FinalizerKubernetes`).
const NAMESPACE_FINALIZER: &str = "kubernetes";
/// apiextensions-apiserver pkg/apis/apiextensions/v1 `CustomResourceCleanupFinalizer`.
const CRD_FINALIZER: &str = "customresourcecleanup.apiextensions.k8s.io";
/// The garbage collector's finalizers (k8s.io/apimachinery meta/v1 `FinalizerOrphanDependents`,
/// `FinalizerDeleteDependents`).
const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";
/// kubernetes pkg/volume/util `PVCProtectionFinalizer`, added on create by the
/// StorageObjectInUseProtection admission plugin
/// (plugin/pkg/admission/storage/storageobjectinuseprotection/admission.go).
pub(super) const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

fn finalizers(o: &Value) -> Vec<String> {
    o["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

fn set_finalizers(o: &mut Value, list: &[String]) {
    if list.is_empty() {
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        o["metadata"]["finalizers"] = json!(list);
    }
}

fn deleting(o: &Value) -> bool {
    !o["metadata"]["deletionTimestamp"].is_null()
}

fn uid(o: &Value) -> String {
    str_of(o, &["metadata", "uid"]).to_string()
}

fn is_namespace(k: &Key) -> bool {
    k.0.is_empty() && k.1 == "namespaces"
}

fn is_crd(k: &Key) -> bool {
    k.0 == "apiextensions.k8s.io" && k.1 == "customresourcedefinitions"
}

/// How dependents of a deleted object are handled (DeleteOptions.propagationPolicy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl State {
    /// Called by `finish` for a new object: admission plugins that add finalizers.
    pub(super) fn on_create(&mut self, r: &Res, obj: &mut Value) {
        if r.group.is_empty() && r.kind == "PersistentVolumeClaim" {
            let mut f = finalizers(obj);
            if !f.iter().any(|x| x == PVC_PROTECTION) {
                f.push(PVC_PROTECTION.into());
            }
            set_finalizers(obj, &f);
        }
    }

    /// A create (POST, or an apply that creates) the real server refuses because of a
    /// deletion in progress.
    pub(super) fn refuse_create(
        &self,
        r: &Res,
        ns: Option<&str>,
        name: &str,
        post: bool,
    ) -> Option<Response> {
        // kubernetes plugin/pkg/admission/namespace/lifecycle/admission.go: a Create into
        // a namespace whose phase is Terminating is Forbidden (admission.NewForbidden →
        // apierrors.NewForbidden's message), with a NamespaceTerminating cause.
        if let Some(ns) = ns
            && let Some(n) = self.objects.get(&key("", "namespaces", "", ns))
            && n["status"]["phase"] == "Terminating"
        {
            let resource = if r.group.is_empty() {
                r.plural.clone()
            } else {
                format!("{}.{}", r.plural, r.group)
            };
            let why = format!(
                "unable to create new content in namespace {ns} because it is being terminated"
            );
            let message = if name.is_empty() {
                format!("{resource} is forbidden: {why}")
            } else {
                format!("{resource} \"{name}\" is forbidden: {why}")
            };
            return Some(fail(
                403,
                "Forbidden",
                &message,
                json!({"name": name, "group": r.group, "kind": r.plural, "causes": [{
                    "reason": "NamespaceTerminating",
                    "message": format!("namespace {ns} is being terminated"),
                    "field": "metadata.namespace"}]}),
            ));
        }
        // apiextensions-apiserver pkg/apiserver/customresource_handler.go serveResource:
        // only the "create" verb (POST) is refused while the CRD is Terminating; "patch"
        // (and so a server-side apply that creates) still goes through, and the CRD
        // finalizer deletes the new object shortly after.
        if post
            && let Some(crd) = &r.crd
            && let Some(c) = self.objects.get(&key(
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                "",
                crd,
            ))
            && deleting(c)
        {
            return Some(fail(
                405,
                "MethodNotAllowed",
                "create not allowed while custom resource definition is terminating",
                json!({"group": r.group, "kind": r.plural}),
            ));
        }
        None
    }

    /// DELETE of one object, as the generic registry store does it
    /// (k8s.io/apiserver pkg/registry/generic/registry/store.go `Delete`): absent → 404;
    /// with finalizers (or a propagation that needs the GC) → deletionTimestamp set, the
    /// object returned with 200 and kept until its finalizers are gone; otherwise removed
    /// at once with a Success Status.
    pub(super) fn delete_api(
        &mut self,
        r: &Res,
        ns: Option<&str>,
        name: &str,
        req: &Request,
    ) -> Response {
        let k = key(&r.group, &r.plural, ns.unwrap_or_default(), name);
        if !self.objects.contains_key(&k) {
            return not_found_res(r, name);
        }
        let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
        // Default for everything pulsedev deletes: Background (pkg/registry/*/strategy.go
        // DefaultGarbageCollectionPolicy is DeleteDependents for apps/v1, batch/v1 ...).
        let policy = match body["propagationPolicy"].as_str() {
            Some("Foreground") => Propagation::Foreground,
            Some("Orphan") => Propagation::Orphan,
            _ if body["orphanDependents"] == json!(true) => Propagation::Orphan,
            _ => Propagation::Background,
        };
        match self.mark_deleted(&k, policy) {
            Some(o) => Response::json(200, &o),
            None => Response::json(
                200,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                    "details": {"name": name, "group": r.group, "kind": r.plural, "uid": self.gone_uid.clone()}}),
            ),
        }
    }

    /// Starts the deletion of `k`; returns the object when it stays (Terminating), `None`
    /// when it is gone.
    pub(super) fn mark_deleted(&mut self, k: &Key, policy: Propagation) -> Option<Value> {
        let mut o = self.objects.get(k)?.clone();
        if deleting(&o) {
            // A second DELETE changes nothing (store.go: "deletion already in progress").
            return Some(o);
        }
        let mut f = finalizers(&o);
        if is_namespace(k) {
            // pkg/registry/core/namespace/storage/storage.go Delete: phase Terminating and
            // deletionTimestamp; spec.finalizers keeps `kubernetes` for the controller.
            o["status"]["phase"] = json!("Terminating");
        }
        if is_crd(k) {
            // apiextensions-apiserver pkg/registry/customresourcedefinition/etcd.go Delete:
            // adds the cleanup finalizer and the Terminating condition.
            if !f.iter().any(|x| x == CRD_FINALIZER) {
                f.push(CRD_FINALIZER.into());
            }
            let conds = o["status"]["conditions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut conds: Vec<Value> = conds
                .into_iter()
                .filter(|c| c["type"] != "Terminating")
                .collect();
            conds.push(json!({"type": "Terminating", "status": "True", "reason": "InstanceDeletionPending",
                "message": "CustomResourceDefinition marked for deletion; CustomResource deletion will begin soon",
                "lastTransitionTime": now_rfc3339()}));
            o["status"]["conditions"] = json!(conds);
        }
        let has_dependents = {
            let u = uid(&o);
            self.objects.values().any(|d| super::owned_by(d, &u))
        };
        match policy {
            Propagation::Foreground if has_dependents => f.push(FOREGROUND.into()),
            Propagation::Orphan if has_dependents => f.push(ORPHAN.into()),
            _ => {}
        }
        if f.is_empty() && !is_namespace(k) {
            self.gone_uid = uid(&o);
            self.remove(k);
            return None;
        }
        set_finalizers(&mut o, &f);
        o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        o["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(k.clone(), o.clone());
        self.countdown.insert(k.clone(), self.opts.deletion_lag);
        Some(o)
    }

    /// Removes `k` from the store now (its finalizers are gone); a CRD stops being served.
    fn remove(&mut self, k: &Key) {
        if let Some(o) = self.objects.remove(k) {
            self.countdown.remove(k);
            self.ready_at.remove(&uid(&o));
            if is_crd(k) {
                self.resources
                    .retain(|r| r.crd.as_deref() != Some(k.3.as_str()));
            }
            self.logs
                .retain(|(ns, pod, _), _| !(k.1 == "pods" && *ns == k.2 && *pod == k.3));
        }
    }

    /// Whether `k`'s controller step is due (its countdown ran out); restarts it.
    fn due(&mut self, k: &Key) -> bool {
        let lag = self.opts.deletion_lag;
        let n = self.countdown.entry(k.clone()).or_insert(lag);
        if *n > 0 {
            *n -= 1;
            return false;
        }
        *n = lag;
        true
    }

    fn drop_finalizer(&mut self, k: &Key, which: &str) {
        let Some(o) = self.objects.get(k) else { return };
        let mut o = o.clone();
        let f: Vec<String> = finalizers(&o).into_iter().filter(|x| x != which).collect();
        set_finalizers(&mut o, &f);
        o["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(k.clone(), o);
    }

    /// One pass of the deletion controllers.
    pub(super) fn tick_deletion(&mut self) {
        let keys: Vec<Key> = self.objects.keys().cloned().collect();
        let uids: std::collections::HashSet<String> = self.objects.values().map(uid).collect();
        for k in keys {
            let Some(o) = self.objects.get(&k).cloned() else {
                continue;
            };
            let u = uid(&o);
            // Garbage collector (pkg/controller/garbagecollector): a dependent whose
            // owners are all gone is deleted (background); one level per pass.
            let owners: Vec<String> = o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|r| r["uid"].as_str().map(str::to_string))
                .collect();
            if !owners.is_empty() && !deleting(&o) && owners.iter().all(|x| !uids.contains(x)) {
                if self.due(&k) {
                    self.mark_deleted(&k, Propagation::Background);
                }
                continue;
            }
            if !deleting(&o) {
                continue;
            }
            // A pod in its grace period is the kubelet's until it has stopped it
            // (controllers.rs `terminate`).
            if self.ext.terminating.contains_key(&k) {
                continue;
            }
            let f = finalizers(&o);
            let dependents: Vec<Key> = self
                .objects
                .iter()
                .filter(|(_, d)| super::owned_by(d, &u))
                .map(|(k, _)| k.clone())
                .collect();
            if f.iter().any(|x| x == ORPHAN) {
                // garbagecollector.go orphanDependents: ownerReferences to it removed.
                for d in &dependents {
                    let mut dv = self.objects[d].clone();
                    if let Some(refs) = dv["metadata"]["ownerReferences"].as_array_mut() {
                        refs.retain(|r| r["uid"].as_str() != Some(&u));
                    }
                    dv["metadata"]["resourceVersion"] = json!(self.next_rv());
                    self.objects.insert(d.clone(), dv);
                }
                self.drop_finalizer(&k, ORPHAN);
            } else if f.iter().any(|x| x == FOREGROUND) {
                // Foreground: dependents go first (themselves in foreground), then the owner.
                if dependents.is_empty() {
                    self.drop_finalizer(&k, FOREGROUND);
                } else if self.due(&k) {
                    for d in dependents {
                        self.mark_deleted(&d, Propagation::Foreground);
                    }
                }
            } else if f.iter().any(|x| x == PVC_PROTECTION) {
                // pkg/controller/volume/pvcprotection: the finalizer goes once no pod uses
                // the claim.
                let used = self.objects.iter().any(|((g, p, ns, _), pod)| {
                    g.is_empty()
                        && p == "pods"
                        && *ns == k.2
                        && pod["spec"]["volumes"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .any(|v| {
                                v["persistentVolumeClaim"]["claimName"].as_str()
                                    == Some(k.3.as_str())
                            })
                });
                if !used {
                    self.drop_finalizer(&k, PVC_PROTECTION);
                }
            } else if is_namespace(&k) {
                self.namespace_step(&k, &o);
            } else if f.iter().any(|x| x == CRD_FINALIZER) {
                self.crd_step(&k, &o);
            }
            if let Some(now) = self.objects.get(&k)
                && finalizers(now).is_empty()
                && (!is_namespace(&k)
                    || now["spec"]["finalizers"]
                        .as_array()
                        .is_none_or(|l| l.is_empty()))
            {
                self.remove(&k);
            }
        }
    }

    /// kubernetes pkg/controller/namespace/deletion/namespaced_resources_deleter.go: every
    /// `deletion_lag` passes, delete what is left in the namespace (each object by the
    /// rules above, so finalizers hold it); once it is empty, remove the `kubernetes`
    /// finalizer from spec.finalizers.
    fn namespace_step(&mut self, k: &Key, o: &Value) {
        if !self.due(k) {
            return;
        }
        let contents: Vec<Key> = self
            .objects
            .keys()
            .filter(|c| c.2 == k.3)
            .cloned()
            .collect();
        let mut ns = o.clone();
        if contents.is_empty() {
            ns["spec"]["finalizers"] = json!([]);
        } else {
            for c in &contents {
                self.mark_deleted(c, Propagation::Background);
            }
            ns["status"]["conditions"] = json!([{"type": "NamespaceContentRemaining", "status": "True",
                "reason": "SomeResourcesRemain",
                "message": format!("Some resources are remaining: {} objects", contents.len()),
                "lastTransitionTime": now_rfc3339()}]);
        }
        ns["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(k.clone(), ns);
    }

    /// apiextensions-apiserver pkg/controller/finalizer/crd_finalizer.go: delete every
    /// custom resource of the CRD (InstanceDeletionInProgress), then drop the finalizer.
    fn crd_step(&mut self, k: &Key, o: &Value) {
        if !self.due(k) {
            return;
        }
        let group = str_of(o, &["spec", "group"]).to_string();
        let plural = str_of(o, &["spec", "names", "plural"]).to_string();
        let instances: Vec<Key> = self
            .objects
            .keys()
            .filter(|c| c.0 == group && c.1 == plural)
            .cloned()
            .collect();
        if instances.is_empty() {
            self.drop_finalizer(k, CRD_FINALIZER);
            return;
        }
        for c in &instances {
            self.mark_deleted(c, Propagation::Background);
        }
        let mut crd = self.objects[k].clone();
        if let Some(conds) = crd["status"]["conditions"].as_array_mut() {
            for c in conds.iter_mut().filter(|c| c["type"] == "Terminating") {
                c["reason"] = json!("InstanceDeletionInProgress");
                c["message"] = json!("CustomResource deletion is in progress");
            }
        }
        crd["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.insert(k.clone(), crd);
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{engine, raw, rt};
    use super::super::{FakeApiServer, Options};
    use pulsedev::kube::{ApplyOptions, PruneOptions, parse};
    use serde_json::{Value, json};
    use tokio_util::sync::CancellationToken;

    const JSON: &str = "application/json";

    fn call(api: &FakeApiServer, method: &str, target: &str, body: Value) -> (u16, Value) {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        let (code, text) = raw(api, method, target, JSON, &body);
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn post(api: &FakeApiServer, target: &str, body: Value) -> (u16, Value) {
        call(api, "POST", target, body)
    }

    fn cm(name: &str, ns: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": ns}})
    }

    /// GETs `target` until it is 404 (each request is a reconcile pass); the number of
    /// GETs it took.
    fn polls_until_gone(api: &FakeApiServer, target: &str) -> usize {
        for n in 1..=100 {
            if call(api, "GET", target, Value::Null).0 == 404 {
                return n;
            }
        }
        panic!("{target} never went away");
    }

    #[test]
    fn a_namespace_terminates_over_several_passes_and_refuses_new_content() {
        let api = FakeApiServer::start(Options {
            deletion_lag: 8,
            ..Options::new("test")
        });
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "t"}});
        assert_eq!(post(&api, "/api/v1/namespaces", ns).0, 201);
        assert_eq!(
            post(&api, "/api/v1/namespaces/t/configmaps", cm("a", "t")).0,
            201
        );
        let (code, o) = call(&api, "DELETE", "/api/v1/namespaces/t", Value::Null);
        assert_eq!(code, 200);
        assert_eq!(o["status"]["phase"], "Terminating");
        assert!(o["metadata"]["deletionTimestamp"].is_string());
        assert_eq!(o["spec"]["finalizers"], json!(["kubernetes"]));
        let (code, e) = post(&api, "/api/v1/namespaces/t/configmaps", cm("b", "t"));
        assert_eq!(code, 403);
        assert_eq!(e["reason"], "Forbidden");
        assert_eq!(
            e["message"],
            "configmaps \"b\" is forbidden: unable to create new content in namespace t because it is being terminated"
        );
        assert_eq!(e["details"]["causes"][0]["reason"], "NamespaceTerminating");
        // An update of what is there is not a create: allowed.
        let (code, _) = call(
            &api,
            "PUT",
            "/api/v1/namespaces/t/configmaps/a",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "t"}, "data": {"k": "v"}}),
        );
        assert_eq!(code, 200);
        let n = polls_until_gone(&api, "/api/v1/namespaces/t");
        assert!(n > 1, "the namespace went at once");
        assert_eq!(
            call(
                &api,
                "GET",
                "/api/v1/namespaces/t/configmaps/a",
                Value::Null
            )
            .0,
            404
        );
        assert_eq!(
            call(&api, "DELETE", "/api/v1/namespaces/t", Value::Null).0,
            404
        );
    }

    #[test]
    fn a_terminating_crd_refuses_creates_deletes_its_instances_then_goes() {
        let api = FakeApiServer::start(Options {
            deletion_lag: 8,
            ..Options::new("test")
        });
        let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "widgets.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced",
                "names": {"kind": "Widget", "plural": "widgets", "singular": "widget", "listKind": "WidgetList"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
        let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
        assert_eq!(post(&api, crds, crd).0, 201);
        let widget = |n: &str| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": n, "namespace": "default"}});
        let widgets = "/apis/example.com/v1/namespaces/default/widgets";
        assert_eq!(post(&api, widgets, widget("w1")).0, 201);
        let (code, o) = call(
            &api,
            "DELETE",
            &format!("{crds}/widgets.example.com"),
            Value::Null,
        );
        assert_eq!(code, 200);
        assert_eq!(
            o["metadata"]["finalizers"],
            json!(["customresourcecleanup.apiextensions.k8s.io"])
        );
        let terminating = o["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Terminating")
            .unwrap()
            .clone();
        assert_eq!(terminating["status"], "True");
        let (code, e) = post(&api, widgets, widget("w2"));
        assert_eq!(code, 405);
        assert_eq!(e["reason"], "MethodNotAllowed");
        assert_eq!(
            e["message"],
            "create not allowed while custom resource definition is terminating"
        );
        // An apply (PATCH) is not refused by the handler: the finalizer takes it away later.
        let (code, _) = raw(
            &api,
            "PATCH",
            &format!("{widgets}/w3?fieldManager=test"),
            "application/apply-patch+yaml",
            &widget("w3").to_string(),
        );
        assert_eq!(code, 201);
        let n = polls_until_gone(&api, &format!("{crds}/widgets.example.com"));
        assert!(n > 1, "the CRD went at once");
        assert!(api.objects_of("Widget").is_empty());
    }

    #[test]
    fn pvc_protection_holds_a_claim_while_a_pod_uses_it() {
        let api = FakeApiServer::start(Options::new("test"));
        let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": "default"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
        let (code, o) = post(
            &api,
            "/api/v1/namespaces/default/persistentvolumeclaims",
            pvc,
        );
        assert_eq!(code, 201);
        assert_eq!(
            o["metadata"]["finalizers"],
            json!(["kubernetes.io/pvc-protection"])
        );
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "user", "namespace": "default"},
            "spec": {"containers": [{"name": "c", "image": "busybox"}],
                "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}});
        assert_eq!(post(&api, "/api/v1/namespaces/default/pods", pod).0, 201);
        let target = "/api/v1/namespaces/default/persistentvolumeclaims/data";
        let (code, o) = call(&api, "DELETE", target, Value::Null);
        assert_eq!(code, 200);
        assert!(o["metadata"]["deletionTimestamp"].is_string());
        for _ in 0..5 {
            assert_eq!(
                call(&api, "GET", target, Value::Null).0,
                200,
                "held by the pod"
            );
        }
        assert_eq!(
            call(
                &api,
                "DELETE",
                "/api/v1/namespaces/default/pods/user",
                Value::Null
            )
            .0,
            200
        );
        polls_until_gone(&api, target);
    }

    fn owner_and_dependent(api: &FakeApiServer) {
        let (_, owner) = post(
            api,
            "/api/v1/namespaces/default/configmaps",
            cm("owner", "default"),
        );
        let mut dep = cm("dependent", "default");
        dep["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap",
            "name": "owner", "uid": owner["metadata"]["uid"], "blockOwnerDeletion": true}]);
        assert_eq!(
            post(api, "/api/v1/namespaces/default/configmaps", dep).0,
            201
        );
    }

    const OWNER: &str = "/api/v1/namespaces/default/configmaps/owner";
    const DEPENDENT: &str = "/api/v1/namespaces/default/configmaps/dependent";

    #[test]
    fn background_foreground_and_orphan_propagation() {
        let api = FakeApiServer::start(Options {
            deletion_lag: 8,
            ..Options::new("test")
        });
        // Background: the owner goes at once, the GC collects the dependent later.
        owner_and_dependent(&api);
        let (code, s) = call(
            &api,
            "DELETE",
            OWNER,
            json!({"propagationPolicy": "Background"}),
        );
        assert_eq!((code, &s["status"]), (200, &json!("Success")));
        assert_eq!(call(&api, "GET", OWNER, Value::Null).0, 404);
        assert_eq!(call(&api, "GET", DEPENDENT, Value::Null).0, 200);
        polls_until_gone(&api, DEPENDENT);

        // Foreground: the owner stays (foregroundDeletion) until the dependent is gone.
        owner_and_dependent(&api);
        let (code, o) = call(
            &api,
            "DELETE",
            OWNER,
            json!({"propagationPolicy": "Foreground"}),
        );
        assert_eq!(code, 200);
        assert_eq!(o["metadata"]["finalizers"], json!(["foregroundDeletion"]));
        polls_until_gone(&api, OWNER);
        assert_eq!(
            call(&api, "GET", DEPENDENT, Value::Null).0,
            404,
            "dependents go first"
        );

        // Orphan: the dependent stays, without its ownerReference.
        owner_and_dependent(&api);
        assert_eq!(
            call(
                &api,
                "DELETE",
                OWNER,
                json!({"propagationPolicy": "Orphan"})
            )
            .0,
            200
        );
        polls_until_gone(&api, OWNER);
        let (code, d) = call(&api, "GET", DEPENDENT, Value::Null);
        assert_eq!(code, 200);
        assert!(
            d["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|r| r.is_empty()),
            "{d}"
        );
        assert!(d["metadata"]["deletionTimestamp"].is_null());
    }

    const OLD_SET: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: api-config}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: demo-reader}\nrules: []\n---\napiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: dashboards, annotations: {helm.sh/resource-policy: keep}}\n";
    const NEW_SET: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: api-config}\n";

    /// A ClusterRole (not one of the old fixed prune kinds) leaving the set is found
    /// through the inventory; a claim and a `keep` object stay until asked.
    #[test]
    fn prune_finds_every_kind_it_applied_and_keeps_data_until_asked() {
        let api = FakeApiServer::start(Options::new("test"));
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let options = ApplyOptions::new("demo-stack", "demo");
            for set in [OLD_SET, NEW_SET] {
                let ms = parse("set.yaml", set).unwrap();
                engine.before_apply(&ms, &options, &cancel).await.unwrap();
                engine.apply(&ms, &options, &cancel).await.unwrap();
            }
            let desired = engine
                .apply(&parse("set.yaml", NEW_SET).unwrap(), &options, &cancel)
                .await
                .unwrap();
            let first = engine.prune("demo-stack", &desired, &cancel).await.unwrap();
            let second = engine
                .prune_with(
                    "demo-stack",
                    &desired,
                    &PruneOptions {
                        prune_data: true,
                        ..PruneOptions::default()
                    },
                    &cancel,
                )
                .await
                .unwrap();
            (first, second)
        });
        assert_eq!(first.deleted, ["ClusterRole demo-reader"]);
        assert_eq!(
            first.kept,
            ["ConfigMap demo/dashboards (helm.sh/resource-policy: keep)"]
        );
        assert_eq!(first.data, ["PersistentVolumeClaim demo/data (holds data)"]);
        assert_eq!(second.deleted, ["PersistentVolumeClaim demo/data"]);
        assert!(api.object("ClusterRole", "", "demo-reader").is_none());
        assert!(
            api.object("PersistentVolumeClaim", "demo", "data")
                .is_none()
        );
        assert!(api.object("ConfigMap", "demo", "dashboards").is_some());
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    /// Issue 11: another stack's namespace being deleted is not prune's business, and a
    /// leftover there is neither deleted nor counted.
    #[test]
    fn prune_skips_leftovers_in_a_terminating_namespace() {
        let api = FakeApiServer::start(Options {
            deletion_lag: 1000,
            ..Options::new("test")
        });
        let dir = tempfile::tempdir().unwrap();
        let report = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let options = ApplyOptions::new("demo-stack", "demo");
            let ms = parse("set.yaml", OLD_SET).unwrap();
            engine.before_apply(&ms, &options, &cancel).await.unwrap();
            engine.apply(&ms, &options, &cancel).await.unwrap();
            // The namespace goes away by someone else's hand, slowly.
            assert_eq!(call(&api, "DELETE", "/api/v1/namespaces/demo", Value::Null).0, 200);
            let desired = engine
                .apply(
                    &parse("set.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: demo-reader}\nrules: []\n").unwrap(),
                    &options,
                    &cancel,
                )
                .await
                .unwrap();
            engine.prune("demo-stack", &desired, &cancel).await.unwrap()
        });
        // The Namespace itself is being deleted already: it goes by itself.
        assert!(report.deleted.is_empty(), "{report:?}");
        assert_eq!(
            report.terminating,
            [
                "ConfigMap demo/api-config",
                "ConfigMap demo/dashboards",
                "PersistentVolumeClaim demo/data"
            ]
        );
        assert!(api.object("ConfigMap", "demo", "api-config").is_some());
    }

    const CRD_SET: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: widgets.example.com}\nspec:\n  group: example.com\n  scope: Namespaced\n  names: {kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata: {name: ours}\n";

    /// A CRD leaving the set takes every object of its kind with it: kept while someone
    /// else's objects exist, deleted (after this stack's objects, and waited for) once not.
    #[test]
    fn a_crd_with_objects_of_others_is_kept_and_goes_once_they_are_gone() {
        let api = FakeApiServer::start(Options {
            deletion_lag: 3,
            ..Options::new("test")
        });
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            let options = ApplyOptions::new("demo-stack", "demo");
            let ms = parse("set.yaml", CRD_SET).unwrap();
            engine.before_apply(&ms, &options, &cancel).await.unwrap();
            engine.apply(&ms, &options, &cancel).await.unwrap();
            let theirs = json!({"apiVersion": "example.com/v1", "kind": "Widget",
                "metadata": {"name": "theirs", "namespace": "default"}});
            assert_eq!(
                post(
                    &api,
                    "/apis/example.com/v1/namespaces/default/widgets",
                    theirs
                )
                .0,
                201
            );
            let desired = engine
                .apply(
                    &parse(
                        "set.yaml",
                        "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n",
                    )
                    .unwrap(),
                    &options,
                    &cancel,
                )
                .await
                .unwrap();
            let first = engine.prune("demo-stack", &desired, &cancel).await.unwrap();
            assert_eq!(
                call(
                    &api,
                    "DELETE",
                    "/apis/example.com/v1/namespaces/default/widgets/theirs",
                    Value::Null
                )
                .0,
                200
            );
            let second = engine.prune("demo-stack", &desired, &cancel).await.unwrap();
            (first, second)
        });
        assert_eq!(first.deleted, ["Widget demo/ours"]);
        assert_eq!(
            first.data,
            [
                "CustomResourceDefinition widgets.example.com (deleting it would delete 1 object pulsedev did not apply: Widget default/theirs)"
            ]
        );
        assert_eq!(
            second.deleted,
            ["CustomResourceDefinition widgets.example.com"]
        );
        // Gone, not Terminating, when prune returns.
        assert!(api.objects_of("CustomResourceDefinition").is_empty());
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }
}
