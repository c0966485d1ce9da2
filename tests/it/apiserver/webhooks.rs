//! Admission webhooks with a start-up: a Validating/MutatingWebhookConfiguration stored
//! in the fake intercepts writes (create, update, apply, dry-run included) that match its
//! rules, and its server goes through the phases a real one does after an install:
//!
//! 1. no endpoints: the Service's EndpointSlice lists the pod not ready, and a call fails
//!    with `failed calling webhook "<name>": failed to call webhook: Post "https://…":
//!    no endpoints available for service "<svc>"` (500 InternalError);
//! 2. connection refused: the endpoint is ready but nothing listens yet (`dial tcp
//!    <ip>:443: connect: connection refused`, 500), as cert-manager#3133 shows;
//! 3. serving: the write is admitted.
//!
//! The messages are the ones k8s.io/apiserver pkg/admission/plugin/webhook/errors and the
//! dispatcher (validating/dispatcher.go `callHook`, `webhookerrors.NewCallError`) produce,
//! wrapped by `apierrors.NewInternalError` ("Internal error occurred: ..."). Only webhooks
//! with `failurePolicy: Fail` (the v1 default) refuse; `Ignore` ones are skipped as the
//! dispatcher does. Matching: rules (apiGroups, apiVersions, resources, operations CREATE
//! and UPDATE) and objectSelector `matchLabels`; namespaceSelector is not evaluated.
//! Phase lengths come from `Options::webhook_startup`, in reconcile passes (zero: serving
//! at once), counted from when the configuration was first stored.

use serde_json::{Value, json};

use super::{Res, Response, State, fail, key, now_rfc3339};

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn intercepts(hook: &Value, r: &Res, obj: &Value) -> bool {
    let rule = |rule: &Value| {
        let has = |f: &str, want: &str| strings(&rule[f]).iter().any(|x| *x == "*" || *x == want);
        has("apiGroups", &r.group)
            && has("apiVersions", &r.version)
            && strings(&rule["resources"])
                .iter()
                .any(|x| *x == "*" || *x == "*/*" || *x == r.plural)
            && strings(&rule["operations"])
                .iter()
                .any(|o| matches!(*o, "*" | "CREATE" | "UPDATE"))
    };
    let selected = hook["objectSelector"]["matchLabels"]
        .as_object()
        .is_none_or(|m| m.iter().all(|(k, v)| obj["metadata"]["labels"][k] == *v));
    hook["rules"].as_array().into_iter().flatten().any(rule) && selected
}

/// Webhook configurations stored: (name, webhooks).
fn configurations(st: &State) -> Vec<(String, Vec<Value>)> {
    st.objects
        .iter()
        .filter(|((g, p, _, _), _)| {
            g == "admissionregistration.k8s.io"
                && (p == "validatingwebhookconfigurations" || p == "mutatingwebhookconfigurations")
        })
        .map(|((_, _, _, n), o)| {
            (
                n.clone(),
                o["webhooks"].as_array().cloned().unwrap_or_default(),
            )
        })
        .collect()
}

enum Phase {
    NoEndpoints,
    Refused,
    Serving,
}

fn phase(st: &mut State, config: &str) -> Phase {
    let tick = st.ext.tick;
    let since = *st.webhook_seen.entry(config.to_string()).or_insert(tick);
    let (none, refused) = st.opts.webhook_startup;
    let (none, refused) = (u64::from(none), u64::from(refused));
    let t = tick - since;
    if t < none {
        Phase::NoEndpoints
    } else if t < none + refused {
        Phase::Refused
    } else {
        Phase::Serving
    }
}

/// Whether a write of `obj` (of `r`) passes the webhooks in front of it.
pub(super) fn admit(st: &mut State, r: &Res, obj: &Value) -> Result<(), Response> {
    for (config, hooks) in configurations(st) {
        for hook in hooks {
            if hook["failurePolicy"].as_str().unwrap_or("Fail") != "Fail"
                || !intercepts(&hook, r, obj)
            {
                continue;
            }
            let name = hook["name"].as_str().unwrap_or_default();
            let svc = &hook["clientConfig"]["service"];
            let (sns, sname) = (
                svc["namespace"].as_str().unwrap_or("default"),
                svc["name"].as_str().unwrap_or_default(),
            );
            let path = svc["path"].as_str().unwrap_or("/");
            let url = format!("https://{sname}.{sns}.svc:443{path}?timeout=10s");
            let why = match phase(st, &config) {
                Phase::Serving => continue,
                Phase::NoEndpoints => format!("no endpoints available for service \"{sname}\""),
                Phase::Refused => {
                    "dial tcp 10.96.200.10:443: connect: connection refused".to_string()
                }
            };
            let message = format!(
                "Internal error occurred: failed calling webhook \"{name}\": failed to call webhook: Post \"{url}\": {why}"
            );
            return Err(fail(
                500,
                "InternalError",
                &message,
                json!({"causes": [{"message": message}]}),
            ));
        }
    }
    Ok(())
}

/// Keeps an EndpointSlice per webhook Service in step with the phase (the EndpointSlice
/// controller labels it `kubernetes.io/service-name`, discovery.k8s.io/v1).
pub(super) fn reconcile(st: &mut State) {
    for (config, hooks) in configurations(st) {
        let ready = !matches!(phase(st, &config), Phase::NoEndpoints);
        for hook in hooks {
            let svc = &hook["clientConfig"]["service"];
            let (Some(ns), Some(name)) = (svc["namespace"].as_str(), svc["name"].as_str()) else {
                continue;
            };
            let slice_name = format!("{name}-w8k2p");
            let k = key("discovery.k8s.io", "endpointslices", ns, &slice_name);
            if st
                .objects
                .get(&k)
                .is_some_and(|o| o["endpoints"][0]["conditions"]["ready"] == ready)
            {
                continue;
            }
            let rv = st.next_rv();
            st.objects.insert(
                k,
                json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": slice_name, "namespace": ns, "resourceVersion": rv,
                        "creationTimestamp": now_rfc3339(),
                        "labels": {"kubernetes.io/service-name": name,
                            "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                    "addressType": "IPv4",
                    "endpoints": [{"addresses": ["10.244.0.31"], "conditions": {"ready": ready, "serving": ready, "terminating": false}}],
                    "ports": [{"name": "https", "port": 10250, "protocol": "TCP"}]}),
            );
        }
    }
}

/// For `Options`: (reconcile passes without endpoints, passes refusing connections).
/// Passes, not seconds, so a busy machine cannot skip a phase (two passes per request).
pub type Startup = (u32, u32);
