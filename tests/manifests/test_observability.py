"""Tests of the optional monitoring stack (`pulsedev up --with observability`) and of the
observability settings of the PulseWatch charts (run by scripts/validate-manifests).

The third-party charts are fetched at run time and cannot be rendered here; what is ours is
checked: the pins, our values files and plain manifests, the rendered PulseWatch objects
with and without observability, and that the dashboard and the alerts only use metrics the
apps really export.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifests_lib as lib  # noqa: E402
from test_policy import all_objects, rendered  # noqa: E402

REPO = lib.REPO
OBS = REPO / lib.OBSERVABILITY_DIR
COLLECTOR = "http://otel-collector.monitoring.svc.cluster.local:4318"


def pins() -> dict:
    return tomllib.loads((REPO / "manifests/platform/pins.toml").read_text())


def optional_pins() -> dict:
    return {k: p for k, p in pins().items() if p.get("optional") == "observability"}


def values(name: str) -> dict:
    return yaml.safe_load((OBS / name).read_text())


def objects_of(path: Path) -> list[lib.Obj]:
    return lib.load_objects(path)


def exported_metrics() -> set[str]:
    """Metric names the apps register (prom-client `name:` in app/*/src/metrics.js)."""
    names = set()
    for f in (REPO / "app").glob("*/src/metrics.js"):
        names |= set(re.findall(r'name: "(pulsewatch_[a-z_]+)"', f.read_text()))
    return names


def metric_names_in(expr: str) -> set[str]:
    out = set()
    for m in re.findall(r"\bpulsewatch_[a-z_]+", expr):
        out.add(re.sub(r"_(bucket|count|sum)$", "", m) if not m.endswith("_total") else m)
    return out


def by_kind(objs: list[lib.Obj], kind: str, namespace: str | None = None) -> list[lib.Obj]:
    return [o for o in objs if o.kind == kind and (namespace is None or o.namespace == namespace)]


class Pins(unittest.TestCase):
    def test_optional_entries(self):
        opt = optional_pins()
        self.assertEqual(set(opt), {"kube-prometheus-stack", "loki", "alloy", "tempo", "opentelemetry-collector"})
        for name, pin in opt.items():
            for key in ("description", "repo_url", "chart", "version", "sha256", "namespace", "release", "values", "wait"):
                self.assertIn(key, pin, f"{name}.{key}")
            self.assertEqual(pin["namespace"], "monitoring", name)
            self.assertRegex(pin["version"], r"^v?\d+\.\d+\.\d+$", f"{name}: exact versions only")
            self.assertRegex(pin["sha256"], r"^([0-9a-f]{64})?$")
            self.assertTrue(pin["repo_url"].startswith("https://"), name)
            self.assertTrue(str(pin["values"]).startswith(lib.OBSERVABILITY_DIR + "/"), name)
            self.assertTrue(yaml.safe_load((REPO / pin["values"]).read_text()), pin["values"])
            for f in pin.get("before", []) + pin.get("extra", []):
                self.assertTrue((REPO / f).is_file(), f)
            for w in pin["wait"]:
                self.assertRegex(w, r"^(Deployment|StatefulSet|DaemonSet)/[a-z0-9-]+$", name)
        # Loki and Tempo come from their maintained home; Promtail is deprecated.
        self.assertIn("grafana-community", opt["loki"]["repo_url"])
        self.assertIn("grafana-community", opt["tempo"]["repo_url"])
        self.assertNotIn("promtail", json.dumps(pins()).lower())

    def test_group_files_are_applied_once_and_in_order(self):
        opt = optional_pins()
        befores = [f for p in opt.values() for f in p.get("before", [])]
        extras = [f for p in opt.values() for f in p.get("extra", [])]
        self.assertEqual(len(befores + extras), len(set(befores + extras)), "a file listed twice")
        # the namespace before the policies of the namespace; every other file after a chart
        self.assertEqual(befores[0], f"{lib.OBSERVABILITY_DIR}/namespace.yaml")
        # every plain object file of the directory is listed somewhere, every values file is a pin's
        listed = set(befores + extras) | {p["values"] for p in opt.values()}
        on_disk = {f"{lib.OBSERVABILITY_DIR}/{p.name}" for p in lib.observability_files()}
        self.assertEqual(on_disk, listed)

    def test_everything_is_in_the_monitoring_namespace(self):
        for p in lib.observability_manifest_files():
            for o in objects_of(p):
                if o.kind != "Namespace":
                    self.assertEqual(o.namespace, "monitoring", str(o))


class DefaultRender(unittest.TestCase):
    def test_dev_without_observability_has_none_of_it(self):
        for name in ("dev", "staging-observability-off", "prod-observability-off"):
            objs = lib.env_objects(rendered(), name, include_plain=False)
            text = "".join((rendered() / name / f"{c}.yaml").read_text() for c in lib.CHARTS)
            self.assertFalse(by_kind(objs, "ServiceMonitor"), name)
            for needle in ("METRICS_PORT", "OTEL_", "9464", "4318", "monitoring"):
                self.assertNotIn(needle, text, f"{name}: {needle}")
            self.assertFalse([o for o in objs if o.kind == "Service" and o.name == "worker"], name)

    def test_the_overlay_only_touches_observability(self):
        overlay = yaml.safe_load((REPO / lib.DEV_OBSERVABILITY).read_text())
        self.assertEqual(set(overlay), {"api", "worker"})
        for chart, section in overlay.items():
            self.assertEqual(set(section), {"metrics", "otel"}, chart)
            self.assertTrue(section["metrics"]["enabled"] and section["metrics"]["serviceMonitor"]["enabled"])
            self.assertEqual(section["otel"]["endpoint"], COLLECTOR)


class Rendered(unittest.TestCase):
    """api and worker with observability on: dev with the overlay, staging and prod."""

    ON = ("dev-observability", "staging", "prod")

    def test_service_monitors_find_the_metrics_port(self):
        for name in self.ON:
            objs = all_objects()[name]
            monitors = by_kind(objs, "ServiceMonitor")
            self.assertEqual(sorted(m.name for m in monitors), ["api", "worker"], name)
            for sm in monitors:
                services = [s for s in by_kind(objs, "Service", sm.namespace)
                            if lib.selector_matches(sm.doc["spec"]["selector"], s.labels)]
                self.assertEqual(len(services), 1, f"{name}: {sm} selects {[str(s) for s in services]}")
                svc = services[0]
                self.assertEqual(sm.doc["spec"]["namespaceSelector"], {"matchNames": [sm.namespace]})
                [ep] = sm.doc["spec"]["endpoints"]
                [port] = [p for p in svc.doc["spec"]["ports"] if p["name"] == ep["port"]]
                [deploy] = [d for d in by_kind(objs, "Deployment", sm.namespace)
                            if lib.selector_matches({"matchLabels": svc.doc["spec"]["selector"]}, lib.pod_labels(d))]
                [container] = deploy.doc["spec"]["template"]["spec"]["containers"]
                [cport] = [p for p in container["ports"] if p["name"] == port["targetPort"]]
                [cm] = [c for c in by_kind(objs, "ConfigMap", sm.namespace) if c.name == deploy.name]
                self.assertEqual(cm.doc["data"]["METRICS_PORT"], str(cport["containerPort"]), f"{name}: {sm}")
                self.assertNotEqual(cport["name"], "http")

    def test_otlp_settings(self):
        for name in self.ON:
            for cm in by_kind(all_objects()[name], "ConfigMap"):
                if cm.name not in ("api", "worker"):
                    continue
                d = cm.doc["data"]
                self.assertEqual(d["OTEL_EXPORTER_OTLP_ENDPOINT"], COLLECTOR, name)
                self.assertEqual(d["OTEL_EXPORTER_OTLP_PROTOCOL"], "http/json")
                self.assertEqual(d["OTEL_SERVICE_NAME"], f"pulsewatch-{cm.name}")
                self.assertIn(f"k8s.namespace.name={cm.namespace}", d["OTEL_RESOURCE_ATTRIBUTES"])
                self.assertTrue(0 <= float(d["OTEL_TRACES_SAMPLER_ARG"]) <= 1)

    def test_network_policies_open_scrape_and_otlp_only(self):
        for name in self.ON:
            for p in by_kind(all_objects()[name], "NetworkPolicy"):
                app = (p.doc["spec"]["podSelector"].get("matchLabels") or {}).get("app.kubernetes.io/name")
                if app not in ("api", "worker"):
                    continue
                scrape = [r for r in p.doc["spec"]["ingress"] if {"protocol": "TCP", "port": 9464} in r["ports"]]
                self.assertEqual(len(scrape), 1, f"{name}: {p}")
                for peer in scrape[0]["from"]:
                    self.assertEqual(peer["namespaceSelector"], {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}})
                otlp = [r for r in p.doc["spec"]["egress"] if r.get("ports") == [{"protocol": "TCP", "port": 4318}]]
                self.assertEqual(len(otlp), 1, f"{name}: {p}")
                for peer in otlp[0]["to"]:
                    self.assertEqual(peer["podSelector"], {"matchLabels": {"app.kubernetes.io/name": "opentelemetry-collector"}})

    def test_otlp_port_follows_the_endpoint(self):
        out = lib.helm(*lib.template_args("api", "dev", "-f", lib.DEV_OBSERVABILITY, "--set-string",
                                          "api.otel.endpoint=https://otlp.example.com", "--show-only",
                                          "templates/networkpolicy.yaml")).stdout
        [np] = [d for d in yaml.safe_load_all(out) if d]
        self.assertIn([{"protocol": "TCP", "port": 443}], [r.get("ports") for r in np["spec"]["egress"]])


class Refused(unittest.TestCase):
    def refused(self, *sets, expect):
        proc = lib.helm(*lib.template_args("worker", "dev", *sets), check=False)
        self.assertEqual(proc.returncode, 1, f"accepted {sets}")
        self.assertIn(expect, proc.stderr)

    def test_bad_observability_values(self):
        self.refused("--set", "worker.metrics.serviceMonitor.enabled=true", expect="/worker/metrics")
        self.refused("--set-string", "worker.otel.endpoint=otel-collector:4318", expect="/worker/otel/endpoint")
        self.refused("--set", "worker.otel.samplerRatio=2", expect="/worker/otel/samplerRatio")
        self.refused("--set", "worker.metrics.enabled=true,worker.metrics.port=3002", expect="must differ")
        self.refused("--set", "worker.metrics.scrape=true", expect="scrape")


class MonitoringNamespace(unittest.TestCase):
    def policies(self) -> list[lib.Obj]:
        return by_kind(objects_of(OBS / "network-policies.yaml"), "NetworkPolicy")

    def allows(self, selector_name: str, direction: str, peer_ns: str | None, peer_name: str | None, port: int) -> bool:
        key = "from" if direction == "ingress" else "to"
        for p in self.policies():
            sel = p.doc["spec"]["podSelector"]
            if sel and not lib.selector_matches(sel, {"app.kubernetes.io/name": selector_name}):
                continue
            for rule in p.doc["spec"].get(direction) or []:
                ports = [x["port"] for x in rule.get("ports") or []]
                if ports and port not in ports:
                    continue
                for peer in rule.get(key) or []:
                    ns_ok = ("namespaceSelector" not in peer and peer_ns in (None, "monitoring")) or \
                        (peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == peer_ns)
                    pod_ok = "podSelector" not in peer or lib.selector_matches(peer["podSelector"], {"app.kubernetes.io/name": peer_name or ""})
                    if ns_ok and pod_ok:
                        return True
        return False

    def test_default_deny_and_dns(self):
        pols = {p.name: p for p in self.policies()}
        deny = pols["default-deny"].doc["spec"]
        # No rules at all (absent, not `[]`, which the API server drops: kubernetes#131175).
        self.assertEqual((deny["podSelector"], set(deny["policyTypes"]), deny.get("ingress"), deny.get("egress")),
                         ({}, {"Ingress", "Egress"}, None, None))
        dns = pols["allow-dns"].doc["spec"]
        self.assertEqual(dns["podSelector"], {})
        self.assertEqual({p["port"] for p in dns["egress"][0]["ports"]}, {53})

    def test_the_flows_the_stack_needs(self):
        self.assertTrue(self.allows("opentelemetry-collector", "ingress", "pulsewatch-dev", "api", 4318))
        self.assertTrue(self.allows("opentelemetry-collector", "ingress", "pulsewatch-dev", "worker", 4317))
        self.assertTrue(self.allows("prometheus", "egress", "pulsewatch-dev", "api", 9464))
        self.assertTrue(self.allows("grafana", "ingress", "platform", "nginx-ingress", 3000))
        self.assertTrue(self.allows("loki", "ingress", "monitoring", "alloy", 3100))
        self.assertTrue(self.allows("alloy", "egress", "monitoring", "loki", 3100))
        self.assertTrue(self.allows("opentelemetry-collector", "egress", "monitoring", "tempo", 4317))
        self.assertTrue(self.allows("opentelemetry-collector", "egress", "monitoring", "prometheus", 9090))
        self.assertTrue(self.allows("grafana", "egress", "monitoring", "tempo", 3200))
        self.assertTrue(self.allows("prometheus", "ingress", "monitoring", "opentelemetry-collector", 9090))

    def test_nothing_more(self):
        self.assertFalse(self.allows("opentelemetry-collector", "ingress", "platform", "nginx-ingress", 4318))
        self.assertFalse(self.allows("grafana", "ingress", "pulsewatch-dev", "api", 3000))
        self.assertFalse(self.allows("tempo", "ingress", "pulsewatch-dev", "api", 4317))
        self.assertFalse(self.allows("loki", "ingress", "pulsewatch-dev", "api", 3100))
        self.assertFalse(self.allows("alertmanager", "egress", "monitoring", "grafana", 3000))
        for p in self.policies():
            for rule in p.doc["spec"].get("ingress") or []:
                self.assertTrue(rule.get("from"), f"{p}: an ingress rule open to every source")
                for peer in rule["from"]:
                    self.assertNotIn("ipBlock", peer, f"{p}: ingress by address")

    def test_every_component_has_its_own_policy(self):
        components = ["prometheus", "alertmanager", "grafana", "kube-state-metrics", "opentelemetry-collector", "tempo", "loki", "alloy"]
        for c in components:
            own = [p for p in self.policies() if p.doc["spec"]["podSelector"]
                   and lib.selector_matches(p.doc["spec"]["podSelector"], {"app.kubernetes.io/name": c})]
            self.assertTrue(own, c)
        operator = [p for p in self.policies() if p.doc["spec"]["podSelector"].get("matchLabels") == {"app.kubernetes.io/component": "prometheus-operator"}]
        self.assertTrue(operator)

    def test_namespace_pod_security(self):
        [ns] = objects_of(OBS / "namespace.yaml")
        self.assertEqual(ns.name, "monitoring")
        self.assertEqual(ns.labels["pod-security.kubernetes.io/enforce"], "baseline")
        self.assertEqual(ns.labels["pod-security.kubernetes.io/warn"], "restricted")


class PlatformValues(unittest.TestCase):
    def test_grafana_login_is_an_existing_secret(self):
        g = values("kube-prometheus-stack.yaml")["grafana"]
        self.assertEqual(g["admin"], {"existingSecret": "grafana-admin", "userKey": "admin-user", "passwordKey": "admin-password"})
        self.assertNotIn("adminPassword", g)
        suspicious = re.compile(r"(password|passwd|token|secret|apikey|api_key|private)", re.I)
        problems = []

        def walk(node, path):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, f"{path}.{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{path}[{i}]")
            elif isinstance(node, str) and suspicious.search(path.rsplit(".", 1)[-1]) \
                    and not path.endswith(("existingSecret", "secretName", "passwordKey")):
                problems.append(f"{path} = {node!r}")

        for f in [*(p["values"] for p in optional_pins().values()), lib.DEV_OBSERVABILITY]:
            walk(yaml.safe_load((REPO / f).read_text()), f)
        self.assertEqual(problems, [])

    def test_grafana_ingress_and_certificate(self):
        ing = values("kube-prometheus-stack.yaml")["grafana"]["ingress"]
        self.assertEqual((ing["enabled"], ing["ingressClassName"], ing["hosts"]), (True, "nginx", ["grafana.pulsewatch.localhost"]))
        [cert] = objects_of(OBS / "grafana-certificate.yaml")
        self.assertEqual(ing["tls"], [{"secretName": cert.doc["spec"]["secretName"], "hosts": cert.doc["spec"]["dnsNames"]}])
        issuers = {o.name for o in objects_of(REPO / "manifests/platform/local-ca/issuers.yaml") if o.kind == "ClusterIssuer"}
        self.assertIn(cert.doc["spec"]["issuerRef"]["name"], issuers)
        self.assertEqual(cert.doc["spec"]["issuerRef"]["name"], "pulsewatch-local-ca")

    def test_data_sources_point_at_the_services(self):
        g = values("kube-prometheus-stack.yaml")["grafana"]
        ds = {d["uid"]: d for d in g["additionalDataSources"]}
        self.assertEqual(set(ds), {"loki", "tempo"})
        self.assertEqual(g["sidecar"]["datasources"]["uid"], "prometheus")
        p = optional_pins()
        self.assertEqual(ds["loki"]["url"], f"http://{p['loki']['release']}.monitoring.svc.cluster.local:3100")
        self.assertEqual(ds["tempo"]["url"], f"http://{p['tempo']['release']}.monitoring.svc.cluster.local:3200")
        alloy = values("alloy.yaml")["alloy"]["configMap"]["content"]
        self.assertIn(f"http://{p['loki']['release']}.monitoring.svc.cluster.local:3100/loki/api/v1/push", alloy)
        collector = values("otel-collector.yaml")
        self.assertEqual(f"http://{collector['fullnameOverride']}.monitoring.svc.cluster.local:4318", COLLECTOR)
        exporters = collector["config"]["exporters"]
        self.assertTrue(exporters["otlp/tempo"]["endpoint"].startswith(f"{p['tempo']['release']}.monitoring.svc.cluster.local:"))
        self.assertIn(f"{p['kube-prometheus-stack']['release']}-prometheus.monitoring.svc.cluster.local:9090/api/v1/otlp",
                      exporters["otlphttp/prometheus"]["metrics_endpoint"])
        self.assertTrue(values("kube-prometheus-stack.yaml")["prometheus"]["prometheusSpec"]["enableOTLPReceiver"])
        for pipeline in collector["config"]["service"]["pipelines"].values():
            self.assertEqual(pipeline["receivers"], ["otlp"])
            for e in pipeline["exporters"]:
                self.assertIn(e, exporters)

    def test_sized_for_a_laptop(self):
        def resources(node, path, out):
            if isinstance(node, dict):
                if "resources" in node and isinstance(node["resources"], dict):
                    out.append((path, node["resources"]))
                for k, v in node.items():
                    resources(v, f"{path}.{k}", out)
            return out

        for pin in optional_pins().values():
            found = resources(yaml.safe_load((REPO / pin["values"]).read_text()), pin["values"], [])
            self.assertTrue(found, pin["values"])
            for path, r in found:
                for kind in ("requests", "limits"):
                    self.assertTrue(r.get(kind, {}).get("cpu") and r.get(kind, {}).get("memory"), f"{path}.resources.{kind}")
        spec = values("kube-prometheus-stack.yaml")["prometheus"]["prometheusSpec"]
        self.assertEqual((spec["retention"], spec["retentionSize"], spec["replicas"]), ("2d", "1GB", 1))
        self.assertFalse(values("kube-prometheus-stack.yaml")["nodeExporter"]["enabled"])
        loki = values("loki.yaml")
        # One replica: the chart's own count for this mode (tests/manifests/upstream_charts.py
        # checks the rendered StatefulSet).
        self.assertEqual((loki["deploymentMode"], loki["loki"]["storage"]["type"]), ("Monolithic", "filesystem"))
        self.assertEqual(loki["loki"]["limits_config"]["retention_period"], "72h")
        self.assertEqual(values("tempo.yaml")["tempo"]["retention"], "24h")
        self.assertEqual(values("alloy.yaml")["alloy"]["mounts"], {"varlog": False, "dockercontainers": False})


class Dashboard(unittest.TestCase):
    def dashboard(self) -> dict:
        [cm] = objects_of(OBS / "grafana-dashboard-pulsewatch.yaml")
        self.assertEqual(cm.labels.get("grafana_dashboard"), "1")
        sidecar = values("kube-prometheus-stack.yaml")["grafana"]["sidecar"]["dashboards"]
        self.assertEqual((sidecar["label"], sidecar["labelValue"]), ("grafana_dashboard", "1"))
        [(key, text)] = cm.doc["data"].items()
        self.assertTrue(key.endswith(".json"))
        return json.loads(text)

    def exprs(self, dash):
        for p in dash["panels"]:
            for t in p.get("targets", []):
                yield p, t

    def test_queries_use_exported_metrics_and_provisioned_data_sources(self):
        dash = self.dashboard()
        exported = exported_metrics()
        self.assertGreaterEqual(len(exported), 7, exported)
        provisioned = {"prometheus", "loki", "tempo"}
        used = set()
        for panel, target in self.exprs(dash):
            self.assertIn(target["datasource"]["uid"], provisioned, panel["title"])
            expr = target.get("expr") or target.get("query") or ""
            names = metric_names_in(expr)
            self.assertLessEqual(names, exported, f"{panel['title']}: {expr}")
            used |= names
        self.assertEqual(used, exported, "every exported PulseWatch metric is on the dashboard")

    def test_panels_cover_rate_errors_latency_and_checks(self):
        titles = " | ".join(p["title"].lower() for p in self.dashboard()["panels"])
        for needle in ("request rate", "error", "latency", "up", "down", "queue depth", "logs", "traces"):
            self.assertIn(needle, titles)

    def test_metric_name_parsing(self):
        self.assertEqual(metric_names_in('histogram_quantile(0.9, rate(pulsewatch_http_request_duration_seconds_bucket[5m]))'),
                         {"pulsewatch_http_request_duration_seconds"})
        self.assertEqual(metric_names_in("rate(pulsewatch_checks_total[1m])"), {"pulsewatch_checks_total"})


class Rules(unittest.TestCase):
    def test_alerts_use_exported_metrics(self):
        [rule] = objects_of(OBS / "pulsewatch-rules.yaml")
        exported = exported_metrics()
        alerts = [r for g in rule.doc["spec"]["groups"] for r in g["rules"]]
        self.assertGreaterEqual(len(alerts), 3)
        for r in alerts:
            names = metric_names_in(r["expr"])
            self.assertTrue(names, r["alert"])
            self.assertLessEqual(names, exported, r["alert"])


class CrdKinds(unittest.TestCase):
    def test_crd_objects_are_checked_against_the_pinned_charts(self):
        installed = set().union(*lib.INSTALLED_CRDS.values())
        self.assertLessEqual(set(lib.CRD_KINDS), installed)
        for name in ("cert-manager", "kube-prometheus-stack"):
            self.assertIn(name, pins(), "INSTALLED_CRDS names a chart that is not pinned")
        seen = set()
        for objs in all_objects().values():
            for o in objs:
                if o.doc.get("apiVersion", "").startswith(("monitoring.coreos.com/", "cert-manager.io/", "external-secrets.io/")):
                    seen.add((o.doc["apiVersion"], o.kind))
        self.assertIn(("monitoring.coreos.com/v1", "ServiceMonitor"), seen)
        self.assertIn(("monitoring.coreos.com/v1", "PrometheusRule"), seen)
        self.assertLessEqual(seen, set(lib.CRD_KINDS))

    def test_crd_schema_refuses_unknown_fields(self):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import validate
        [sm] = [o for o in all_objects()["dev-observability"] if o.kind == "ServiceMonitor" and o.name == "api"]
        self.assertEqual(validate.check_crd_object(sm), [])
        bad = json.loads(json.dumps(sm.doc))
        bad["spec"]["endpoints"][0]["intervall"] = "15s"
        bad["spec"]["endpoints"][0]["interval"] = "fifteen"
        found = "\n".join(validate.check_crd_object(lib.Obj("inline", bad)))
        self.assertIn("intervall", found)
        self.assertIn("fifteen", found)
        bad = json.loads(json.dumps(sm.doc))
        bad["apiVersion"] = "monitoring.coreos.com/v2"
        self.assertTrue(validate.check_crd_object(lib.Obj("inline", bad)))


if __name__ == "__main__":
    unittest.main()
