"""Steps of scripts/validate-manifests that need Python. Each prints what it checked and
exits non-zero with the reason on failure.

    python tests/manifests/validate.py render   WORKDIR   # helm template + helm lint, chart x env
    python tests/manifests/validate.py kube     WORKDIR   # kubernetes-validate --strict, K8s 1.36
    python tests/manifests/validate.py checkov  WORKDIR   # checkov: staging/prod clean, dev waivers
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import kubernetes_validate
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifests_lib as lib  # noqa: E402

REPO = lib.REPO


def step_render(work: Path) -> list[str]:
    problems = lib.render_all(work / "rendered")
    for v in lib.VARIANTS:
        extra = [a for f in v.extra_values for a in ("-f", f)]
        for chart in lib.CHARTS:
            proc = lib.helm("lint", f"manifests/charts/{chart}", "-n", lib.env_namespace(v.env),
                            "-f", f"manifests/envs/{v.env}/values.yaml", *extra, "--strict", check=False)
            if proc.returncode != 0:
                problems.append(f"helm lint {chart} x {v.name} failed:\n{proc.stdout.strip()}\n{proc.stderr.strip()}")
    # Chart defaults alone must lint too (helm lint CHART with no -f).
    for chart in lib.CHARTS:
        proc = lib.helm("lint", f"manifests/charts/{chart}", "--strict", check=False)
        if proc.returncode != 0:
            problems.append(f"helm lint {chart} (chart defaults) failed:\n{proc.stdout.strip()}\n{proc.stderr.strip()}")
    if not problems:
        n = len(lib.VARIANTS) * len(lib.CHARTS)
        names = ", ".join(v.name for v in lib.VARIANTS)
        print(f"rendered and linted {n} chart x variant combinations ({names}; plus chart defaults) into {work / 'rendered'}")
    return problems


def _get(doc: dict, path: tuple[str, ...]):
    cur = doc
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    return cur


def check_crd_object(obj: lib.Obj) -> list[str]:
    api = obj.doc.get("apiVersion", "")
    rule = lib.CRD_KINDS.get((api, obj.kind))
    if rule is None:
        return [f"{obj}: no schema for apiVersion {api} kind {obj.kind} in Kubernetes {lib.KUBE_VERSION}, "
                f"and it is not one of the CRD kinds we install (tests/manifests/manifests_lib.py CRD_KINDS)"]
    if not any((api, obj.kind) in kinds for kinds in lib.INSTALLED_CRDS.values()):
        return [f"{obj}: {api} {obj.kind} is not among the CRDs the pinned charts install (INSTALLED_CRDS)"]
    problems = []
    schema = crd_schemas().get((api, obj.kind))
    if schema is not None:
        import jsonschema
        for err in sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj.doc), key=lambda e: list(e.path)):
            where = ".".join(str(p) for p in err.path) or "<root>"
            problems.append(f"{obj}: {where}: {err.message}")
    if not obj.name:
        problems.append(f"{obj}: metadata.name is missing")
    if rule["namespaced"] and not obj.namespace:
        problems.append(f"{obj}: {obj.kind} is namespaced but has no metadata.namespace")
    if not rule["namespaced"] and obj.namespace:
        problems.append(f"{obj}: {obj.kind} is cluster-scoped but sets metadata.namespace")
    for path in rule["required"]:
        if _get(obj.doc, path) in (None, "", {}):
            problems.append(f"{obj}: {'.'.join(path)} is required")
    return problems


_crd_schemas: dict | None = None


def crd_schemas() -> dict:
    """Schemas of the CRD fields we use (tests/manifests/crd-schemas.json), strict where we write."""
    global _crd_schemas
    if _crd_schemas is None:
        raw = json.loads((Path(__file__).resolve().parent / "crd-schemas.json").read_text())
        _crd_schemas = {tuple(k.rsplit(" ", 1)): v for k, v in raw.items()}
    return _crd_schemas


def step_kube(work: Path) -> list[str]:
    rendered = work / "rendered"
    objects: list[lib.Obj] = []
    for v in lib.VARIANTS:
        objects += lib.env_objects(rendered, v.name)
    problems: list[str] = []
    crd_count = 0
    for obj in objects:
        if "apiVersion" not in obj.doc or "kind" not in obj.doc:
            problems.append(f"{obj.path}: a document without apiVersion/kind")
            continue
        try:
            version = kubernetes_validate.validate(obj.doc, lib.KUBE_VERSION, strict=True)
            if version != "1.36":
                problems.append(f"{obj}: validated against Kubernetes {version}, expected 1.36")
        except kubernetes_validate.SchemaNotFoundError:
            crd_count += 1
            problems += check_crd_object(obj)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path) or "<root>"
            problems.append(f"{obj}: {where}: {err.message}")
    if not problems:
        print(f"kubernetes-validate --strict (Kubernetes {lib.KUBE_VERSION}): {len(objects) - crd_count} objects valid; "
              f"{crd_count} CRD-backed objects checked against the installed CRD kinds")
    return problems


# ---------------------------------------------------------------------------------------
# checkov

def run_checkov(args: list[str]) -> dict:
    venv_bin = Path(sys.executable).parent
    cmd = [str(venv_bin / "checkov"), "--skip-download", "--quiet", "--compact", "-o", "json", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"checkov crashed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
    try:
        data = json.loads(proc.stdout) if proc.stdout.strip() else []
    except json.JSONDecodeError as err:
        raise RuntimeError(f"checkov printed no JSON ({err}); stderr: {proc.stderr.strip()[-2000:]}") from None
    reports = data if isinstance(data, list) else [data]
    failed, passed = [], 0
    for report in reports:
        if "results" not in report:
            continue
        passed += report["summary"]["passed"]
        if report["summary"].get("parsing_errors"):
            raise RuntimeError(f"checkov could not parse: {report['results'].get('parsing_errors')}")
        for f in report["results"]["failed_checks"]:
            failed.append({"check": f["check_id"], "name": f["check_name"], "resource": f["resource"], "file": f["file_path"]})
    return {"passed": passed, "failed": failed}


def load_waivers() -> list[dict]:
    path = REPO / "scripts" / "checkov-dev-waivers.yaml"
    data = yaml.safe_load(path.read_text()) or {}
    waivers = data.get("waivers") or []
    for w in waivers:
        for key in ("check", "resources", "reason"):
            if not w.get(key):
                raise RuntimeError(f"{path}: every waiver needs check, resources and reason; got {w}")
    return waivers


def step_checkov(work: Path) -> list[str]:
    rendered = work / "rendered"
    problems: list[str] = []
    summary = []
    jobs: dict[str, list[str]] = {}
    for v in lib.VARIANTS:
        scan = work / "checkov" / v.name
        scan.mkdir(parents=True, exist_ok=True)
        for chart in lib.CHARTS:
            (scan / f"{chart}.yaml").write_text((rendered / v.name / f"{chart}.yaml").read_text())
        for p in lib.plain_manifest_files(v.name):
            (scan / f"plain-{p.name}").write_text(p.read_text())
        jobs[v.name] = ["-d", str(scan), "--framework", "kubernetes"]
    jobs["dockerfile"] = ["--framework", "dockerfile"]
    for d in sorted((REPO / "app").glob("*/Dockerfile")):
        jobs["dockerfile"] += ["-f", str(d)]
    # Each checkov run spends most of its time starting up: run them side by side (at most
    # four at once: they are memory-hungry and the machines have two cores).
    with ThreadPoolExecutor(max_workers=min(len(jobs), 4)) as pool:
        futures = {name: pool.submit(run_checkov, args) for name, args in jobs.items()}
        results = {name: f.result() for name, f in futures.items()}

    for v in lib.VARIANTS:
        env = v.name
        result = results[env]
        if v.env == "dev":
            waivers = load_waivers()
            used = set()
            for f in result["failed"]:
                match = [i for i, w in enumerate(waivers) if w["check"] == f["check"]
                         and any(fnmatch.fnmatchcase(f["resource"], pat) for pat in w["resources"])]
                if match:
                    used.update(match)
                else:
                    problems.append(f"checkov {env}: {f['check']} {f['name']}: {f['resource']} ({f['file']}) "
                                    f"- fix it, or waive it with a reason in scripts/checkov-dev-waivers.yaml")
            for i, w in enumerate(waivers):
                if i not in used:
                    problems.append(f"checkov {env}: waiver {w['check']} {w['resources']} matched nothing: remove it from scripts/checkov-dev-waivers.yaml")
            summary.append(f"{env} {result['passed']} passed, {len(result['failed'])} waived")
        else:
            for f in result["failed"]:
                problems.append(f"checkov {env}: {f['check']} {f['name']}: {f['resource']} ({f['file']})")
            summary.append(f"{env} {result['passed']} passed, {len(result['failed'])} failed")
    result = results["dockerfile"]
    for f in result["failed"]:
        problems.append(f"checkov dockerfile: {f['check']} {f['name']}: {f['resource']}")
    summary.append(f"Dockerfiles {result['passed']} passed, {len(result['failed'])} failed")
    if not problems:
        print("checkov: " + "; ".join(summary))
    return problems


STEPS = {"render": step_render, "kube": step_kube, "checkov": step_checkov}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in STEPS:
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[1])
    try:
        problems = STEPS[argv[0]](work)
    except (RuntimeError, OSError, yaml.YAMLError) as err:
        problems = [str(err)]
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
