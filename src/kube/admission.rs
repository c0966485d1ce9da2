//! Generic admission webhook gates: a Validating/MutatingWebhookConfiguration applied in
//! the same set as objects it intercepts makes their first apply fail ("failed calling
//! webhook ... no endpoints available for service", then "connection refused") while its
//! server starts. Helm applies webhook configurations last among known kinds but custom
//! resources after them and does not wait (helm pkg/release/util/kind_sorter.go
//! InstallOrder); cli-utils waits only for the objects themselves (kstatus), not for the
//! webhooks in front of them. cmctl's `check api` (and FACTS.md) shows the test that
//! counts: a server-side dry-run through admission, retried.
//!
//! So, before a group of objects is applied, for every webhook of a configuration in the
//! set with `failurePolicy: Fail` (the v1 default) whose rules match one of them, pulsedev
//! waits until the webhook's Service has a ready endpoint (EndpointSlices labelled
//! `kubernetes.io/service-name`) and a dry-run server-side apply of that very object is
//! admitted, retried with the gate backoff, bounded, with progress.
//!
//! Owns: reading webhook configurations (rules, selectors, client config) and matching
//! objects against them. Must not write anything (dry-run only); cert-manager's gate
//! (`webhook`) is separate and unchanged.
//!
//! Limits: webhooks already in the cluster but not in the set are not gated (their servers
//! were running before this `up`); a `namespaceSelector` is matched against the labels of a
//! Namespace in the set, else those the API server adds (`kubernetes.io/metadata.name`);
//! `matchConditions` (CEL) are not evaluated (treated as matching).

use ::kube::Api;
use ::kube::api::{DynamicObject, ListParams, Patch, PatchParams};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::discovery::{Resolved, parse_gvk};
use super::manifest::Manifest;
use super::webhook::{Backoff, not_ready_yet};
use super::{Engine, FIELD_MANAGER, describe, human_duration};
use crate::error::{Error, ErrorKind, Result};

/// One webhook of a configuration in the set.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hook {
    /// `ValidatingWebhookConfiguration ingress-nginx-admission`.
    pub config: String,
    /// The webhook's own name (`validate.nginx.ingress.kubernetes.io`).
    pub name: String,
    /// (namespace, name) of the Service behind it; `None` for a `url` webhook.
    pub service: Option<(String, String)>,
    rules: Vec<Value>,
    namespace_selector: Option<Value>,
    object_selector: Option<Value>,
}

/// The webhooks of `m` that can block an apply (`failurePolicy: Fail`, the default of
/// admissionregistration.k8s.io/v1); empty for any other kind.
pub(crate) fn hooks_of(m: &Manifest) -> Vec<Hook> {
    let group = parse_gvk(m.api_version(), m.kind()).group;
    if group != "admissionregistration.k8s.io"
        || !matches!(
            m.kind(),
            "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration"
        )
    {
        return Vec::new();
    }
    let Some(webhooks) = m.object.data.get("webhooks").and_then(Value::as_array) else {
        return Vec::new();
    };
    webhooks
        .iter()
        .filter(|w| w["failurePolicy"].as_str().unwrap_or("Fail") == "Fail")
        .map(|w| {
            let svc = &w["clientConfig"]["service"];
            Hook {
                config: format!("{} {}", m.kind(), m.name()),
                name: w["name"].as_str().unwrap_or_default().to_string(),
                service: svc["name"].as_str().map(|n| {
                    (
                        svc["namespace"].as_str().unwrap_or("default").to_string(),
                        n.to_string(),
                    )
                }),
                rules: w["rules"].as_array().cloned().unwrap_or_default(),
                namespace_selector: w.get("namespaceSelector").cloned(),
                object_selector: w.get("objectSelector").cloned(),
            }
        })
        .collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// A label selector (matchLabels, matchExpressions In/NotIn/Exists/DoesNotExist) against
/// `labels`, as apimachinery pkg/apis/meta/v1 LabelSelectorAsSelector reads it; an empty
/// selector matches everything.
pub(crate) fn selector_matches(sel: &Value, labels: &Map<String, Value>) -> bool {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = sel["matchLabels"].as_object()
        && ml.iter().any(|(k, v)| label(k) != v.as_str())
    {
        return false;
    }
    sel["matchExpressions"]
        .as_array()
        .map(|es| {
            es.iter().all(|e| {
                let key = e["key"].as_str().unwrap_or_default();
                let values = strings(&e["values"]);
                match e["operator"].as_str().unwrap_or_default() {
                    "In" => label(key).is_some_and(|v| values.contains(&v)),
                    "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
                    "Exists" => label(key).is_some(),
                    "DoesNotExist" => label(key).is_none(),
                    _ => false,
                }
            })
        })
        .unwrap_or(true)
}

impl Hook {
    /// Whether an apply (a CREATE or UPDATE) of an object of `r` with `labels`, in a
    /// namespace with `ns_labels` (`None` for cluster-scoped objects), goes through this
    /// webhook (k8s.io/apiserver pkg/admission/plugin/webhook/predicates rules and
    /// namespace/object matchers).
    pub(crate) fn intercepts(
        &self,
        r: &Resolved,
        labels: &Map<String, Value>,
        ns_labels: Option<&Map<String, Value>>,
    ) -> bool {
        let res = &r.resource;
        let rule_matches = |rule: &Value| {
            let has = |field: &str, want: &str| {
                strings(&rule[field])
                    .iter()
                    .any(|x| *x == "*" || *x == want)
            };
            let ops = strings(&rule["operations"]);
            let scope = rule["scope"].as_str().unwrap_or("*");
            let scope_ok = match scope {
                "Cluster" => !r.namespaced,
                "Namespaced" => r.namespaced,
                _ => true,
            };
            let resource_ok = strings(&rule["resources"])
                .iter()
                .any(|x| *x == "*" || *x == "*/*" || *x == res.plural);
            has("apiGroups", &res.group)
                && has("apiVersions", &res.version)
                && resource_ok
                && ops.iter().any(|o| matches!(*o, "*" | "CREATE" | "UPDATE"))
                && scope_ok
        };
        if !self.rules.iter().any(rule_matches) {
            return false;
        }
        if let Some(sel) = &self.object_selector
            && !selector_matches(sel, labels)
        {
            return false;
        }
        match (&self.namespace_selector, ns_labels) {
            (Some(sel), Some(ns)) => selector_matches(sel, ns),
            _ => true,
        }
    }
}

/// An object of the next group and what is needed to dry-run it.
pub(crate) struct Candidate<'a> {
    pub manifest: &'a Manifest,
    pub resolved: &'a Resolved,
    /// The object as it will be applied (namespace and stack label filled in).
    pub object: DynamicObject,
}

impl Engine {
    /// Waits until every webhook of `hooks` that intercepts one of `candidates` serves:
    /// its Service has a ready endpoint and a dry-run apply of the first such object is
    /// admitted. Not-ready answers are retried with `backoff` up to its cap, then
    /// `webhook-not-ready`. Any other answer ends the gate: the apply reports it.
    pub(crate) async fn gate_admission(
        &self,
        hooks: &[Hook],
        candidates: &[Candidate<'_>],
        ns_labels: &(dyn Fn(&str) -> Map<String, Value> + Sync),
        backoff: &Backoff,
    ) -> Result<()> {
        for hook in hooks {
            let Some(c) = candidates.iter().find(|c| {
                let labels = c.object.metadata.labels.clone().unwrap_or_default();
                let labels: Map<String, Value> = labels
                    .into_iter()
                    .map(|(k, v)| (k, Value::String(v)))
                    .collect();
                let ns = c.object.metadata.namespace.as_deref().map(ns_labels);
                hook.intercepts(c.resolved, &labels, ns.as_ref())
            }) else {
                continue;
            };
            self.gate_hook(hook, c, backoff).await?;
        }
        Ok(())
    }

    async fn gate_hook(&self, hook: &Hook, c: &Candidate<'_>, backoff: &Backoff) -> Result<()> {
        let started = Instant::now();
        let who = format!("webhook {} ({})", hook.name, hook.config);
        let m = match &c.object.metadata.namespace {
            Some(ns) => format!("{} {ns}/{}", c.manifest.kind(), c.manifest.name()),
            None => format!("{} {}", c.manifest.kind(), c.manifest.name()),
        };
        let api: Api<DynamicObject> = match &c.object.metadata.namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &c.resolved.resource),
            None => Api::all_with(self.client.clone(), &c.resolved.resource),
        };
        let params = PatchParams::apply(FIELD_MANAGER)
            .force()
            .validation_strict()
            .dry_run();
        let mut seen: Vec<String> = Vec::new();
        let mut attempt = 0u32;
        loop {
            let outcome: std::result::Result<(), String> = match self.endpoints_ready(hook).await {
                Err(why) => Err(why),
                Ok(()) => match api
                    .patch(c.manifest.name(), &params, &Patch::Apply(&c.object))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if not_ready_yet(&e) => Err(describe(&e)),
                    // Admission ran (or the object itself is wrong): the apply reports it.
                    Err(_) => Ok(()),
                },
            };
            let why = match outcome {
                Ok(()) => {
                    if attempt > 0 {
                        self.say(&format!("{who}: ready"));
                    }
                    return Ok(());
                }
                Err(why) => why,
            };
            if !seen.contains(&why) {
                seen.push(why.clone());
            }
            attempt += 1;
            let delay = backoff.delay(attempt - 1);
            if started.elapsed() + delay > backoff.cap {
                return Err(Error::new(
                    ErrorKind::WebhookNotReady,
                    format!(
                        "the {who} did not admit a dry-run of {m} within {} ({attempt} attempts)",
                        human_duration(backoff.cap)
                    ),
                )
                .with_details(seen)
                .with_data(json!({"webhook": hook.name, "configuration": hook.config, "attempts": attempt}))
                .with_hint(
                    "its server may still be starting or crashing (`pulsedev status`); \
                     run `pulsedev up` again in a minute. pulsedev never deletes webhook configurations",
                ));
            }
            self.say(&format!(
                "{who} gates {m}: not ready yet ({why}); retrying in {:.1}s",
                delay.as_secs_f64()
            ));
            tokio::time::sleep(delay).await;
        }
    }

    /// Whether the webhook's Service has at least one ready endpoint (an EndpointSlice
    /// endpoint whose `conditions.ready` is not false: discovery.k8s.io/v1 says an unknown
    /// state should be read as ready).
    async fn endpoints_ready(&self, hook: &Hook) -> std::result::Result<(), String> {
        let Some((ns, svc)) = &hook.service else {
            return Ok(());
        };
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), ns);
        let lp = ListParams::default().labels(&format!("kubernetes.io/service-name={svc}"));
        let slices = api
            .list(&lp)
            .await
            .map_err(|e| format!("endpoints of service {ns}/{svc}: {}", describe(&e)))?;
        let ready = slices.items.iter().any(|s| {
            s.endpoints
                .iter()
                .flatten()
                .any(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        });
        if ready {
            Ok(())
        } else {
            Err(format!("service {ns}/{svc} has no ready endpoints"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube::manifest::parse;

    const CONFIG: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: widgets}
webhooks:
- name: validate.widgets.example.com
  clientConfig: {service: {namespace: widgets-system, name: widgets-webhook, path: /validate}}
  rules:
  - {apiGroups: [example.com], apiVersions: [v1], resources: [widgets], operations: [CREATE, UPDATE], scope: Namespaced}
  namespaceSelector: {matchExpressions: [{key: team, operator: NotIn, values: [ops]}]}
  objectSelector: {matchLabels: {validate: "yes"}}
  sideEffects: None
  admissionReviewVersions: [v1]
- name: audit.widgets.example.com
  failurePolicy: Ignore
  clientConfig: {url: "https://audit.example.com/"}
  rules: [{apiGroups: ["*"], apiVersions: ["*"], resources: ["*"], operations: ["*"]}]
  sideEffects: None
  admissionReviewVersions: [v1]
"#;

    fn resolved(
        group: &str,
        version: &str,
        plural: &str,
        kind: &str,
        namespaced: bool,
    ) -> Resolved {
        Resolved {
            resource: ::kube::discovery::ApiResource {
                group: group.into(),
                version: version.into(),
                api_version: if group.is_empty() {
                    version.into()
                } else {
                    format!("{group}/{version}")
                },
                kind: kind.into(),
                plural: plural.into(),
            },
            namespaced,
        }
    }

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn only_fail_webhooks_with_their_service_are_read() {
        let ms = parse("c.yaml", CONFIG).unwrap();
        let hooks = hooks_of(&ms[0]);
        assert_eq!(hooks.len(), 1, "the Ignore webhook cannot block an apply");
        assert_eq!(hooks[0].name, "validate.widgets.example.com");
        assert_eq!(hooks[0].config, "ValidatingWebhookConfiguration widgets");
        assert_eq!(
            hooks[0].service,
            Some(("widgets-system".into(), "widgets-webhook".into()))
        );
        // Only these two kinds of admissionregistration.k8s.io carry webhooks to gate on.
        for (av, kind) in [
            ("v1", "ConfigMap"),
            ("example.com/v1", "ValidatingWebhookConfiguration"),
            (
                "admissionregistration.k8s.io/v1",
                "ValidatingAdmissionPolicy",
            ),
        ] {
            let text = format!(
                "apiVersion: {av}\nkind: {kind}\nmetadata: {{name: w}}\nwebhooks: [{{name: x, clientConfig: {{service: {{namespace: a, name: b}}}}, rules: []}}]\n"
            );
            assert!(
                hooks_of(&parse("o.yaml", &text).unwrap()[0]).is_empty(),
                "{av} {kind}"
            );
        }
    }

    #[test]
    fn rules_and_selectors_decide_what_a_webhook_intercepts() {
        let hook = &hooks_of(&parse("c.yaml", CONFIG).unwrap()[0])[0];
        let widgets = resolved("example.com", "v1", "widgets", "Widget", true);
        let yes = labels(json!({"validate": "yes"}));
        let dev = labels(json!({"kubernetes.io/metadata.name": "dev"}));
        assert!(hook.intercepts(&widgets, &yes, Some(&dev)));
        // objectSelector
        assert!(!hook.intercepts(&widgets, &labels(json!({"validate": "no"})), Some(&dev)));
        assert!(!hook.intercepts(&widgets, &Map::new(), Some(&dev)));
        // namespaceSelector NotIn
        assert!(!hook.intercepts(&widgets, &yes, Some(&labels(json!({"team": "ops"})))));
        assert!(hook.intercepts(&widgets, &yes, Some(&labels(json!({"team": "web"})))));
        // another resource, version, group or scope
        assert!(!hook.intercepts(
            &resolved("example.com", "v1", "gadgets", "Gadget", true),
            &yes,
            Some(&dev)
        ));
        assert!(!hook.intercepts(
            &resolved("example.com", "v2", "widgets", "Widget", true),
            &yes,
            Some(&dev)
        ));
        assert!(!hook.intercepts(
            &resolved("other.com", "v1", "widgets", "Widget", true),
            &yes,
            Some(&dev)
        ));
        assert!(!hook.intercepts(
            &resolved("example.com", "v1", "widgets", "Widget", false),
            &yes,
            None
        ));
    }

    #[test]
    fn wildcards_operations_and_scopes() {
        let text = r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: all}
webhooks:
- name: a
  clientConfig: {service: {namespace: x, name: y}}
  rules: [{apiGroups: ["*"], apiVersions: ["*"], resources: ["*/*"], operations: ["*"], scope: Cluster}]
- name: b
  clientConfig: {service: {namespace: x, name: y}}
  rules: [{apiGroups: [""], apiVersions: [v1], resources: [pods], operations: [DELETE, CONNECT]}]
"#;
        let hooks = hooks_of(&parse("m.yaml", text).unwrap()[0]);
        let ns = resolved("", "v1", "namespaces", "Namespace", false);
        let pods = resolved("", "v1", "pods", "Pod", true);
        assert!(hooks[0].intercepts(&ns, &Map::new(), None));
        assert!(
            !hooks[0].intercepts(&pods, &Map::new(), Some(&Map::new())),
            "Cluster scope only"
        );
        assert!(
            !hooks[1].intercepts(&pods, &Map::new(), Some(&Map::new())),
            "an apply is neither DELETE nor CONNECT"
        );
    }

    #[test]
    fn label_selectors() {
        let l = labels(json!({"a": "1", "b": "2"}));
        assert!(selector_matches(&json!({}), &l));
        assert!(selector_matches(&json!({"matchLabels": {"a": "1"}}), &l));
        assert!(!selector_matches(&json!({"matchLabels": {"a": "2"}}), &l));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}),
            &l
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "c", "operator": "In", "values": ["1"]}]}),
            &l
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "c", "operator": "NotIn", "values": ["1"]}]}),
            &l
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "b", "operator": "NotIn", "values": ["2"]}]}),
            &l
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "b", "operator": "Exists"}]}),
            &l
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "c", "operator": "Exists"}]}),
            &l
        ));
        assert!(selector_matches(
            &json!({"matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]}),
            &l
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}),
            &l
        ));
        assert!(!selector_matches(
            &json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]}),
            &l
        ));
    }
}
