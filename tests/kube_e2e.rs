//! The kube engine's scenarios against a real kind cluster (the mock-driven twins live in
//! src/kube/*). Run by the end-to-end job after `pulsedev up`, or by hand:
//!
//!     PULSEDEV_E2E_KUBECONFIG=~/.local/state/pulsedev/pulsedev/kubeconfig \
//!       cargo test --test kube_e2e -- --ignored --test-threads 1
//!
//! Each test works in its own namespace `pulsedev-e2e-<name>` and its own stack of the
//! same name (so one scenario's prune never lists another's objects), and removes both at
//! the end.
//! Images: registry.k8s.io/pause and busybox, pulled by the cluster (network needed).

use std::time::Duration;

use pulsedev::kube::{
    ApplyOptions, ApplyReport, Backoff, Engine, Target, TargetKind, WebhookGate, parse,
};
use tokio_util::sync::CancellationToken;

async fn engine() -> Engine {
    let path = std::env::var("PULSEDEV_E2E_KUBECONFIG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            pulsedev::cluster::Paths::new(
                &pulsedev::state::Dirs::from_process().unwrap(),
                "pulsedev",
            )
            .kubeconfig
        });
    let context = std::env::var("PULSEDEV_E2E_CONTEXT").unwrap_or_else(|_| "kind-pulsedev".into());
    let client = pulsedev::kube::connect(&path, &context)
        .await
        .expect("a kind cluster");
    Engine::new(client).with_progress(|l| eprintln!("{l}"))
}

fn namespace(name: &str) -> String {
    format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: pulsedev-e2e-{name}\n")
}

/// Applies into the scenario's own stack (named like its namespace), recorded in its
/// inventory first, as `up` does.
async fn apply(e: &Engine, ns: &str, yaml: &str) -> pulsedev::error::Result<ApplyReport> {
    let ms = parse("e2e", yaml)?;
    let options = ApplyOptions::new(ns, ns);
    e.before_apply(&ms, &options, &CancellationToken::new())
        .await?;
    e.apply(&ms, &options, &CancellationToken::new()).await
}

async fn cleanup(e: &Engine, ns: &str) {
    use kube::api::{Api, DeleteParams};
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(e.client().clone());
    let _ = api.delete(ns, &DeleteParams::background()).await;
    let inventories: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(e.client().clone(), pulsedev::kube::INVENTORY_NAMESPACE);
    let _ = inventories
        .delete(
            &pulsedev::kube::inventory_name(ns),
            &DeleteParams::background(),
        )
        .await;
}

#[tokio::test]
#[ignore = "needs docker, kind and network"]
async fn e2e_apply_order_with_a_crd_and_discovery_catching_up() {
    let e = engine().await;
    let ns = "pulsedev-e2e-crd";
    let yaml = format!(
        "{}---\napiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: widgets.e2e.pulsedev.dev}}\nspec:\n  group: e2e.pulsedev.dev\n  scope: Namespaced\n  names: {{kind: Widget, plural: widgets, singular: widget, listKind: WidgetList}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n---\napiVersion: e2e.pulsedev.dev/v1\nkind: Widget\nmetadata: {{name: w1, namespace: {ns}}}\nspec: {{size: 3}}\n",
        namespace("crd")
    );
    let report = apply(&e, ns, &yaml).await.unwrap();
    let kinds: Vec<&str> = report.applied.iter().map(|a| a.kind.as_str()).collect();
    assert_eq!(kinds, ["Namespace", "CustomResourceDefinition", "Widget"]);
    cleanup(&e, ns).await;
    use kube::api::{Api, DeleteParams};
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(e.client().clone());
    let _ = crds
        .delete("widgets.e2e.pulsedev.dev", &DeleteParams::default())
        .await;
}

#[tokio::test]
#[ignore = "needs docker, kind and network"]
async fn e2e_ssa_uses_field_manager_pulsedev() {
    let e = engine().await;
    let ns = "pulsedev-e2e-ssa";
    let yaml = format!(
        "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c, namespace: {ns}}}\ndata: {{a: b}}\n",
        namespace("ssa")
    );
    apply(&e, ns, &yaml).await.unwrap();
    use kube::api::Api;
    let cm = Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(e.client().clone(), ns)
        .get("c")
        .await
        .unwrap();
    let mf = cm.metadata.managed_fields.unwrap_or_default();
    assert!(mf.iter().any(
        |f| f.manager.as_deref() == Some("pulsedev") && f.operation.as_deref() == Some("Apply")
    ));
    assert_eq!(cm.metadata.labels.unwrap()["pulsedev.dev/stack"], ns);
    cleanup(&e, ns).await;
}

#[tokio::test]
#[ignore = "needs docker, kind and network"]
async fn e2e_prune_deletes_only_labelled_leftovers() {
    let e = engine().await;
    let ns = "pulsedev-e2e-prune";
    let cm = |n: &str| {
        format!("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {n}, namespace: {ns}}}\n")
    };
    apply(
        &e,
        ns,
        &format!("{}{}{}", namespace("prune"), cm("keep"), cm("leftover")),
    )
    .await
    .unwrap();
    // Not labelled (no stack): prune must never touch it.
    let ms = parse("e2e", &cm("unlabelled")).unwrap();
    e.apply(&ms, &ApplyOptions::new("", ns), &CancellationToken::new())
        .await
        .unwrap();
    let desired = apply(&e, ns, &format!("{}{}", namespace("prune"), cm("keep")))
        .await
        .unwrap();
    let report = e
        .prune(ns, &desired, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(report.deleted, [format!("ConfigMap {ns}/leftover")]);
    cleanup(&e, ns).await;
}

#[tokio::test]
#[ignore = "needs docker, kind and network"]
async fn e2e_rollout_waits_for_ready() {
    let e = engine().await;
    let ns = "pulsedev-e2e-rollout";
    let yaml = format!(
        "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: pause, namespace: {ns}}}\nspec:\n  replicas: 2\n  selector: {{matchLabels: {{app: pause}}}}\n  template:\n    metadata: {{labels: {{app: pause}}}}\n    spec:\n      containers: [{{name: pause, image: 'registry.k8s.io/pause:3.10'}}]\n",
        namespace("rollout")
    );
    let report = apply(&e, ns, &yaml).await.unwrap();
    e.wait_ready(
        &report.targets(),
        Duration::from_secs(180),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    cleanup(&e, ns).await;
}

#[tokio::test]
#[ignore = "needs docker, kind and network"]
async fn e2e_failed_migrations_job_ends_the_wait() {
    let e = engine().await;
    let ns = "pulsedev-e2e-job";
    let yaml = format!(
        "{}---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: migrations-x, namespace: {ns}, labels: {{app.kubernetes.io/component: migrations}}}}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{{name: flyway, image: 'busybox:1.37', command: [sh, -c, 'echo migration V7 failed; exit 1']}}]\n",
        namespace("job")
    );
    let report = apply(&e, ns, &yaml).await.unwrap();
    let err = e
        .wait_ready(
            &report.targets(),
            Duration::from_secs(300),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.id(), "migrations-failed");
    assert!(
        err.details
            .iter()
            .any(|l| l.contains("migration V7 failed")),
        "{:?}",
        err.details
    );
    cleanup(&e, ns).await;
}

#[tokio::test]
#[ignore = "needs docker, kind and network"]
async fn e2e_crash_loop_is_diagnosed() {
    let e = engine().await;
    let ns = "pulsedev-e2e-crash";
    let yaml = format!(
        "{}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: api, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api}}}}\n    spec:\n      containers: [{{name: api, image: 'busybox:1.37', command: [sh, -c, 'echo boom; exit 3']}}]\n",
        namespace("crash")
    );
    apply(&e, ns, &yaml).await.unwrap();
    let err = e
        .wait_ready(
            &[Target::new(TargetKind::Deployment, ns, "api")],
            Duration::from_secs(90),
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.id(), "pod-crash-looping");
    assert!(
        err.details.iter().any(|l| l.contains("| boom")),
        "{:?}",
        err.details
    );
    cleanup(&e, ns).await;
}

#[tokio::test]
#[ignore = "needs docker, kind and network"]
async fn e2e_webhook_gate_passes_when_cert_manager_is_up() {
    // After `pulsedev up`, cert-manager's webhook answers.
    let e = engine().await;
    e.gate_webhook(
        &WebhookGate::cert_manager("cert-manager"),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
}

#[tokio::test]
#[ignore = "needs docker, kind and network"]
async fn e2e_webhook_that_never_answers_is_webhook_not_ready() {
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    use kube::api::{Api, DeleteParams, Patch, PatchParams};
    let e = engine().await;
    let ns = "pulsedev-e2e-webhook";
    apply(&e, ns, &namespace("webhook")).await.unwrap();
    // A webhook whose Service does not exist, for ConfigMaps labelled e2e-webhook=on.
    let vwc: ValidatingWebhookConfiguration = serde_json::from_value(serde_json::json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": "pulsedev-e2e-absent"},
        "webhooks": [{"name": "absent.e2e.pulsedev.dev", "admissionReviewVersions": ["v1"], "sideEffects": "None",
            "failurePolicy": "Fail",
            "objectSelector": {"matchLabels": {"e2e-webhook": "on"}},
            "clientConfig": {"service": {"name": "absent", "namespace": ns, "port": 443}},
            "rules": [{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]}]
    })).unwrap();
    let api: Api<ValidatingWebhookConfiguration> = Api::all(e.client().clone());
    api.patch(
        "pulsedev-e2e-absent",
        &PatchParams::apply("pulsedev-e2e").force(),
        &Patch::Apply(&vwc),
    )
    .await
    .unwrap();
    let mut gate = WebhookGate::ingress(ns, "nginx");
    gate.name = "absent webhook".into();
    gate.probe = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "probe", "namespace": ns, "labels": {"e2e-webhook": "on"}}
    }))
    .unwrap();
    gate.backoff = Backoff {
        initial: Duration::from_secs(1),
        max: Duration::from_secs(2),
        cap: Duration::from_secs(8),
        jitter: 0.2,
    };
    let started = std::time::Instant::now();
    let err = e
        .gate_webhook(&gate, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(err.id(), "webhook-not-ready");
    assert!(started.elapsed() < Duration::from_secs(15));
    // The test removes what it made; pulsedev itself never deletes webhook configurations.
    let _ = api
        .delete("pulsedev-e2e-absent", &DeleteParams::default())
        .await;
    cleanup(&e, ns).await;
}

#[tokio::test]
#[ignore = "needs docker, kind and network"]
async fn e2e_status_sees_a_reachable_cluster() {
    let path = std::env::var("PULSEDEV_E2E_KUBECONFIG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            pulsedev::cluster::Paths::new(
                &pulsedev::state::Dirs::from_process().unwrap(),
                "pulsedev",
            )
            .kubeconfig
        });
    let report = pulsedev::kube::collect_status(
        &path,
        "pulsedev",
        "kind-pulsedev",
        &pulsedev::kube::StatusSpec::pulsewatch(443),
    )
    .await;
    assert_eq!(
        report.rows[0].state,
        pulsedev::kube::State::Ready,
        "{}",
        report.render(false)
    );
}
