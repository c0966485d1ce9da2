//! `pulsedev render` through the real Helm engine (helm-python-sdk behind scripts/helm-shim).

use crate::harness::{Pd, repo_root};

fn kinds(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn render_dev_is_deterministic_and_snapshotted() {
    let pd = Pd::new()
        .with_helm()
        .cwd(repo_root())
        .args(&["render", "--env", "dev"]);
    let first = pd.run();
    assert_eq!(first.code, 0, "{}", first.stderr);
    // Platform charts are fetched by `up`; with an empty cache they are named, not fatal.
    assert!(
        first
            .stderr
            .contains("platform chart ingress (nginx-ingress"),
        "{}",
        first.stderr
    );
    assert!(
        first.stderr.contains("platform chart cert-manager"),
        "{}",
        first.stderr
    );
    let second = pd.run();
    assert_eq!(first.stdout, second.stdout, "render is deterministic");
    let k = kinds(&first.stdout);
    for kind in [
        "Namespace",
        "StatefulSet",
        "Deployment",
        "Job",
        "Ingress",
        "ClusterIssuer",
        "Certificate",
        "NetworkPolicy",
    ] {
        assert!(k.iter().any(|x| x == kind), "no {kind} in dev render");
    }
    assert!(!first.stdout.contains(":latest"));
    insta::assert_snapshot!("render_dev", first.stdout);
}

/// What the real pods run, as rendered: Postgres probes as its superuser and database
/// (pg_isready defaults to the role "postgres", absent here, and the server logs a FATAL
/// per probe), Flyway without its update check (blocked by the NetworkPolicy), and
/// the dev DNS allow leaving out web and the data stores, which open no connection.
#[test]
fn rendered_probes_args_and_dns_policy_are_what_the_pods_need() {
    let run = Pd::new()
        .with_helm()
        .cwd(repo_root())
        .args(&["render", "--env", "dev"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let objects = pulsedev::kube::parse("render", &run.stdout).unwrap();
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|m| m.kind() == kind && m.name().starts_with(name))
            .unwrap_or_else(|| panic!("no {kind} {name}"))
            .object
            .data
            .clone()
    };
    let pg = &find("StatefulSet", "postgres")["spec"]["template"]["spec"]["containers"][0];
    for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
        assert_eq!(
            pg[probe]["exec"]["command"],
            serde_json::json!([
                "pg_isready",
                "-h",
                "127.0.0.1",
                "-p",
                "5432",
                "-U",
                "pulsewatch",
                "-d",
                "pulsewatch"
            ]),
            "{probe}"
        );
    }
    let job = &find("Job", "migrations")["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        job["args"],
        serde_json::json!(["-skipCheckForUpdate", "migrate"])
    );
    let dns = &find("NetworkPolicy", "allow-dns")["spec"]["podSelector"];
    assert_eq!(
        dns["matchExpressions"],
        serde_json::json!([{
            "key": "app.kubernetes.io/name",
            "operator": "NotIn",
            "values": ["web", "postgres", "redis"]
        }])
    );
}

#[test]
fn render_staging_and_prod_use_external_secrets() {
    for env in ["staging", "prod"] {
        let run = Pd::new()
            .with_helm()
            .cwd(repo_root())
            .args(&["render", "--env", env])
            .run();
        assert_eq!(run.code, 0, "{env}: {}", run.stderr);
        let k = kinds(&run.stdout);
        assert!(k.iter().any(|x| x == "ExternalSecret"), "{env}");
        assert!(k.iter().any(|x| x == "HorizontalPodAutoscaler"), "{env}");
        assert!(
            !k.iter().any(|x| x == "StatefulSet"),
            "{env} uses managed Postgres"
        );
        assert!(run.stdout.contains(&format!("namespace: pulsewatch-{env}")));
        assert_eq!(run.stderr, "", "{env}: no platform charts outside dev");
    }
}

#[test]
fn render_one_service_and_json() {
    let run = Pd::new()
        .with_helm()
        .cwd(repo_root())
        .args(&["render", "--service", "api", "--output", "json"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let doc = run.json();
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["env"], "dev");
    assert_eq!(doc["sources"], serde_json::json!(["manifests/charts/api"]));
    let yaml = doc["yaml"].as_str().unwrap();
    assert!(yaml.contains("# Source: api/templates/deployment.yaml"));
    assert!(!yaml.contains("# Source: web/"));
}

#[test]
fn unknown_service_is_a_usage_error() {
    let run = Pd::new()
        .with_helm()
        .cwd(repo_root())
        .args(&["render", "--service", "nope"])
        .run();
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("unknown service \"nope\""));
    assert!(run.stderr.contains("api, migrations, web, worker"));
}

/// Without helm on PATH, render gets the pinned release as `up` does; when that cannot
/// be downloaded either, it says so (and how to get helm).
#[test]
fn without_helm_render_fetches_the_pinned_release_like_up() {
    let run = Pd::new()
        .cwd(repo_root())
        // Nothing listens here: the download fails at once.
        .env("PULSEDEV_TOOLS_MIRROR", "https://127.0.0.1:9")
        .args(&["render"])
        .run();
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("downloading helm v"), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("error[tool-missing]: failed to download helm v"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("install helm"), "{}", run.stderr);
}

#[test]
fn a_broken_chart_is_render_failed_with_helms_message() {
    let pd = Pd::new().with_helm();
    pd.write(
        "charts/bad/Chart.yaml",
        "apiVersion: v2\nname: bad\nversion: 0.1.0\n",
    );
    pd.write(
        "charts/bad/templates/cm.yaml",
        "kind: ConfigMap\nmetadata:\n  name: {{ .Values.missing.key }}\n",
    );
    pd.write(
        "pulsedev.toml",
        "[services.bad]\ncontext = \".\"\nchart = \"charts/bad\"\n",
    );
    let run = pd.args(&["render", "--service", "bad"]).run();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .starts_with("error[render-failed]: failed to render chart "),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("nil pointer evaluating interface {}.key"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("hint: check the chart and values with `helm lint")
    );
}

/// The sizes the issue fixes for each service, and probes on the port the container
/// declares (a chart reading another chart's values broke both once).
#[test]
fn each_service_gets_its_own_resources_and_probe_port() {
    let run = Pd::new()
        .with_helm()
        .cwd(repo_root())
        .args(&["render", "--env", "dev"])
        .run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    let objects = pulsedev::kube::parse("render", &run.stdout).unwrap();
    let expect = [
        ("api", ["100m", "128Mi", "500m", "512Mi"], 3001),
        ("worker", ["50m", "96Mi", "300m", "256Mi"], 3002),
        ("web", ["50m", "64Mi", "300m", "256Mi"], 8080),
    ];
    for (name, [rc, rm, lc, lm], port) in expect {
        let d = objects
            .iter()
            .find(|m| m.kind() == "Deployment" && m.name() == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"));
        let c = &d.object.data["spec"]["template"]["spec"]["containers"][0];
        let r = &c["resources"];
        assert_eq!(
            [
                &r["requests"]["cpu"],
                &r["requests"]["memory"],
                &r["limits"]["cpu"],
                &r["limits"]["memory"]
            ],
            [rc, rm, lc, lm],
            "{name}"
        );
        assert_eq!(c["ports"][0]["containerPort"], port, "{name}");
        let probe_port = &c["readinessProbe"]["httpGet"]["port"];
        let named = c["ports"][0]["name"].clone();
        assert!(
            *probe_port == port || *probe_port == named,
            "{name}: probe on {probe_port}"
        );
    }
}

#[test]
fn render_with_observability_adds_the_monitoring_pieces_only_when_asked() {
    let plain = Pd::new()
        .with_helm()
        .cwd(repo_root())
        .args(&["render", "--env", "dev"])
        .run();
    let with = Pd::new()
        .with_helm()
        .cwd(repo_root())
        .args(&["render", "--env", "dev", "--with", "observability"])
        .run();
    assert_eq!(with.code, 0, "{}", with.stderr);
    for absent in [
        "kind: ServiceMonitor",
        "namespace: monitoring",
        "kube-prometheus-stack",
    ] {
        assert!(
            !plain.stdout.contains(absent),
            "{absent} without the add-on"
        );
        assert!(!plain.stderr.contains("kube-prometheus-stack"));
    }
    let k = kinds(&with.stdout);
    assert!(
        k.iter().any(|x| x == "ServiceMonitor"),
        "the api and worker charts scrape"
    );
    assert!(k.iter().any(|x| x == "PrometheusRule"));
    assert!(with.stdout.contains("OTEL_EXPORTER_OTLP_ENDPOINT"));
    assert!(
        with.stdout.contains("name: monitoring\n"),
        "the namespace file comes first"
    );
    for chart in [
        "kube-prometheus-stack",
        "loki",
        "alloy",
        "tempo",
        "opentelemetry-collector",
    ] {
        assert!(
            with.stderr.contains(&format!("({chart} ")),
            "{chart} named as not cached: {}",
            with.stderr
        );
    }
    // `observability = true` in pulsedev.toml does the same as the flag.
    let pd = Pd::new().with_helm();
    std::os::unix::fs::symlink(
        repo_root().join("manifests"),
        pd.work.path().join("manifests"),
    )
    .unwrap();
    pd.write(
        "pulsedev.toml",
        "observability = true\n[services.api]\ncontext = \".\"\nchart = \"manifests/charts/api\"\n",
    );
    let run = pd.args(&["render", "--service", "api"]).run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("kind: ServiceMonitor"),
        "{}",
        run.stdout
    );
}

/// A cached platform chart whose values schema refers to a schema on the web (as
/// nginx-ingress's does, ~60 times, to raw.githubusercontent.com) renders without that
/// host: pulsedev passes `--skip-schema-validation`, and the shim, like helm, then
/// downloads nothing. The host here never resolves (`.invalid`, RFC 6761), so the old
/// render failed with helm's "failing loading" on every machine. The chart's CRDs stay
/// out when the pin says they are unused (`include_crds = false`).
#[test]
fn a_cached_chart_with_remote_schema_refs_renders_offline_without_unused_crds() {
    let pins = pulsedev::stack::load_pins(repo_root()).unwrap();
    let ingress = &pins["ingress"];
    assert!(
        !ingress.include_crds,
        "the NGINX CRDs are unused (enableCustomResources: false)"
    );
    let pd = Pd::new().with_helm().cwd(repo_root());
    let name = &ingress.chart;
    let schema = r#"{"$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
 "properties": {"controller": {"type": "object", "properties": {"tolerations": {"type": "array",
 "items": {"$ref": "https://schemas.invalid/v1.36.1/_definitions.json#/definitions/io.k8s.api.core.v1.Toleration"}}}}}}"#;
    let archive = crate::up::tgz(&[
        (
            &format!("{name}/Chart.yaml"),
            format!("apiVersion: v2\nname: {name}\nversion: {}\n", ingress.version),
        ),
        (&format!("{name}/values.schema.json"), schema.to_string()),
        (
            &format!("{name}/crds/policy.yaml"),
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: policies.k8s.nginx.org\n".to_string(),
        ),
        (
            &format!("{name}/templates/cm.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: stand-in-controller\ndata:\n  tolerations: {{ len .Values.controller.tolerations | quote }}\n".to_string(),
        ),
    ]);
    let dir = pd.home.path().join("cache/pulsedev/charts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}-{}.tgz", ingress.version)), archive).unwrap();
    crate::up::record_downloads(&dir);
    let run = pd.args(&["render", "--env", "dev"]).run();
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        !run.stderr.contains("platform chart ingress"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("name: stand-in-controller"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("tolerations: \"1\""),
        "the values reached the chart"
    );
    assert!(!run.stdout.contains("policies.k8s.nginx.org"));
}
