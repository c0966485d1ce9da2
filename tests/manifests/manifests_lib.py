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
HELM = REPO / "scripts" / "helm-shim" / "helm"
KUBE_VERSION = "1.36.1"  # kindest/node:v1.36.1, kind v0.32.0's default node image

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}

# Kinds served by CRDs that the platform installs (cert-manager, External Secrets Operator).
# kubernetes-validate has no schemas for them, so they are checked against this list and the
# required fields below instead. Anything else without a schema is an error.
CRD_KINDS: dict[tuple[str, str], dict[str, Any]] = {
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


def render_all(outdir: Path) -> list[str]:
    """Render every chart x env into outdir/<env>/<chart>.yaml; returns failures."""
    failures = []
    for env in ENVS:
        (outdir / env).mkdir(parents=True, exist_ok=True)
        for chart in CHARTS:
            proc = helm(*template_args(chart, env), check=False)
            if proc.returncode != 0:
                failures.append(f"{chart} x {env}: `helm {' '.join(template_args(chart, env))}` failed:\n{proc.stderr.strip()}")
                continue
            (outdir / env / f"{chart}.yaml").write_text(proc.stdout)
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


def plain_manifest_files(env: str) -> list[Path]:
    """Plain (non-chart) YAML applied in an env, besides the charts."""
    if env == "dev":
        return sorted((REPO / "manifests" / "dev").glob("*.yaml")) + sorted((REPO / "manifests" / "platform" / "local-ca").glob("*.yaml"))
    return [REPO / "manifests" / "envs" / env / "namespace.yaml", REPO / "manifests" / "envs" / env / "external-secrets.yaml"]


def env_objects(rendered: Path, env: str, include_plain: bool = True) -> list[Obj]:
    objs: list[Obj] = []
    for chart in CHARTS:
        objs += load_objects(rendered / env / f"{chart}.yaml", f"rendered {chart} x {env}")
    if include_plain:
        for p in plain_manifest_files(env):
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
