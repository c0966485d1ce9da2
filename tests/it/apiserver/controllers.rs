//! The fake cluster's controllers and admission where the real ones make a wait hard:
//! Pod Security admission of the pods controllers create (and the FailedCreate they
//! report), image pulls that fail, containers that crash on a bad image, a StatefulSet
//! pod stuck on a bad revision, DaemonSet `OnDelete`, scale-down one pod at a time,
//! `observedGeneration` that lags a spec change, and cert-manager re-issuing a changed
//! Certificate some passes later. Each behaviour names the upstream code it imitates.
//!
//! Time is counted in reconcile passes (the server reconciles before and after every
//! request), so a test waits for observable state, never for a clock.
//!
//! Limits: one node; Pod Security checks cover the controls listed in [`violations`]
//! (not AppArmor, SELinux, /proc mount, sysctls, Windows); the messages list violations
//! in the order those checks run upstream, as far as the fake implements them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Key, Options, State, cond, str_of};

/// Extra behaviour, all off by default.
#[derive(Debug, Clone, Default)]
pub struct Sim {
    /// Images no registry has: the kubelet reports ErrImagePull, then ImagePullBackOff
    /// (kubernetes pkg/kubelet/images/image_manager.go: a failed pull is ErrImagePull,
    /// a pull in back-off is ImagePullBackOff).
    pub missing_images: Vec<String>,
    /// Images whose container exits 1 at start: CrashLoopBackOff.
    pub crashing_images: Vec<String>,
    /// After a spec change, workload controllers leave `observedGeneration` (and the
    /// rest of the status) as it was for this many passes.
    pub observe_lag: u32,
    /// A Certificate whose spec changed keeps its old Ready condition (old
    /// `observedGeneration`) and old Secret for this many passes.
    pub certificate_lag: u32,
    /// Certificates (by name) cert-manager never issues, e.g. their issuer is broken.
    pub never_issued: Vec<String>,
}

impl Options {
    pub fn missing_image(mut self, image: &str) -> Options {
        self.sim.missing_images.push(image.into());
        self
    }

    pub fn crashing_image(mut self, image: &str) -> Options {
        self.sim.crashing_images.push(image.into());
        self
    }

    pub fn observe_lag(mut self, passes: u32) -> Options {
        self.sim.observe_lag = passes;
        self
    }

    pub fn certificate_lag(mut self, passes: u32) -> Options {
        self.sim.certificate_lag = passes;
        self
    }

    pub fn never_issue(mut self, certificate: &str) -> Options {
        self.sim.never_issued.push(certificate.into());
        self
    }
}

/// What the extra behaviour remembers.
#[derive(Debug, Default)]
pub(super) struct Extra {
    /// Reconcile passes so far.
    pub tick: u64,
    /// Owner uid → (pod name, admission error) of the last pod it failed to create.
    pub rejected: HashMap<String, (String, String)>,
    /// Object → (generation, pass it was first seen at).
    pub seen: HashMap<Key, (i64, u64)>,
    /// Pod key → the pass it was created at.
    pub born: HashMap<Key, u64>,
    /// Pod key → the pass its graceful deletion began at.
    pub terminating: HashMap<Key, u64>,
    /// Deployment → (pod template hash, when its rollout began).
    pub rollouts: HashMap<Key, (String, Instant)>,
}

impl State {
    /// Counts a pass; called at the start of every reconcile.
    pub(super) fn tick(&mut self) {
        self.ext.tick += 1;
    }

    /// Passes since `k` was first seen at its current generation.
    fn age(&mut self, k: &Key) -> u64 {
        let generation = self.objects[k]["metadata"]["generation"]
            .as_i64()
            .unwrap_or(0);
        let tick = self.ext.tick;
        let e = self.ext.seen.entry(k.clone()).or_insert((generation, tick));
        if e.0 != generation {
            *e = (generation, tick);
        }
        tick - e.1
    }

    /// Whether Deployment `k`'s rollout of template `hash` has made no progress for
    /// `spec.progressDeadlineSeconds` (default 600): the deployment controller then sets
    /// Progressing=False/ProgressDeadlineExceeded `ReplicaSet "<rs>" has timed out
    /// progressing.` (kubernetes pkg/controller/deployment/progress.go
    /// `syncRolloutStatus`, util.DeploymentTimedOut). Wall-clock seconds, as upstream.
    pub(super) fn past_progress_deadline(&mut self, k: &Key, d: &Value, hash: &str) -> bool {
        let deadline = d["spec"]["progressDeadlineSeconds"].as_u64().unwrap_or(600);
        let now = Instant::now();
        let e = self
            .ext
            .rollouts
            .entry(k.clone())
            .or_insert_with(|| (hash.to_string(), now));
        if e.0 != hash {
            *e = (hash.to_string(), now);
        }
        now - e.1 >= Duration::from_secs(deadline)
    }

    /// Deletes pod `k` gracefully: the first call sets `deletionTimestamp` (the pod is
    /// Terminating, still counted by its controller), and the pod is gone
    /// `TERMINATION_PASSES` passes later, as the kubelet stops it within its grace period.
    pub(super) fn terminate(&mut self, k: &Key) {
        let tick = self.ext.tick;
        let since = *self.ext.terminating.entry(k.clone()).or_insert(tick);
        if since == tick {
            if let Some(mut p) = self.objects.get(k).cloned() {
                p["metadata"]["deletionTimestamp"] = json!(super::now_rfc3339());
                p["metadata"]["deletionGracePeriodSeconds"] = json!(30);
                p["metadata"]["resourceVersion"] = json!(self.next_rv());
                self.objects.insert(k.clone(), p);
            }
        } else if tick - since >= TERMINATION_PASSES {
            self.ext.terminating.remove(k);
            self.delete_key(k);
        }
    }

    /// Whether a workload controller has not yet acted on `k`'s latest spec: the real
    /// ones work from an informer cache and a rate-limited queue, so the status written
    /// after an apply can still carry the previous `observedGeneration` (what kubectl's
    /// and kstatus' generation checks exist for).
    pub(super) fn not_observed_yet(&mut self, k: &Key) -> bool {
        let lag = u64::from(self.opts.sim.observe_lag);
        let o = &self.objects[k];
        let behind = o["status"]["observedGeneration"].as_i64().is_some()
            && o["status"]["observedGeneration"].as_i64() < o["metadata"]["generation"].as_i64();
        lag > 0 && behind && self.age(k) < lag
    }

    /// How pods from `template` turn out, before any other option decides.
    pub(super) fn image_trouble(&self, template: &Value) -> Option<Trouble> {
        let images: Vec<&str> = template["spec"]["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| str_of(c, &["image"]))
            .collect();
        if images
            .iter()
            .any(|i| self.opts.sim.missing_images.iter().any(|m| m == i))
        {
            Some(Trouble::Pull)
        } else if images
            .first()
            .is_some_and(|i| self.opts.sim.crashing_images.iter().any(|m| m == i))
        {
            Some(Trouble::Crash)
        } else {
            None
        }
    }

    /// Pod Security admission of a pod a controller creates in `ns`: the namespace's
    /// `pod-security.kubernetes.io/enforce` level (and `-version`) decides
    /// (kubernetes staging/src/k8s.io/pod-security-admission/admission/admission.go).
    /// The error is the API server's Forbidden message.
    pub(super) fn admit_pod(&self, ns: &str, name: &str, spec: &Value) -> Result<(), String> {
        let labels = &self.objects[&super::key("", "namespaces", "", ns)]["metadata"]["labels"];
        let level = labels["pod-security.kubernetes.io/enforce"]
            .as_str()
            .unwrap_or("privileged");
        let version = labels["pod-security.kubernetes.io/enforce-version"]
            .as_str()
            .unwrap_or("latest");
        let found = violations(level, spec);
        if found.is_empty() {
            return Ok(());
        }
        Err(format!(
            "pods \"{name}\" is forbidden: violates PodSecurity \"{level}:{version}\": {}",
            found.join(", ")
        ))
    }

    /// Remembers that the controller owning `owner_uid` could not create `pod`.
    pub(super) fn reject(&mut self, owner_uid: &str, pod: &str, error: String) {
        self.ext
            .rejected
            .insert(owner_uid.to_string(), (pod.to_string(), error));
    }

    /// The create error of the last pod `owner_uid`'s controller tried to make, if the
    /// attempt failed; forgotten once read.
    pub(super) fn rejected(&mut self, owner_uid: &str) -> Option<(String, String)> {
        self.ext.rejected.remove(owner_uid)
    }

    /// The Warning event a controller records when a pod create fails:
    /// `FailedCreate` "Error creating: <err>" for ReplicaSets, DaemonSets and Jobs
    /// (kubernetes pkg/controller/controller_utils.go `createPods`), and "create Pod <pod>
    /// in StatefulSet <set> failed error: <err>" for StatefulSets
    /// (pkg/controller/statefulset/stateful_pod_control.go `recordPodEvent`).
    pub(super) fn failed_create(&mut self, owner: &Value, pod: &str, error: &str, component: &str) {
        let kind = str_of(owner, &["kind"]).to_string();
        let name = str_of(owner, &["metadata", "name"]).to_string();
        let ns = str_of(owner, &["metadata", "namespace"]).to_string();
        let message = if kind == "StatefulSet" {
            format!("create Pod {pod} in StatefulSet {name} failed error: {error}")
        } else {
            format!("Error creating: {error}")
        };
        let involved = json!({"kind": kind, "namespace": ns, "name": name,
            "uid": owner["metadata"]["uid"], "apiVersion": owner["apiVersion"]});
        self.event(&ns, involved, "FailedCreate", &message, component);
    }

    /// The container statuses of a pod whose image cannot be pulled: the first attempt
    /// ends ErrImagePull with the runtime's error, later passes show ImagePullBackOff
    /// (kubelet pkg/kubelet/images/image_manager.go and its events "Failed" /
    /// "BackOff"), as containerd reports a missing tag in a registry.
    pub(super) fn pull_failure(&mut self, pod_key: &Key, pod: &mut Value) {
        let tick = self.ext.tick;
        let born = *self.ext.born.entry(pod_key.clone()).or_insert(tick);
        let first = tick - born < 2;
        let ns = pod_key.2.clone();
        let name = pod_key.3.clone();
        let mut failing = Vec::new();
        for cs in pod["status"]["containerStatuses"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let image = str_of(cs, &["image"]).to_string();
            if !self.opts.sim.missing_images.contains(&image) {
                continue;
            }
            let waiting = if first {
                json!({"reason": "ErrImagePull", "message": format!(
                    "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found")})
            } else {
                json!({"reason": "ImagePullBackOff", "message": format!("Back-off pulling image \"{image}\"")})
            };
            cs["state"] = json!({"waiting": waiting});
            cs["ready"] = json!(false);
            cs["started"] = json!(false);
            failing.push((str_of(cs, &["name"]).to_string(), image));
        }
        if failing.is_empty() {
            return;
        }
        pod["status"]["phase"] = json!("Pending");
        let names: Vec<String> = failing.iter().map(|(c, _)| c.clone()).collect();
        for c in pod["status"]["conditions"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["status"] = json!("False");
                c["reason"] = json!("ContainersNotReady");
                c["message"] = json!(format!(
                    "containers with unready status: [{}]",
                    names.join(" ")
                ));
            }
        }
        let uid = pod["metadata"]["uid"].clone();
        for (c, image) in failing {
            let involved = json!({"kind": "Pod", "namespace": ns, "name": name, "uid": uid,
                "apiVersion": "v1", "fieldPath": format!("spec.containers{{{c}}}")});
            self.event(&ns, involved.clone(), "Failed", &format!(
                "Failed to pull image \"{image}\": rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": failed to resolve reference \"{image}\": {image}: not found"), "kubelet");
            if !first {
                self.event(
                    &ns,
                    involved,
                    "BackOff",
                    &format!("Back-off pulling image \"{image}\""),
                    "kubelet",
                );
            }
        }
    }

    /// A changed Certificate is re-issued only `certificate_lag` passes after cert-manager
    /// saw the change; until then its status (Ready with the old `observedGeneration`)
    /// and its Secret stay as they were (cert-manager's trigger, issuing and readiness
    /// controllers each act on their own queue).
    pub(super) fn certificate_waits(&mut self, k: &Key) -> bool {
        if self.opts.sim.never_issued.contains(&k.3) {
            // What cert-manager's readiness and trigger controllers write while no
            // Secret exists (cert-manager pkg/controller/certificates/readiness and
            // trigger policies: reason DoesNotExist).
            let generation = self.objects[k]["metadata"]["generation"].clone();
            let message = "Issuing certificate as Secret does not exist";
            let mut ready = cond("Ready", false, "DoesNotExist", message);
            ready["observedGeneration"] = generation.clone();
            let mut issuing = cond("Issuing", true, "DoesNotExist", message);
            issuing["observedGeneration"] = generation;
            self.set_status(k, json!({"conditions": [ready, issuing]}));
            return true;
        }
        let lag = u64::from(self.opts.sim.certificate_lag);
        let issued = self.objects[k]["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| !cs.is_empty());
        issued && lag > 0 && self.age(k) < lag
    }
}

/// Passes a Terminating pod takes to go away.
const TERMINATION_PASSES: u64 = 4;

/// What goes wrong with a template's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trouble {
    Pull,
    Crash,
}

/// `container "a"` / `containers "a", "b"`.
fn who(prefix: &str, names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
    let noun = if names.len() == 1 {
        "container"
    } else {
        "containers"
    };
    format!("{prefix}{noun} {}", quoted.join(", "))
}

/// The capabilities baseline allows to be added
/// (pod-security-admission policy/check_capabilities_baseline.go).
const BASELINE_CAPABILITIES: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Volume types restricted allows (policy/check_restrictedVolumes.go).
const RESTRICTED_VOLUMES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// The Pod Security Standards violations of a pod spec at `level` (baseline or
/// restricted; privileged allows everything), each worded as pod-security-admission's
/// check reports it (staging/src/k8s.io/pod-security-admission/policy/check_*.go):
/// host namespaces, privileged, non-default capabilities, hostPath volumes, hostPort
/// (baseline); restricted volume types, allowPrivilegeEscalation, unrestricted
/// capabilities, runAsNonRoot, runAsUser=0, seccompProfile (restricted).
pub(super) fn violations(level: &str, spec: &Value) -> Vec<String> {
    let restricted = level == "restricted";
    if !restricted && level != "baseline" {
        return Vec::new();
    }
    let containers: Vec<&Value> = ["initContainers", "containers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect();
    let name = |c: &Value| str_of(c, &["name"]).to_string();
    let sc = |c: &Value| c["securityContext"].clone();
    let pod_sc = &spec["securityContext"];
    let mut out = Vec::new();

    let hosts: Vec<String> = ["hostNetwork", "hostPID", "hostIPC"]
        .iter()
        .filter(|k| spec[**k] == true)
        .map(|k| format!("{k}=true"))
        .collect();
    if !hosts.is_empty() {
        out.push(format!("host namespaces ({})", hosts.join(", ")));
    }
    let privileged: Vec<String> = containers
        .iter()
        .filter(|c| sc(c)["privileged"] == true)
        .map(|c| name(c))
        .collect();
    if !privileged.is_empty() {
        out.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            who("", &privileged)
        ));
    }
    let mut added: Vec<(String, Vec<String>)> = Vec::new();
    for c in &containers {
        let bad: Vec<String> = sc(c)["capabilities"]["add"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|cap| !BASELINE_CAPABILITIES.contains(cap))
            .map(|cap| format!("\"{cap}\""))
            .collect();
        if !bad.is_empty() {
            added.push((name(c), bad));
        }
    }
    if !added.is_empty() {
        let parts: Vec<String> = added
            .iter()
            .map(|(c, caps)| {
                format!(
                    "container \"{c}\" must not include {} in securityContext.capabilities.add",
                    caps.join(", ")
                )
            })
            .collect();
        out.push(format!("non-default capabilities ({})", parts.join("; ")));
    }
    let volumes: Vec<&Value> = spec["volumes"].as_array().into_iter().flatten().collect();
    let host_paths: Vec<String> = volumes
        .iter()
        .filter(|v| v.get("hostPath").is_some())
        .map(|v| format!("\"{}\"", str_of(v, &["name"])))
        .collect();
    if !host_paths.is_empty() {
        let noun = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        out.push(format!(
            "hostPath volumes ({noun} {})",
            host_paths.join(", ")
        ));
    }
    let mut ports: Vec<String> = Vec::new();
    for c in &containers {
        let used: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["hostPort"].as_i64())
            .filter(|p| *p != 0)
            .map(|p| p.to_string())
            .collect();
        if !used.is_empty() {
            let noun = if used.len() == 1 {
                "hostPort"
            } else {
                "hostPorts"
            };
            ports.push(format!(
                "container \"{}\" uses {noun} {}",
                name(c),
                used.join(", ")
            ));
        }
    }
    if !ports.is_empty() {
        out.push(format!("hostPort ({})", ports.join("; ")));
    }
    if !restricted {
        return out;
    }

    let odd: Vec<String> = volumes
        .iter()
        .filter_map(|v| {
            let kind = v.as_object()?.keys().find(|k| *k != "name")?.clone();
            (!RESTRICTED_VOLUMES.contains(&kind.as_str())).then(|| {
                format!(
                    "volume \"{}\" uses restricted volume type \"{kind}\"",
                    str_of(v, &["name"])
                )
            })
        })
        .collect();
    if !odd.is_empty() {
        out.push(format!("restricted volume types ({})", odd.join("; ")));
    }
    let escalating: Vec<String> = containers
        .iter()
        .filter(|c| sc(c)["allowPrivilegeEscalation"] != false)
        .map(|c| name(c))
        .collect();
    if !escalating.is_empty() {
        out.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            who("", &escalating)
        ));
    }
    let undropped: Vec<String> = containers
        .iter()
        .filter(|c| {
            !sc(c)["capabilities"]["drop"]
                .as_array()
                .is_some_and(|d| d.iter().any(|x| x == "ALL"))
        })
        .map(|c| name(c))
        .collect();
    if !undropped.is_empty() {
        out.push(format!(
            "unrestricted capabilities ({} must set securityContext.capabilities.drop=[\"ALL\"])",
            who("", &undropped)
        ));
    }
    let pod_non_root = pod_sc["runAsNonRoot"] == true;
    let unset: Vec<String> = containers
        .iter()
        .filter(|c| {
            let own = &sc(c)["runAsNonRoot"];
            !(own == true || (pod_non_root && own.is_null()))
        })
        .map(|c| name(c))
        .collect();
    if !unset.is_empty() {
        out.push(format!(
            "runAsNonRoot != true (pod or {} must set securityContext.runAsNonRoot=true)",
            who("", &unset)
        ));
    }
    let mut root = Vec::new();
    if pod_sc["runAsUser"] == 0 {
        root.push("pod must not set runAsUser=0".to_string());
    }
    let zero: Vec<String> = containers
        .iter()
        .filter(|c| sc(c)["runAsUser"] == 0)
        .map(|c| name(c))
        .collect();
    if !zero.is_empty() {
        root.push(format!("{} must not set runAsUser=0", who("", &zero)));
    }
    if !root.is_empty() {
        out.push(format!("runAsUser=0 ({})", root.join("; ")));
    }
    let good = |v: &Value| v == "RuntimeDefault" || v == "Localhost";
    let pod_seccomp = good(&pod_sc["seccompProfile"]["type"]);
    let no_seccomp: Vec<String> = containers
        .iter()
        .filter(|c| {
            let own = &sc(c)["seccompProfile"]["type"];
            !(good(own) || (pod_seccomp && own.is_null()))
        })
        .map(|c| name(c))
        .collect();
    if !no_seccomp.is_empty() {
        out.push(format!(
            "seccompProfile (pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            who("", &no_seccomp)
        ));
    }
    out
}

/// The ReplicaSet condition the replicaset controller sets when creating pods failed
/// (kubernetes pkg/controller/replicaset/replica_set_utils.go `calculateStatus`:
/// ReplicaFailure/FailedCreate with the error), which the deployment controller copies
/// onto the Deployment (pkg/controller/deployment/progress.go `syncRolloutStatus`).
pub(super) fn replica_failure(error: &str) -> Value {
    cond("ReplicaFailure", true, "FailedCreate", error)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{engine, rt};
    use super::super::{CERT_MANAGER_CRDS, FakeApiServer, Options};
    use super::violations;
    use pulsedev::kube::{ApplyOptions, Engine, parse};
    use serde_json::json;
    use std::time::{Duration, Instant};
    use tokio_util::sync::CancellationToken;

    /// The app namespace as manifests/dev/namespaces.yaml labels it, at `level`.
    fn namespace(level: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n  labels:\n    pod-security.kubernetes.io/enforce: {level}\n    pod-security.kubernetes.io/warn: restricted\n"
        )
    }

    /// A container that passes "restricted", as the PulseWatch charts set it.
    const HARDENED: &str = "{runAsNonRoot: true, runAsUser: 10001, allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}, seccompProfile: {type: RuntimeDefault}}";

    fn statefulset(image: &str, replicas: u32, security: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: postgres, namespace: demo}}\nspec:\n  replicas: {replicas}\n  serviceName: postgres\n  selector: {{matchLabels: {{app: postgres}}}}\n  template:\n    metadata: {{labels: {{app: postgres}}}}\n    spec:\n      containers:\n        - name: postgres\n          image: \"{image}\"\n          securityContext: {security}\n"
        )
    }

    fn deployment(image: &str) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web, namespace: demo}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n        - name: web\n          image: \"{image}\"\n          securityContext: {HARDENED}\n"
        )
    }

    async fn apply_and_wait(
        engine: &Engine,
        yaml: &str,
        timeout: Duration,
    ) -> Result<(), pulsedev::error::Error> {
        let cancel = CancellationToken::new();
        let ms = parse("test.yaml", yaml).unwrap();
        let report = engine
            .apply(&ms, &ApplyOptions::new("demo-stack", "demo"), &cancel)
            .await?;
        engine.wait_ready(&report.targets(), timeout, &cancel).await
    }

    #[test]
    fn pod_security_names_each_violated_control_as_the_admission_plugin_does() {
        let bare = json!({"containers": [{"name": "app", "image": "x"}]});
        assert_eq!(violations("privileged", &bare), Vec::<String>::new());
        assert_eq!(violations("baseline", &bare), Vec::<String>::new());
        assert_eq!(
            violations("restricted", &bare),
            [
                "allowPrivilegeEscalation != false (container \"app\" must set securityContext.allowPrivilegeEscalation=false)",
                "unrestricted capabilities (container \"app\" must set securityContext.capabilities.drop=[\"ALL\"])",
                "runAsNonRoot != true (pod or container \"app\" must set securityContext.runAsNonRoot=true)",
                "seccompProfile (pod or container \"app\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            ]
        );
        // Pod-level settings cover every container that does not override them.
        let pod_level = json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {"name": "a", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}},
                {"name": "b", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}, "runAsUser": 0}},
            ]
        });
        assert_eq!(
            violations("restricted", &pod_level),
            ["runAsUser=0 (container \"b\" must not set runAsUser=0)"]
        );
        let host = json!({
            "hostNetwork": true,
            "volumes": [{"name": "logs", "hostPath": {"path": "/var/log"}}],
            "containers": [{"name": "nginx", "ports": [{"containerPort": 80, "hostPort": 80}, {"containerPort": 443, "hostPort": 443}],
                "securityContext": {"privileged": true, "capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}}]
        });
        assert_eq!(
            violations("baseline", &host),
            [
                "host namespaces (hostNetwork=true)",
                "privileged (container \"nginx\" must not set securityContext.privileged=true)",
                "non-default capabilities (container \"nginx\" must not include \"NET_ADMIN\" in securityContext.capabilities.add)",
                "hostPath volumes (volume \"logs\")",
                "hostPort (container \"nginx\" uses hostPorts 80, 443)",
            ]
        );
        assert!(
            violations("restricted", &host).contains(
                &"restricted volume types (volume \"logs\" uses restricted volume type \"hostPath\")"
                    .to_string()
            )
        );
    }

    #[test]
    fn a_pod_admission_refuses_is_pod_create_failed_long_before_the_timeout() {
        let api = FakeApiServer::start(Options::new("test"));
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let e = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let yaml = format!(
                "{}---\n{}---\n{}",
                namespace("restricted"),
                statefulset("postgres:17-alpine", 1, "{}"),
                deployment("nginx:1.29")
            );
            apply_and_wait(&engine, &yaml, Duration::from_secs(120))
                .await
                .unwrap_err()
        });
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(e.id(), "pod-create-failed", "{e:?}");
        let details = e.details.join("\n");
        assert!(
            details.contains("event StatefulSet/postgres FailedCreate: create Pod postgres-0 in StatefulSet postgres failed error: pods \"postgres-0\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"postgres\" must set"),
            "{details}"
        );
        // The hardened Deployment in the same namespace was admitted and runs.
        assert!(api.object("Pod", "demo", "postgres-0").is_none());
        let pods = api.objects_of("Pod");
        assert_eq!(pods.len(), 1, "{pods:#?}");
        assert_eq!(pods[0]["status"]["phase"], "Running");
        assert!(api.unexpected().is_empty(), "{:#?}", api.unexpected());
    }

    #[test]
    fn a_deployment_whose_pods_are_refused_reports_replica_failure() {
        let api = FakeApiServer::start(Options::new("test"));
        let dir = tempfile::tempdir().unwrap();
        let e = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let yaml = format!(
                "{}---\n{}",
                namespace("restricted"),
                deployment("nginx:1.29").replace(HARDENED, "{}")
            );
            apply_and_wait(&engine, &yaml, Duration::from_secs(120))
                .await
                .unwrap_err()
        });
        assert_eq!(e.id(), "pod-create-failed", "{e:?}");
        let d = api.object("Deployment", "demo", "web").unwrap();
        let failure = d["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "ReplicaFailure")
            .unwrap();
        assert_eq!(failure["reason"], "FailedCreate");
        assert!(
            e.details
                .iter()
                .any(|l| l.contains("FailedCreate: Error creating: pods \"web-")),
            "{:#?}",
            e.details
        );
    }

    #[test]
    fn a_missing_image_is_image_pull_failed_long_before_the_timeout() {
        let api = FakeApiServer::start(
            Options::new("test").missing_image("localhost:5001/pulsewatch/web:0000dead"),
        );
        let dir = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let e = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let yaml = format!(
                "{}---\n{}",
                namespace("restricted"),
                deployment("localhost:5001/pulsewatch/web:0000dead")
            );
            apply_and_wait(&engine, &yaml, Duration::from_secs(120))
                .await
                .unwrap_err()
        });
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(e.id(), "image-pull-failed", "{e:?}");
        let details = e.details.join("\n");
        assert!(
            details.contains("container web: ImagePullBackOff: Back-off pulling image \"localhost:5001/pulsewatch/web:0000dead\""),
            "{details}"
        );
        assert!(
            details.contains("Failed: Failed to pull image \"localhost:5001/pulsewatch/web:0000dead\": rpc error: code = NotFound"),
            "{details}"
        );
    }

    #[test]
    fn a_statefulset_pod_stuck_on_a_bad_revision_is_replaced_and_the_rollout_ends() {
        let api = FakeApiServer::start(Options::new("test").crashing_image("postgres:17-broken"));
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (engine, lines) = engine(&api, dir.path()).await;
            let bad = format!(
                "{}---\n{}",
                namespace("restricted"),
                statefulset("postgres:17-broken", 1, HARDENED)
            );
            let e = apply_and_wait(&engine, &bad, Duration::from_secs(60))
                .await
                .unwrap_err();
            assert_eq!(e.id(), "pod-crash-looping", "{e:?}");
            let stuck = api.object("Pod", "demo", "postgres-0").unwrap();
            let old = stuck["metadata"]["labels"]["controller-revision-hash"].clone();
            // The fixed template: the controller keeps the crashing pod of the old
            // revision until it is deleted.
            let fixed = format!(
                "{}---\n{}",
                namespace("restricted"),
                statefulset("postgres:17-alpine", 1, HARDENED)
            );
            apply_and_wait(&engine, &fixed, Duration::from_secs(60))
                .await
                .unwrap();
            let said = lines.lock().unwrap().join("\n");
            assert!(
                said.contains("statefulset demo/postgres: deleted pod postgres-0: not ready on an old revision"),
                "{said}"
            );
            let pod = api.object("Pod", "demo", "postgres-0").unwrap();
            assert_ne!(pod["metadata"]["labels"]["controller-revision-hash"], old);
            assert_eq!(pod["status"]["phase"], "Running");
        });
        let deletes: Vec<String> = api
            .calls()
            .into_iter()
            .filter(|c| c.method == "DELETE")
            .map(|c| c.target)
            .collect();
        assert_eq!(deletes, ["/api/v1/namespaces/demo/pods/postgres-0?"]);
    }

    #[test]
    fn a_scale_down_is_waited_for_after_the_controller_observes_it() {
        let api = FakeApiServer::start(Options::new("test").observe_lag(6));
        let dir = tempfile::tempdir().unwrap();
        rt().block_on(async {
            let (engine, lines) = engine(&api, dir.path()).await;
            let ns = namespace("restricted");
            let three = format!(
                "{ns}---\n{}",
                statefulset("postgres:17-alpine", 3, HARDENED)
            );
            apply_and_wait(&engine, &three, Duration::from_secs(60))
                .await
                .unwrap();
            assert_eq!(api.objects_of("Pod").len(), 3);
            lines.lock().unwrap().clear();
            let one = format!(
                "{ns}---\n{}",
                statefulset("postgres:17-alpine", 1, HARDENED)
            );
            apply_and_wait(&engine, &one, Duration::from_secs(60))
                .await
                .unwrap();
            let said = lines.lock().unwrap().join("\n");
            assert!(
                said.contains(
                    "statefulset demo/postgres: waiting for the controller to observe generation 2"
                ),
                "{said}"
            );
            // One or two extra pods, depending on whether the first poll after the
            // controller observed the change came before or after its first deletion.
            assert!(
                said.contains(
                    "statefulset demo/postgres: scaling down: 2 extra replicas pending termination"
                ) || said.contains(
                    "statefulset demo/postgres: scaling down: 1 extra replicas pending termination"
                ),
                "{said}"
            );
        });
        // Ready only once the extra pods are gone.
        assert_eq!(api.objects_of("Pod").len(), 1);
    }

    #[test]
    fn a_rollout_past_its_progress_deadline_fails_at_once() {
        // Pods stay ContainerCreating for 10 minutes: no failure signal, only the
        // deployment controller's deadline (1 s here).
        let api = FakeApiServer::start(Options::new("test").ready_after(Duration::from_secs(600)));
        let dir = tempfile::tempdir().unwrap();
        let e = rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            let yaml = format!(
                "{}---\n{}",
                namespace("restricted"),
                deployment("nginx:1.29").replace(
                    "  replicas: 1\n",
                    "  replicas: 1\n  progressDeadlineSeconds: 1\n"
                )
            );
            apply_and_wait(&engine, &yaml, Duration::from_secs(120))
                .await
                .unwrap_err()
        });
        assert_eq!(e.id(), "rollout-timeout", "{e:?}");
        assert!(
            e.message
                .contains("failed: ProgressDeadlineExceeded: ReplicaSet \"web-"),
            "{}",
            e.message
        );
        assert!(
            e.message.contains("has timed out progressing."),
            "{}",
            e.message
        );
    }

    #[test]
    fn an_on_delete_daemonset_is_ready_after_a_template_change() {
        let api = FakeApiServer::start(Options::new("test"));
        let dir = tempfile::tempdir().unwrap();
        let ds = |image: &str| {
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo}}\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {{name: agent, namespace: demo}}\nspec:\n  updateStrategy: {{type: OnDelete}}\n  selector: {{matchLabels: {{app: agent}}}}\n  template:\n    metadata: {{labels: {{app: agent}}}}\n    spec:\n      containers: [{{name: agent, image: \"{image}\"}}]\n"
            )
        };
        rt().block_on(async {
            let (engine, _) = engine(&api, dir.path()).await;
            apply_and_wait(&engine, &ds("agent:1"), Duration::from_secs(30))
                .await
                .unwrap();
            apply_and_wait(&engine, &ds("agent:2"), Duration::from_secs(30))
                .await
                .unwrap();
        });
        // The old pod still runs: OnDelete replaces it only once someone deletes it.
        let pods = api.objects_of("Pod");
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0]["spec"]["containers"][0]["image"], "agent:1");
        let status = &api.object("DaemonSet", "demo", "agent").unwrap()["status"];
        assert_eq!(status["updatedNumberScheduled"], 0);
    }

    #[test]
    fn a_changed_certificate_is_ready_only_once_reissued() {
        let api = FakeApiServer::start(Options::new("test").certificate_lag(8));
        let dir = tempfile::tempdir().unwrap();
        let cert = |host: &str| {
            format!(
                "apiVersion: v1\nkind: Namespace\nmetadata: {{name: demo}}\n---\napiVersion: cert-manager.io/v1\nkind: Certificate\nmetadata: {{name: web-tls, namespace: demo}}\nspec:\n  secretName: web-tls\n  dnsNames: [{host}]\n  issuerRef: {{kind: ClusterIssuer, name: local-ca}}\n"
            )
        };
        let tls = |api: &FakeApiServer| {
            api.object("Secret", "demo", "web-tls").unwrap()["data"]["tls.crt"].clone()
        };
        rt().block_on(async {
            let (engine, lines) = engine(&api, dir.path()).await;
            let cancel = CancellationToken::new();
            engine
                .apply(
                    &parse("crds.yaml", CERT_MANAGER_CRDS).unwrap(),
                    &ApplyOptions::new("demo-stack", "demo"),
                    &cancel,
                )
                .await
                .unwrap();
            apply_and_wait(&engine, &cert("web.localhost"), Duration::from_secs(30))
                .await
                .unwrap();
            let first = tls(&api);
            lines.lock().unwrap().clear();
            apply_and_wait(&engine, &cert("app.localhost"), Duration::from_secs(30))
                .await
                .unwrap();
            let said = lines.lock().unwrap().join("\n");
            assert!(
                said.contains(
                    "certificate demo/web-tls: waiting for cert-manager to issue generation 2"
                ),
                "{said}"
            );
            assert_ne!(
                tls(&api),
                first,
                "ready only with the re-issued certificate"
            );
        });
    }
}
