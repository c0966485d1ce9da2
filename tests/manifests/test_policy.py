"""Policy tests over the rendered manifests (run by scripts/validate-manifests).

    python -m unittest discover -s tests/manifests -p 'test_*.py'

PULSEDEV_RENDERED=<dir> reuses a render made by `validate.py render`; without it the charts
are rendered into a temporary directory first.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import tomllib
import unittest
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import manifests_lib as lib  # noqa: E402

REPO = lib.REPO
_rendered: Path | None = None


def rendered() -> Path:
    global _rendered
    if _rendered is None:
        given = os.environ.get("PULSEDEV_RENDERED")
        if given:
            _rendered = Path(given)
        else:
            _rendered = Path(tempfile.mkdtemp(prefix="pulsewatch-rendered-"))
            failures = lib.render_all(_rendered)
            if failures:
                raise RuntimeError("\n".join(failures))
    return _rendered


def all_objects() -> dict[str, list[lib.Obj]]:
    """Objects per render variant (every env with and without observability)."""
    return {v.name: lib.env_objects(rendered(), v.name) for v in lib.VARIANTS}


def env_of(variant: str) -> str:
    return lib.VARIANT[variant].env


def workloads(objs: list[lib.Obj]) -> list[lib.Obj]:
    return [o for o in objs if o.kind in lib.WORKLOAD_KINDS]


RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def restricted_violations(obj: lib.Obj) -> list[str]:
    """Pod Security Standards "restricted" (v1.36), plus our own hardening rules."""
    spec = lib.pod_spec(obj)
    out: list[str] = []
    if spec is None:
        return [f"{obj}: no pod template"]
    for flag in ("hostNetwork", "hostPID", "hostIPC", "hostUsers"):
        if spec.get(flag) is True and flag != "hostUsers":
            out.append(f"{obj}: {flag} is true")
    for vol in spec.get("volumes") or []:
        types = set(vol) - {"name"}
        if not types <= RESTRICTED_VOLUME_TYPES:
            out.append(f"{obj}: volume {vol['name']} uses {sorted(types - RESTRICTED_VOLUME_TYPES)}")
    psc = spec.get("securityContext") or {}
    if psc.get("runAsUser") == 0:
        out.append(f"{obj}: pod runAsUser is 0")
    if psc.get("sysctls"):
        out.append(f"{obj}: sysctls are set")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp == "Unconfined":
        out.append(f"{obj}: pod seccompProfile is Unconfined")
    if spec.get("automountServiceAccountToken") is not False:
        out.append(f"{obj}: automountServiceAccountToken is not false")
    long_running = obj.kind not in ("Job", "CronJob")
    for c in lib.containers(spec):
        name = f"{obj}: container {c['name']}"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not explicitly false")
        run_as_non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
        if run_as_non_root is not True:
            out.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) in (0, None):
            out.append(f"{name}: no fixed non-root runAsUser")
        seccomp = (sc.get("seccompProfile") or {}).get("type") or pod_seccomp
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile is {seccomp!r}, want RuntimeDefault")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities.drop lacks ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps.get('add')}")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{name}: procMount {sc.get('procMount')}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{name}: hostPort {port['hostPort']}")
        # Our own rules on top of the standard.
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{name}: readOnlyRootFilesystem is not true")
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if not (res.get(kind) or {}).get(r):
                    out.append(f"{name}: resources.{kind}.{r} is not set")
        if long_running and c in (spec.get("containers") or []):
            for probe in ("readinessProbe", "livenessProbe"):
                if not c.get(probe):
                    out.append(f"{name}: no {probe}")
        for env in c.get("env") or []:
            if "secretKeyRef" in (env.get("valueFrom") or {}):
                out.append(f"{name}: secret {env['valueFrom']['secretKeyRef'].get('name')} passed as env var {env['name']}; mount it as a file")
    return out


class PodSecurity(unittest.TestCase):
    def test_every_workload_meets_restricted(self):
        problems = []
        count = 0
        for env, objs in all_objects().items():
            for w in workloads(objs):
                count += 1
                problems += restricted_violations(w)
        self.assertGreater(count, 12)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_checker_catches_a_violation(self):
        # The checker itself must fail on a non-compliant pod (guards against a test that cannot fail).
        bad = lib.Obj("inline", {"kind": "Deployment", "metadata": {"name": "bad"}, "spec": {"template": {"spec": {
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
            "containers": [{"name": "c", "image": "x:1", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}}}})
        found = "\n".join(restricted_violations(bad))
        for needle in ("hostPath", "allowPrivilegeEscalation", "runAsNonRoot", "seccompProfile", "drop lacks ALL",
                       "SYS_ADMIN", "readOnlyRootFilesystem", "resources.limits.cpu", "readinessProbe"):
            self.assertIn(needle, found)

    def test_namespaces_pod_security_labels(self):
        ns = {o.name: o.labels for o in lib.load_objects(REPO / "manifests/dev/namespaces.yaml")}
        self.assertEqual(ns["pulsewatch-dev"]["pod-security.kubernetes.io/enforce"], "baseline")
        self.assertEqual(ns["pulsewatch-dev"]["pod-security.kubernetes.io/warn"], "restricted")
        self.assertEqual(ns["pulsewatch-dev"]["pod-security.kubernetes.io/audit"], "restricted")
        for env in ("staging", "prod"):
            [n] = [o for o in lib.load_objects(REPO / f"manifests/envs/{env}/namespace.yaml") if o.kind == "Namespace"]
            self.assertEqual(n.labels["pod-security.kubernetes.io/enforce"], "restricted")


class NetworkPolicies(unittest.TestCase):
    def test_every_pod_has_its_own_network_policy(self):
        problems = []
        for env, objs in all_objects().items():
            policies = [o for o in objs if o.kind == "NetworkPolicy"]
            for w in workloads(objs):
                labels = lib.pod_labels(w)
                own = [p for p in policies if p.namespace == w.namespace and p.doc["spec"].get("podSelector")
                       and lib.selector_matches(p.doc["spec"]["podSelector"], labels)]
                if not own:
                    problems.append(f"{env}: {w} is selected by no NetworkPolicy of its own")
        self.assertEqual(problems, [], "\n".join(problems))

    def test_every_namespace_has_default_deny(self):
        for env, objs in all_objects().items():
            deny = [o for o in objs if o.kind == "NetworkPolicy" and o.doc["spec"].get("podSelector") == {}
                    and set(o.doc["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
                    and not o.doc["spec"].get("ingress") and not o.doc["spec"].get("egress")]
            self.assertTrue(deny, f"{env}: no default-deny NetworkPolicy")

    def test_worker_and_migrations_accept_no_traffic(self):
        # Only the metrics scrape, and only when metrics are on (then from the scrapers, on
        # the metrics port alone).
        for env, objs in all_objects().items():
            for p in objs:
                if p.kind != "NetworkPolicy" or p.doc["spec"].get("podSelector") in ({}, None) or p.namespace == "monitoring":
                    continue
                name = p.doc["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
                if name == "migrations" or (name == "worker" and not lib.VARIANT[env].observability):
                    self.assertFalse(p.doc["spec"].get("ingress"), f"{env}: {p} allows ingress")
                elif name == "worker":
                    [rule] = p.doc["spec"]["ingress"]
                    self.assertEqual(rule["ports"], [{"protocol": "TCP", "port": 9464}], f"{env}: {p}")
                    for peer in rule["from"]:
                        self.assertEqual(peer["podSelector"], {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}, f"{env}: {p}")

    def test_web_and_the_data_stores_open_no_egress(self):
        # What their policies' comments promise: no policy selecting their pods lets
        # anything out (the dev namespace's allow-dns among them).
        problems = []
        for env, objs in all_objects().items():
            policies = [o for o in objs if o.kind == "NetworkPolicy"]
            for w in workloads(objs):
                labels = lib.pod_labels(w)
                if labels.get("app.kubernetes.io/name") not in ("web", "postgres", "redis"):
                    continue
                for p in policies:
                    spec = p.doc["spec"]
                    if (p.namespace == w.namespace and "Egress" in spec.get("policyTypes", [])
                            and spec.get("egress") and lib.selector_matches(spec.get("podSelector"), labels)):
                        problems.append(f"{env}: {p} lets {w} open connections")
        self.assertEqual(problems, [], "\n".join(problems))

    def test_selector_matching(self):
        self.assertTrue(lib.selector_matches({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}))
        self.assertFalse(lib.selector_matches({"matchLabels": {"a": "1"}}, {"a": "2"}))
        self.assertTrue(lib.selector_matches({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "3"]}]}, {"a": "3"}))
        self.assertFalse(lib.selector_matches({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {}))


class Availability(unittest.TestCase):
    def test_deployments_have_pdb_and_hpa_outside_dev(self):
        problems = []
        for env, objs in all_objects().items():
            if env_of(env) == "dev":
                continue
            pdbs = [o for o in objs if o.kind == "PodDisruptionBudget"]
            hpas = [o for o in objs if o.kind == "HorizontalPodAutoscaler"]
            for d in (o for o in objs if o.kind == "Deployment"):
                labels = lib.pod_labels(d)
                if not any(p.namespace == d.namespace and lib.selector_matches(p.doc["spec"]["selector"], labels) for p in pdbs):
                    problems.append(f"{env}: {d} has no PodDisruptionBudget")
                hpa = [h for h in hpas if h.namespace == d.namespace and h.doc["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": d.name}]
                if not hpa:
                    problems.append(f"{env}: {d} has no HorizontalPodAutoscaler")
                    continue
                spec = hpa[0].doc["spec"]
                if hpa[0].doc["apiVersion"] != "autoscaling/v2":
                    problems.append(f"{env}: {hpa[0]} is not autoscaling/v2")
                if spec.get("minReplicas", 1) < 2:
                    problems.append(f"{env}: {hpa[0]} minReplicas < 2, so a PDB would block every drain")
                if not any(m.get("resource", {}).get("name") == "cpu" for m in spec.get("metrics", [])):
                    problems.append(f"{env}: {hpa[0]} does not scale on CPU")
                if "replicas" in d.doc["spec"]:
                    problems.append(f"{env}: {d} sets replicas while an HPA owns them")
        self.assertEqual(problems, [], "\n".join(problems))

    def test_dev_has_no_pdb(self):
        objs = all_objects()["dev"]
        self.assertFalse([o for o in objs if o.kind == "PodDisruptionBudget"])


class Images(unittest.TestCase):
    def images(self):
        for env, objs in all_objects().items():
            for w in workloads(objs):
                for c in lib.containers(lib.pod_spec(w)):
                    yield env, w, c["image"]

    def test_no_latest_and_no_untagged(self):
        problems = []
        for env, w, image in self.images():
            _, tag, digest = lib.image_parts(image)
            if tag is None and digest is None:
                problems.append(f"{env}: {w}: image {image} has no tag")
            if tag is not None and tag.lower() == "latest":
                problems.append(f"{env}: {w}: image {image} uses latest")
            if env_of(env) != "dev" and not (digest and re.fullmatch(r"sha256:[0-9a-f]{64}", digest)):
                problems.append(f"{env}: {w}: image {image} is not pinned by digest")
        self.assertEqual(problems, [], "\n".join(problems))

    def test_postgres_probes_connect_as_its_superuser(self):
        # Without -U/-d pg_isready connects as "postgres", a role that does not exist
        # here, and the server logs a FATAL for every probe.
        user = re.search(r'pub const DB_USER: &str = "([^"]+)";', (REPO / "src/secrets.rs").read_text()).group(1)
        seen = 0
        for env, objs in all_objects().items():
            for w in workloads(objs):
                if w.name != "postgres":
                    continue
                [c] = lib.pod_spec(w)["containers"]
                env_vars = {e["name"]: e.get("value") for e in c.get("env") or []}
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    cmd = c[probe]["exec"]["command"]
                    seen += 1
                    self.assertEqual(cmd[0], "pg_isready", f"{env}: {probe}")
                    args = dict(zip(cmd[1::2], cmd[2::2]))
                    self.assertEqual(args.get("-U"), user, f"{env}: {probe}: {cmd}")
                    self.assertEqual(args.get("-d"), env_vars["POSTGRES_DB"], f"{env}: {probe}: {cmd}")
        self.assertGreater(seen, 0)

    def test_dev_data_stores_pinned_by_digest(self):
        for env, w, image in self.images():
            if w.name in ("postgres", "redis"):
                self.assertRegex(image, r":[\w.-]+@sha256:[0-9a-f]{64}$")

    def test_dockerfile_bases_pinned(self):
        problems = []
        for df in sorted((REPO / "app").glob("*/Dockerfile")):
            text = df.read_text()
            users = re.findall(r"^USER\s+(\S+)", text, re.M)
            if not users or not re.fullmatch(r"[1-9]\d*:[1-9]\d*", users[-1]):
                problems.append(f"{df}: last USER is not a numeric non-root uid:gid")
            for base in re.findall(r"^FROM\s+(\S+)", text, re.M):
                if not re.fullmatch(r"[\w.\-/:]+:[\w.-]+@sha256:[0-9a-f]{64}", base):
                    problems.append(f"{df}: FROM {base} is not pinned by tag and digest")
        self.assertEqual(problems, [], "\n".join(problems))

    def test_image_parts(self):
        self.assertEqual(lib.image_parts("localhost:5001/a/b"), ("localhost:5001/a/b", None, None))
        self.assertEqual(lib.image_parts("localhost:5001/a/b:1@sha256:ab"), ("localhost:5001/a/b", "1", "sha256:ab"))


class Labels(unittest.TestCase):
    def test_every_object_is_labelled(self):
        problems = []
        for env, objs in all_objects().items():
            for o in objs:
                labels = o.labels
                if labels.get("pulsedev.dev/stack") != "pulsewatch":
                    problems.append(f"{env}: {o} lacks pulsedev.dev/stack=pulsewatch")
                if labels.get("app.kubernetes.io/part-of") != "pulsewatch":
                    problems.append(f"{env}: {o} lacks app.kubernetes.io/part-of=pulsewatch")
                for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by"):
                    if not labels.get(key):
                        problems.append(f"{env}: {o} lacks {key}")
                if o.path.startswith("rendered"):
                    if not o.namespace:
                        problems.append(f"{env}: {o} has no metadata.namespace")
        self.assertEqual(problems, [], "\n".join(problems))

    def test_dev_is_managed_by_pulsedev(self):
        for o in lib.env_objects(rendered(), "dev", include_plain=False):
            self.assertEqual(o.labels["app.kubernetes.io/managed-by"], "pulsedev", str(o))


class Secrets(unittest.TestCase):
    def test_no_secret_objects_or_inline_values(self):
        for env, objs in all_objects().items():
            for o in objs:
                self.assertNotEqual(o.kind, "Secret", f"{env}: {o}: Secrets are created by pulsedev or External Secrets, never rendered")

    def test_values_files_name_secrets_only(self):
        suspicious = re.compile(r"(password|passwd|token|secret|apikey|api_key|private)", re.I)
        problems = []

        def walk(node, path):
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(v, f"{path}.{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{path}[{i}]")
            elif isinstance(node, str) and suspicious.search(path.rsplit(".", 1)[-1]) and not path.startswith(".global.secrets") \
                    and not path.endswith("secretName"):
                problems.append(f"{path} = {node!r}")

        files = list((REPO / "manifests/envs").glob("*/values.yaml")) + list((REPO / "manifests/charts").glob("*/values.yaml"))
        for f in files:
            walk(yaml.safe_load(f.read_text()), "")
        self.assertEqual(problems, [], "secret-looking values:\n" + "\n".join(problems))

    def test_staging_and_prod_secrets_come_from_external_secrets(self):
        for env in ("staging", "prod"):
            objs = lib.load_objects(REPO / f"manifests/envs/{env}/external-secrets.yaml")
            targets = {o.doc["spec"]["target"]["name"]: o for o in objs if o.kind == "ExternalSecret"}
            self.assertEqual(set(targets), {"pulsewatch-db", "pulsewatch-app"})
            keys = {n: {d["secretKey"] for d in o.doc["spec"]["data"]} for n, o in targets.items()}
            self.assertEqual(keys["pulsewatch-db"], {"username", "password"})
            self.assertIn("jwt-secret", keys["pulsewatch-app"])
            [store] = [o for o in objs if o.kind == "ClusterSecretStore"]
            self.assertEqual(store.doc["spec"]["provider"]["aws"]["service"], "SecretsManager")
            for o in targets.values():
                self.assertEqual(o.doc["spec"]["secretStoreRef"], {"kind": "ClusterSecretStore", "name": store.name})


    def test_writes_need_a_token_outside_dev(self):
        for env, objs in all_objects().items():
            [cm] = [o for o in objs if o.kind == "ConfigMap" and o.name == "api"]
            self.assertEqual(cm.doc["data"]["AUTH_REQUIRED"], "false" if env_of(env) == "dev" else "true", env)


class Ingress(unittest.TestCase):
    def test_only_web_and_api_have_ingress(self):
        for env, objs in all_objects().items():
            names = sorted(o.name for o in objs if o.kind == "Ingress" and o.namespace != "monitoring")
            self.assertEqual(names, ["api", "web"], env)

    def test_dev_tls_comes_from_the_local_ca(self):
        certs = {o.doc["spec"]["secretName"]: o.doc["spec"]["dnsNames"]
                 for o in lib.load_objects(REPO / "manifests/platform/local-ca/certificates.yaml")}
        for o in all_objects()["dev"]:
            if o.kind != "Ingress":
                continue
            self.assertEqual(o.doc["spec"]["ingressClassName"], "nginx")
            for tls in o.doc["spec"]["tls"]:
                self.assertEqual(certs[tls["secretName"]], tls["hosts"], str(o))
        for names in certs.values():
            for n in names:
                self.assertFalse(n.startswith("*"), "no wildcard certificates")

    def test_prod_uses_alb(self):
        for env in ("staging", "prod"):
            for o in all_objects()[env]:
                if o.kind == "Ingress":
                    self.assertEqual(o.doc["spec"]["ingressClassName"], "alb")
                    self.assertEqual(o.doc["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-type"], "ip")

    def test_local_ca_chain(self):
        objs = {(o.kind, o.name): o for o in lib.load_objects(REPO / "manifests/platform/local-ca/issuers.yaml")}
        self.assertIn("selfSigned", objs[("ClusterIssuer", "pulsewatch-selfsigned")].doc["spec"])
        ca = objs[("Certificate", "pulsewatch-local-ca")]
        self.assertTrue(ca.doc["spec"]["isCA"])
        self.assertEqual(ca.namespace, "cert-manager")
        self.assertEqual(ca.doc["spec"]["issuerRef"]["name"], "pulsewatch-selfsigned")
        issuer = objs[("ClusterIssuer", "pulsewatch-local-ca")]
        self.assertEqual(issuer.doc["spec"]["ca"]["secretName"], ca.doc["spec"]["secretName"])


class Migrations(unittest.TestCase):
    def test_sql_versions_are_contiguous(self):
        files = sorted(p.name for p in (REPO / "app/migrations/sql").iterdir())
        versions = []
        for name in files:
            m = re.fullmatch(r"V(\d+)__[a-z0-9_]+\.sql", name)
            self.assertIsNotNone(m, f"{name} does not follow Flyway's V<n>__<description>.sql")
            versions.append(int(m.group(1)))
        self.assertEqual(sorted(versions), list(range(1, len(versions) + 1)))

    def test_job_shape_per_env(self):
        for env, objs in all_objects().items():
            [job] = [o for o in objs if o.kind == "Job"]
            self.assertTrue(job.name.startswith("migrations-"), job.name)
            self.assertGreater(job.doc["spec"]["backoffLimit"], 0)
            self.assertIn("ttlSecondsAfterFinished", job.doc["spec"])
            hook = (job.doc["metadata"].get("annotations") or {}).get("helm.sh/hook")
            if env_of(env) == "dev":
                self.assertIsNone(hook)
            else:
                self.assertEqual(hook, "pre-install,pre-upgrade")
                # what the hook Job needs must exist before it: hooks with a lower weight
                for o in objs:
                    if o.labels.get("app.kubernetes.io/name") == "migrations" and o.kind != "Job":
                        ann = o.doc["metadata"].get("annotations") or {}
                        self.assertEqual(ann.get("helm.sh/hook"), "pre-install,pre-upgrade", str(o))
                        self.assertLess(int(ann["helm.sh/hook-weight"]), int(job.doc["metadata"]["annotations"]["helm.sh/hook-weight"]))

    def test_flyway_skips_its_update_check(self):
        # Flyway asks the internet for a newer release unless told not to; the Job's
        # NetworkPolicy blocks that (and it would be a needless call home).
        for env, objs in all_objects().items():
            [job] = [o for o in objs if o.kind == "Job"]
            [c] = lib.pod_spec(job)["containers"]
            self.assertEqual(c["args"], ["-skipCheckForUpdate", "migrate"], f"{env}: {job}")

    def test_job_name_follows_the_image_and_the_pod_template(self):
        def name(*sets):
            out = lib.helm(*lib.template_args("migrations", "dev", *sets)).stdout
            [job] = [line for line in out.splitlines() if line.startswith("  name: migrations-")]
            return job.removeprefix("  name: ")

        tag = name("--set-string", "migrations.image.tag=2026.11.26-ab12CD")
        self.assertRegex(tag, r"^migrations-2026-11-26-ab12cd-[0-9a-f]{8}$")
        digest = name("--set-string", "migrations.image.digest=sha256:" + "0123456789abcdef" * 4)
        self.assertRegex(digest, r"^migrations-0123456789ab-[0-9a-f]{8}$")
        # Same image, another pod template (a Job's template is immutable): a new name.
        other = name("--set-string", "migrations.image.tag=2026.11.26-ab12CD", "--set", "migrations.resources.limits.cpu=1")
        self.assertNotEqual(other, tag)
        self.assertEqual(name("--set-string", "migrations.image.tag=2026.11.26-ab12CD"), tag)


class Values(unittest.TestCase):
    """The schemas refuse bad values (through the real helm template path)."""

    def refused(self, chart, env, *sets, expect):
        proc = lib.helm(*lib.template_args(chart, env, *sets), check=False)
        self.assertEqual(proc.returncode, 1, f"accepted {sets}")
        # Helm logs (INFO) the charts/pulsewatch-lib symlink it follows before the error
        # (helm/helm internal/sympath/walk.go); the error is the last part.
        self.assertIn("\nError: " if not proc.stderr.startswith("Error: ") else "Error: ", proc.stderr)
        self.assertIn(expect, proc.stderr[proc.stderr.index("Error: "):])

    def test_bad_images_are_refused(self):
        self.refused("api", "dev", "--set-string", "api.image.tag=latest", expect="/api/image/tag")
        self.refused("web", "dev", "--set-string", "web.image.tag=", expect="/web/image/tag")
        self.refused("worker", "dev", "--set-string", "worker.image.digest=sha256:abc", expect="/worker/image/digest")
        self.refused("api", "prod", "--set-string", "api.image.digest=", expect="api.image.digest is required")

    def test_typos_are_refused(self):
        self.refused("api", "dev", "--set", "api.replica=2", expect="replica")
        self.refused("api", "dev", "--set", "nonsense.x=1", expect="nonsense")
        self.refused("api", "dev", "--set", "api.pdb.minAvailable=1,api.pdb.maxUnavailable=1", expect="/api/pdb")

    def test_cli_overrides_win(self):
        out = lib.helm(*lib.template_args("api", "dev", "--set-string", "api.image.repository=localhost:5001/pw/api",
                                          "--set-string", "api.image.tag=0123abcd")).stdout
        self.assertIn('image: "localhost:5001/pw/api:0123abcd"', out)

    def test_shared_helpers_and_global_schema_do_not_drift(self):
        import json
        import tempfile

        import helm_python
        # One library chart holds the shared templates; every service chart depends on it
        # (file://, with charts/pulsewatch-lib a symlink so no `helm dependency build` is
        # needed) and keeps no copy of its own.
        lib_chart = yaml.safe_load((REPO / "manifests/charts/pulsewatch-lib/Chart.yaml").read_text())
        self.assertEqual(lib_chart["type"], "library")

        def defines(text: str) -> set[str]:
            return set(re.findall(r'{{-?\s*define\s+"([^"]+)"', text))
        shared = defines((REPO / "manifests/charts/pulsewatch-lib/templates/_helpers.tpl").read_text())
        self.assertIn("pw.labels", shared)
        for c in lib.CHARTS:
            chart = yaml.safe_load((REPO / f"manifests/charts/{c}/Chart.yaml").read_text())
            self.assertEqual(chart["dependencies"], [{"name": "pulsewatch-lib", "version": lib_chart["version"],
                                                      "repository": "file://../pulsewatch-lib"}], c)
            link = REPO / f"manifests/charts/{c}/charts/pulsewatch-lib"
            self.assertTrue(link.is_symlink() and link.resolve() == (REPO / "manifests/charts/pulsewatch-lib").resolve(), c)
            own = {d for p in (REPO / f"manifests/charts/{c}/templates").glob("*") for d in defines(p.read_text())}
            self.assertEqual(own & shared, set(), f"{c}: redefines templates of pulsewatch-lib")
            # The chart packages (staging/prod install the archive) with the library inside,
            # and the archive renders what the directory renders.
            with tempfile.TemporaryDirectory() as out:
                archive = helm_python.package(REPO / f"manifests/charts/{c}", destination=out)
                with helm_python.Chart.load(archive) as packed:
                    self.assertEqual([d["name"] for d in packed.dependencies], ["pulsewatch-lib"], c)
                for env in ("dev", "prod"):
                    extra = ["--set-string", f"{c}.image.digest=sha256:{'0' * 64}"] if env == "prod" else []
                    args = lib.template_args(c, env, *extra)
                    from_dir = lib.helm(*args, check=False)
                    from_archive = lib.helm(*[archive if a == f"manifests/charts/{c}" else a for a in args], check=False)
                    self.assertEqual(from_dir.returncode, 0, from_dir.stderr)
                    self.assertEqual((from_archive.returncode, from_archive.stdout), (0, from_dir.stdout), f"{c} {env}")
        schemas = {c: json.loads((REPO / f"manifests/charts/{c}/values.schema.json").read_text())["properties"]["global"] for c in lib.CHARTS}
        self.assertEqual(len({json.dumps(s, sort_keys=True) for s in schemas.values()}), 1, "the global schemas differ")
        defaults = {c: yaml.safe_load((REPO / f"manifests/charts/{c}/values.yaml").read_text())["global"] for c in lib.CHARTS}
        self.assertEqual(len({json.dumps(d, sort_keys=True) for d in defaults.values()}), 1, "the global defaults differ")


class HelmShim(unittest.TestCase):
    def test_output_shape_and_determinism(self):
        a = lib.helm(*lib.template_args("api", "dev")).stdout
        b = lib.helm(*lib.template_args("api", "dev")).stdout
        self.assertEqual(a, b)
        self.assertTrue(a.startswith("---\n# Source: api/templates/"))
        kinds = [d["kind"] for d in yaml.safe_load_all(a) if d]
        self.assertEqual(kinds, ["NetworkPolicy", "ServiceAccount", "ConfigMap", "Service", "Deployment", "Ingress"])

    def test_show_only_and_hooks(self):
        out = lib.helm(*lib.template_args("migrations", "prod", "--show-only", "templates/job.yaml")).stdout
        self.assertEqual([d["kind"] for d in yaml.safe_load_all(out) if d], ["Job"])
        out = lib.helm(*lib.template_args("migrations", "prod", "--no-hooks")).stdout
        # helm/helm pkg/cmd/template.go: Fprintln(TrimSpace(manifest)), so an empty release
        # still prints one newline.
        self.assertEqual(out, "\n")

    def test_version_and_errors(self):
        self.assertRegex(lib.helm("version", "--short").stdout, r"^v4\.\d+\.\d+\n$")
        proc = lib.helm("template", "api", "manifests/charts/api", "--frobnicate", check=False)
        self.assertEqual((proc.returncode, proc.stderr), (1, "Error: unknown flag: --frobnicate\n"))
        proc = lib.helm("install", "api", "manifests/charts/api", check=False)
        self.assertEqual(proc.returncode, 1)
        proc = lib.helm("template", "api", "manifests/charts/nope", check=False)
        self.assertEqual(proc.returncode, 1)
        self.assertIn("not found", proc.stderr)


class Platform(unittest.TestCase):
    def test_pins(self):
        pins = tomllib.loads((REPO / "manifests/platform/pins.toml").read_text())
        # what every `up` installs; the optional entries are tested in test_observability.py
        self.assertEqual({k for k, p in pins.items() if "optional" not in p}, {"ingress", "cert-manager"})
        for name, pin in pins.items():
            for key in ("repo_url", "chart", "version", "namespace", "release", "values", "sha256"):
                self.assertIn(key, pin, f"{name}.{key}")
            self.assertRegex(pin["sha256"], r"^([0-9a-f]{64})?$")
            self.assertTrue(yaml.safe_load((REPO / pin["values"]).read_text()), pin["values"])
            self.assertNotRegex(pin["version"], r"[\^~*x]|latest", "exact versions only")
        self.assertEqual(pins["cert-manager"]["version"], "v1.21.1")
        ingress = pins["ingress"]
        self.assertEqual((ingress["chart"], ingress["repo_url"]), ("nginx-ingress", "https://helm.nginx.com/stable"))
        self.assertNotIn("ingress-nginx", ingress["repo_url"] + ingress["oci"], "ingress-nginx is retired")
        self.assertTrue(ingress["app_version"].startswith("5."))
        for f in pins["cert-manager"]["local_ca"]:
            self.assertTrue((REPO / f).is_file(), f)

    def test_kind_ingress_values(self):
        v = yaml.safe_load((REPO / "manifests/platform/nginx-ingress/values-kind.yaml").read_text())["controller"]
        self.assertEqual(v["hostPort"], {"enable": True, "http": 80, "https": 443})
        self.assertEqual(v["nodeSelector"], {"ingress-ready": "true"})
        self.assertEqual(v["ingressClass"]["name"], "nginx")
        self.assertTrue(v["ingressClass"]["setAsDefaultIngress"])


if __name__ == "__main__":
    unittest.main()
