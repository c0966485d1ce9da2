//! The engine against the fake's real-server behaviours of apiserver/fields.rs,
//! immutable.rs and webhooks.rs, through pulsedev's own client (`connect`).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulsedev::kube::{ApplyOptions, Backoff, Engine, Timing, connect, parse};
use tokio_util::sync::CancellationToken;

use super::{FakeApiServer, Options};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

async fn engine(api: &FakeApiServer, dir: &Path) -> (Engine, Arc<Mutex<Vec<String>>>) {
    let path = dir.join("kubeconfig");
    api.write_kubeconfig(&path, "kind-test");
    let client = connect(&path, "kind-test").await.unwrap();
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let engine = Engine::new(client)
        .with_timing(Timing {
            poll: Duration::from_millis(50),
            recreate: Duration::from_secs(10),
            ..Timing::default()
        })
        .with_progress(move |l| sink.lock().unwrap().push(l.to_string()));
    (engine, lines)
}

const NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: demo}\n---\n";

const DEPLOY: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api, namespace: demo}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      containers: [{name: api, image: api:v1}]\n";

#[test]
fn a_typo_in_a_chart_is_apply_failed_naming_object_origin_and_field() {
    let api = FakeApiServer::start(Options::new("test"));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{NS}{}",
        DEPLOY.replace("replicas: 1", "replicas: 1\n  replicaz: 2")
    );
    let e = rt().block_on(async {
        let (engine, _) = engine(&api, dir.path()).await;
        engine
            .apply(
                &parse("helm template api", &text).unwrap(),
                &ApplyOptions::new("demo-stack", "demo"),
                &CancellationToken::new(),
            )
            .await
            .unwrap_err()
    });
    assert_eq!(e.id(), "apply-failed");
    assert_eq!(
        e.details,
        [
            "Deployment demo/api (helm template api document 2): failed to create typed patch object (demo/api; apps/v1, Kind=Deployment): .spec.replicaz: field not declared in schema"
        ]
    );
    assert!(api.object("Deployment", "demo", "api").is_none());
}

#[test]
fn warnings_are_said_once_per_object_and_text() {
    let text = "policy/v1beta1 PodDisruptionBudget is deprecated in v1.21+, unavailable in v1.25+; use policy/v1 PodDisruptionBudget";
    let api = FakeApiServer::start(Options::new("test").warn("/deployments/api", text));
    let dir = tempfile::tempdir().unwrap();
    let lines = rt().block_on(async {
        let (engine, lines) = engine(&api, dir.path()).await;
        let ms = parse("v1", &format!("{NS}{DEPLOY}")).unwrap();
        let options = ApplyOptions::new("demo-stack", "demo");
        for _ in 0..2 {
            engine
                .apply(&ms, &options, &CancellationToken::new())
                .await
                .unwrap();
        }
        lines.lock().unwrap().clone()
    });
    let said: Vec<&String> = lines.iter().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(
        said,
        [&format!(
            "warning: Deployment demo/api (v1 document 2): {text}"
        )]
    );
}

#[test]
fn a_changed_claim_is_refused_by_the_server_and_never_deleted() {
    let api = FakeApiServer::start(Options::new("test"));
    let dir = tempfile::tempdir().unwrap();
    let pvc = |class: &str| {
        format!(
            "{NS}apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {{name: data, namespace: demo}}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: {class}\n  resources: {{requests: {{storage: 1Gi}}}}\n"
        )
    };
    let e = rt().block_on(async {
        let (engine, _) = engine(&api, dir.path()).await;
        let options = ApplyOptions::new("demo-stack", "demo");
        let cancel = CancellationToken::new();
        engine
            .apply(&parse("v1", &pvc("standard")).unwrap(), &options, &cancel)
            .await
            .unwrap();
        engine
            .apply(&parse("v2", &pvc("fast")).unwrap(), &options, &cancel)
            .await
            .unwrap_err()
    });
    assert_eq!(e.id(), "apply-failed");
    let d = &e.details[0];
    assert!(
        d.contains("spec: Forbidden: spec is immutable after creation"),
        "{d}"
    );
    assert!(
        d.contains("pulsedev never deletes a PersistentVolumeClaim"),
        "{d}"
    );
    assert!(!api.requests().iter().any(|r| r.starts_with("DELETE")));
    assert_eq!(
        api.object("PersistentVolumeClaim", "demo", "data").unwrap()["spec"]["storageClassName"],
        "standard"
    );
}

#[test]
fn a_statefulset_with_new_claim_templates_is_recreated_orphaning_its_pods() {
    let api = FakeApiServer::start(Options::new("test"));
    let dir = tempfile::tempdir().unwrap();
    let sts = |size: &str| {
        format!(
            "{NS}apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {{name: postgres, namespace: demo}}\nspec:\n  serviceName: postgres\n  replicas: 1\n  selector: {{matchLabels: {{app: postgres}}}}\n  template:\n    metadata: {{labels: {{app: postgres}}}}\n    spec:\n      containers: [{{name: postgres, image: postgres:17}}]\n  volumeClaimTemplates: [{{metadata: {{name: data}}, spec: {{accessModes: [ReadWriteOnce], resources: {{requests: {{storage: {size}}}}}}}}}]\n"
        )
    };
    let (old_uid, lines) = rt().block_on(async {
        let (engine, lines) = engine(&api, dir.path()).await;
        let options = ApplyOptions::new("demo-stack", "demo");
        let cancel = CancellationToken::new();
        engine
            .apply(&parse("v1", &sts("1Gi")).unwrap(), &options, &cancel)
            .await
            .unwrap();
        let old = api.object("StatefulSet", "demo", "postgres").unwrap();
        engine
            .apply(&parse("v2", &sts("2Gi")).unwrap(), &options, &cancel)
            .await
            .unwrap();
        (
            old["metadata"]["uid"].clone(),
            lines.lock().unwrap().join("\n"),
        )
    });
    let new = api.object("StatefulSet", "demo", "postgres").unwrap();
    assert_ne!(new["metadata"]["uid"], old_uid);
    assert_eq!(
        new["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "2Gi"
    );
    assert!(lines.contains("recreating StatefulSet demo/postgres: StatefulSet.apps \"postgres\" is invalid: spec: Forbidden: updates to statefulset spec"), "{lines}");
    let calls = api.calls();
    let delete = calls
        .iter()
        .find(|c| c.method == "DELETE" && c.target.contains("/statefulsets/postgres"))
        .expect("deleted");
    assert!(
        delete.body.contains("\"propagationPolicy\":\"Orphan\""),
        "{}",
        delete.body
    );
}

#[test]
fn a_file_mode_out_of_range_is_invalid_and_octal_literals_are_in_range() {
    let api = FakeApiServer::start(Options::new("test"));
    let dir = tempfile::tempdir().unwrap();
    let with_mode = |mode: &str| {
        DEPLOY.replace(
            "      containers: [{name: api, image: api:v1}]\n",
            &format!("      containers: [{{name: api, image: api:v1}}]\n      volumes: [{{name: c, configMap: {{name: c, defaultMode: {mode}}}}}]\n"),
        )
    };
    let (ok, e) = rt().block_on(async {
        let (engine, _) = engine(&api, dir.path()).await;
        let options = ApplyOptions::new("demo-stack", "demo");
        let cancel = CancellationToken::new();
        // 0644 is 420 to kubectl; as YAML 1.2's 644 it would be refused (> 0777 = 511).
        let ok = engine
            .apply(
                &parse("a", &format!("{NS}{}", with_mode("0644"))).unwrap(),
                &options,
                &cancel,
            )
            .await;
        let e = engine
            .apply(
                &parse("b", &format!("{NS}{}", with_mode("1000"))).unwrap(),
                &options,
                &cancel,
            )
            .await
            .unwrap_err();
        (ok, e)
    });
    ok.unwrap();
    assert_eq!(
        api.object("Deployment", "demo", "api").unwrap()["spec"]["template"]["spec"]["volumes"][0]
            ["configMap"]["defaultMode"],
        420
    );
    assert!(
        e.details[0].contains("spec.template.spec.volumes[0].configMap.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 (octal), both inclusive (422 Invalid)"),
        "{:?}",
        e.details
    );
}

#[test]
fn objects_behind_a_new_webhook_wait_until_it_serves() {
    let api = FakeApiServer::start(Options::new("test").webhook_startup(10, 10));
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{NS}apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingWebhookConfiguration\nmetadata: {{name: ingress-admission}}\nwebhooks:\n- name: validate.nginx.ingress.kubernetes.io\n  clientConfig: {{service: {{namespace: demo, name: ingress-admission, path: /networking/v1/ingresses}}}}\n  rules: [{{apiGroups: [networking.k8s.io], apiVersions: [v1], resources: [ingresses], operations: [CREATE, UPDATE]}}]\n  sideEffects: None\n  admissionReviewVersions: [v1]\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: demo}}\nspec:\n  rules: [{{host: pulsewatch.localhost}}]\n"
    );
    let lines = rt().block_on(async {
        let (engine, lines) = engine(&api, dir.path()).await;
        let mut options = ApplyOptions::new("demo-stack", "demo");
        options.admission_backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(200),
            cap: Duration::from_secs(30),
            jitter: 0.0,
        };
        engine
            .apply(
                &parse("platform/ingress", &text).unwrap(),
                &options,
                &CancellationToken::new(),
            )
            .await
            .unwrap();
        lines.lock().unwrap().join("\n")
    });
    assert!(
        lines.contains("service demo/ingress-admission has no ready endpoints"),
        "{lines}"
    );
    assert!(lines.contains("connect: connection refused"), "{lines}");
    assert!(lines.contains("ingress-admission): ready"), "{lines}");
    // The real apply of the Ingress was never refused.
    let refused: Vec<String> = api
        .calls()
        .iter()
        .filter(|c| {
            c.target.contains("/ingresses/web") && !c.target.contains("dryRun") && c.status >= 400
        })
        .map(|c| c.line())
        .collect();
    assert!(refused.is_empty(), "{refused:?}");
    assert!(api.object("Ingress", "demo", "web").is_some());
}

#[test]
fn a_hung_request_ends_with_an_error_naming_the_server() {
    let api = FakeApiServer::start(Options::new("test").hang("/api/v1/namespaces/default"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    api.write_kubeconfig(&path, "kind-test");
    let text = rt().block_on(async {
        let client = pulsedev::kube::client::connect_with_timeout(
            &path,
            "kind-test",
            Duration::from_millis(500),
        )
        .await
        .unwrap();
        let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
        // Another request on the same server is answered: only this one hangs.
        ns.get("kube-system").await.unwrap();
        format!("{:#}", anyhow_chain(&ns.get("default").await.unwrap_err()))
    });
    assert!(
        text.contains(&format!(
            "the API server at {} did not answer GET /api/v1/namespaces/default within 0.5s",
            api.url()
        )),
        "{text}"
    );
}

fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}
