"""Delivery beyond the laptop (issue 17): the GitHub workflows and the Argo CD objects, offline.

  - every workflow (.github/workflows) is valid against the GitHub workflow schema and every
    local action (.github/actions) against the action schema (check-jsonschema's vendored
    SchemaStore copies), and checkov's github_actions checks pass with zero failures;
  - every `uses:` is pinned by a full commit SHA with its version in a comment (local `./`
    paths excepted; they are this commit), one SHA per action across the repository;
  - every `needs.*.outputs`, `steps.*`, `matrix.*` reference and every script a `run:` names
    resolves, and local actions and reusable workflows get exactly their inputs (what
    actionlint would check; it cannot be installed here); every image build is signed and
    SBOM-attested (checkov's own cosign checks pass without cosign);
  - the deploy order: migrations before api, worker and web in deploy.yml's `needs:` graph,
    staging before prod in release.yml, every delivery after the release manifest;
    per-environment concurrency; AWS only through OIDC roles; nothing secret;
  - the deploy's helm command (scripts/delivery/deploy-chart, recorded) uses flags the pinned
    helm has, the release's OCI chart by digest, and values that render (through the helm
    shim) to exactly the release's image digests; the GitOps commit writes the same values;
  - `pulsedev render --env staging|prod` renders the release manifests/gitops/<env>/images.yaml pins;
  - the Argo CD objects (manifests/gitops) meet the openAPIV3Schema of Argo CD v3.5.1's CRDs
    ($PULSEDEV_UPSTREAM_CHARTS/argo-cd-crds, else downloaded at that tag and checked against
    the SHA-256 below); the Applications the ApplicationSets generate too; every path, values
    file and namespace they name exists and renders through the helm shim; the project
    permits every source, destination and kind; symlinks stay inside the repository as
    Argo CD's repo server requires; and Argo CD's phases and sync waves put migrations before
    the services.

  - scripts/e2e-dev, the e2e workflow's `dev` job, against a stand-in `pulsedev` and a local
    HTTPS server (tests/manifests/e2e_dev.py).

With CI set, a missing tool or source is a failure, never a skip.
Run: python tests/manifests/delivery.py (scripts/validate-manifests step `delivery`).
"""

from __future__ import annotations

import copy
import fnmatch
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
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifests_lib as lib  # noqa: E402
import upstream_charts as upstream  # noqa: E402  (CRD schemas, strictly, as that step checks them)
from e2e_dev import E2eDevScript  # noqa: E402,F401  (the e2e workflow's `dev` job script, run here)

REPO = lib.REPO
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.y*ml"))
ACTIONS = sorted((REPO / ".github" / "actions").glob("*/action.y*ml"))
GITOPS = REPO / "manifests" / "gitops"
BIN = Path(sys.executable).parent
SHA = re.compile(r"^[0-9a-f]{40}$")

# Argo CD v3.5.1 (argoproj/argo-cd commit 109ca7ca71139e514114499d294a492e7910a965),
# manifests/crds: the files in ../shared/upstream-charts/argo-cd-crds (MANIFEST.tsv there).
ARGO_CD_COMMIT = "109ca7ca71139e514114499d294a492e7910a965"
ARGO_CD_CRDS = {
    "application-crd.yaml": "5dde0e229249b6b707beb98674c1deae3949d5c319a6c45b9f5a80c99618e40c",
    "applicationset-crd.yaml": "7d282054f41ca2b71a22bab04a8caf0000e07e53a62432e6ea292dae5ab4f07d",
    "appproject-crd.yaml": "ab225266944322750136f1198d93786e4a79a0e43c8d149abfba44da30a3eac8",
}

# Helm flags the deploy relies on, and the first helm release that has each
# (helm/helm pkg/cmd/upgrade.go and flags.go: --rollback-on-failure and the --wait strategies
# came with v4.0.0; --atomic is only a deprecated alias there).
HELM_FLAGS_SINCE = {"--rollback-on-failure": (4, 0, 0), "--wait=watcher": (4, 0, 0), "--version": (3, 0, 0)}

# Cluster-scoped kinds the charts or the env base could render (everything else is namespaced).
CLUSTER_SCOPED = {("", "Namespace"), ("external-secrets.io", "ClusterSecretStore"),
                  ("rbac.authorization.k8s.io", "ClusterRole"), ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
                  ("apiextensions.k8s.io", "CustomResourceDefinition"), ("", "PersistentVolume"),
                  ("storage.k8s.io", "StorageClass"), ("networking.k8s.io", "IngressClass")}


def is_ci() -> bool:
    return os.environ.get("CI", "") not in ("", "0", "false")


def tool(name: str) -> str:
    """A tool of the venv (scripts/requirements-test.txt); missing is always a failure."""
    path = BIN / name
    if not path.is_file():
        found = shutil.which(name)
        if not found:
            raise AssertionError(f"`{name}` is not installed: run scripts/venv (it is in scripts/requirements-test.txt)")
        return found
    return str(path)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def on(workflow: dict[str, Any]) -> Any:
    # PyYAML reads the key `on` as YAML 1.1's boolean true.
    return workflow.get("on", workflow.get(True))


# ---------------------------------------------------------------------------------------
# `uses:` references

def uses_of(doc: Any) -> list[str]:
    """Every `uses:` value in a workflow or action document (job and step level)."""
    out: list[str] = []
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == "uses" and isinstance(v, str):
                out.append(v)
            else:
                out += uses_of(v)
    elif isinstance(doc, list):
        for v in doc:
            out += uses_of(v)
    return out


def pin_problem(ref: str, line: str) -> str | None:
    """Why a `uses:` reference is not acceptable, or None.

    Local actions and reusable workflows (`./...`) are this commit: they must exist. Anything
    else is `owner/repo[/path]@<40 hex>` with the version it stands for in a comment
    (`# v1.2.3`), the form Dependabot and Renovate keep up to date. A tag or branch can be
    moved to other code after review; a commit cannot.
    """
    if ref.startswith("./"):
        target = REPO / ref[2:]
        if target.is_file() or (target / "action.yml").is_file() or (target / "action.yaml").is_file():
            return None
        return f"{ref}: no such local workflow or action"
    if ref.startswith("docker://"):
        return None if re.search(r"@sha256:[0-9a-f]{64}$", ref) else f"{ref}: a docker image must be pinned by digest"
    name, _, version = ref.partition("@")
    if not name or "/" not in name:
        return f"{ref}: not owner/repo@ref"
    if not SHA.match(version):
        return f"{ref}: pinned by `{version or '(nothing)'}`, not by a full commit SHA"
    if not re.search(r"#\s*\S", line.split(ref, 1)[1]):
        return f"{ref}: say which version the SHA is in a comment (`# v1.2.3`)"
    return None


def uses_lines(path: Path) -> dict[str, str]:
    """The source line of each `uses:` value (for its version comment)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*(?:-\s*)?uses:\s*(\S+)(.*)$", line)
        if m:
            out.setdefault(m.group(1), line)
    return out


class PinRule(unittest.TestCase):
    """The rule itself refuses what it must (else the repository-wide test proves nothing)."""

    def test_tags_branches_and_short_shas_are_refused(self) -> None:
        for ref in ("actions/checkout@v4", "dtolnay/rust-toolchain@stable", "actions/checkout@main",
                    "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b", "actions/checkout",
                    "docker://alpine:3.20", "./.github/actions/none"):
            with self.subTest(ref=ref):
                self.assertIsNotNone(pin_problem(ref, f"- uses: {ref} # v1"))
        sha = "actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1"
        self.assertIsNotNone(pin_problem(sha, f"- uses: {sha}"), "a SHA without its version comment")
        self.assertIsNone(pin_problem(sha, f"- uses: {sha} # v7.0.1"))


class Workflows(unittest.TestCase):
    def test_there_are_workflows_and_actions_to_check(self) -> None:
        names = {p.name for p in WORKFLOWS}
        self.assertTrue({"ci.yml", "e2e.yml", "release.yml", "deploy.yml"} <= names, names)
        self.assertTrue(ACTIONS, "no local actions under .github/actions")

    def test_valid_against_the_github_workflow_and_action_schemas(self) -> None:
        exe = tool("check-jsonschema")
        for schema, files in (("vendor.github-workflows", WORKFLOWS), ("vendor.github-actions", ACTIONS)):
            run = subprocess.run([exe, "--builtin-schema", schema, *map(str, files)], capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, f"check-jsonschema {schema}:\n{run.stdout}{run.stderr}")
        print(f"check-jsonschema: {len(WORKFLOWS)} workflows, {len(ACTIONS)} actions valid", file=sys.stderr)

    def test_checkov_github_actions_zero_failures(self) -> None:
        exe = tool("checkov")
        run = subprocess.run([exe, "--skip-download", "--framework", "github_actions", "-d", str(REPO / ".github"),
                              "--compact", "-o", "json"], capture_output=True, text=True)
        try:
            reports = json.loads(run.stdout)
        except json.JSONDecodeError:
            self.fail(f"checkov printed no JSON (exit {run.returncode}):\n{run.stdout[-2000:]}{run.stderr[-2000:]}")
        reports = reports if isinstance(reports, list) else [reports]
        failed = [f"{f['check_id']} {f['file_path']}: {f['check_name']}"
                  for r in reports for f in (r.get("results") or {}).get("failed_checks", [])]
        passed = [p for r in reports for p in (r.get("results") or {}).get("passed_checks", [])]
        self.assertEqual(failed, [])
        scanned = {p["file_path"].rsplit("/", 1)[-1] for p in passed}
        self.assertEqual(scanned, {p.name for p in WORKFLOWS}, "checkov did not scan every workflow")
        print(f"checkov github_actions: {len(passed)} passed, 0 failed over {len(scanned)} workflows", file=sys.stderr)

    def test_every_uses_is_pinned_by_a_full_commit_sha(self) -> None:
        problems: list[str] = []
        pins: dict[str, set[str]] = {}
        for path in [*WORKFLOWS, *ACTIONS]:
            lines = uses_lines(path)
            for ref in uses_of(load_yaml(path)):
                problem = pin_problem(ref, lines.get(ref, ""))
                if problem:
                    problems.append(f"{path.relative_to(REPO)}: {problem}")
                elif "@" in ref and not ref.startswith("docker://"):
                    name, _, sha = ref.partition("@")
                    pins.setdefault(name, set()).add(sha)
        self.assertEqual(problems, [])
        several = {k: v for k, v in pins.items() if len(v) > 1}
        self.assertEqual(several, {}, "one commit per action across the workflows (bump them together)")
        self.assertTrue(pins)

    def test_no_secrets_and_aws_only_through_oidc_roles(self) -> None:
        for path in [*WORKFLOWS, *ACTIONS]:
            text = path.read_text()
            with self.subTest(file=path.name):
                # Nothing secret in the workflows: roles through OIDC, app secrets from External Secrets.
                self.assertNotRegex(text, r"\$\{\{[^}]*\bsecrets\.")
                self.assertNotRegex(text, r"(?m)^\s*secrets:")
                self.assertNotRegex(text, r"aws-(access-key-id|secret-access-key|session-token)\s*:")
        for path in WORKFLOWS:
            wf = load_yaml(path)
            for name, job in (wf.get("jobs") or {}).items():
                steps = job.get("steps") or []
                aws = [s for s in steps if str(s.get("uses", "")).startswith("aws-actions/configure-aws-credentials@")]
                local = [s for s in steps if str(s.get("uses", "")) == "./.github/actions/deploy-chart"]
                for s in aws:
                    self.assertIn("role-to-assume", s.get("with") or {}, f"{path.name} {name}")
                if aws or local:
                    self.assertEqual((job.get("permissions") or {}).get("id-token"), "write",
                                     f"{path.name} {name}: OIDC needs id-token: write")

    def test_every_reference_resolves(self) -> None:
        problems = []
        for path in WORKFLOWS:
            problems += dangling_references(path, load_yaml(path))
        self.assertEqual(problems, [])
        wf = load_yaml(REPO / ".github/workflows/release.yml")
        broken = copy.deepcopy(wf)
        broken["jobs"]["deploy-prod"]["needs"] = ["deploy-staging"]
        broken["jobs"]["images"]["steps"][2].pop("id")
        broken["jobs"]["deploy-staging"]["with"]["env"] = "staging"
        found = dangling_references(REPO / ".github/workflows/release.yml", broken)
        self.assertTrue(any("needs.manifest.outputs.release" in p for p in found), found)
        self.assertTrue(any("no earlier step has id ecr" in p for p in found), found)
        self.assertTrue(any("declares no input env" in p for p in found), found)

    def test_workflow_permissions_default_to_none(self) -> None:
        for name in ("release.yml", "deploy.yml"):
            wf = load_yaml(REPO / ".github/workflows" / name)
            self.assertEqual(wf.get("permissions"), {}, f"{name}: jobs ask for what they need")


EXPR = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def dangling_references(path: Path, wf: dict[str, Any]) -> list[str]:
    """What actionlint would refuse and this machine cannot run actionlint for: a
    `needs.<job>.outputs.<o>` whose job is not in `needs:` or has no such output, a
    `steps.<id>` that no earlier step has, a `matrix.<key>` the matrix lacks, a script in
    `run:` that does not exist, a local action or reusable workflow called with inputs it
    does not declare or without a required one."""
    problems = []
    jobs = wf.get("jobs") or {}
    for name, job in jobs.items():
        needs = job.get("needs") or []
        needs = [needs] if isinstance(needs, str) else needs
        matrix_keys = set()
        for row in ((job.get("strategy") or {}).get("matrix") or {}).get("include", []):
            matrix_keys |= set(row)
        seen_steps: set[str] = set()

        def refs(value: Any, where: str) -> None:
            for expr in EXPR.findall(json.dumps(value)):
                for dep, out in re.findall(r"needs\.([\w-]+)\.outputs\.([\w-]+)", expr):
                    if dep not in needs or out not in (jobs.get(dep, {}).get("outputs") or {}):
                        problems.append(f"{path.name} {name} {where}: needs.{dep}.outputs.{out} is not there")
                for sid in re.findall(r"steps\.([\w-]+)\.", expr):
                    if sid not in seen_steps:
                        problems.append(f"{path.name} {name} {where}: no earlier step has id {sid}")
                for key in re.findall(r"matrix\.([\w-]+)", expr):
                    if key not in matrix_keys:
                        problems.append(f"{path.name} {name} {where}: the matrix has no {key}")

        refs({k: v for k, v in job.items() if k not in ("steps", "outputs")}, "job")
        for i, step in enumerate(job.get("steps") or []):
            refs(step, f"step {i}")
            for script in re.findall(r"(?:^|\s)(scripts/[\w./-]+)", str(step.get("run", ""))):
                if not os.access(REPO / script, os.X_OK):
                    problems.append(f"{path.name} {name}: {script} is not an executable file")
            if "id" in step:
                seen_steps.add(step["id"])
        refs(job.get("outputs") or {}, "outputs")
        local = job.get("uses") or ""
        calls = [(local, job.get("with") or {})] if local.startswith("./") else []
        calls += [(s["uses"], s.get("with") or {}) for s in job.get("steps") or [] if str(s.get("uses", "")).startswith("./")]
        for ref, given in calls:
            target = REPO / ref[2:]
            if target.is_file():
                declared = ((on(load_yaml(target)) or {}).get("workflow_call") or {}).get("inputs") or {}
            else:
                declared = load_yaml(target / "action.yml").get("inputs") or {}
            for k in set(given) - set(declared):
                problems.append(f"{path.name} {name}: {ref} declares no input {k}")
            for k, spec in declared.items():
                if (spec or {}).get("required") and "default" not in (spec or {}) and k not in given:
                    problems.append(f"{path.name} {name}: {ref} needs input {k}")
    return problems


def ancestors(jobs: dict[str, Any], job: str) -> set[str]:
    seen: set[str] = set()
    todo = [job]
    while todo:
        needs = jobs[todo.pop()].get("needs") or []
        for n in [needs] if isinstance(needs, str) else needs:
            if n not in jobs:
                raise AssertionError(f"needs: {n} is not a job")
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def deploy_graph(deploy: dict[str, Any]) -> dict[str, str]:
    """chart -> job of deploy.yml that deploys it (through the local deploy-chart action)."""
    out: dict[str, str] = {}
    for name, job in deploy["jobs"].items():
        for step in job.get("steps") or []:
            if step.get("uses") == "./.github/actions/deploy-chart":
                chart = step["with"]["chart"]
                if chart in out:
                    raise AssertionError(f"{chart} is deployed by two jobs: {out[chart]}, {name}")
                out[chart] = name
    return out


def check_deploy_order(deploy: dict[str, Any]) -> list[str]:
    """Problems with the order of deploy.yml: migrations before every service, api and
    worker before web (manifests/README.md), every chart exactly once."""
    jobs = deploy["jobs"]
    by_chart = deploy_graph(deploy)
    problems = []
    if sorted(by_chart) != sorted(lib.CHARTS):
        problems.append(f"charts deployed: {sorted(by_chart)}")
        return problems
    before = {"api": {"migrations"}, "worker": {"migrations"}, "web": {"migrations", "api", "worker"}}
    for chart, must in before.items():
        anc = ancestors(jobs, by_chart[chart])
        for m in must:
            if by_chart[m] not in anc:
                problems.append(f"{chart} (job {by_chart[chart]}) does not wait for {m} (job {by_chart[m]})")
    return problems


def unsigned_builds(workflow: dict[str, Any]) -> list[str]:
    """Jobs that build an image without, after the build, `cosign sign` of it and
    `cosign attest` of an SBOM, or whose build has no SBOM and provenance attestations."""
    problems = []
    for name, job in workflow["jobs"].items():
        steps = job.get("steps") or []
        builds = [i for i, s in enumerate(steps) if "docker/build-push-action@" in str(s.get("uses", ""))
                  or re.search(r"\b(docker|buildx) build\b", str(s.get("run", "")))]
        for i in builds:
            after = "\n".join(str(s.get("run", "")) for s in steps[i + 1:])
            if not re.search(r"\bcosign sign\b", after):
                problems.append(f"{name}: image built without `cosign sign`")
            if not re.search(r"\bcosign attest\b.*--type (spdxjson|cyclonedx)", after):
                problems.append(f"{name}: image built without a cosign SBOM attestation")
            w = steps[i].get("with") or {}
            if w.get("sbom") is not True or not str(w.get("provenance", "")).startswith("mode="):
                problems.append(f"{name}: build without BuildKit's SBOM and provenance attestations")
    return problems


class DeployOrder(unittest.TestCase):
    release: dict[str, Any]
    deploy: dict[str, Any]

    @classmethod
    def setUpClass(cls) -> None:
        cls.release = load_yaml(REPO / ".github/workflows/release.yml")
        cls.deploy = load_yaml(REPO / ".github/workflows/deploy.yml")

    def test_migrations_before_the_services_in_the_needs_graph(self) -> None:
        self.assertEqual(check_deploy_order(self.deploy), [])

    def test_the_order_check_catches_a_service_that_does_not_wait(self) -> None:
        for job, needs in (("api", []), ("worker", []), ("web", ["api"]), ("web", "migrations")):
            broken = copy.deepcopy(self.deploy)
            broken["jobs"][job]["needs"] = needs
            with self.subTest(job=job, needs=needs):
                self.assertNotEqual(check_deploy_order(broken), [])

    def test_every_deploy_job_runs_in_the_environment_with_concurrency_per_environment(self) -> None:
        for name, job in self.deploy["jobs"].items():
            self.assertEqual(job.get("environment"), "${{ inputs.environment }}", name)
        conc = self.deploy["concurrency"]
        self.assertEqual(conc["group"], "deploy-${{ inputs.environment }}")
        self.assertIs(conc["cancel-in-progress"], False, "a running deploy is never cancelled halfway")
        call = on(self.deploy)["workflow_call"]["inputs"]
        self.assertEqual(set(call), {"environment", "release"})

    def test_release_delivers_staging_then_prod_after_the_manifest(self) -> None:
        jobs = self.release["jobs"]
        self.assertTrue(ancestors(jobs, "manifest") >= {"images", "charts", "version"})
        for mode, prefix in (("!= 'gitops'", "deploy"), ("== 'gitops'", "gitops")):
            staging, prod = jobs[f"{prefix}-staging"], jobs[f"{prefix}-prod"]
            for name, job in ((f"{prefix}-staging", staging), (f"{prefix}-prod", prod)):
                self.assertIn("manifest", ancestors(jobs, name), name)
                self.assertEqual(job["if"], f"vars.PULSEWATCH_DELIVERY {mode}", name)
            self.assertIn(f"{prefix}-staging", ancestors(jobs, f"{prefix}-prod"))
        for env in ("staging", "prod"):
            call = jobs[f"deploy-{env}"]
            self.assertEqual(call["uses"], "./.github/workflows/deploy.yml")
            self.assertEqual(call["with"], {"environment": env, "release": "${{ needs.manifest.outputs.release }}"})
            commit = jobs[f"gitops-{env}"]
            self.assertEqual(commit["environment"], env, "prod's commit waits for prod's reviewers too")
            self.assertEqual(commit["concurrency"], {"group": f"deploy-{env}", "cancel-in-progress": False})
        dispatch = on(self.release)["workflow_dispatch"]
        self.assertFalse((dispatch or {}).get("inputs"), "a release is built from its tag alone (checkov CKV_GHA_7)")

    def test_every_image_build_is_signed_and_its_sbom_attested(self) -> None:
        """Our own check: checkov 3.3.30's CKV_GHA_5/CKV_GHA_6 pass a job that builds with
        docker/build-push-action and never runs cosign (checked 2026-11-30 with a two-step
        workflow: checkov/github_actions/checks/job/CosignArtifacts.py and CosignSBOM.py
        return PASSED when they meet the parser's `__startline__` key), so they prove nothing."""
        self.assertEqual(unsigned_builds(self.release), [])
        broken = copy.deepcopy(self.release)
        broken["jobs"]["images"]["steps"] = [s for s in broken["jobs"]["images"]["steps"] if "cosign " not in s.get("run", "")]
        self.assertNotEqual(unsigned_builds(broken), [])

    def test_the_build_matrix_names_each_image_once_with_a_real_context(self) -> None:
        matrix = self.release["jobs"]["images"]["strategy"]["matrix"]["include"]
        self.assertEqual(sorted(m["service"] for m in matrix), sorted(lib.CHARTS))
        for m in matrix:
            with self.subTest(service=m["service"]):
                self.assertTrue((REPO / m["context"]).is_dir(), m["context"])
                self.assertTrue((REPO / m["dockerfile"]).is_file(), m["dockerfile"])
                # The context each Dockerfile says it is built from (pulsedev builds the same).
                said = re.search(r"Build context: (\S+?)[/.]?(\s|$)", (REPO / m["dockerfile"]).read_text())
                self.assertIsNotNone(said, m["dockerfile"])
                self.assertEqual(m["context"], said.group(1))
                self.assertTrue(set(m["platforms"].split(",")) >= {"linux/amd64"})
        build = next(s for s in self.release["jobs"]["images"]["steps"] if "docker/build-push-action@" in s.get("uses", ""))
        self.assertEqual(build["with"]["context"], "${{ matrix.context }}")
        self.assertEqual(build["with"]["file"], "${{ matrix.dockerfile }}")
        self.assertIs(build["with"]["sbom"], True)
        self.assertEqual(build["with"]["provenance"], "mode=max")


# ---------------------------------------------------------------------------------------
# The deploy's helm command and the values it passes

def version_tuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.lstrip("v").split("-")[0].split("."))


def fake_release(tag: str = "v1.4.2") -> dict[str, Any]:
    def digest(*parts: str) -> str:
        return "sha256:" + hashlib.sha256("/".join(parts).encode()).hexdigest()
    reg = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
    return {
        "tag": tag, "version": tag[1:],
        "images": {c: {"repository": f"{reg}/pulsewatch/{c}", "digest": digest("image", c)} for c in lib.CHARTS},
        "charts": {c: {"ref": f"oci://{reg}/pulsewatch/charts/{c}", "version": tag[1:], "digest": digest("chart", c)}
                   for c in lib.CHARTS},
    }


RECORDING_HELM = """#!/usr/bin/env python3
# Records its arguments and the content of each -f file (the deploy deletes them on exit).
import json, os, sys
args = sys.argv[1:]
files = {args[i + 1]: open(args[i + 1]).read() for i, a in enumerate(args) if a == "-f"}
json.dump({"args": args, "files": files}, open(os.environ["RECORD"], "w"))
"""


def images_of(manifest: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in yaml.safe_load_all(manifest):
        if not d or d.get("kind") not in lib.WORKLOAD_KINDS:
            continue
        spec = d["spec"]["template"]["spec"]
        for c in spec.get("initContainers", []) + spec.get("containers", []):
            out.setdefault(f"{d['kind']}/{d['metadata']['name']}", set()).add(c["image"])
    return out


class DeployCommand(unittest.TestCase):
    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="pulsedev-deploy-"))
        (self.tmp / "bin").mkdir()
        fake = self.tmp / "bin" / "helm"
        fake.write_text(RECORDING_HELM)
        fake.chmod(0o755)

    def tearDown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def deploy(self, env: str, chart: str, release: dict[str, Any]) -> subprocess.CompletedProcess[str]:
        record = self.tmp / "record.json"
        record.unlink(missing_ok=True)
        manifest = self.tmp / "release.json"
        manifest.write_text(json.dumps(release))
        run_env = dict(os.environ, RECORD=str(record), PATH=f"{self.tmp / 'bin'}:{os.environ['PATH']}")
        return subprocess.run([str(REPO / "scripts/delivery/deploy-chart"), env, chart, f"@{manifest}"],
                              capture_output=True, text=True, env=run_env)

    def test_helm_gets_the_release_chart_by_digest_and_values_that_pin_its_images(self) -> None:
        pins = tomllib.loads((REPO / "src/tools/pins.toml").read_text())
        helm_version = version_tuple(pins["helm"]["version"])
        release = fake_release()
        rendered = 0
        for env in ("staging", "prod"):
            for chart in lib.CHARTS:
                with self.subTest(env=env, chart=chart):
                    run = self.deploy(env, chart, release)
                    self.assertEqual(run.returncode, 0, run.stderr)
                    rec = json.loads((self.tmp / "record.json").read_text())
                    args = rec["args"]
                    ch = release["charts"][chart]
                    self.assertEqual(args[:4], ["upgrade", "--install", chart, f"{ch['ref']}@{ch['digest']}"])
                    self.assertEqual(args[args.index("--version") + 1], ch["version"])
                    self.assertEqual(args[args.index("--namespace") + 1], f"pulsewatch-{env}")
                    self.assertNotIn("--atomic", args, "deprecated in the pinned helm: --rollback-on-failure")
                    for flag, since in HELM_FLAGS_SINCE.items():
                        self.assertIn(flag, args)
                        self.assertGreaterEqual(helm_version, since, f"helm {pins['helm']['version']} has no {flag}")
                    files = [args[i + 1] for i, a in enumerate(args) if a == "-f"]
                    self.assertEqual(files[0], str(REPO / f"manifests/envs/{env}/values.yaml"))
                    self.assertEqual(len(files), 2)
                    # The same values through the real Helm engine: the release's digests only.
                    images = self.tmp / "images.yaml"
                    images.write_text(rec["files"][files[1]])
                    out = lib.helm("template", chart, f"manifests/charts/{chart}", "-n", f"pulsewatch-{env}",
                                   "-f", files[0], "-f", str(images)).stdout
                    img = release["images"][chart]
                    want = f"{img['repository']}:{release['tag']}@{img['digest']}"
                    got = images_of(out)
                    self.assertTrue(got, f"{chart}: no workload rendered")
                    self.assertEqual({k: v for k, v in got.items() if v != {want}}, {})
                    rendered += 1
        print(f"deploy-chart: {rendered} helm commands recorded and rendered with the release's digests", file=sys.stderr)

    def test_an_incomplete_or_bad_release_never_reaches_helm(self) -> None:
        release = fake_release()
        cases = []
        missing = copy.deepcopy(release)
        del missing["images"]["web"]
        cases.append(("image missing", missing))
        tag_digest = copy.deepcopy(release)
        tag_digest["images"]["api"]["digest"] = "v1.4.2"
        cases.append(("digest not sha256", tag_digest))
        latest = copy.deepcopy(release)
        latest["tag"] = "latest"
        cases.append(("latest", latest))
        other = copy.deepcopy(release)
        other["charts"]["api"]["version"] = "1.4.1"
        cases.append(("chart of another version", other))
        for what, bad in cases:
            with self.subTest(what=what):
                run = self.deploy("staging", "api", bad)
                self.assertNotEqual(run.returncode, 0)
                self.assertIn("error: the release manifest is incomplete", run.stderr)
                self.assertFalse((self.tmp / "record.json").exists(), "helm ran")

    def test_release_version_comes_from_a_semver_tag_only(self) -> None:
        rv = str(REPO / "scripts/delivery/release-values")
        ok = subprocess.run([rv, "version", "tag", "v1.4.2-rc.1"], capture_output=True, text=True)
        self.assertEqual(ok.stdout, "tag=v1.4.2-rc.1\nversion=1.4.2-rc.1\n")
        for ref_type, name in (("branch", "main"), ("tag", "v1.4"), ("tag", "1.4.2"), ("tag", "v01.4.2")):
            with self.subTest(ref=name):
                run = subprocess.run([rv, "version", ref_type, name], capture_output=True, text=True)
                self.assertEqual(run.returncode, 1)
                self.assertIn("a release runs on a tag", run.stderr)

    def test_collect_merges_the_parts_the_build_jobs_write(self) -> None:
        release = fake_release()
        parts = self.tmp / "parts"
        parts.mkdir()
        for c in lib.CHARTS:
            (parts / f"image-{c}.json").write_text(json.dumps(release["images"][c]))
            (parts / f"chart-{c}.json").write_text(json.dumps(release["charts"][c]))
        rv = str(REPO / "scripts/delivery/release-values")
        run = subprocess.run([rv, "collect", "--tag", "v1.4.2", "--version", "1.4.2", str(parts)], capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(json.loads(run.stdout), release)
        (parts / "chart-web.json").unlink()
        run = subprocess.run([rv, "collect", "--tag", "v1.4.2", "--version", "1.4.2", str(parts)], capture_output=True, text=True)
        self.assertEqual(run.returncode, 1)
        self.assertIn("charts.web is missing", run.stderr)


class InstallHelm(unittest.TestCase):
    def test_a_download_that_is_not_the_pinned_archive_is_refused(self) -> None:
        """install-helm reads url and sha256 from src/tools/pins.toml and refuses anything else
        (curl is replaced by one that serves other bytes for the pinned URL)."""
        tmp = Path(tempfile.mkdtemp(prefix="pulsedev-install-helm-"))
        try:
            (tmp / "bin").mkdir()
            curl = tmp / "bin" / "curl"
            curl.write_text('#!/bin/sh\nwhile [ $# -gt 0 ]; do case "$1" in -o) out=$2; shift;; https://*) url=$1;; esac; shift; done\n'
                            'echo "$url" > "$URL_SEEN"; echo "not helm" > "$out"\n')
            curl.chmod(0o755)
            env = dict(os.environ, PATH=f"{tmp / 'bin'}:{os.environ['PATH']}", URL_SEEN=str(tmp / "url"))
            env.pop("GITHUB_PATH", None)
            run = subprocess.run([str(REPO / "scripts/delivery/install-helm"), str(tmp / "dest")], capture_output=True, text=True, env=env)
            self.assertNotEqual(run.returncode, 0)
            self.assertIn("FAILED", run.stderr + run.stdout)
            self.assertFalse((tmp / "dest" / "helm").exists())
            pins = tomllib.loads((REPO / "src/tools/pins.toml").read_text())["helm"]
            self.assertIn((tmp / "url").read_text().strip(), {pins[p]["url"] for p in ("linux-amd64", "linux-arm64")})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class GitopsCommit(unittest.TestCase):
    def test_committed_images_files_are_what_the_release_writes(self) -> None:
        rv = str(REPO / "scripts/delivery/release-values")
        for env in ("staging", "prod"):
            with self.subTest(env=env):
                path = GITOPS / env / "images.yaml"
                values = load_yaml(path)
                tag = {values[c]["image"]["tag"] for c in lib.CHARTS}
                self.assertEqual(len(tag), 1)
                release = fake_release()
                release["tag"] = tag.pop()
                for c in lib.CHARTS:
                    release["images"][c] = {k: values[c]["image"][k] for k in ("repository", "digest")}
                run = subprocess.run([rv, "images", json.dumps(release)], capture_output=True, text=True)
                self.assertEqual(run.returncode, 0, run.stderr)
                self.assertEqual(run.stdout, path.read_text(), f"{path}: not in the format the release writes")

    def test_gitops_commit_pushes_one_file_to_the_branch(self) -> None:
        """Real git: a bare origin, a clone holding the scripts and manifests/gitops."""
        tmp = Path(tempfile.mkdtemp(prefix="pulsedev-gitops-"))
        try:
            def git(*args: str, cwd: Path) -> str:
                return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd,
                                      check=True, capture_output=True, text=True).stdout
            origin, work = tmp / "origin.git", tmp / "work"
            git("init", "--quiet", "--bare", "--initial-branch=main", str(origin), cwd=tmp)
            git("clone", "--quiet", str(origin), str(work), cwd=tmp)
            for rel in ("scripts/delivery", "manifests/gitops"):
                shutil.copytree(REPO / rel, work / rel)
            git("add", ".", cwd=work)
            git("commit", "--quiet", "-m", "base", cwd=work)
            git("push", "--quiet", "origin", "HEAD:main", cwd=work)
            # Meanwhile someone else pushes to main: the job must rebase, not fail.
            other = tmp / "other"
            git("clone", "--quiet", str(origin), str(other), cwd=tmp)
            (other / "README").write_text("x\n")
            git("add", "README", cwd=other)
            git("commit", "--quiet", "-m", "other", cwd=other)
            git("push", "--quiet", "origin", "HEAD:main", cwd=other)
            release = fake_release("v2.0.0")
            run = subprocess.run([str(work / "scripts/delivery/gitops-commit"), "prod", json.dumps(release), "main"],
                                 cwd=work, capture_output=True, text=True)
            self.assertEqual(run.returncode, 0, run.stderr + run.stdout)
            log = git("log", "--format=%s", "main", cwd=origin).splitlines()
            self.assertEqual(log[0], "gitops(prod): deploy release v2.0.0")
            changed = git("show", "--name-only", "--format=", "main", cwd=origin).split()
            self.assertEqual(changed, ["manifests/gitops/prod/images.yaml"])
            pushed = yaml.safe_load(git("show", "main:manifests/gitops/prod/images.yaml", cwd=origin))
            for c in lib.CHARTS:
                self.assertEqual(pushed[c]["image"]["digest"], release["images"][c]["digest"])
            again = subprocess.run([str(work / "scripts/delivery/gitops-commit"), "prod", json.dumps(release), "main"],
                                   cwd=work, capture_output=True, text=True)
            self.assertEqual(again.returncode, 0, again.stderr)
            self.assertIn("already pins release v2.0.0", again.stdout)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


class RenderShowsTheRelease(unittest.TestCase):
    def test_render_of_staging_and_prod_uses_the_committed_release_images(self) -> None:
        """`pulsedev render --env <env>` renders what Argo CD applies: the env's values, then
        manifests/gitops/<env>/images.yaml (in a copy of manifests/ whose images file pins a
        release)."""
        tmp = Path(tempfile.mkdtemp(prefix="pulsedev-render-release-"))
        try:
            shutil.copytree(REPO / "manifests", tmp / "manifests", symlinks=True)
            binary = upstream.pulsedev_bin()
            for env in ("staging", "prod"):
                with self.subTest(env=env):
                    release = fake_release(f"v3.1.{len(env)}")
                    run = subprocess.run([str(REPO / "scripts/delivery/release-values"), "images", json.dumps(release)],
                                         capture_output=True, text=True, check=True)
                    (tmp / "manifests/gitops" / env / "images.yaml").write_text(run.stdout)
                    out = subprocess.run([str(binary), "render", "--env", env, "--output", "json"], cwd=tmp,
                                         capture_output=True, text=True,
                                         env=upstream.offline_env(HOME=str(tmp / "home"), XDG_CACHE_HOME=str(tmp / "cache")))
                    self.assertEqual(out.returncode, 0, out.stderr)
                    got = images_of(json.loads(out.stdout)["yaml"])
                    want = {f"{i['repository']}:{release['tag']}@{i['digest']}" for i in release["images"].values()}
                    self.assertEqual(set().union(*got.values()), want)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Argo CD

def argo_crds() -> list[dict[str, Any]]:
    src = os.environ.get(upstream.SOURCES_ENV)
    out = []
    for name, sha in ARGO_CD_CRDS.items():
        if src:
            path = Path(src) / "argo-cd-crds" / name
            if not path.is_file():
                raise AssertionError(f"{upstream.SOURCES_ENV}={src} has no argo-cd-crds/{name}")
            data = path.read_bytes()
        else:
            url = f"https://raw.githubusercontent.com/argoproj/argo-cd/{ARGO_CD_COMMIT}/manifests/crds/{name}"
            try:
                with urllib.request.urlopen(url, timeout=60) as r:
                    data = r.read()
            except Exception as err:  # noqa: BLE001 - any failure to obtain it
                if is_ci():
                    raise AssertionError(f"cannot download {url}: {err}") from err
                raise unittest.SkipTest(f"no {upstream.SOURCES_ENV} and {url} cannot be downloaded: {err}") from err
        if hashlib.sha256(data).hexdigest() != sha:
            raise AssertionError(f"argo-cd-crds/{name} is not Argo CD v3.5.1's (sha256 differs)")
        out += [d for d in yaml.safe_load_all(data) if d and d.get("kind") == "CustomResourceDefinition"]
    return out


GO_VAR = re.compile(r"\{\{\s*\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def expand(template: Any, params: dict[str, str]) -> Any:
    """An ApplicationSet template with goTemplate and missingkey=error: `{{.key}}` only."""
    if isinstance(template, dict):
        return {k: expand(v, params) for k, v in template.items()}
    if isinstance(template, list):
        return [expand(v, params) for v in template]
    if isinstance(template, str):
        def sub(m: re.Match[str]) -> str:
            if m.group(1) not in params:
                raise AssertionError(f"missingkey: {m.group(1)}")
            return params[m.group(1)]
        out = GO_VAR.sub(sub, template)
        if "{{" in out:
            raise AssertionError(f"template syntax this test does not expand: {template}")
        return out
    return template


def gitops_objects() -> list[dict[str, Any]]:
    out = []
    for p in sorted(GITOPS.glob("*.yaml")):
        out += load_docs(p)
    return out


def generated_applications() -> list[dict[str, Any]]:
    apps = []
    for appset in (o for o in gitops_objects() if o["kind"] == "ApplicationSet"):
        spec = appset["spec"]
        assert spec.get("goTemplate") is True and "missingkey=error" in spec.get("goTemplateOptions", []), appset["metadata"]["name"]
        for gen in spec["generators"]:
            assert set(gen) == {"list"}, f"{appset['metadata']['name']}: only list generators are expanded here"
            for element in gen["list"]["elements"]:
                app = expand(spec["template"], element)
                apps.append({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
                             "metadata": {**app["metadata"], "namespace": appset["metadata"]["namespace"]},
                             "spec": app["spec"]})
    return apps


def symlink_escapes(root: Path, base: Path) -> list[str]:
    """Argo CD's repo server refuses a repository with a symlink that is absolute or leaves the
    repository root (argoproj/argo-cd v3.5.1 util/app/path/path.go CheckOutOfBoundsSymlinks,
    called on the git root by reposerver/repository/repository.go)."""
    bad = []
    for dirpath, dirnames, filenames in os.walk(base):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if p.is_symlink():
                target = os.readlink(p)
                resolved = (p.parent / target).resolve()
                if os.path.isabs(target) or not resolved.is_relative_to(root.resolve()):
                    bad.append(f"{p.relative_to(root)} -> {target}")
    return bad


def argo_phase_wave(obj: dict[str, Any]) -> tuple[int, int]:
    """Where Argo CD syncs an object: (phase, wave). gitops-engine in argoproj/argo-cd v3.5.1:
    pkg/sync/hook/hook.go (an `argocd.argoproj.io/hook` annotation, else Helm's `helm.sh/hook`
    with a known type), pkg/sync/hook/helm/type.go (pre-install, pre-upgrade -> PreSync;
    post-install, post-upgrade -> PostSync), pkg/sync/syncwaves/waves.go (the
    `argocd.argoproj.io/sync-wave` annotation, else `helm.sh/hook-weight`, else 0)."""
    ann = (obj.get("metadata") or {}).get("annotations") or {}
    phases = {"PreSync": 0, "Sync": 1, "PostSync": 2}
    helm_types = {"pre-install": "PreSync", "pre-upgrade": "PreSync", "post-install": "PostSync", "post-upgrade": "PostSync"}
    phase = "Sync"
    if "argocd.argoproj.io/hook" in ann:
        phase = [t.strip() for t in ann["argocd.argoproj.io/hook"].split(",")][0]
    elif "helm.sh/hook" in ann:
        types = [helm_types[t.strip()] for t in ann["helm.sh/hook"].split(",") if t.strip() in helm_types]
        if types:
            phase = types[0]
    wave = 0
    for key in ("argocd.argoproj.io/sync-wave", "helm.sh/hook-weight"):
        if key in ann:
            try:
                wave = int(ann[key])
                break
            except ValueError:
                continue
    return phases[phase], wave


def check_sync_order(objects_by_chart: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Every migrations object strictly before every api/worker/web object, and the Job a
    PreSync hook (Argo CD waits until hooks of a phase complete before the next phase)."""
    problems = []
    mig = [(argo_phase_wave(o), f"{o['kind']}/{o['metadata']['name']}") for o in objects_by_chart["migrations"]]
    jobs = [o for o in objects_by_chart["migrations"] if o["kind"] == "Job"]
    if not jobs or any(argo_phase_wave(j)[0] != 0 for j in jobs):
        problems.append("the migrations Job is not a PreSync hook")
    last = max(mig)
    for chart in ("api", "worker", "web"):
        for o in objects_by_chart[chart]:
            key = argo_phase_wave(o)
            if key <= last[0]:
                problems.append(f"{chart} {o['kind']}/{o['metadata']['name']} at {key} is not after {last[1]} at {last[0]}")
    return problems


class ArgoCD(unittest.TestCase):
    schemas: dict[tuple[str, str], dict[str, Any]]
    rendered: dict[str, dict[str, list[dict[str, Any]]]]

    @classmethod
    def setUpClass(cls) -> None:
        cls.schemas = upstream.crd_versions(argo_crds())
        cls.rendered = {}

    def render(self, app: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Each source of an Application as Argo CD's repo server would produce it, rendered
        through the helm shim (`helm template <releaseName> <path> -n <namespace> -f ...`, as
        `render` does); directory sources as their included files."""
        name = app["metadata"]["name"]
        if name in self.rendered:
            return self.rendered[name]
        spec = app["spec"]
        sources = spec.get("sources") or [spec["source"]]
        refs = {s["ref"]: s for s in sources if s.get("ref")}
        ns = spec["destination"]["namespace"]
        out: dict[str, list[dict[str, Any]]] = {}
        for s in sources:
            if "path" not in s:
                self.assertIn("ref", s, f"{name}: a source with neither path nor ref")
                continue
            path = REPO / s["path"]
            self.assertTrue(path.is_dir(), f"{name}: path {s['path']} does not exist")
            self.assertTrue(path.resolve().is_relative_to(REPO), f"{name}: path {s['path']} leaves the repository")
            if "helm" in s or (path / "Chart.yaml").is_file():
                helm = s.get("helm") or {}
                files = []
                for vf in helm.get("valueFiles", []):
                    if vf.startswith("$"):
                        ref, _, rest = vf[1:].partition("/")
                        self.assertIn(ref, refs, f"{name}: {vf} names no ref source")
                        self.assertEqual(refs[ref]["repoURL"], s["repoURL"])
                        f = REPO / rest
                    else:
                        f = (path / vf).resolve()
                    self.assertTrue(f.is_file(), f"{name}: values file {vf} does not exist")
                    self.assertTrue(f.resolve().is_relative_to(REPO), f"{name}: {vf} leaves the repository")
                    files += ["-f", str(f)]
                release = helm.get("releaseName", name)
                out[s["path"]] = [d for d in yaml.safe_load_all(
                    lib.helm("template", release, str(path), "-n", helm.get("namespace", ns), *files).stdout) if d]
            else:
                include = (s.get("directory") or {}).get("include", "*")
                pats = include[1:-1].split(",") if include.startswith("{") else [include]
                files_found = [p for p in sorted(path.glob("*.y*ml")) if any(fnmatch.fnmatch(p.name, x) for x in pats)]
                self.assertEqual(len(files_found), len(pats), f"{name}: {include} in {s['path']} does not match each file")
                out[s["path"]] = [d for p in files_found for d in load_docs(p)]
        self.rendered[name] = out
        return out

    def test_argo_cd_objects_meet_the_v3_5_1_crds(self) -> None:
        objs = gitops_objects() + generated_applications()
        kinds = {o["kind"] for o in objs}
        self.assertEqual(kinds, {"AppProject", "ApplicationSet", "Application"})
        problems = []
        for obj in objs:
            schema = self.schemas.get((obj["apiVersion"], obj["kind"]))
            if schema is None:
                problems.append(f"{obj['apiVersion']} {obj['kind']}: no Argo CD CRD serves it")
                continue
            for err in jsonschema.Draft7Validator(schema).iter_errors(obj):
                where = ".".join(str(p) for p in err.path) or "<root>"
                problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {where}: {err.message}")
        self.assertEqual(problems, [])
        print(f"argo cd: {len(objs)} objects valid against {len(self.schemas)} CRD versions of v3.5.1", file=sys.stderr)

    def test_the_crd_check_refuses_an_unknown_field(self) -> None:
        app = generated_applications()[0]
        app["spec"]["syncPolicy"]["automatd"] = {"prune": True}
        errors = list(jsonschema.Draft7Validator(self.schemas[("argoproj.io/v1alpha1", "Application")]).iter_errors(app))
        self.assertTrue(errors)

    def test_every_path_values_file_and_namespace_exists_and_renders(self) -> None:
        apps = generated_applications()
        self.assertEqual(sorted(a["metadata"]["name"] for a in apps),
                         sorted(f"pulsewatch-{e}{s}" for e in ("staging", "prod") for s in ("", "-base")))
        projects = {o["metadata"]["name"]: o for o in gitops_objects() if o["kind"] == "AppProject"}
        for app in apps:
            name = app["metadata"]["name"]
            with self.subTest(app=name):
                spec = app["spec"]
                env = name.split("-")[1]
                ns = spec["destination"]["namespace"]
                self.assertEqual(ns, f"pulsewatch-{env}")
                project = projects[spec["project"]]["spec"]
                for s in spec.get("sources") or [spec["source"]]:
                    self.assertIn(s["repoURL"], project["sourceRepos"])
                self.assertIn({"name": spec["destination"]["name"], "namespace": ns}, project["destinations"])
                rendered = self.render(app)
                self.assertTrue(rendered)
                cluster_kinds = {(w["group"], w["kind"]) for w in project["clusterResourceWhitelist"]}
                ns_kinds = {(w["group"], w["kind"]) for w in project["namespaceResourceWhitelist"]}
                for path, objs in rendered.items():
                    self.assertTrue(objs, f"{path} rendered nothing")
                    for o in objs:
                        gk = (o["apiVersion"].rpartition("/")[0], o["kind"])
                        what = f"{path}: {o['kind']}/{o['metadata']['name']}"
                        if gk in CLUSTER_SCOPED:
                            self.assertIn(gk, cluster_kinds, f"{what}: the project does not permit this cluster-scoped kind")
                        else:
                            self.assertIn(gk, ns_kinds, f"{what}: the project does not permit this kind")
                            self.assertIn(o["metadata"].get("namespace", ns), (ns,), f"{what}: outside {ns}")
                if name.endswith("-base"):
                    made = [o for objs in rendered.values() for o in objs if o["kind"] == "Namespace"]
                    self.assertEqual([o["metadata"]["name"] for o in made], [ns], "the base creates the namespace")
                else:
                    self.assertIn("CreateNamespace=false", spec["syncPolicy"]["syncOptions"])
                    for s in spec["sources"]:
                        if "path" in s:
                            self.assertEqual(s["helm"]["releaseName"], Path(s["path"]).name,
                                             "release name = chart name, as the pipeline's releases")
                            self.assertEqual(s["helm"]["valueFiles"],
                                             [f"$values/manifests/envs/{env}/values.yaml", f"$values/manifests/gitops/{env}/images.yaml"])

    def test_symlinks_stay_inside_the_repository(self) -> None:
        for app in generated_applications():
            for s in app["spec"].get("sources") or [app["spec"]["source"]]:
                if "path" in s:
                    self.assertEqual(symlink_escapes(REPO, REPO / s["path"]), [], s["path"])
        outside = Path(tempfile.mkdtemp(prefix="pulsedev-symlink-"))
        try:
            (outside / "chart").mkdir()
            (outside / "chart" / "lib").symlink_to("../../etc")
            self.assertTrue(symlink_escapes(outside / "chart", outside / "chart"), "the rule catches an escape")
        finally:
            shutil.rmtree(outside)

    def test_sync_waves_keep_migrations_before_the_services(self) -> None:
        for app in generated_applications():
            if app["metadata"]["name"].endswith("-base"):
                continue
            with self.subTest(app=app["metadata"]["name"]):
                rendered = self.render(app)
                by_chart = {Path(p).name: objs for p, objs in rendered.items()}
                self.assertEqual(sorted(by_chart), sorted(lib.CHARTS))
                self.assertEqual(check_sync_order(by_chart), [])
                phases = ("PreSync", "Sync", "PostSync")
                order = {c: sorted({f"{phases[k[0]]} wave {k[1]}" for k in map(argo_phase_wave, objs)}) for c, objs in by_chart.items()}
                print(f"{app['metadata']['name']}: " + "; ".join(f"{c}: {', '.join(v)}" for c, v in order.items()), file=sys.stderr)
                # The check fails when the Job is no longer a hook (it would then run
                # in the Sync phase's wave 0, alongside the services).
                broken = copy.deepcopy(by_chart)
                for o in broken["migrations"]:
                    (o["metadata"].get("annotations") or {}).pop("helm.sh/hook", None)
                self.assertNotEqual(check_sync_order(broken), [])


if __name__ == "__main__":
    unittest.main(verbosity=1)
