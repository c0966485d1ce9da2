//! Update validation the real API server applies and the engine depends on: immutable
//! fields and value ranges, answered with the API server's 422 Invalid `Status` (reason
//! `Invalid`, `details.causes` of `FieldValueForbidden`/`FieldValueInvalid`, message
//! `<Kind>.<group> "<name>" is invalid: <field>: <cause>`, as
//! k8s.io/apimachinery pkg/api/errors `NewInvalid` builds it).
//!
//! Reproduced (each from kubernetes pkg/apis/*/validation):
//! - StatefulSet: `ValidateStatefulSetUpdate` forbids changing spec fields other than
//!   replicas, ordinals, template, updateStrategy, revisionHistoryLimit,
//!   persistentVolumeClaimRetentionPolicy and minReadySeconds (FieldValueForbidden on
//!   `spec`).
//! - Deployment, ReplicaSet, DaemonSet: `spec.selector` is immutable (apps/v1,
//!   `ValidateImmutableField`).
//! - Job: `spec.selector` and `spec.template` are immutable (batch validation; the
//!   template check lives in apiserver.rs `finish`).
//! - PersistentVolumeClaim: `ValidatePersistentVolumeClaimUpdate` forbids any spec change
//!   except `resources.requests` (which may only grow) and `volumeAttributesClassName`.
//! - Service: `spec.clusterIP` cannot change once set (`validateServiceClusterIPsRelatedFields`).
//! - Volumes: `defaultMode` and item `mode` must be within 0..=0777
//!   (`validateVolumeSource`, "must be a number between 0 and 0777 (octal), both inclusive").
//!
//! Not reproduced: fields a new version drops (only fields the new version sets are
//! compared, so server-defaulted fields do not count as changes), every other validation.

use serde_json::{Value, json};

use super::{Res, Response, fail};

fn invalid(r: &Res, name: &str, causes: Vec<(&str, String, String)>) -> Response {
    let text: Vec<String> = causes
        .iter()
        .map(|(_, field, message)| format!("{field}: {message}"))
        .collect();
    let message = format!(
        "{} \"{name}\" is invalid: {}",
        r.kind_qualified(),
        if text.len() == 1 {
            text[0].clone()
        } else {
            format!("[{}]", text.join(", "))
        }
    );
    fail(
        422,
        "Invalid",
        &message,
        json!({"name": name, "group": r.group, "kind": r.kind,
            "causes": causes.iter().map(|(reason, field, message)| json!({"reason": reason, "message": message, "field": field})).collect::<Vec<_>>()}),
    )
}

fn immutable(field: &str, value: &Value) -> (&'static str, String, String) {
    (
        "FieldValueInvalid",
        field.to_string(),
        format!("Invalid value: {value}: field is immutable"),
    )
}

/// Fields of `new` (only those it sets) whose value differs from `old`'s.
fn changed<'a>(old: &Value, new: &'a Value, except: &[&str]) -> Vec<(&'a String, &'a Value)> {
    new.as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| !except.contains(&k.as_str()) && old.get(k.as_str()) != Some(*v))
                .collect()
        })
        .unwrap_or_default()
}

/// Quantities as the fake compares them: `1Gi` < `2Gi` (binary and decimal suffixes).
fn quantity(q: &Value) -> Option<f64> {
    let s = q
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| q.to_string());
    let units = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (u, f) in units {
        if let Some(n) = s.strip_suffix(u) {
            return n.parse::<f64>().ok().map(|n| n * f);
        }
    }
    s.parse().ok()
}

/// Checks an update of `old` to `new` (both whole objects).
pub(super) fn check_update(r: &Res, old: &Value, new: &Value) -> Result<(), Response> {
    let name = new["metadata"]["name"].as_str().unwrap_or_default();
    let (os, ns) = (&old["spec"], &new["spec"]);
    match (r.group.as_str(), r.kind.as_str()) {
        ("apps", "StatefulSet") => {
            let allowed = [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ];
            if !changed(os, ns, &allowed).is_empty() {
                let m = "Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden";
                return Err(invalid(
                    r,
                    name,
                    vec![("FieldValueForbidden", "spec".into(), m.into())],
                ));
            }
        }
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") | ("batch", "Job")
            if !ns["selector"].is_null()
                && !os["selector"].is_null()
                && ns["selector"] != os["selector"] =>
        {
            return Err(invalid(
                r,
                name,
                vec![immutable("spec.selector", &ns["selector"])],
            ));
        }
        ("", "PersistentVolumeClaim") => {
            let other = changed(os, ns, &["resources", "volumeAttributesClassName"]);
            let shrunk = ns["resources"]["requests"]["storage"]
                .as_str()
                .zip(os["resources"]["requests"]["storage"].as_str())
                .is_some_and(|(n, o)| {
                    quantity(&json!(n)).unwrap_or(0.0) < quantity(&json!(o)).unwrap_or(0.0)
                });
            if !other.is_empty() {
                let m = "Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims";
                return Err(invalid(
                    r,
                    name,
                    vec![("FieldValueForbidden", "spec".into(), m.into())],
                ));
            }
            if shrunk {
                return Err(invalid(
                    r,
                    name,
                    vec![(
                        "FieldValueForbidden",
                        "spec.resources.requests.storage".into(),
                        "Forbidden: field can not be less than status.capacity".into(),
                    )],
                ));
            }
        }
        ("", "Service") => {
            if let (Some(n), Some(o)) = (ns["clusterIP"].as_str(), os["clusterIP"].as_str())
                && n != o
                && o != "None"
            {
                return Err(invalid(
                    r,
                    name,
                    vec![immutable("spec.clusterIP", &ns["clusterIP"])],
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// The pod spec of a workload or pod, if `obj` has one.
fn pod_spec<'a>(r: &Res, obj: &'a Value) -> Option<(&'a Value, &'static str)> {
    match r.kind.as_str() {
        "Pod" => Some((&obj["spec"], "spec")),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some((&obj["spec"]["template"]["spec"], "spec.template.spec"))
        }
        "CronJob" => Some((
            &obj["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            "spec.jobTemplate.spec.template.spec",
        )),
        _ => None,
    }
}

/// Value ranges checked on every write: volume file modes.
pub(super) fn check_ranges(r: &Res, obj: &Value) -> Result<(), Response> {
    let Some((spec, at)) = pod_spec(r, obj) else {
        return Ok(());
    };
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let mut causes = Vec::new();
    let mut check = |field: String, v: &Value| {
        if v.is_null() {
            return;
        }
        if !v.as_i64().is_some_and(|m| (0..=0o777).contains(&m)) {
            causes.push((
                "FieldValueInvalid",
                field,
                format!("Invalid value: {v}: must be a number between 0 and 0777 (octal), both inclusive"),
            ));
        }
    };
    for (i, vol) in spec["volumes"].as_array().into_iter().flatten().enumerate() {
        for src in ["configMap", "secret", "downwardAPI", "projected"] {
            let s = &vol[src];
            if s.is_null() {
                continue;
            }
            check(
                format!("{at}.volumes[{i}].{src}.defaultMode"),
                &s["defaultMode"],
            );
            for (j, item) in s["items"].as_array().into_iter().flatten().enumerate() {
                check(
                    format!("{at}.volumes[{i}].{src}.items[{j}].mode"),
                    &item["mode"],
                );
            }
        }
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(r, name, causes))
    }
}
