"""scripts/e2e-dev, the e2e workflow's `dev` job, run here for real against stand-ins.

The stand-in `pulsedev` prints events recorded from the real `pulsedev dev --output json`
(fixtures/dev-events.jsonl: a run of tests/it/dev.rs's live-update test against the fake
API server), with the URLs pointed at a local HTTPS server whose certificate a throwaway CA
signed (openssl). It watches the two files the script edits, and "syncs" a change as `dev`
does: the file's new text is what the server serves from then on, and a `sync` event
follows. Modes make it misbehave: a change never served, a rebuild instead of a sync, a
failed `up`, a non-zero exit on Ctrl-C, and a CA that does not match the server's.

Run by tests/manifests/delivery.py (scripts/validate-manifests step `delivery`).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "e2e-dev"
RECORDED = Path(__file__).resolve().parent / "fixtures" / "dev-events.jsonl"

# The stand-in `pulsedev`: `dev ...` and `trust --out FILE`, driven by STANDIN_* variables.
STANDIN = textwrap.dedent(
    r'''
    import json, os, shutil, signal, sys, time
    from pathlib import Path

    mode = os.environ["STANDIN_MODE"]
    root, served = Path(os.environ["STANDIN_ROOT"]), Path(os.environ["STANDIN_SERVED"])
    port = os.environ["STANDIN_PORT"]
    Path(os.environ["STANDIN_ARGV"]).write_text(json.dumps(sys.argv[1:]))
    if sys.argv[1] == "trust":
        shutil.copy(os.environ["STANDIN_CA"], sys.argv[sys.argv.index("--out") + 1])
        sys.exit(0)
    recorded = {}
    for line in Path(os.environ["STANDIN_RECORDED"]).read_text().splitlines():
        if line.strip():
            e = json.loads(line)
            recorded.setdefault(e.get("event"), e)

    def emit(e):
        print(json.dumps(e), flush=True)

    up = dict(recorded["up"])
    up["urls"] = [f"https://api.pulsewatch.localhost:{port}", f"https://pulsewatch.localhost:{port}"]
    if mode == "up-fails":
        up["ok"] = False
        up["error"] = {"id": "cluster-create-failed", "message": "kind create cluster failed",
                       "hint": "see the kind log", "exit_code": 3}
        emit(up)
        sys.exit(3)
    stop = []
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    emit(up)
    emit({"event": "log", "service": "api", "pod": "api-1", "container": "api",
          "time": "2026-11-30T19:00:00Z", "line": "listening on :3001"})
    print("a line that is not an event", flush=True)
    emit(recorded["watching"])
    files = {"web": root / "app/web/public/index.html", "api": root / "app/api/src/app.js"}
    seen = {s: f.read_text() for s, f in files.items()}
    while not stop:
        for service, f in files.items():
            text = f.read_text()
            if text == seen[service]:
                continue
            seen[service] = text
            if mode == "api-never" and service == "api":
                # As `dev` shows a failed live update (view.rs `error`: ui::error_json).
                emit({"id": "exec-failed", "message": "tar into api-1 exited with 2", "hint": "h",
                      "exit_code": 3, "event": "error"})
                continue
            if mode == "web-rebuilt" and service == "web":
                e = dict(recorded["build"])
                e["service"] = "web"
                emit(e)
                (served / service).write_text(text)
                continue
            t0 = time.monotonic()
            (served / service).write_text(text)
            e = dict(recorded["sync"])
            e.update(service=service, changed=[str(f.relative_to(root))],
                     seconds=round(time.monotonic() - t0, 2))
            emit(e)
        time.sleep(0.02)
    emit(recorded["stopped"])
    if mode == "stack-gone":
        for f in served.iterdir():
            f.unlink()
    sys.exit(130 if mode == "bad-exit" else 0)
    '''
)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", cwd=d)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    served: Path


class Handler(http.server.BaseHTTPRequestHandler):
    """The ingress, as far as the script sees it: the web's page at `/` on
    pulsewatch.localhost, the api's response at `/health/live` on api.pulsewatch.localhost;
    each is the text last "synced" (404 before)."""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        host = (self.headers.get("Host") or "").split(":")[0]
        route = {("api.pulsewatch.localhost", "/health/live"): "api", ("pulsewatch.localhost", "/"): "web"}
        f = self.server.served / route.get((host, self.path), "none")  # type: ignore[attr-defined]
        body = f.read_bytes() if f.is_file() else b"not found"
        self.send_response(200 if f.is_file() else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


class E2eDevScript(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        if not shutil.which("openssl"):
            # With CI set a missing tool is a failure, never a skip (as the rest of delivery.py).
            if os.environ.get("CI"):
                raise AssertionError("openssl is needed for the local HTTPS server's certificates")
            raise unittest.SkipTest("openssl is needed for the local HTTPS server's certificates")
        cls.tmp = tempfile.TemporaryDirectory()
        d = cls.pki = Path(cls.tmp.name)
        make_ca(d, "ca")
        make_ca(d, "other-ca")
        (d / "san.cnf").write_text("subjectAltName=DNS:pulsewatch.localhost,DNS:api.pulsewatch.localhost\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=pulsewatch.localhost",
                "-keyout", "server.key", "-out", "server.csr", cwd=d)
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "2", "-extfile", "san.cnf", "-out", "server.crt", cwd=d)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(d / "server.crt", d / "server.key")
        cls.server = Server(("127.0.0.1", 0), Handler)
        cls.server.socket = ctx.wrap_socket(cls.server.socket, server_side=True)
        threading.Thread(target=cls.server.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls) -> None:
        cls.server.shutdown()
        cls.server.server_close()
        cls.tmp.cleanup()

    def run_script(self, mode: str, ca: str = "ca.crt", deadline: float = 30) -> tuple[subprocess.CompletedProcess[str], Path]:
        w = Path(tempfile.mkdtemp(dir=self.tmp.name))
        for rel in ("app/web/public/index.html", "app/api/src/app.js"):
            (w / "root" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / rel, w / "root" / rel)
        # What the stack serves before any change: the files as they are.
        (w / "served").mkdir()
        shutil.copy(REPO / "app/web/public/index.html", w / "served" / "web")
        shutil.copy(REPO / "app/api/src/app.js", w / "served" / "api")
        self.server.served = w / "served"
        standin = w / "pulsedev"
        standin.write_text(f"#!{sys.executable}\n{STANDIN}")
        standin.chmod(0o755)
        env = dict(
            os.environ,
            STANDIN_MODE=mode,
            STANDIN_ROOT=str(w / "root"),
            STANDIN_SERVED=str(w / "served"),
            STANDIN_PORT=str(self.server.server_address[1]),
            STANDIN_CA=str(self.pki / ca),
            STANDIN_RECORDED=str(RECORDED),
            STANDIN_ARGV=str(w / "argv.json"),
            GITHUB_STEP_SUMMARY=str(w / "summary.md"),
        )
        proc = subprocess.run(
            [sys.executable, str(SCRIPT), "--pulsedev", str(standin), "--root", str(w / "root"),
             "--deadline", str(deadline), "--start-deadline", "30", "--stop-deadline", "10",
             "--events", str(w / "events.jsonl"), "--results", str(w / "results.json")],
            env=env, capture_output=True, text=True, timeout=120,
        )
        # The checkout is as it was, whatever happened.
        for rel in ("app/web/public/index.html", "app/api/src/app.js"):
            self.assertEqual((w / "root" / rel).read_text(), (REPO / rel).read_text(), f"{rel} not restored")
        return proc, w

    def test_both_changes_served_are_measured_and_reported(self) -> None:
        proc, w = self.run_script("ok")
        self.assertEqual(proc.returncode, 0, proc.stdout + proc.stderr)
        results = {r["service"]: r for r in json.loads((w / "results.json").read_text())}
        self.assertEqual(sorted(results), ["api", "web"])
        for r in results.values():
            self.assertIsNone(r["problem"])
            # Measured from the write: positive, and well inside the deadline.
            self.assertGreater(r["sync_s"], 0)
            self.assertGreater(r["served_s"], 0)
            self.assertLess(max(r["sync_s"], r["served_s"]), 30)
        summary = (w / "summary.md").read_text()
        self.assertIn("| web | `app/web/public/index.html` |", summary)
        self.assertIn("| api | `app/api/src/app.js` |", summary)
        self.assertNotIn("failed", summary)
        self.assertIn("sync event", proc.stdout)
        self.assertIn("dev stopped with exit 0 after Ctrl-C", proc.stdout)
        self.assertIn("the stack still serves", proc.stdout)
        # dev ran in CI mode with JSON events; the stand-in's last run was `trust`.
        self.assertEqual(json.loads((w / "argv.json").read_text())[:2], ["trust", "--ci"])
        self.assertIn("dev --ci --output json", proc.stdout)
        # Every line of dev is kept, the non-JSON one too.
        events = (w / "events.jsonl").read_text()
        self.assertIn("a line that is not an event", events)
        self.assertIn('"event": "stopped"', events)

    def test_a_change_never_served_fails_at_the_deadline_naming_it(self) -> None:
        t0 = time.monotonic()
        proc, w = self.run_script("api-never", deadline=3)
        took = time.monotonic() - t0
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertGreaterEqual(took, 3)
        results = {r["service"]: r for r in json.loads((w / "results.json").read_text())}
        self.assertIsNone(results["web"]["problem"])
        self.assertIn("not served through the ingress within 3s", results["api"]["problem"])
        self.assertIn("no sync event of api", results["api"]["problem"])
        self.assertIn("dev said: error[exec-failed] tar into api-1 exited with 2", results["api"]["problem"])
        self.assertIsNone(results["api"]["served_s"])
        self.assertIn("FAILED: api: not served", proc.stdout)
        self.assertIn("| api | `app/api/src/app.js` | - | - | - | failed: not served", (w / "summary.md").read_text())

    def test_a_rebuild_instead_of_a_live_update_fails(self) -> None:
        proc, w = self.run_script("web-rebuilt")
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        results = {r["service"]: r for r in json.loads((w / "results.json").read_text())}
        self.assertIn("rebuilt instead of live-updated", results["web"]["problem"])
        self.assertIsNotNone(results["web"]["served_s"])
        self.assertIsNone(results["api"]["problem"])

    def test_a_ca_that_does_not_match_the_server_is_never_served(self) -> None:
        proc, w = self.run_script("ok", ca="other-ca.crt", deadline=2)
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        results = {r["service"]: r for r in json.loads((w / "results.json").read_text())}
        self.assertIn("CERTIFICATE_VERIFY_FAILED", results["web"]["problem"])
        # Synced all the same: the sync time is measured apart from the serving.
        self.assertIsNotNone(results["web"]["sync_s"])

    def test_a_failed_up_fails_at_once_with_its_error(self) -> None:
        proc, w = self.run_script("up-fails")
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertIn("up failed: error[cluster-create-failed] kind create cluster failed", proc.stdout)
        self.assertIn("**Failed:** up failed", (w / "summary.md").read_text())

    def test_a_stack_that_stops_serving_after_ctrl_c_fails(self) -> None:
        proc, w = self.run_script("stack-gone", deadline=2)
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertIn("the stack no longer serves https://pulsewatch.localhost:", proc.stdout)
        self.assertIn("after dev stopped (HTTP 404", proc.stdout)

    def test_a_non_zero_exit_on_ctrl_c_fails(self) -> None:
        proc, _ = self.run_script("bad-exit")
        self.assertEqual(proc.returncode, 1, proc.stdout + proc.stderr)
        self.assertIn("exited with 130 after Ctrl-C (0 expected)", proc.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
