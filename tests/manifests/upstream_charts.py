"""The real platform charts, rendered offline as `pulsedev up` renders them (issue 12).

Sources: $PULSEDEV_UPSTREAM_CHARTS, the exported upstream charts (README.md and MANIFEST.tsv
there: repository, commit and chart version of each). scripts/test sets it to
../shared/upstream-charts when that folder exists. Without it the pinned charts are
downloaded from their repositories as `up` fetches them (repository index, then the
archive, checked against the pin's sha256 when it has one); with CI set, a chart that cannot
be had is a failure, never a skip.

Each pinned chart is assembled (dependencies under charts/, cert-manager's version set to its
tag as its release tooling does), packaged with Helm's own packager into a pulsedev chart
cache, and then:
  - the shim renders every chart of the sources byte for byte as Helm's own install
    pipeline does (helm-python-sdk install --dry-run=client: Helm's render, SplitManifests
    and SortManifests), with the values, release and namespace `up` uses;
  - `pulsedev render --env dev --with observability` renders them all from the cache with no
    network (any HTTP(S) request goes to a closed proxy port);
  - core kinds pass kubernetes-validate --strict for Kubernetes 1.36; custom resources (the
    charts' and ours, staging/prod's too) pass the openAPIV3Schema of their CRD from these
    sources, strictly (unknown fields are errors unless the schema preserves them);
  - every name `up` and `status` wait on is in the rendered output;
  - every key of our values files changes the output (else it is a typo or dead);
  - values of charts whose schema refers to schemas on the web meet that schema with the
    references resolved from kubernetes-validate's local copy of the definitions;
  - our NetworkPolicies open only ports the selected pods listen on; Tempo and the collector
    listen for OTLP only.

Run: python tests/manifests/upstream_charts.py (scripts/validate-manifests step `upstream`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import unittest
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import referencing
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifests_lib as lib  # noqa: E402

sys.path.insert(0, str(lib.REPO / "scripts" / "helm-shim"))
import helm as shim  # noqa: E402  (scripts/helm-shim/helm.py)

import helm_python  # noqa: E402

SOURCES_ENV = "PULSEDEV_UPSTREAM_CHARTS"
CLOSED_PROXY = "http://127.0.0.1:9"


def is_ci() -> bool:
    return os.environ.get("CI", "") not in ("", "0", "false")


def pins() -> dict[str, dict[str, Any]]:
    return tomllib.loads((lib.REPO / "manifests/platform/pins.toml").read_text())


def manifest_rows(src: Path) -> list[dict[str, str]]:
    lines = [line for line in (src / "MANIFEST.tsv").read_text().splitlines() if line.strip()]
    header = lines[0].lstrip("# ").split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


def release_version(row: dict[str, str]) -> str:
    """cert-manager keeps v0.0.0 in its source; its release tooling sets the tag."""
    return row["ref"] if row["chart-version"] == "v0.0.0" else row["chart-version"]


def chart_dirs(src: Path) -> list[tuple[dict[str, str], Path]]:
    return [(row, src / row["name"]) for row in manifest_rows(src) if (src / row["name"] / "Chart.yaml").is_file()]


def assemble(src: Path, row: dict[str, str], work: Path) -> Path:
    """A copy of the chart with its dependencies under charts/ (the sources are read-only)."""
    out = work / row["name"]
    shutil.copytree(src / row["name"], out, symlinks=False)
    meta = yaml.safe_load((out / "Chart.yaml").read_text())
    if row["chart-version"] == "v0.0.0":
        text = (out / "Chart.yaml").read_text()
        text = text.replace("\nversion: v0.0.0", f"\nversion: {row['ref']}").replace(
            "\nappVersion: v0.0.0", f"\nappVersion: {row['ref']}")
        (out / "Chart.yaml").write_text(text)
    others = {yaml.safe_load((d / "Chart.yaml").read_text())["name"]: (r, d) for r, d in chart_dirs(src)}
    for dep in meta.get("dependencies") or []:
        if (out / "charts" / dep["name"]).exists():
            continue
        if dep["name"] not in others:
            raise AssertionError(f"{row['name']}: dependency {dep['name']} is not in {src}")
        dep_row, _ = others[dep["name"]]
        want, have = str(dep.get("version", "")), release_version(dep_row)
        if want and not (want == have or (want.endswith(".*") and have.startswith(want[:-1]))):
            raise AssertionError(f"{row['name']}: needs {dep['name']} {want}, the sources have {have}")
        (out / "charts").mkdir(exist_ok=True)
        shutil.copytree(src / dep_row["name"], out / "charts" / dep["name"])
    return out


def package(chart_dir: Path, dest: Path) -> Path:
    return Path(helm_python.package(chart_dir, destination=dest))


def download(pin: dict[str, Any], dest: Path) -> Path:
    """What `helm pull <chart> --repo <url> --version <v>` does: the index, then the archive."""
    base = pin["repo_url"].rstrip("/") + "/"
    with urllib.request.urlopen(base + "index.yaml", timeout=60) as r:
        index = yaml.safe_load(r.read())
    entry = next(e for e in index["entries"][pin["chart"]] if e["version"] == pin["version"])
    url = urllib.parse.urljoin(base, entry["urls"][0])
    with urllib.request.urlopen(url, timeout=120) as r:
        data = r.read()
    if pin.get("sha256") and hashlib.sha256(data).hexdigest() != pin["sha256"].lower():
        raise AssertionError(f"{pin['chart']} {pin['version']}: the download does not match the pinned sha256")
    out = dest / f"{pin['chart']}-{pin['version']}.tgz"
    out.write_bytes(data)
    return out


class Fixture:
    """The pinned charts, packaged once into a pulsedev chart cache."""

    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pulsedev-upstream-"))
        self.cache = self.tmp / "cache"
        self.charts = self.cache / "pulsedev" / "charts"
        self.charts.mkdir(parents=True)
        self.pins = pins()
        self.archives: dict[str, Path] = {}
        self.assembled: dict[str, Path] = {}
        self.rendered: dict[str, list[dict[str, Any]]] = {}
        env = os.environ.get(SOURCES_ENV)
        self.src = Path(env) if env else None
        if self.src is not None:
            if not (self.src / "MANIFEST.tsv").is_file():
                raise AssertionError(f"{SOURCES_ENV}={env} has no MANIFEST.tsv")
            rows = manifest_rows(self.src)
            for key, pin in self.pins.items():
                match = [r for r in rows if (self.src / r["name"] / "Chart.yaml").is_file()
                         and yaml.safe_load((self.src / r["name"] / "Chart.yaml").read_text())["name"] == pin["chart"]
                         and release_version(r) == pin["version"]]
                if not match:
                    raise AssertionError(f"pins.toml [{key}] {pin['chart']} {pin['version']} is not in {self.src} "
                                         "(pin a version the sources have, or add its source)")
                chart = assemble(self.src, match[0], self.tmp / "src")
                self.assembled[key] = chart
                archive = package(chart, self.charts)
                assert archive.name == f"{pin['chart']}-{pin['version']}.tgz", archive
                self.archives[key] = archive
        else:
            for key, pin in self.pins.items():
                try:
                    self.archives[key] = download(pin, self.charts)
                except Exception as err:  # noqa: BLE001 - any failure to obtain it
                    if is_ci():
                        raise AssertionError(f"{key}: cannot download {pin['chart']} {pin['version']}: {err}") from err
                    raise unittest.SkipTest(f"no {SOURCES_ENV} and {pin['chart']} cannot be downloaded: {err}") from err
                out = self.tmp / "src" / key
                out.mkdir(parents=True)
                helm_python.expand(out, self.archives[key])
                self.assembled[key] = out / pin["chart"]

        # What pulsedev keeps after its own download of an unpinned chart (the digest
        # beside the archive; src/stack.rs `recorded_digest`): only such archives are read.
        for archive in self.archives.values():
            digest = hashlib.sha256(archive.read_bytes()).hexdigest()
            archive.with_name(archive.name + ".sha256").write_text(digest + "\n")
        # The project pulsedev renders from: this repository, except that archives packaged
        # here from the sources are not the release archives whose digests pins.toml pins.
        self.project = lib.REPO if self.src is None else self.project_with_unpinned_charts()

    def project_with_unpinned_charts(self) -> Path:
        root = self.tmp / "project"
        platform = root / "manifests" / "platform"
        platform.mkdir(parents=True)
        for entry in lib.REPO.iterdir():
            if entry.name != "manifests":
                (root / entry.name).symlink_to(entry)
        for entry in (lib.REPO / "manifests").iterdir():
            if entry.name != "platform":
                (root / "manifests" / entry.name).symlink_to(entry)
        for entry in (lib.REPO / "manifests" / "platform").iterdir():
            if entry.name != "pins.toml":
                (platform / entry.name).symlink_to(entry)
        text = (lib.REPO / "manifests" / "platform" / "pins.toml").read_text()
        (platform / "pins.toml").write_text(re.sub(r'(?m)^sha256 = "[0-9a-fA-F]{64}"$', 'sha256 = ""', text))
        return root

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


FIX: Fixture | None = None


def setUpModule() -> None:  # noqa: N802 - unittest's name
    global FIX
    FIX = Fixture()


def tearDownModule() -> None:  # noqa: N802
    if FIX is not None:
        FIX.close()


def fix() -> Fixture:
    assert FIX is not None
    return FIX


def offline_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for k in ("NO_PROXY", "no_proxy"):
        env.pop(k, None)
    env.update({"HTTPS_PROXY": CLOSED_PROXY, "HTTP_PROXY": CLOSED_PROXY,
                "https_proxy": CLOSED_PROXY, "http_proxy": CLOSED_PROXY})
    env["PATH"] = f"{lib.REPO / 'scripts' / 'helm-shim'}:{env.get('PATH', '')}"
    env.update(extra)
    return env


def pulsedev_bin() -> Path:
    subprocess.run(["cargo", "build", "--quiet", "--locked", "--bin", "pulsedev"], cwd=lib.REPO, check=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", lib.REPO / "target"))
    return target / "debug" / "pulsedev"


def pulsedev_render(*args: str) -> dict[str, Any]:
    f = fix()
    home = f.tmp / "home"
    home.mkdir(exist_ok=True)
    run = subprocess.run([str(pulsedev_bin()), "render", *args, "--output", "json"], cwd=f.project,
                         capture_output=True, text=True,
                         env=offline_env(HOME=str(home), XDG_CACHE_HOME=str(f.cache)))
    if run.returncode != 0:
        raise AssertionError(f"pulsedev render {' '.join(args)} failed:\n{run.stderr}{run.stdout}")
    return json.loads(run.stdout)


class Loader(yaml.SafeLoader):
    """YAML 1.2 as Kubernetes reads it: `=` is a plain string, not YAML 1.1's value key."""


Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.load_all(text, Loader=Loader) if isinstance(d, dict)]


def helm_manifest(chart_dir: Path, release: str, ns: str, values: dict[str, Any], skip_schema: bool) -> str:
    """Helm's own `install --dry-run=client` manifest as `helm template --no-hooks` prints it
    (helm/helm pkg/cmd/template.go: the manifest trimmed, then a newline)."""
    with helm_python.Config(namespace=ns) as cfg, helm_python.Chart.load(chart_dir) as chart:
        opts: dict[str, Any] = {"namespace": ns, "dry_run": "client"}
        if skip_schema:
            opts["skip_schema_validation"] = True
        payload = helm_python._native.call_string(
            "helm_install", cfg._raw(), cfg._context_arg(None), *cfg._chart_args(chart), release,
            json.dumps(values), json.dumps(opts))
    return json.loads(payload)["manifest"].strip() + "\n"


def mask_random(a: str, b: str, text: str) -> str:
    """`text` with the lines that differ between two renders of Helm's (a, b) blanked:
    values from randAlphaNum and the like (grafana's and minio's generated passwords)."""
    la, lb, lt = a.splitlines(), b.splitlines(), text.splitlines()
    if not (len(la) == len(lb) == len(lt)):
        return text
    return "\n".join("<random>" if x != y else t for x, y, t in zip(la, lb, lt))


def remote_refs(chart_dir: Path) -> bool:
    return any('"$ref": "http' in p.read_text().replace("'", '"')
               for p in chart_dir.rglob("values.schema.json"))


# ---------------------------------------------------------------------------------------
# CRD schemas, strictly: properties without additionalProperties are closed, as the API
# server's strict field validation treats unknown fields (unless preserved).

def strict_schema(schema: Any) -> Any:
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()
           if k not in ("x-kubernetes-preserve-unknown-fields", "x-kubernetes-int-or-string", "nullable")}
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out = {"anyOf": [{"type": "integer"}, {"type": "string"}], **{k: v for k, v in out.items() if k != "anyOf"}}
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return out
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def crd_versions(crds: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    out = {}
    for crd in crds:
        spec = crd["spec"]
        for v in spec["versions"]:
            schema = (v.get("schema") or {}).get("openAPIV3Schema")
            if schema is not None:
                top = copy.deepcopy(schema)
                # metadata is the API server's ObjectMeta, not the CRD's to describe.
                top.setdefault("properties", {})["metadata"] = {"type": "object"}
                top["properties"].setdefault("apiVersion", {"type": "string"})
                top["properties"].setdefault("kind", {"type": "string"})
                out[(f"{spec['group']}/{v['name']}", spec["names"]["kind"])] = strict_schema(top)
    return out


def source_crds() -> list[dict[str, Any]]:
    """CRDs of the sources that are not charts (external-secrets for staging/prod)."""
    f = fix()
    out: list[dict[str, Any]] = []
    if f.src is not None:
        for p in sorted((f.src / "external-secrets-crds").glob("*.yaml")):
            out += [d for d in docs(p.read_text()) if d.get("kind") == "CustomResourceDefinition"]
    return out


def leaves(values: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(values, dict) and values:
        return [p for k, v in values.items() for p in leaves(v, prefix + (k,))]
    return [prefix]


def without(values: dict[str, Any], path: tuple[Any, ...]) -> dict[str, Any]:
    out = copy.deepcopy(values)
    node = out
    for k in path[:-1]:
        node = node[k]
    del node[path[-1]]
    return out


class UpstreamCharts(unittest.TestCase):
    dev: dict[str, Any]

    @classmethod
    def setUpClass(cls) -> None:
        cls.dev = pulsedev_render("--env", "dev", "--with", "observability")

    def objects(self) -> list[dict[str, Any]]:
        if not hasattr(self, "_objects"):
            type(self)._objects = docs(self.dev["yaml"])
        return copy.deepcopy(self._objects)

    def test_render_uses_every_cached_chart_offline(self) -> None:
        self.assertEqual(self.dev["skipped"], [])
        for key, pin in fix().pins.items():
            self.assertIn(f"{pin['chart']}-{pin['version']}", self.dev["sources"], key)
        print(f"pulsedev render --env dev --with observability: {len(self.objects())} objects from "
              + ", ".join(f"{p['chart']} {p['version']}" for p in fix().pins.values()), file=sys.stderr)

    def test_the_shim_renders_like_helms_own_pipeline(self) -> None:
        """Every chart of the sources (the pinned ones with our values, release and
        namespace), byte for byte as Helm's install --dry-run=client prints its manifest."""
        f = fix()
        cases: list[tuple[str, Path, str, str, dict[str, Any]]] = []
        for key, pin in f.pins.items():
            values = shim.read_values_file(str(lib.REPO / pin["values"]))
            cases.append((key, f.assembled[key], pin["release"], pin["namespace"], values))
        for name in lib.CHARTS:
            values = shim.read_values_file(str(lib.REPO / "manifests/envs/dev/values.yaml"))
            cases.append((name, lib.REPO / "manifests/charts" / name, name, "pulsewatch-dev", values))
        if f.src is not None:
            done = {p.name for p in f.assembled.values()}
            for row, d in chart_dirs(f.src):
                if row["name"] not in done:
                    cases.append((row["name"], assemble(f.src, row, f.tmp / "others"), row["name"], "default", {}))
        os.environ["KUBECONFIG"] = str(f.tmp / "no-kubeconfig")
        for key, chart_dir, release, ns, values in cases:
            skip = remote_refs(chart_dir)
            with self.subTest(chart=key):
                want = helm_manifest(chart_dir, release, ns, values, skip)
                vals = f.tmp / f"{key}-values.json"
                vals.write_text(json.dumps(values))
                args = ["template", release, str(chart_dir), "--namespace", ns, "--no-hooks", "-f", str(vals)]
                run = subprocess.run([str(lib.HELM), *args, *(["--skip-schema-validation"] if skip else [])],
                                     capture_output=True, text=True, env=offline_env())
                self.assertEqual(run.returncode, 0, run.stderr)
                got = run.stdout
                if got != want:
                    again = helm_manifest(chart_dir, release, ns, values, skip)
                    got, want = mask_random(want, again, got), mask_random(want, again, want)
                self.assertEqual(got, want, f"{key}: the shim differs from Helm's own output")
        print(f"helm shim == Helm's install pipeline for {len(cases)} charts", file=sys.stderr)

    def test_core_kinds_are_valid_for_kubernetes_1_36(self) -> None:
        problems = []
        for obj in self.objects():
            try:
                version = kubernetes_validate.validate(obj, lib.KUBE_VERSION, strict=True)
                if version != "1.36":
                    problems.append(f"{obj['kind']}/{obj['metadata']['name']}: validated against {version}")
            except kubernetes_validate.SchemaNotFoundError:
                continue  # custom resources: next test
            except kubernetes_validate.ValidationError as err:
                where = ".".join(str(p) for p in err.path) or "<root>"
                problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {err.message}")
        self.assertEqual(problems, [])

    def test_custom_resources_meet_their_crds(self) -> None:
        """The charts' custom resources and ours (dev with observability, staging, prod)."""
        crds = [o for o in self.objects() if o["kind"] == "CustomResourceDefinition"] + source_crds()
        schemas = crd_versions(crds)
        objects = self.objects()
        for env in ("staging", "prod"):
            objects += docs(pulsedev_render("--env", env)["yaml"])
        checked, problems = 0, []
        for obj in objects:
            if obj["kind"] == "CustomResourceDefinition":
                continue
            try:
                kubernetes_validate.validate(obj, lib.KUBE_VERSION, strict=True)
                continue
            except kubernetes_validate.SchemaNotFoundError:
                pass
            except kubernetes_validate.ValidationError:
                continue  # reported by the core-kinds test
            name = f"{obj['apiVersion']} {obj['kind']}/{obj['metadata']['name']}"
            schema = schemas.get((obj["apiVersion"], obj["kind"]))
            if schema is None:
                if fix().src is None and obj["apiVersion"].startswith("external-secrets.io/"):
                    continue  # its CRDs come only with the sources
                problems.append(f"{name}: no CRD in the sources serves it")
                continue
            checked += 1
            for err in jsonschema.Draft7Validator(schema).iter_errors(obj):
                where = ".".join(str(p) for p in err.path) or "<root>"
                problems.append(f"{name}: {where}: {err.message}")
        self.assertEqual(problems, [])
        self.assertTrue(any(k == "ExternalSecret" for _, k in schemas) or fix().src is None)
        print(f"{checked} custom resources valid against {len(schemas)} CRD versions", file=sys.stderr)

    def test_workload_images_are_every_container_image_up_applies(self) -> None:
        """pulsedev's list of the images the cluster's own workloads run (what `fetch`
        caches and `up` imports into the nodes), on the real charts: every container and
        init container image of every pod template in the render, Helm hooks left out
        (`up` does not apply them), the services' own images left out, normalised as
        containerd names them (distribution/reference normalize.go)."""
        def normalise(ref: str) -> str:
            name, _, digest = ref.partition("@")
            slash = name.rfind("/") + 1
            tag = ""
            if ":" in name[slash:]:
                name, tag = name[: slash + name[slash:].rfind(":")], name[slash + name[slash:].rfind(":") + 1:]
            first, _, rest = name.partition("/")
            if not rest or not ("." in first or ":" in first or first == "localhost"):
                first, rest = "docker.io", name
            if first == "docker.io" and "/" not in rest:
                rest = "library/" + rest
            if not tag and not digest:
                tag = "latest"
            return f"{first}/{rest}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")

        want: set[str] = set()
        hooks: set[str] = set()
        for o in self.objects():
            if o["kind"] in ("Prometheus", "Alertmanager") and o["apiVersion"].startswith("monitoring.coreos.com/"):
                if "image" in o["spec"]:
                    want.add(normalise(o["spec"]["image"]))
                continue
            if o["kind"] not in ("Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"):
                continue
            spec = {
                "Pod": lambda o: o.get("spec"),
                "CronJob": lambda o: o["spec"]["jobTemplate"]["spec"]["template"]["spec"],
            }.get(o["kind"], lambda o: o["spec"]["template"]["spec"])(o)
            containers = [c for k in ("initContainers", "containers") for c in (spec or {}).get(k) or []]
            images = {c["image"] for c in containers}
            # The Prometheus Operator's sidecar for the pods it makes, named by its flag.
            images |= {a.split("=", 1)[1] for c in containers for a in c.get("args") or []
                       if a.startswith("--prometheus-config-reloader=")}
            # A cached image serves the pod only if the kubelet does not pull anyway:
            # `Always` (or `latest` with no policy: kubernetes pkg/apis/core/v1/defaults.go
            # SetDefaults_Container) would pull on every start.
            for c in containers:
                policy = c.get("imagePullPolicy")
                self.assertNotEqual(policy, "Always", f"{o['kind']}/{o['metadata']['name']}: {c['name']}")
                if policy is None:
                    self.assertFalse(c["image"].endswith(":latest") or ":" not in c["image"].rsplit("/", 1)[-1],
                                     f"{o['kind']}/{o['metadata']['name']}: {c['image']} defaults to Always")
            if "helm.sh/hook" in (o["metadata"].get("annotations") or {}):
                hooks |= images
            elif not any(i.startswith("localhost:5001/pulsewatch/") for i in images):
                want |= {normalise(i) for i in images}
        got = self.dev["workload_images"]
        self.assertEqual(got, sorted(want))
        for must in ("docker.io/library/postgres:17-alpine@sha256:", "docker.io/library/redis:7.4-alpine@sha256:",
                     "quay.io/jetstack/cert-manager-controller:", "quay.io/jetstack/cert-manager-webhook:",
                     "quay.io/jetstack/cert-manager-cainjector:", "nginx/nginx-ingress:",
                     "quay.io/prometheus/prometheus:", "quay.io/prometheus/alertmanager:",
                     "quay.io/prometheus-operator/prometheus-config-reloader:"):
            self.assertTrue(any(must in g for g in got), f"{must} not in {got}")
        self.assertFalse(any("pulsewatch" in g for g in got), got)
        # cert-manager's startupapicheck is a post-install hook our values switch off.
        self.assertFalse(any("startupapicheck" in g for g in got + sorted(hooks)), got)
        print(f"{len(got)} workload images: " + ", ".join(got), file=sys.stderr)

    def test_every_name_up_and_status_wait_on_is_rendered(self) -> None:
        objs: dict[tuple[str, str | None, str], dict[str, Any]] = {}
        for o in self.objects():
            meta = o["metadata"]
            objs[(o["kind"], meta.get("namespace"), meta["name"])] = o
            # Namespace-less chart objects go to the chart's namespace (helm template -n).
            objs.setdefault((o["kind"], None, meta["name"]), o)

        def has(kind: str, ns: str, name: str) -> bool:
            return (kind, ns, name) in objs or (kind, None, name) in objs
        missing = []
        for key, pin in fix().pins.items():
            for w in pin.get("wait", []):
                kind, name = w.split("/", 1)
                ns = pin["namespace"]
                if has(kind, ns, name):
                    continue
                # StatefulSets the Prometheus Operator makes: prometheus-<Prometheus name>,
                # alertmanager-<Alertmanager name> (prometheus-operator pkg/prometheus and
                # pkg/alertmanager statefulset names).
                made = [(cr, name[len(prefix):]) for prefix, cr in (("prometheus-", "Prometheus"), ("alertmanager-", "Alertmanager"))
                        if kind == "StatefulSet" and name.startswith(prefix)]
                if not any(has(cr, ns, rest) for cr, rest in made):
                    missing.append(f"[{key}] wait {w} in {ns}")
        # Sized for a laptop: one replica of each stateful store.
        for name in ("loki", "tempo"):
            sts = objs.get(("StatefulSet", "monitoring", name)) or objs.get(("StatefulSet", None, name))
            self.assertEqual((sts or {}).get("spec", {}).get("replicas"), 1, name)
        # src/kube/status.rs StatusSpec::for_stack: the platform rows.
        for kind, ns, name in [("Deployment", "cert-manager", "cert-manager"),
                               ("Deployment", "cert-manager", "cert-manager-cainjector"),
                               ("Deployment", "cert-manager", "cert-manager-webhook")]:
            if not has(kind, ns, name):
                missing.append(f"status: {kind} {ns}/{name}")
        if not any(k == "Deployment" and ns in ("platform", None)
                   and o["spec"]["selector"]["matchLabels"].get("app.kubernetes.io/name") == "nginx-ingress"
                   for (k, ns, _), o in objs.items()):
            missing.append("status: a Deployment in platform labelled app.kubernetes.io/name=nginx-ingress")
        # up's webhook gate probes cert-manager's webhook through its Service.
        if not has("Service", "cert-manager", "cert-manager-webhook"):
            missing.append("up: Service cert-manager/cert-manager-webhook")
        self.assertEqual(missing, [])

    def test_every_key_of_our_values_changes_the_output(self) -> None:
        """A key whose removal changes nothing is a typo or dead, unless it restates the
        chart's default (kept on purpose: the behaviour we rely on, stated where a chart
        upgrade that changes the default shows in review); those are listed, not failed."""
        f = fix()
        dead, restated = [], []
        for key, pin in f.pins.items():
            values = shim.read_values_file(str(lib.REPO / pin["values"]))
            with helm_python.Chart.load(f.archives[key]) as loaded, tempfile.TemporaryDirectory() as work:
                defaults = loaded.merge_values({})
                saved = loaded.save_dir(work)
                for schema in Path(saved).rglob("values.schema.json"):
                    schema.unlink()  # as --skip-schema-validation (nginx-ingress's refer to the web)
                def render(v: dict[str, Any]) -> tuple[dict[str, str], list[str]]:
                    # A fresh load each time: the CRDs `up` installs (--include-crds) follow
                    # the subcharts' conditions of the render.
                    with helm_python.Chart.load(saved) as chart:
                        out = chart.render(values=v, name=pin["release"], namespace=pin["namespace"],
                                           is_install=True, is_upgrade=False)
                        return out, [c.get("filename") or c.get("name") for c in chart.crds]
                full = render(values)
                for path in leaves(values):
                    try:
                        same = render(without(values, path)) == full
                    except helm_python.HelmError:
                        same = False  # the chart needs it
                    if not same:
                        continue
                    ours, default = values, defaults
                    for k in path:
                        ours = ours[k]
                        default = default.get(k, KeyError) if isinstance(default, dict) else KeyError
                    where = f"{pin['values']}: {'.'.join(map(str, path))}"
                    if default is KeyError or default != ours:
                        dead.append(f"{where} (chart default: {'none' if default is KeyError else default!r})")
                    else:
                        restated.append(where)
        print(f"{len(restated)} keys restate the chart's default", file=sys.stderr)
        self.maxDiff = None
        self.assertEqual(dead, [], "keys that change nothing: a typo, or dead")

    def test_values_meet_schemas_that_refer_to_the_web_resolved_locally(self) -> None:
        f = fix()
        defs_dir = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / "v1.36.0-local"
        defs = json.loads((defs_dir / "_definitions.json").read_text())
        local = referencing.Resource.from_contents({**defs, "definitions": defs["$defs"]},
                                                   default_specification=referencing.jsonschema.DRAFT202012)
        checked = 0
        for key, pin in f.pins.items():
            chart_dir = f.assembled[key]
            if not remote_refs(chart_dir):
                continue
            schema = json.loads((chart_dir / "values.schema.json").read_text())
            urls = set()

            def collect(node: Any) -> None:
                if isinstance(node, dict):
                    ref = node.get("$ref")
                    if isinstance(ref, str) and ref.startswith("http"):
                        urls.add(ref.split("#")[0])
                    for v in node.values():
                        collect(v)
                elif isinstance(node, list):
                    for v in node:
                        collect(v)
            collect(schema)
            # kubernetes-json-schema v1.36.x: kubernetes-validate's 1.36 definitions.
            self.assertTrue(all("/v1.36." in u and u.endswith("/_definitions.json") for u in urls), urls)
            registry = referencing.Registry().with_resources([(u, local) for u in urls])
            values = shim.read_values_file(str(lib.REPO / pin["values"]))
            with helm_python.Chart.load(chart_dir) as chart:
                merged = chart.merge_values(values)
            validator = jsonschema.validators.validator_for(schema)(schema, registry=registry)
            errors = [f"{'.'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(merged)]
            self.assertEqual(errors, [], key)
            checked += 1
        self.assertGreater(checked, 0, "nginx-ingress's schema refers to the web")

    def test_our_network_policies_open_only_ports_the_pods_listen_on(self) -> None:
        objs = self.objects()
        ours = docs((lib.REPO / "manifests/platform/observability/network-policies.yaml").read_text())
        pods = [(o["metadata"].get("namespace"), lib.pod_labels(lib.Obj("", o)), lib.pod_spec(lib.Obj("", o)))
                for o in objs if o["kind"] in lib.WORKLOAD_KINDS]
        problems = []
        for np in (o for o in ours if o["kind"] == "NetworkPolicy"):
            ns = np["metadata"]["namespace"]
            selected = [spec for pns, labels, spec in pods
                        if pns == ns and spec and lib.selector_matches(np["spec"].get("podSelector"), labels)]
            listening = {p.get("containerPort") for spec in selected for c in lib.containers(spec) for p in c.get("ports", [])}
            listening |= {p.get("name") for spec in selected for c in lib.containers(spec) for p in c.get("ports", [])}
            for rule in np["spec"].get("ingress", []):
                for port in rule.get("ports", []):
                    if selected and port.get("port") not in listening:
                        problems.append(f"NetworkPolicy {np['metadata']['name']}: port {port.get('port')} "
                                        f"(the selected pods listen on {sorted(map(str, listening))})")
        self.assertEqual(problems, [])

    def test_tempo_and_the_collector_listen_for_otlp_only(self) -> None:
        """Their configs receive OTLP only, export to nothing unused, and our policies open
        no Jaeger/Zipkin port (tempo 2.2.4 declares those container ports in its template
        whatever the receivers; nothing listens there)."""
        objs = self.objects()
        seen = set()
        for o in objs:
            if o["kind"] != "ConfigMap" or not o["metadata"]["name"].startswith(("tempo", "otel-collector")):
                continue
            for text in (o.get("data") or {}).values():
                config = yaml.safe_load(text) if isinstance(text, str) and "receivers" in text else None
                if not isinstance(config, dict):
                    continue
                receivers = config.get("receivers") or (config.get("distributor") or {}).get("receivers")
                if receivers is None:
                    continue
                seen.add(o["metadata"]["name"])
                self.assertEqual(set(receivers), {"otlp"}, o["metadata"]["name"])
                exporters = set(config.get("exporters") or {})
                self.assertNotIn("debug", exporters, o["metadata"]["name"])
                used = {e for p in ((config.get("service") or {}).get("pipelines") or {}).values()
                        for e in p.get("exporters", [])}
                if exporters:
                    self.assertEqual(exporters - used, set(), f"{o['metadata']['name']}: unused exporters")
        self.assertEqual(seen, {"tempo", "otel-collector"}, "both configs are rendered")
        ours = docs((lib.REPO / "manifests/platform/observability/network-policies.yaml").read_text())
        opened = {p.get("port") for np in ours if np.get("kind") == "NetworkPolicy"
                  for r in np["spec"].get("ingress", []) for p in r.get("ports", [])}
        self.assertEqual(opened & {6831, 6832, 14250, 14268, 9411}, set())

if __name__ == "__main__":
    unittest.main(verbosity=2)
