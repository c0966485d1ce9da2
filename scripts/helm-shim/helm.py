"""A `helm`-compatible command line over helm-python-sdk (Helm's Go SDK, no helm binary).

It implements the part of helm's CLI that pulsedev and its tests use, with helm's argument
shape, output format and exit codes:

    helm version [--short]
    helm template [NAME] CHART [-n NS] [-f FILE]... [--set K=V]... [--set-string K=V]...
                  [--set-json K=J]... [--set-file K=PATH]... [--set-literal K=V]...
                  [--show-only PATH]... [--no-hooks] [--skip-tests] [--include-crds]
                  [--generate-name] [--is-upgrade] [--skip-schema-validation]
    helm lint CHART... [-n NS] [-f FILE]... [--set ...] [--strict] [--quiet]
                  [--with-subcharts] [--kube-version V] [--skip-schema-validation]
    helm show chart|values CHART
    helm pull CHART --repo URL --version V [--destination DIR]

Errors go to stderr as `Error: <helm's message>` with exit status 1. Anything else helm has
(install, repo, pull from OCI or a named repository, ...) is refused the same way, so a caller never mistakes the shim for
a full helm. Run through scripts/helm-shim/helm, which picks the right Python.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml

import helm_python
from helm_python import errors as helm_errors
from helm_python.chart import Chart, lint as helm_lint

# helm's install order (pkg/release/v1/util/kind_sorter.go): kinds not listed go last,
# ordered by kind name.
INSTALL_ORDER = [
    "PriorityClass", "Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange",
    "PodSecurityPolicy", "PodDisruptionBudget", "ServiceAccount", "Secret", "SecretList",
    "ConfigMap", "StorageClass", "PersistentVolume", "PersistentVolumeClaim",
    "CustomResourceDefinition", "ClusterRole", "ClusterRoleList", "ClusterRoleBinding",
    "ClusterRoleBindingList", "Role", "RoleList", "RoleBinding", "RoleBindingList", "Service",
    "DaemonSet", "Pod", "ReplicationController", "ReplicaSet", "Deployment",
    "HorizontalPodAutoscaler", "StatefulSet", "Job", "CronJob", "IngressClass", "Ingress",
    "APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
]
KIND_RANK = {kind: i for i, kind in enumerate(INSTALL_ORDER)}


class UsageError(Exception):
    """A command-line mistake; reported like cobra does."""


# ---------------------------------------------------------------------------------------
# Argument parsing, shaped like cobra/pflag: flags anywhere, --flag=value or --flag value,
# short flags -n ns / -n=ns / -nns, `--` ends flags.

@dataclass
class FlagSpec:
    names: tuple[str, ...]
    key: str
    takes_value: bool
    repeat: bool = False


@dataclass
class Parsed:
    positional: list[str] = field(default_factory=list)
    flags: dict[str, Any] = field(default_factory=dict)
    # value flags in command-line order, for --set* precedence within a kind
    ordered: list[tuple[str, str]] = field(default_factory=list)


def parse(args: list[str], specs: list[FlagSpec]) -> Parsed:
    by_name: dict[str, FlagSpec] = {}
    for spec in specs:
        for name in spec.names:
            by_name[name] = spec
    out = Parsed()
    for spec in specs:
        if spec.repeat:
            out.flags[spec.key] = []
        elif not spec.takes_value:
            out.flags[spec.key] = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            out.positional.extend(args[i + 1:])
            break
        if arg.startswith("--") or (arg.startswith("-") and len(arg) > 1):
            inline: str | None = None
            if arg.startswith("--"):
                name, eq, rest = arg.partition("=")
                if eq:
                    inline = rest
            else:
                name = arg[:2]
                rest = arg[2:]
                if rest:
                    inline = rest[1:] if rest.startswith("=") else rest
            spec = by_name.get(name)
            if spec is None:
                if name.startswith("--"):
                    raise UsageError(f"unknown flag: {name}")
                raise UsageError(f"unknown shorthand flag: '{name[1:]}' in {arg}")
            if spec.takes_value:
                if inline is None:
                    if i + 1 >= len(args):
                        raise UsageError(f"flag needs an argument: {name}")
                    i += 1
                    inline = args[i]
                if spec.repeat:
                    out.flags[spec.key].append(inline)
                else:
                    out.flags[spec.key] = inline
                out.ordered.append((spec.key, inline))
            else:
                if inline is not None and inline not in ("true", "false"):
                    raise UsageError(f'invalid argument "{inline}" for "{name}" flag: strconv.ParseBool: parsing "{inline}": invalid syntax')
                out.flags[spec.key] = inline != "false"
        else:
            out.positional.append(arg)
        i += 1
    return out


GLOBAL_FLAGS = [
    FlagSpec(("--debug",), "debug", False),
    FlagSpec(("-n", "--namespace"), "namespace", True),
    FlagSpec(("--kube-context",), "kube_context", True),
    FlagSpec(("--kubeconfig",), "kubeconfig", True),
]

VALUES_FLAGS = [
    FlagSpec(("-f", "--values"), "values", True, repeat=True),
    FlagSpec(("--set",), "set", True, repeat=True),
    FlagSpec(("--set-string",), "set_string", True, repeat=True),
    FlagSpec(("--set-json",), "set_json", True, repeat=True),
    FlagSpec(("--set-file",), "set_file", True, repeat=True),
    FlagSpec(("--set-literal",), "set_literal", True, repeat=True),
]


# ---------------------------------------------------------------------------------------
# Values: -f files in order, then --set-json, --set, --set-string, --set-file, --set-literal
# (the order helm's pkg/cli/values.Options.MergeValues applies them).

def merge_maps(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_maps(out[key], value)
        else:
            out[key] = value
    return out


def read_values_file(path: str) -> dict[str, Any]:
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as err:
        raise helm_errors.HelmIOError(f"open {path}: {err.strerror.lower() if err.strerror else err}") from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise helm_errors.HelmValuesError(f"failed to parse {path}: {err}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise helm_errors.HelmValuesError(f"failed to parse {path}: values must be a map, got {type(loaded).__name__}")
    return loaded


def collect_values(p: Parsed) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for entry in p.flags["values"]:
        for path in entry.split(","):
            if path:
                values = merge_maps(values, read_values_file(path))
    parsers: list[tuple[str, Callable[[str], dict[str, Any]]]] = [
        ("set_json", helm_python.parse_set_json),
        ("set", helm_python.parse_set_string),
        ("set_string", helm_python.parse_set_string_values),
        ("set_file", helm_python.parse_set_file),
        ("set_literal", helm_python.parse_set_literal),
    ]
    for key, parser in parsers:
        for expression in p.flags[key]:
            values = merge_maps(values, parser(expression))
    return values


def load_chart(path: str) -> Chart:
    if not os.path.exists(path):
        raise helm_errors.HelmChartLoadError(
            f"path \"{path}\" not found" if path.startswith((".", "/")) or os.sep in path
            else f"non-absolute URLs should be in form of repo_name/path_to_chart, got: {path}"
        )
    return Chart.load(path)


# ---------------------------------------------------------------------------------------
# helm template

@dataclass
class Doc:
    source: str
    text: str
    kind: str
    hook_events: list[str] = field(default_factory=list)


# Helm's document separator (releaseutil.SplitManifests, helm/helm
# pkg/release/v1/util/manifest.go `sep`), as the Helm of helm-python-sdk has it. Up to
# v4.2.3: `(?:^|\s*\n)---\s*` (Go's \s is [\t\n\f\r ]): a `---` right after any newline
# splits, with the blanks before that newline and all blanks (newlines too) after it. From
# v4.2.4 (commit bfebbb7c1 "Fix vanishing empty lines"): `(?m)^---[ \t]*`. Either way
# `---# Permission to ...` (cert-manager's templates/rbac.yaml) splits there and the comment
# starts the next document. helm-python-sdk renders per template but does not expose this
# split; tests/manifests/upstream_charts.py checks the result against the SDK's own install
# pipeline (install --dry-run=client) for every real chart.
def _helm_separator() -> re.Pattern[str]:
    version = tuple(int(x) for x in re.findall(r"\d+", helm_python.helm_sdk_version())[:3])
    if version >= (4, 2, 4):
        return re.compile(r"(?m)^---[ \t]*")
    return re.compile(r"(?:^|[\t\n\f\r ]*\n)---[\t\n\f\r ]*")


HELM_SEPARATOR = _helm_separator()


def go_trim_left_space(text: str) -> str:
    """strings.TrimLeftFunc(s, unicode.IsSpace)."""
    i = 0
    while i < len(text) and (text[i].isspace() and text[i] not in "\x1c\x1d\x1e\x1f"):
        i += 1
    return text[i:]


def split_manifests(content: str) -> list[str]:
    """releaseutil.SplitManifests: documents in order, blank ones dropped, each left-trimmed."""
    return [go_trim_left_space(d) for d in HELM_SEPARATOR.split(go_trim_left_space(content)) if d.strip()]


def sort_manifests(rendered: dict[str, str]) -> tuple[list[Doc], list[Doc]]:
    """releaseutil.SortManifests (helm/helm pkg/release/v1/util/manifest_sorter.go): files in
    path order, partials and blank files skipped, each document parsed for its head; documents
    with a helm.sh/hook annotation of a known event are hooks (unknown events are dropped),
    all others (comment-only ones too) are manifests. Both sorted by kind, stably."""
    hooks: list[Doc] = []
    plain: list[Doc] = []
    for source in sorted(rendered):
        content = rendered[source]
        if os.path.basename(source).startswith("_") or not content.strip():
            continue
        for text in split_manifests(content):
            try:
                head = yaml.safe_load(text)
            except yaml.YAMLError as err:
                raise helm_errors.HelmRenderError(f"YAML parse error on {source}: {err}") from None
            if head is None:
                head = {}
            if not isinstance(head, dict):
                raise helm_errors.HelmRenderError(
                    f"YAML parse error on {source}: error unmarshaling JSON: json: cannot unmarshal "
                    f"{type(head).__name__} into Go value of type util.SimpleHead")
            meta = head.get("metadata") or {}
            annotations = (meta.get("annotations") or {}) if isinstance(meta, dict) else {}
            hook = annotations.get("helm.sh/hook")
            if hook is None:
                plain.append(Doc(source, text, str(head.get("kind") or "")))
                continue
            events = [h.strip().lower() for h in str(hook).split(",")]
            if all(e in HOOK_EVENTS for e in events):
                hooks.append(Doc(source, text, str(head.get("kind") or ""), events))
    plain.sort(key=lambda d: kind_key(d.kind))
    hooks.sort(key=lambda d: kind_key(d.kind))
    return plain, hooks


# helm/helm pkg/release/v1/util/manifest_sorter.go `events`.
HOOK_EVENTS = {"pre-install", "post-install", "pre-delete", "post-delete", "pre-upgrade",
               "post-upgrade", "pre-rollback", "post-rollback", "test", "test-success"}


def kind_key(kind: str) -> tuple[int, str]:
    """lessByKind: kinds in InstallOrder first, in that order; unknown kinds after them,
    alphabetically (sorted stably, so equal keys keep file order)."""
    return (KIND_RANK.get(kind, len(INSTALL_ORDER)), kind if kind not in KIND_RANK else "")


def without_schemas(chart: Chart, workdir: str) -> Chart:
    """The chart (and its subcharts) without values.schema.json: what --skip-schema-validation
    means to helm (action.Install.SkipSchemaValidation skips chartutil's schema check for the
    chart and every dependency). helm-python-sdk's render has no such option, so the shim
    renders a copy without the schema files."""
    saved = chart.save_dir(workdir)
    for dirpath, _dirs, files in os.walk(saved):
        if "values.schema.json" in files:
            os.remove(os.path.join(dirpath, "values.schema.json"))
    return Chart.load(saved)


def cmd_template(args: list[str]) -> int:
    p = parse(args, GLOBAL_FLAGS + VALUES_FLAGS + [
        FlagSpec(("-s", "--show-only"), "show_only", True, repeat=True),
        FlagSpec(("--no-hooks",), "no_hooks", False),
        FlagSpec(("--skip-tests",), "skip_tests", False),
        FlagSpec(("--include-crds",), "include_crds", False),
        FlagSpec(("--skip-crds",), "skip_crds", False),
        FlagSpec(("-g", "--generate-name",), "generate_name", False),
        FlagSpec(("--is-upgrade",), "is_upgrade", False),
        FlagSpec(("--skip-schema-validation",), "skip_schema", False),
        FlagSpec(("--release-name",), "release_name_flag", False),
        FlagSpec(("--name-template",), "name_template", True),
        FlagSpec(("--version",), "version", True),
    ])
    if p.flags.get("name_template"):
        raise UsageError("--name-template is not supported by this helm shim")
    if p.flags.get("version"):
        raise UsageError("--version needs a chart repository, which this helm shim does not support; pass a chart directory")
    pos = p.positional
    if p.flags["generate_name"]:
        if len(pos) != 1:
            raise UsageError(f"expected at most two arguments, unexpected arguments: {', '.join(pos[1:])}" if pos else "\"helm template\" requires at least 1 argument")
        name, chart_path = "release-name", pos[0]
    elif len(pos) == 1:
        name, chart_path = "release-name", pos[0]
    elif len(pos) == 2:
        name, chart_path = pos
    elif not pos:
        raise UsageError("\"helm template\" requires at least 1 argument\n\nUsage:  helm template [NAME] [CHART] [flags]")
    else:
        raise UsageError(f"expected at most two arguments, unexpected arguments: {', '.join(pos[2:])}")
    helm_python.validate_release_name(name)
    namespace = p.flags.get("namespace") or os.environ.get("HELM_NAMESPACE") or "default"
    values = collect_values(p)

    with load_chart(chart_path) as loaded, tempfile.TemporaryDirectory(prefix="helm-shim-") as work:
        chart = without_schemas(loaded, work) if p.flags["skip_schema"] else loaded
        try:
            rendered = chart.render(values=values, name=name, namespace=namespace,
                                    is_install=not p.flags["is_upgrade"], is_upgrade=p.flags["is_upgrade"])
            crds = chart.crds if p.flags["include_crds"] else []
        finally:
            if chart is not loaded:
                chart.close()

    # action.renderResources drops NOTES.txt before sorting.
    rendered = {k: v for k, v in rendered.items() if not k.endswith("NOTES.txt")}
    plain, hooks = sort_manifests(rendered)
    if p.flags["no_hooks"]:
        hooks = []
    if p.flags["skip_tests"]:
        hooks = [d for d in hooks if not any(e in ("test", "test-success") for e in d.hook_events)]

    show_only = p.flags["show_only"]
    if show_only:
        wanted = {s.replace(os.sep, "/") for s in show_only}
        selected = [d for d in plain + hooks if d.source in wanted or d.source.split("/", 1)[-1] in wanted]
        missing = [s for s in wanted if not any(d.source == s or d.source.split("/", 1)[-1] == s for d in selected)]
        if missing:
            raise helm_errors.HelmRenderError(f"could not find template {sorted(missing)[0]} in chart")
        sys.stdout.write("".join(f"---\n# Source: {d.source}\n{d.text}\n" for d in selected))
        return 0

    # action.renderResources writes the CRDs (with --include-crds) then the manifests, each
    # as "---\n# Source: <path>\n<content>\n"; `helm template` prints that trimmed, one
    # newline, then each hook the same way (helm/helm pkg/cmd/template.go).
    manifest = "".join(f"---\n# Source: {c.get('filename') or c.get('name')}\n{c['data']}\n" for c in crds)
    manifest += "".join(f"---\n# Source: {d.source}\n{d.text}\n" for d in plain)
    out = manifest.strip() + "\n"
    out += "".join(f"---\n# Source: {d.source}\n{d.text}\n" for d in hooks)
    sys.stdout.write(out)
    return 0


# ---------------------------------------------------------------------------------------
# helm lint

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}


def cmd_lint(args: list[str]) -> int:
    p = parse(args, GLOBAL_FLAGS + VALUES_FLAGS + [
        FlagSpec(("--strict",), "strict", False),
        FlagSpec(("--quiet",), "quiet", False),
        FlagSpec(("--with-subcharts",), "with_subcharts", False),
        FlagSpec(("--kube-version",), "kube_version", True),
        FlagSpec(("--skip-schema-validation",), "skip_schema", False),
    ])
    paths = p.positional or ["."]
    values = collect_values(p)
    failed = 0
    for path in paths:
        report = helm_lint(path, values, strict=p.flags["strict"], namespace=p.flags.get("namespace"),
                           with_subcharts=p.flags["with_subcharts"], quiet=p.flags["quiet"],
                           skip_schema_validation=p.flags["skip_schema"],
                           kube_version=p.flags.get("kube_version"))
        messages = report.get("messages") or []
        errors = report.get("errors") or []
        worst = max([m.get("severity", 0) for m in messages] + [0])
        chart_failed = bool(errors) or worst >= 3 or (p.flags["strict"] and worst >= 2)
        if not (p.flags["quiet"] and not messages):
            print(f"==> Linting {path}")
            for m in messages:
                if p.flags["quiet"] and m.get("severity", 0) < 2:
                    continue
                print(f"[{SEVERITY.get(m.get('severity', 0), 'UNKNOWN')}] {m.get('path', '')}: {m.get('error', '')}")
            print()
        if chart_failed:
            failed += 1
    summary = f"{len(paths)} chart(s) linted, {failed} chart(s) failed"
    if failed:
        print(f"Error: {summary}", file=sys.stderr)
        return 1
    print(summary)
    return 0


# ---------------------------------------------------------------------------------------
# helm version / helm show

def cmd_version(args: list[str]) -> int:
    p = parse(args, GLOBAL_FLAGS + [FlagSpec(("--short",), "short", False), FlagSpec(("--template",), "template", True)])
    if p.positional:
        raise UsageError(f"unknown command \"{p.positional[0]}\" for \"helm version\"")
    version = helm_python.helm_sdk_version()
    if p.flags.get("template"):
        raise UsageError("--template is not supported by this helm shim")
    if p.flags["short"]:
        print(version)
    else:
        print(f'version.BuildInfo{{Version:"{version}", GitCommit:"", GitTreeState:"", '
              f'GoVersion:"", KubeClientVersion:"", Shim:"helm-python-sdk {helm_python.__version__}"}}')
    return 0


def cmd_show(args: list[str]) -> int:
    p = parse(args, GLOBAL_FLAGS)
    if len(p.positional) != 2 or p.positional[0] not in ("chart", "values"):
        raise UsageError("this helm shim supports only `helm show chart CHART` and `helm show values CHART`")
    what, path = p.positional
    with load_chart(path):
        pass  # fails like helm when the chart does not load
    name = "Chart.yaml" if what == "chart" else "values.yaml"
    with open(os.path.join(path, name), encoding="utf-8") as f:
        sys.stdout.write(f.read())
    return 0


# ---------------------------------------------------------------------------------------
# helm pull --repo: the classic repository protocol, as helm does it. The index is
# `<repo>/index.yaml`; the chart's URL is `entries[<chart>][version == V].urls[0]`, resolved
# against the repository URL taken as a directory (helm pkg/repo/chartrepo.go
# `FindChartInRepoURL`, pkg/repo/repo.go `ResolveReferenceURL`); the archive is written as
# `<destination>/<last path segment of that URL>` (pkg/downloader/chart_downloader.go
# `DownloadTo`). Proxies come from HTTP(S)_PROXY/NO_PROXY, as Go's net/http and urllib read
# them. Error texts are helm's own.

def cmd_pull(args: list[str]) -> int:
    import urllib.parse
    import urllib.request

    p = parse(args, GLOBAL_FLAGS + [
        FlagSpec(("--repo",), "repo", True),
        FlagSpec(("--version",), "version", True),
        FlagSpec(("--destination", "-d"), "destination", True),
    ])
    if len(p.positional) != 1 or not p.flags.get("repo") or not p.flags.get("version"):
        raise UsageError("this helm shim supports only `helm pull CHART --repo URL --version V [--destination DIR]`")
    chart, repo, version = p.positional[0], p.flags["repo"], p.flags["version"]
    dest = p.flags.get("destination") or "."
    base = repo.rstrip("/") + "/"
    try:
        with urllib.request.urlopen(base + "index.yaml", timeout=60) as r:
            index = yaml.safe_load(r.read())
    except Exception as err:  # noqa: BLE001 - helm folds every cause into one message
        raise UsageError(f'looks like "{repo}" is not a valid chart repository or cannot be reached: {err}')
    entries = (index or {}).get("entries", {}).get(chart, [])
    found = [e for e in entries if str(e.get("version")) == version.lstrip("v") or str(e.get("version")) == version]
    if not found or not found[0].get("urls"):
        raise UsageError(f'chart "{chart}" version "{version}" not found in {repo} repository')
    url = urllib.parse.urljoin(base, found[0]["urls"][0])
    name = os.path.basename(urllib.parse.urlparse(url).path)
    try:
        with urllib.request.urlopen(url, timeout=600) as r:
            data = r.read()
    except Exception as err:  # noqa: BLE001
        raise UsageError(f"failed to fetch {url} : {err}")
    # Written whole, then renamed: helm's fileutil.AtomicWriteFile.
    fd, tmp = tempfile.mkstemp(dir=dest, prefix=".pull-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, os.path.join(dest, name))
    return 0


COMMANDS = {"template": cmd_template, "lint": cmd_lint, "version": cmd_version, "show": cmd_show, "pull": cmd_pull}


def main(argv: list[str]) -> int:
    # Global flags may precede the command (`helm --debug template ...`).
    rest = list(argv)
    command = None
    for i, arg in enumerate(rest):
        if not arg.startswith("-"):
            prev = rest[i - 1] if i else ""
            if prev in ("-n", "--namespace", "--kube-context", "--kubeconfig"):
                continue
            command = arg
            del rest[i]
            break
    try:
        if command is None:
            if "--help" in rest or "-h" in rest or not rest:
                print(__doc__.strip())
                return 0
            raise UsageError("no command given")
        handler = COMMANDS.get(command)
        if handler is None:
            raise UsageError(f"unknown command \"{command}\" for \"helm\" (this helm shim implements: {', '.join(sorted(COMMANDS))})")
        if "-h" in rest or "--help" in rest:
            print(__doc__.strip())
            return 0
        return handler(rest)
    except UsageError as err:
        print(f"Error: {err}", file=sys.stderr)
        return 1
    except helm_errors.HelmError as err:
        print(f"Error: {err.detail.strip()}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
