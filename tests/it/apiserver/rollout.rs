//! The fake cluster's deployment and ReplicaSet controllers, with rollouts that take many
//! reconcile passes as the real ones do, so a wait sees every intermediate state:
//! `observedGeneration` behind (controllers.rs `observe_lag`), a new ReplicaSet that
//! grows by `maxSurge` while old ones shrink within `maxUnavailable`, new pods that are
//! ContainerCreating for a while, and old pods that stay Terminating for their grace
//! period after their ReplicaSet let them go.
//!
//! Imitated, each from kubernetes/kubernetes:
//! - pkg/controller/deployment/rolling.go `rolloutRolling`: one sync either scales the
//!   new ReplicaSet up (`reconcileNewReplicaSet` with util `NewRSNewReplicas`: at most
//!   `replicas + maxSurge` pods in all), or else scales old ones down
//!   (`reconcileOldReplicaSets`: `allPods - minAvailable - newRSUnavailable`, unhealthy
//!   replicas first by `cleanupUnhealthyReplicas`, then
//!   `scaleDownOldReplicaSetsForRollingUpdate` while more than `minAvailable` are
//!   available). It reads the ReplicaSets' status as last written, as the informer does.
//! - pkg/controller/deployment/recreate.go `rolloutRecreate`: old ReplicaSets to zero,
//!   the new one scaled up only once no old pod is left.
//! - pkg/controller/deployment/util/deployment_util.go `ResolveFenceposts`: maxSurge
//!   rounds up, maxUnavailable down, both 25% by default, never both zero.
//! - pkg/controller/deployment/sync.go `calculateStatus`: replicas, ready and available
//!   are sums over every ReplicaSet, updatedReplicas the new one's replicas,
//!   unavailableReplicas `sum(spec.replicas) - available` (at least 0), the Available
//!   condition against `replicas - maxUnavailable`; and progress.go `syncRolloutStatus`
//!   for Progressing (ReplicaSetUpdated while rolling, NewReplicaSetAvailable when done,
//!   ProgressDeadlineExceeded after `progressDeadlineSeconds`).
//! - pkg/controller/replicaset/replica_set.go `manageReplicas` and
//!   replica_set_utils.go `calculateStatus`: pods created or deleted to match
//!   `spec.replicas` (not-ready pods deleted first, controller.ActivePods), status counts
//!   only pods without a deletionTimestamp, and `terminatingReplicas` counts the others
//!   (feature DeploymentReplicaSetTerminatingReplicas, beta and on by default since 1.35,
//!   kubernetes/website feature-gates/DeploymentReplicaSetTerminatingReplicas.md).
//!
//! Limits: minReadySeconds is 0 (available = ready), no rollover of several rollouts at
//! once beyond what the sums give, no `paused`, no revision history limit, one pass is
//! one sync of every controller.

use serde_json::{Value, json};

use super::{
    Key, PodMode, State, cond, controllers, key, labels_of, owned_by, owner_ref, short_hash, str_of,
};

/// Passes a new pod stays ContainerCreating before it runs and is Ready: the kubelet
/// pulls, starts and probes it, seconds in which a wait polls several times. A wait's
/// poll costs up to four passes (two per request: before and after it; a read of the
/// workload and one of its pods), so every state lasts at least one poll.
const START_PASSES: u64 = 8;

/// One ReplicaSet of a Deployment as the deployment controller reads it.
#[derive(Debug, Clone)]
struct Rs {
    key: Key,
    uid: String,
    created: String,
    /// spec.replicas
    spec: i64,
    /// status.availableReplicas, as last written by the ReplicaSet controller.
    available: i64,
}

/// maxSurge and maxUnavailable as numbers of pods for `replicas`.
fn fenceposts(d: &Value, replicas: i64) -> (i64, i64) {
    let ru = &d["spec"]["strategy"]["rollingUpdate"];
    let resolve = |v: &Value, round_up: bool| -> i64 {
        match v {
            Value::Number(n) => n.as_i64().unwrap_or(0),
            Value::String(s) if s.ends_with('%') => {
                let pct: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
                let scaled = replicas * pct;
                if round_up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                }
            }
            Value::String(s) => s.parse().unwrap_or(0),
            _ => {
                let scaled = replicas * 25;
                if round_up {
                    (scaled + 99) / 100
                } else {
                    scaled / 100
                }
            }
        }
    };
    let surge = resolve(&ru["maxSurge"], true);
    let unavailable = resolve(&ru["maxUnavailable"], false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

fn put_nonzero(status: &mut Value, field: &str, n: i64) {
    if n != 0 {
        status[field] = json!(n);
    }
}

impl State {
    /// One sync of Deployment `k` and of its ReplicaSets (see the module docs).
    pub(super) fn deployment(&mut self, k: &Key) {
        let d = self.objects[k].clone();
        let (ns, name) = (k.2.clone(), k.3.clone());
        let uid = str_of(&d, &["metadata", "uid"]).to_string();
        let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let template = d["spec"]["template"].clone();
        let hash = short_hash(&template, 10);
        let rs_name = format!("{name}-{hash}");
        let recreate = d["spec"]["strategy"]["type"] == "Recreate";
        let (surge, max_unavailable) = if recreate {
            (0, desired)
        } else {
            fenceposts(&d, desired)
        };

        let new_key = key("apps", "replicasets", &ns, &rs_name);
        if !self.objects.contains_key(&new_key) {
            self.new_replica_set(&d, &rs_name, &hash);
        }
        let read = |st: &State| -> (Rs, Vec<Rs>) {
            let mut all: Vec<Rs> = st
                .objects
                .iter()
                .filter(|((g, p, rns, _), o)| {
                    g == "apps" && p == "replicasets" && *rns == ns && owned_by(o, &uid)
                })
                .map(|(rk, o)| Rs {
                    key: rk.clone(),
                    uid: str_of(o, &["metadata", "uid"]).to_string(),
                    created: str_of(o, &["metadata", "creationTimestamp"]).to_string(),
                    spec: o["spec"]["replicas"].as_i64().unwrap_or(0),
                    available: o["status"]["availableReplicas"].as_i64().unwrap_or(0),
                })
                .collect();
            // Oldest first, as controller.ReplicaSetsByCreationTimestamp sorts them.
            all.sort_by(|a, b| (&a.created, &a.key).cmp(&(&b.created, &b.key)));
            let at = all
                .iter()
                .position(|r| r.key == new_key)
                .expect("made above");
            let new = all.remove(at);
            (new, all)
        };

        // The deployment controller: one scaling step per sync.
        let (new, old) = read(self);
        let old_pods = old.iter().map(|r| r.spec).sum::<i64>();
        if recreate {
            if old_pods > 0 {
                for r in &old {
                    self.scale(&r.key, 0);
                }
            } else if !self.any_pods_of(&ns, &old) && new.spec != desired {
                self.scale(&new.key, desired);
            }
        } else if !self.scale_up(&new, old_pods, desired, surge) {
            self.scale_down(&new, &old, desired, max_unavailable);
        }

        // The ReplicaSet controller, for every ReplicaSet of the Deployment.
        let (new, old) = read(self);
        let mut failure = None;
        for r in &old {
            self.replica_set(r, &name, &uid, false);
        }
        if let Some(e) = self.replica_set(&new, &name, &uid, true) {
            failure = Some(e);
        }

        // Its status, from the ReplicaSets' (sync.go calculateStatus).
        let (new, old) = read(self);
        let rs_status = |st: &State, r: &Rs, f: &str| st.objects[&r.key]["status"][f].as_i64();
        let sum = |f: &str| {
            std::iter::once(&new)
                .chain(old.iter())
                .map(|r| rs_status(self, r, f).unwrap_or(0))
                .sum::<i64>()
        };
        let replicas = sum("replicas");
        let updated = rs_status(self, &new, "replicas").unwrap_or(0);
        let ready = sum("readyReplicas");
        let available = sum("availableReplicas");
        let terminating = sum("terminatingReplicas");
        let total_spec = new.spec + old.iter().map(|r| r.spec).sum::<i64>();
        let mut status = json!({"observedGeneration": d["metadata"]["generation"]});
        put_nonzero(&mut status, "replicas", replicas);
        put_nonzero(&mut status, "updatedReplicas", updated);
        put_nonzero(&mut status, "readyReplicas", ready);
        put_nonzero(&mut status, "availableReplicas", available);
        put_nonzero(
            &mut status,
            "unavailableReplicas",
            (total_spec - available).max(0),
        );
        status["terminatingReplicas"] = json!(terminating);
        let complete = updated == desired && replicas == desired && available == desired;
        let available_condition = if available >= desired - max_unavailable {
            cond(
                "Available",
                true,
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        } else {
            cond(
                "Available",
                false,
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        };
        let progressing = if complete {
            cond(
                "Progressing",
                true,
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            )
        } else if self.past_progress_deadline(k, &d, &hash) {
            cond(
                "Progressing",
                false,
                "ProgressDeadlineExceeded",
                &format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            )
        } else {
            cond(
                "Progressing",
                true,
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs_name}\" is progressing."),
            )
        };
        status["conditions"] = json!([available_condition, progressing]);
        if let Some((_, e)) = &failure {
            status["conditions"]
                .as_array_mut()
                .unwrap()
                .push(controllers::replica_failure(e));
        }
        self.set_status(k, status);
    }

    /// Creates the ReplicaSet of the Deployment's current template, at zero replicas
    /// (the next step sizes it), with the revision after the highest one so far.
    fn new_replica_set(&mut self, d: &Value, rs_name: &str, hash: &str) {
        let ns = str_of(d, &["metadata", "namespace"]).to_string();
        let uid = str_of(d, &["metadata", "uid"]).to_string();
        let desired = d["spec"]["replicas"].as_i64().unwrap_or(1);
        let template = d["spec"]["template"].clone();
        let revision = self
            .objects
            .iter()
            .filter(|((g, p, rns, _), o)| {
                g == "apps" && p == "replicasets" && *rns == ns && owned_by(o, &uid)
            })
            .filter_map(|(_, o)| {
                str_of(
                    o,
                    &[
                        "metadata",
                        "annotations",
                        "deployment.kubernetes.io/revision",
                    ],
                )
                .parse::<i64>()
                .ok()
            })
            .max()
            .unwrap_or(0)
            + 1;
        let mut labels = labels_of(&template);
        labels.insert("pod-template-hash".into(), json!(hash));
        let mut selector = d["spec"]["selector"].clone();
        selector["matchLabels"]["pod-template-hash"] = json!(hash);
        let mut rs_template = template;
        rs_template["metadata"]["labels"] = json!(labels);
        self.upsert(
            "apps",
            "replicasets",
            json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                "metadata": {"name": rs_name, "namespace": ns, "labels": labels,
                    "annotations": {"deployment.kubernetes.io/desired-replicas": desired.to_string(),
                        "deployment.kubernetes.io/max-replicas": (desired + 1).to_string(),
                        "deployment.kubernetes.io/revision": revision.to_string()},
                    "ownerReferences": [owner_ref(d)], "generation": 1},
                "spec": {"replicas": 0, "selector": selector, "template": rs_template},
                "status": {"replicas": 0, "observedGeneration": 1}}),
            "kube-controller-manager",
        );
    }

    fn scale(&mut self, rs: &Key, replicas: i64) {
        let mut o = self.objects[rs].clone();
        if o["spec"]["replicas"] == replicas {
            return;
        }
        o["spec"]["replicas"] = json!(replicas);
        self.upsert("apps", "replicasets", o, "kube-controller-manager");
    }

    /// `reconcileNewReplicaSet`: whether it scaled the new ReplicaSet.
    fn scale_up(&mut self, new: &Rs, old_pods: i64, desired: i64, surge: i64) -> bool {
        if new.spec == desired {
            return false;
        }
        if new.spec > desired {
            self.scale(&new.key, desired);
            return true;
        }
        let room = (desired + surge - old_pods - new.spec).max(0);
        let want = new.spec + room.min(desired - new.spec);
        if want == new.spec {
            return false;
        }
        self.scale(&new.key, want);
        true
    }

    /// `reconcileOldReplicaSets`.
    fn scale_down(&mut self, new: &Rs, old: &[Rs], desired: i64, max_unavailable: i64) {
        let old_pods: i64 = old.iter().map(|r| r.spec).sum();
        if old_pods == 0 {
            return;
        }
        let all_pods = old_pods + new.spec;
        let min_available = desired - max_unavailable;
        let new_unavailable = new.spec - new.available;
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return;
        }
        let mut old = old.to_vec();
        // Unhealthy replicas first: scaling them down costs no availability.
        let mut cleaned = 0;
        for r in &mut old {
            if cleaned >= max_scaled_down || r.spec == 0 || r.spec == r.available {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(r.spec - r.available);
            r.spec -= n;
            cleaned += n;
            self.scale(&r.key, r.spec);
        }
        let available = new.available + old.iter().map(|r| r.available).sum::<i64>();
        if available <= min_available {
            return;
        }
        let mut left = available - min_available;
        for r in &mut old {
            if left == 0 {
                break;
            }
            if r.spec == 0 {
                continue;
            }
            let n = r.spec.min(left);
            r.spec -= n;
            left -= n;
            self.scale(&r.key, r.spec);
        }
    }

    fn any_pods_of(&self, ns: &str, rss: &[Rs]) -> bool {
        self.objects.iter().any(|((g, p, pns, _), o)| {
            g.is_empty() && p == "pods" && pns == ns && rss.iter().any(|r| owned_by(o, &r.uid))
        })
    }

    /// `manageReplicas` and the status of ReplicaSet `r` of Deployment `deploy` (uid
    /// `deploy_uid`); `current`: it is the Deployment's current template. Returns the
    /// admission error of a pod it could not create.
    fn replica_set(
        &mut self,
        r: &Rs,
        deploy: &str,
        deploy_uid: &str,
        current: bool,
    ) -> Option<(String, String)> {
        let rs = self.objects[&r.key].clone();
        let ns = r.key.2.clone();
        let template = rs["spec"]["template"].clone();
        let pods: Vec<(Key, Value)> = self
            .objects
            .iter()
            .filter(|((g, p, pns, _), o)| {
                g.is_empty() && p == "pods" && *pns == ns && owned_by(o, &r.uid)
            })
            .map(|(k, o)| (k.clone(), o.clone()))
            .collect();
        let (mut active, terminating): (Vec<_>, Vec<_>) = pods
            .into_iter()
            .partition(|(_, o)| o["metadata"]["deletionTimestamp"].is_null());
        // The status counts the pods as listed before this sync acts
        // (replica_set.go `syncReplicaSet` passes `filteredPods` to calculateStatus):
        // what it creates or deletes now shows in the next one.
        let made = active.len() as i64;
        let ready = active.iter().filter(|(_, o)| pod_ready(o)).count() as i64;
        // The kubelet ends the terminating ones within their grace period.
        for (pk, _) in &terminating {
            self.terminate(pk);
        }
        let tick = self.ext.tick;
        if active.len() as i64 > r.spec {
            // Not-ready pods go first, then the youngest (controller.ActivePods).
            active.sort_by_key(|(pk, o)| {
                (
                    pod_ready(o),
                    std::cmp::Reverse(self.ext.born.get(pk).copied().unwrap_or(0)),
                )
            });
            let extra = active.len() - r.spec as usize;
            for (pk, _) in active.drain(..extra) {
                self.terminate(&pk);
            }
        }
        let mut names: Vec<String> = active.iter().map(|(pk, _)| pk.3.clone()).collect();
        let mut serial = 0;
        while (names.len() as i64) < r.spec {
            let n = format!(
                "{}-{}",
                r.key.3,
                short_hash(&format!("{}/{tick}/{serial}", r.uid), 5)
            );
            serial += 1;
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let owner = owner_ref(&rs);
        for n in &names {
            let pk = key("", "pods", &ns, n);
            let born = *self.ext.born.entry(pk).or_insert(tick);
            let mut mode = if current {
                self.mode_for(deploy, deploy_uid, &template)
            } else {
                self.old_mode(deploy, &template)
            };
            if mode == PodMode::Running && tick - born < START_PASSES {
                mode = PodMode::Pending;
            }
            self.pod(&ns, n, &template, &[], &owner, mode);
        }
        let failure = self.rejected(&r.uid);
        if let Some((pod, e)) = &failure {
            self.failed_create(&rs, pod, e, "replicaset-controller");
            // Birth passes of pods that were never created are forgotten.
            let gone: Vec<Key> = names
                .iter()
                .map(|n| key("", "pods", &ns, n))
                .filter(|pk| !self.objects.contains_key(pk))
                .collect();
            for pk in gone {
                self.ext.born.remove(&pk);
            }
        }
        // `replicas` is the one count without omitempty in ReplicaSetStatus.
        let mut status =
            json!({"replicas": made, "observedGeneration": rs["metadata"]["generation"]});
        put_nonzero(&mut status, "fullyLabeledReplicas", made);
        put_nonzero(&mut status, "readyReplicas", ready);
        put_nonzero(&mut status, "availableReplicas", ready);
        status["terminatingReplicas"] = json!(terminating.len());
        if let Some((_, e)) = &failure {
            status["conditions"] = json!([controllers::replica_failure(e)]);
        }
        self.set_status(&r.key, status);
        failure
    }

    /// How the pods of a superseded template run: as they did, so a crash or a failing
    /// pull stays; nothing waits for a spec change that is not theirs.
    fn old_mode(&self, deploy: &str, template: &Value) -> PodMode {
        match self.image_trouble(template) {
            Some(controllers::Trouble::Crash) => PodMode::Crash,
            Some(controllers::Trouble::Pull) => PodMode::Pending,
            None if self.opts.crash_looping.iter().any(|n| n == deploy) => PodMode::Crash,
            None => PodMode::Running,
        }
    }
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use pulsedev::kube::{ApplyOptions, Target, TargetKind, parse};
    use serde_json::Value;
    use tokio_util::sync::CancellationToken;

    use super::super::tests::{engine, rt};
    use super::super::{FakeApiServer, Options};

    const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n";

    fn deployment(name: &str, replicas: i64, strategy: &str, image: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}, namespace: demo}}\nspec:\n  replicas: {replicas}\n{strategy}  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers: [{{name: {name}, image: \"{image}\"}}]\n"
        )
    }

    /// The pods of `app` that are not terminating, and those that are.
    fn pods(api: &FakeApiServer, app: &str) -> (Vec<Value>, Vec<Value>) {
        api.objects_of("Pod")
            .into_iter()
            .filter(|p| p["metadata"]["labels"]["app"] == app)
            .partition(|p| p["metadata"]["deletionTimestamp"].is_null())
    }

    fn ready(p: &Value) -> bool {
        super::pod_ready(p)
    }

    /// A template change of a Deployment as the deployment controller rolls it out:
    /// `observedGeneration` behind for a few passes, the new ReplicaSet growing one pod at
    /// a time (`maxSurge` 25% of 3 is 1, `maxUnavailable` 0), each new pod ContainerCreating
    /// for a while, old ones Terminating for their grace period. The wait must see the
    /// intermediate states and say ready only once no old replica is left and every new
    /// one is available: the fake keeps still between requests, so what it holds when
    /// the wait returns is what the wait accepted. A weaker rule (no generation check,
    /// no `replicas > updatedReplicas`, no `available < updated`; kubectl
    /// pkg/polymorphichelpers/rollout_status.go DeploymentStatusViewer) returns while old
    /// pods still serve.
    #[test]
    fn a_rollout_over_many_polls_is_ready_only_when_every_old_replica_is_gone() {
        let api = FakeApiServer::start(Options::new("test").observe_lag(4));
        let dir = tempfile::tempdir().unwrap();
        let surge = "";
        let no_surge =
            "  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 0, maxUnavailable: 1}}\n";
        let stack = |api_version: &str, web_version: &str| {
            format!(
                "{NS}{}---\n{}",
                deployment("api", 3, surge, &format!("api:{api_version}")),
                deployment("web", 2, no_surge, &format!("web:{web_version}"))
            )
        };
        let options = ApplyOptions::new("demo-stack", "demo");
        let cancel = CancellationToken::new();
        rt().block_on(async {
            let (engine, lines) = engine(&api, dir.path()).await;
            let first = engine
                .apply(&parse("v1", &stack("v1", "v1")).unwrap(), &options, &cancel)
                .await
                .unwrap();
            engine
                .wait_ready(&first.targets(), Duration::from_secs(20), &cancel)
                .await
                .unwrap();
            // One rollout at a time, so each starts when the wait starts.
            for (app, replicas, text) in
                [("api", 3, stack("v2", "v1")), ("web", 2, stack("v2", "v2"))]
            {
                engine
                    .apply(&parse(app, &text).unwrap(), &options, &cancel)
                    .await
                    .unwrap();
                lines.lock().unwrap().clear();
                let target = Target::new(TargetKind::Deployment, "demo", app);
                engine
                    .wait_ready(&[target], Duration::from_secs(20), &cancel)
                    .await
                    .unwrap();
                // What the wait accepted: only new pods serve, all of them ready.
                let (live, _) = pods(&api, app);
                assert_eq!(live.len(), replicas, "{app}: {live:#?}");
                for p in &live {
                    assert!(ready(p), "{app}: {p:#?}");
                    assert_eq!(
                        p["spec"]["containers"][0]["image"],
                        format!("{app}:v2"),
                        "{app}"
                    );
                }
                let (_, terminating) = pods(&api, app);
                for p in &terminating {
                    assert_eq!(p["spec"]["containers"][0]["image"], format!("{app}:v1"));
                }
                let seen = lines.lock().unwrap().clone();
                let saw = |words: &str| seen.iter().any(|l| l.contains(words));
                assert!(
                    saw("waiting for the controller to observe generation 2"),
                    "{app}: {seen:#?}"
                );
                assert_eq!(
                    seen.last().map(String::as_str),
                    Some(format!("deployment demo/{app}: ready").as_str())
                );
                if app == "api" {
                    // Surge: one new pod at a time, the old ones leave behind it.
                    for words in [
                        "1/3 replicas updated",
                        "2/3 replicas updated",
                        "1 old replicas pending termination",
                    ] {
                        assert!(saw(words), "{words}: {seen:#?}");
                    }
                } else {
                    // No surge: an old pod goes first, so the new ones are updated before
                    // they are available.
                    assert!(saw("1/2 replicas updated"), "{seen:#?}");
                    assert!(saw("1/2 replicas available"), "{seen:#?}");
                }
            }
        });
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    /// What a client reading the fake during a rollout sees, as on a real cluster:
    /// the old status until the controller observes the new generation, updatedReplicas
    /// climbing one pod at a time with never more than `replicas + maxSurge` pods
    /// counted, old pods Terminating (and counted in `terminatingReplicas`) before they
    /// are gone.
    #[test]
    fn the_fake_rolls_a_deployment_out_over_many_reads() {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::{Api, ListParams};

        let api = FakeApiServer::start(Options::new("test").observe_lag(3));
        let dir = tempfile::tempdir().unwrap();
        let options = ApplyOptions::new("demo-stack", "demo");
        let cancel = CancellationToken::new();
        let text = |v: &str| format!("{NS}{}", deployment("api", 3, "", &format!("api:{v}")));
        rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let deployments: Api<Deployment> = Api::namespaced(engine.client().clone(), "demo");
            let pods: Api<Pod> = Api::namespaced(engine.client().clone(), "demo");
            let first = engine
                .apply(&parse("v1", &text("v1")).unwrap(), &options, &cancel)
                .await
                .unwrap();
            engine
                .wait_ready(&first.targets(), Duration::from_secs(20), &cancel)
                .await
                .unwrap();
            engine
                .apply(&parse("v2", &text("v2")).unwrap(), &options, &cancel)
                .await
                .unwrap();
            let mut reads = Vec::new();
            let mut saw_terminating_pod = false;
            for _ in 0..200 {
                let s = deployments.get("api").await.unwrap().status.unwrap();
                let row = (
                    s.observed_generation.unwrap_or(0),
                    s.updated_replicas.unwrap_or(0),
                    s.replicas.unwrap_or(0),
                    s.available_replicas.unwrap_or(0),
                    s.terminating_replicas.unwrap_or(0),
                );
                let listed = pods
                    .list(&ListParams::default().labels("app=api"))
                    .await
                    .unwrap();
                saw_terminating_pod |= listed
                    .items
                    .iter()
                    .any(|p| p.metadata.deletion_timestamp.is_some());
                reads.push(row);
                if row == (2, 3, 3, 3, 0) {
                    break;
                }
            }
            assert_eq!(reads.last(), Some(&(2, 3, 3, 3, 0)), "{reads:?}");
            assert_eq!(reads[0].0, 1, "the old generation first: {reads:?}");
            let updated: Vec<i32> = reads.iter().filter(|r| r.0 == 2).map(|r| r.1).collect();
            assert!(updated.windows(2).all(|w| w[0] <= w[1]), "{reads:?}");
            for n in 1..=3 {
                assert!(updated.contains(&n), "updatedReplicas {n}: {reads:?}");
            }
            assert!(reads.iter().all(|r| r.2 <= 4), "maxSurge 1: {reads:?}");
            assert!(reads.iter().any(|r| r.4 > 0), "{reads:?}");
            assert!(saw_terminating_pod);
        });
    }
}
