"""A real Kubernetes control plane (scripts/k8s-testenv) for the tests here.

The control plane starts once per test session. With CI=true a failure to
build or start it fails the tests; elsewhere the tests skip when the binaries
are not built yet and `go` is not on PATH to build them.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "k8s-testenv"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# A cold build takes minutes; only the first test that needs the control
# plane waits for it, so only that one gets this much time.
BUILD_TIMEOUT = 45 * 60


def _binaries_cached() -> bool:
    return subprocess.run([sys.executable, str(SCRIPT), "--check"]).returncode == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "k8s_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))
            break


class TestEnv:
    """The running control plane and the handles tests need."""

    def __init__(self, kubeconfig: Path, stderr_path: Path | None) -> None:
        self.kubeconfig = kubeconfig
        self.stderr_path = stderr_path
        self.info = json.loads((kubeconfig.parent / "testenv.json").read_text())
        self.server: str = self.info["server"]
        self.pid: int = self.info["pid"]

    def _healthy(self) -> bool:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(str(self.kubeconfig), client_configuration=cfg)
        cfg.retries = 0
        api = client.ApiClient(cfg)
        try:
            client.VersionApi(api).get_code(_request_timeout=2)
            return True
        except Exception:
            return False
        finally:
            api.close()

    def stop_apiserver(self) -> None:
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while self._healthy():
            assert time.monotonic() < deadline, "the API server did not stop"
            time.sleep(0.1)

    def start_apiserver(self) -> None:
        counter = self.kubeconfig.parent / "api-restarts"
        before = int(counter.read_text() or 0)
        os.kill(self.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 120
        # Wait until the script has also restarted the components behind it.
        while int(counter.read_text() or 0) <= before or not self._healthy():
            os.kill(self.pid, 0)  # raises when the control plane died
            assert time.monotonic() < deadline, "the API server did not come back"
            time.sleep(0.2)

    def append_pod_log(self, *lines: str, previous: bool = False) -> None:
        """Lines every pod's log shows (KWOK serves one CRI-format file)."""
        path = self.info["pod_logs"]["previous" if previous else "current"]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())
        with open(path, "a") as f:
            for line in lines:
                f.write(f"{stamp} stdout F {line}\n")

    def stderr_tail(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-4000:] if self.stderr_path else ""
        except OSError:
            return ""


@pytest.fixture(scope="session")
def k8s_env() -> Iterator[TestEnv]:
    reuse = os.environ.get("K8S_TESTENV_KUBECONFIG")
    if reuse:
        # A control plane started by hand (scripts/k8s-testenv) for quick reruns.
        yield TestEnv(Path(reuse), None)
        return
    if not _binaries_cached() and not IN_CI and shutil.which("go") is None:
        pytest.skip(
            "the Kubernetes control plane is not built and `go` is not on PATH: "
            "install Go and run scripts/k8s-testenv --build (or set CI=true)"
        )
    logdir = Path(tempfile.mkdtemp(prefix="k8s-testenv-log-"))
    stderr_path = logdir / "stderr.log"
    stderr = open(stderr_path, "w")
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    line: list[str] = []

    def read_first_line() -> None:
        assert proc.stdout is not None
        line.append(proc.stdout.readline())

    reader = threading.Thread(target=read_first_line, daemon=True)
    reader.start()
    reader.join(BUILD_TIMEOUT - 60)
    first = line[0].strip() if line else ""
    if not first.startswith("KUBECONFIG="):
        proc.terminate()
        with open(stderr_path) as f:
            tail = f.read()[-6000:]
        pytest.fail(f"scripts/k8s-testenv did not start:\n{tail}", pytrace=False)
    env = TestEnv(Path(first.split("=", 1)[1]), stderr_path)
    try:
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr.close()
        shutil.rmtree(logdir, ignore_errors=True)


@pytest.fixture(scope="session")
def kubeconfig(k8s_env: TestEnv) -> Iterator[str]:
    yield str(k8s_env.kubeconfig)


@pytest.fixture
def admin(k8s_env: TestEnv):
    """The official client, for setting up and checking from the side."""
    from kubernetes import client, config

    cfg = client.Configuration()
    config.load_kube_config(str(k8s_env.kubeconfig), client_configuration=cfg)
    api = client.ApiClient(cfg)
    yield api
    api.close()


@pytest.fixture
def namespace(admin) -> Iterator[str]:
    """A fresh namespace per test: tests do not see each other's clusters."""
    from kubernetes import client

    name = f"t-{uuid.uuid4().hex[:10]}"
    core = client.CoreV1Api(admin)
    core.create_namespace({"metadata": {"name": name}})
    # Pods need the namespace's default service account (made by a controller).
    deadline = time.monotonic() + 30
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            break
        except client.ApiException:
            assert time.monotonic() < deadline, "no default service account"
            time.sleep(0.1)
    yield name
    try:
        core.delete_namespace(name, propagation_policy="Background")
    except Exception:
        pass


class Recorder:
    """A RuntimeListener that remembers everything and lets tests wait."""

    def __init__(self) -> None:
        self.replicas: dict[str, list] = {}
        self.events: list[tuple[str, str, str, str | None]] = []
        self.failed: list[tuple[str, str]] = []
        self.availability: list[bool] = []
        self.updates: list[tuple[float, str, list]] = []
        self._changed = asyncio.Event()

    def _poke(self) -> None:
        self._changed.set()

    def replicas_changed(self, cluster_id: str, replicas) -> None:
        self.replicas[cluster_id] = list(replicas)
        self.updates.append((time.monotonic(), cluster_id, list(replicas)))
        self._poke()

    def runtime_event(self, cluster_id: str, kind: str, message: str, replica: str | None = None):
        self.events.append((cluster_id, kind, message, replica))
        self._poke()

    def cluster_failed(self, cluster_id: str, message: str) -> None:
        self.failed.append((cluster_id, message))
        self._poke()

    def runtime_available_changed(self, available: bool) -> None:
        self.availability.append(available)
        self._poke()

    def kinds(self, cluster_id: str) -> list[str]:
        return [e[1] for e in self.events if e[0] == cluster_id]

    async def wait_for(self, pred: Callable[[], object], timeout: float = 30, what: str = ""):
        deadline = time.monotonic() + timeout
        while True:
            value = pred()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what or pred}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))
            except TimeoutError:
                pass


def forbid_deployments(core: Any, namespace: str, timeout: float = 30.0) -> None:
    """A quota of no Deployments in ``namespace``, returned once it is enforced.

    The API server's quota admission only counts a quota whose status the quota
    controller has filled in; until then a create passes. On a busy machine that
    takes a moment, so this waits for ``status.hard`` before returning.
    """
    core.create_namespaced_resource_quota(
        namespace,
        {
            "metadata": {"name": "no-deployments"},
            "spec": {"hard": {"count/deployments.apps": "0"}},
        },
    )
    deadline = time.monotonic() + timeout
    while not (core.read_namespaced_resource_quota("no-deployments", namespace).status.hard or {}):
        assert time.monotonic() < deadline, "the quota controller never filled in the quota"
        time.sleep(0.1)
