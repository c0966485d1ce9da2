"""Shared helpers for the manifest checks (scripts/validate-manifests).

Renders every chart for every env through the helm shim (the same `helm template` path the
CLI uses), loads YAML documents, and knows which kinds are workloads and which come from
CRDs we install.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
CHARTS = ["migrations", "api", "worker", "web"]
ENVS = ["dev", "staging", "prod"]


@dataclass(frozen=True)
class Variant:
    """One way an env is rendered: its values file plus extra `-f` files."""
    name: str
    env: str
    extra_values: tuple[str, ...]
    observability: bool


# Every env with and without observability. Dev: off by default, on with the overlay that
# `pulsedev up --with observability` passes. Staging/prod: on in their values; the test
# overlay turns it off (a cluster without the Prometheus Operator must still work).
DEV_OBSERVABILITY = "manifests/envs/dev/observability.yaml"
OBSERVABILITY_OFF = "tests/manifests/observability-off.yaml"
VARIANTS = [
    Variant("dev", "dev", (), False),
    Variant("dev-observability", "dev", (DEV_OBSERVABILITY,), True),
    Variant("staging", "staging", (), True),
    Variant("staging-observability-off", "staging", (OBSERVABILITY_OFF,), False),
    Variant("prod", "prod", (), True),
    Variant("prod-observability-off", "prod", (OBSERVABILITY_OFF,), False),
]
VARIANT = {v.name: v for v in VARIANTS}

# The optional monitoring stack's own files, applied in dev when observability is on.
OBSERVABILITY_DIR = "manifests/platform/observability"
HELM = REPO / "scripts" / "helm-shim" / "helm"
KUBE_VERSION = "1.36.1"  # kindest/node:v1.36.1, kind v0.32.0's default node image

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}

# CRD kinds that the pinned platform charts install (manifests/platform/pins.toml), per pin;
# External Secrets Operator runs in the staging/prod clusters (not pinned here).
INSTALLED_CRDS: dict[str, set[tuple[str, str]]] = {
    "cert-manager": {("cert-manager.io/v1", k) for k in ("Certificate", "CertificateRequest", "Issuer", "ClusterIssuer")}
    | {("acme.cert-manager.io/v1", k) for k in ("Order", "Challenge")},
    # kube-prometheus-stack's crds subchart: the Prometheus Operator's CRDs.
    "kube-prometheus-stack": {("monitoring.coreos.com/v1", k) for k in (
        "Alertmanager", "PodMonitor", "Probe", "Prometheus", "PrometheusRule", "ServiceMonitor", "ThanosRuler")}
    | {("monitoring.coreos.com/v1alpha1", k) for k in ("AlertmanagerConfig", "PrometheusAgent", "ScrapeConfig")},
    "external-secrets (staging/prod clusters)": {("external-secrets.io/v1", k) for k in (
        "ExternalSecret", "SecretStore", "ClusterSecretStore", "ClusterExternalSecret")},
}

# Kinds served by CRDs that the platform installs (cert-manager, External Secrets Operator,
# the Prometheus Operator of kube-prometheus-stack). kubernetes-validate has no schemas for
# them, so they are checked against this list, the required fields below and, where given,
# a schema of the fields we use (CRD_SCHEMAS). Anything else without a schema is an error.
CRD_KINDS: dict[tuple[str, str], dict[str, Any]] = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {"namespaced": True, "required": [("spec", "selector"), ("spec", "endpoints")]},
    ("monitoring.coreos.com/v1", "PrometheusRule"): {"namespaced": True, "required": [("spec", "groups")]},
    ("cert-manager.io/v1", "Certificate"): {"namespaced": True, "required": [("spec", "secretName"), ("spec", "issuerRef", "name"), ("spec", "issuerRef", "kind")]},
    ("cert-manager.io/v1", "ClusterIssuer"): {"namespaced": False, "required": [("spec",)]},
    ("cert-manager.io/v1", "Issuer"): {"namespaced": True, "required": [("spec",)]},
    ("external-secrets.io/v1", "ExternalSecret"): {"namespaced": True, "required": [("spec", "secretStoreRef", "name"), ("spec", "secretStoreRef", "kind"), ("spec", "target", "name")]},
    ("external-secrets.io/v1", "ClusterSecretStore"): {"namespaced": False, "required": [("spec", "provider")]},
    ("external-secrets.io/v1", "SecretStore"): {"namespaced": True, "required": [("spec", "provider")]},
}


def env_namespace(env: str) -> str:
    return f"pulsewatch-{env}"


def helm_env() -> dict[str, str]:
    return dict(os.environ)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the helm shim; with check, a failure raises with helm's own stderr."""
    proc = subprocess.run([str(HELM), *args], cwd=REPO, capture_output=True, text=True, env=helm_env())
    if check and proc.returncode != 0:
        raise RuntimeError(f"`helm {' '.join(args)}` failed (exit {proc.returncode}):\n{proc.stderr.strip()}")
    return proc


def template_args(chart: str, env: str, *extra: str) -> list[str]:
    """The exact invocation documented in manifests/README.md."""
    return ["template", chart, f"manifests/charts/{chart}", "-n", env_namespace(env),
            "-f", f"manifests/envs/{env}/values.yaml", *extra]


def variant_args(chart: str, v: Variant, *extra: str) -> list[str]:
    args: list[str] = []
    for f in v.extra_values:
        args += ["-f", f]
    return template_args(chart, v.env, *args, *extra)


def render_all(outdir: Path) -> list[str]:
    """Render every chart x variant into outdir/<variant>/<chart>.yaml; returns failures."""
    failures = []
    jobs = [(v, chart) for v in VARIANTS for chart in CHARTS]
    for v in VARIANTS:
        (outdir / v.name).mkdir(parents=True, exist_ok=True)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(max_workers=2) as pool:
        procs = list(pool.map(lambda job: helm(*variant_args(job[1], job[0]), check=False), jobs))
    for (v, chart), proc in zip(jobs, procs):
        if proc.returncode != 0:
            failures.append(f"{chart} x {v.name}: `helm {' '.join(variant_args(chart, v))}` failed:\n{proc.stderr.strip()}")
            continue
        (outdir / v.name / f"{chart}.yaml").write_text(proc.stdout)
    return failures


@dataclass
class Obj:
    path: str  # file it came from (repo-relative or rendered path)
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.doc.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.doc.get("metadata") or {}).get("name", ""))

    @property
    def namespace(self) -> str | None:
        return (self.doc.get("metadata") or {}).get("namespace")

    @property
    def labels(self) -> dict[str, str]:
        return (self.doc.get("metadata") or {}).get("labels") or {}

    def __str__(self) -> str:
        ns = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {ns}{self.name} ({self.path})"


def load_objects(path: Path, label: str | None = None) -> list[Obj]:
    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    shown = label or str(path.relative_to(REPO) if path.is_relative_to(REPO) else path)
    return [Obj(shown, d) for d in docs if d]


def observability_files() -> list[Path]:
    """Our plain files of the monitoring stack (pins.toml `before` and `extra`)."""
    return sorted((REPO / OBSERVABILITY_DIR).glob("*.yaml"), key=lambda p: p.name)


def observability_manifest_files() -> list[Path]:
    """The monitoring stack's files that are Kubernetes objects (not chart values)."""
    import tomllib
    pins = tomllib.loads((REPO / "manifests/platform/pins.toml").read_text())
    files: list[str] = []
    for pin in pins.values():
        if pin.get("optional") == "observability":
            files += pin.get("before", []) + pin.get("extra", [])
    return [REPO / f for f in files]


def plain_manifest_files(name: str) -> list[Path]:
    """Plain (non-chart) YAML applied in an env or variant, besides the charts."""
    v = VARIANT.get(name) or Variant(name, name, (), False)
    if v.env == "dev":
        files = sorted((REPO / "manifests" / "dev").glob("*.yaml")) + sorted((REPO / "manifests" / "platform" / "local-ca").glob("*.yaml"))
        if v.observability:
            files += observability_manifest_files()
        return files
    return [REPO / "manifests" / "envs" / v.env / "namespace.yaml", REPO / "manifests" / "envs" / v.env / "external-secrets.yaml"]


def env_objects(rendered: Path, name: str, include_plain: bool = True) -> list[Obj]:
    """Objects of a variant (or env name: the variant of the same name)."""
    objs: list[Obj] = []
    for chart in CHARTS:
        objs += load_objects(rendered / name / f"{chart}.yaml", f"rendered {chart} x {name}")
    if include_plain:
        for p in plain_manifest_files(name):
            objs += load_objects(p)
    return objs


def pod_spec(obj: Obj) -> dict[str, Any] | None:
    d = obj.doc
    if obj.kind == "Pod":
        return d.get("spec")
    if obj.kind == "CronJob":
        return (((d.get("spec") or {}).get("jobTemplate") or {}).get("spec") or {}).get("template", {}).get("spec")
    if obj.kind in WORKLOAD_KINDS:
        return ((d.get("spec") or {}).get("template") or {}).get("spec")
    return None


def pod_labels(obj: Obj) -> dict[str, str]:
    d = obj.doc
    if obj.kind == "Pod":
        return obj.labels
    if obj.kind == "CronJob":
        return d["spec"]["jobTemplate"]["spec"]["template"].get("metadata", {}).get("labels") or {}
    return ((d.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}


def containers(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from spec.get(key) or []


def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """Kubernetes LabelSelector semantics; an empty selector matches everything."""
    selector = selector or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def image_parts(image: str) -> tuple[str, str | None, str | None]:
    """Split repo[:tag][@digest]; the registry's :port is not a tag."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    last = image.rsplit("/", 1)[-1]
    tag = None
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest
