"""Exec, logs, the service target and telemetry of the kubernetes runtime,
through a real API server (KWOK runs exec as local processes and forwards
pod ports to local servers)."""

from __future__ import annotations

import asyncio
import http.server
import shutil
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
from kubernetes import client

from ecolink.runtime.base import STDERR, STDOUT, ExecRequest, ReplicaNotFound
from ecolink.runtime.kubernetes import KubernetesRuntime, create_kubernetes_runtime
from ecolink.runtime.kubernetes.client import load_target
from ecolink.runtime.kubernetes.stream import V4, V5

from .conftest import Recorder
from .test_runtime import make_spec, ready


@pytest.fixture
async def running(kubeconfig, namespace, monkeypatch):
    """A runtime with one ready 2-replica cluster."""
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    runtime = KubernetesRuntime(load_target(namespace=namespace))
    rec = Recorder()
    await runtime.start(rec, [])
    spec = make_spec(gpu_count=1)
    await runtime.apply(spec)
    reps = await rec.wait_for(ready(rec, spec.cluster_id, 2), what="ready")
    yield runtime, spec, reps
    await runtime.terminate(spec.cluster_id)
    await runtime.shutdown(stop_replicas=False)


async def collect(stream, timeout: float = 20) -> tuple[bytes, bytes]:
    out, err = b"", b""
    async with asyncio.timeout(timeout):
        while (frame := await stream.read()) is not None:
            if frame[0] == STDOUT:
                out += frame[1]
            elif frame[0] == STDERR:
                err += frame[1]
    return out, err


async def read_until(stream, needle: bytes, timeout: float = 10) -> bytes:
    buf = b""
    async with asyncio.timeout(timeout):
        while needle not in buf:
            frame = await stream.read()
            assert frame is not None, f"stream ended before {needle!r}; got {buf!r}"
            buf += frame[1]
    return buf


@pytest.mark.parametrize("protocol", [V5, V4])
async def test_exec_output_and_exit_codes(running, protocol):
    runtime, spec, reps = running
    runtime.exec_protocols = (protocol,)
    stream = await runtime.exec(
        spec.cluster_id,
        reps[0].name,
        ExecRequest(command=("sh", "-c", "echo out; echo err >&2; exit 3")),
    )
    assert stream.protocol == protocol
    out, err = await collect(stream)
    assert (out, err) == (b"out\n", b"err\n")
    assert (await stream.result()).exit_code == 3

    stream = await runtime.exec(spec.cluster_id, reps[1].name, ExecRequest(command=("true",)))
    await collect(stream)
    assert (await stream.result()).exit_code == 0


@pytest.mark.parametrize("protocol", [V5, V4])
async def test_interactive_shell_with_resize(running, protocol):
    runtime, spec, reps = running
    runtime.exec_protocols = (protocol,)
    stream = await runtime.exec(
        spec.cluster_id,
        reps[0].name,
        ExecRequest(command=("sh",), stdin=True, tty=True, width=80, height=24),
    )
    try:
        await stream.write(b"stty size\n")
        await read_until(stream, b"24 80", timeout=30)
        await stream.resize(132, 40)
        # Resize and stdin travel separately: ask until the new size shows. Every byte
        # read is kept, so an answer split over two reads still counts.
        seen = b""
        deadline = time.monotonic() + 30
        while b"40 132" not in seen:
            assert time.monotonic() < deadline, f"size never changed: {seen!r}"
            await stream.write(b"stty size\n")
            ask_again = time.monotonic() + 1
            while b"40 132" not in seen and time.monotonic() < ask_again:
                try:
                    frame = await asyncio.wait_for(stream.read(), ask_again - time.monotonic())
                except TimeoutError:
                    break
                assert frame is not None, f"stream ended before the new size; got {seen!r}"
                seen += frame[1]
        await stream.write(b"exit 7\n")
        await collect(stream)
        assert (await stream.result()).exit_code == 7
    finally:
        await stream.kill()


@pytest.mark.parametrize("protocol", [V5, V4])
async def test_exec_stdin_is_piped(running, protocol):
    runtime, spec, reps = running
    runtime.exec_protocols = (protocol,)
    stream = await runtime.exec(
        spec.cluster_id, reps[0].name, ExecRequest(command=("head", "-c", "17"), stdin=True)
    )
    await stream.write(b"piped through ")
    await stream.write(b"head and more")
    out, _ = await collect(stream)
    assert out == b"piped through hea"
    assert (await stream.result()).exit_code == 0


async def test_exec_unknown_replica(running):
    runtime, spec, _ = running
    with pytest.raises(ReplicaNotFound):
        await runtime.exec(spec.cluster_id, "no-such-pod", ExecRequest(command=("true",)))


async def test_bearer_token_and_kubeconfig_discovery(
    running, kubeconfig, namespace, monkeypatch, tmp_path
):
    """The token context of the kubeconfig, and ~/.kube/config when KUBECONFIG
    is unset, as kubectl finds them."""
    _, spec, reps = running
    monkeypatch.delenv("KUBECONFIG")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    shutil.copy(kubeconfig, home / ".kube" / "config")
    monkeypatch.setenv("HOME", str(home))
    other = create_kubernetes_runtime(namespace, "ecotui-testenv-token")
    assert "Authorization" in other.target.auth_headers()
    assert other.target.configuration.cert_file is None
    rec = Recorder()
    await other.start(rec, [spec])
    try:
        assert other.available()
        assert {r.name for r in other.replicas(spec.cluster_id)} == {r.name for r in reps}
        stream = await other.exec(
            spec.cluster_id, reps[0].name, ExecRequest(command=("echo", "token"))
        )
        out, _ = await collect(stream)
        assert out == b"token\n"
    finally:
        await other.shutdown(stop_replicas=False)


async def test_logs_tail_follow_previous(running, k8s_env):
    runtime, spec, reps = running
    marker = f"m{time.monotonic_ns()}"
    k8s_env.append_pod_log(f"{marker} one", f"{marker} two", f"{marker} three")
    chunks = [
        c
        async for c in runtime.logs(
            spec.cluster_id, reps[0].name, tail=2, follow=False, previous=False
        )
    ]
    text = b"".join(chunks).decode()
    assert text.splitlines() == [f"{marker} two", f"{marker} three"]

    k8s_env.append_pod_log(f"{marker} before restart", previous=True)
    prev = b"".join(
        [
            c
            async for c in runtime.logs(
                spec.cluster_id, reps[0].name, tail=1, follow=False, previous=True
            )
        ]
    ).decode()
    assert prev.strip() == f"{marker} before restart"

    follow = runtime.logs(spec.cluster_id, reps[0].name, tail=1, follow=True, previous=False)
    got = b""
    async with asyncio.timeout(20):
        got += await follow.__anext__()
        k8s_env.append_pod_log(f"{marker} live")
        while f"{marker} live".encode() not in got:
            got += await follow.__anext__()
    await follow.aclose()


class _Named(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's naming
        body = f"{self.server.label} {self.path}".encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextmanager
def local_server(label: str, handler=_Named):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.label = label  # type: ignore[attr-defined]
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield srv.server_address[1]
    finally:
        srv.shutdown()
        srv.server_close()


def forward_pod_port(admin, namespace: str, pod: str, port: int, target_port: int) -> None:
    """Tell KWOK's kubelet where the pod's port leads (a local server)."""
    client.CustomObjectsApi(admin).create_namespaced_custom_object(
        "kwok.x-k8s.io",
        "v1alpha1",
        namespace,
        "portforwards",
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "PortForward",
            "metadata": {"name": pod, "namespace": namespace},
            "spec": {
                "forwards": [
                    {"ports": [port], "target": {"port": target_port, "address": "127.0.0.1"}}
                ]
            },
        },
    )


async def test_service_target_through_port_forward(running, admin, namespace):
    runtime, spec, reps = running
    with local_server("alpha") as pa, local_server("beta") as pb:
        forward_pod_port(admin, namespace, reps[0].name, 8080, pa)
        forward_pod_port(admin, namespace, reps[1].name, 8080, pb)
        async with httpx.AsyncClient(timeout=10) as http_client:
            # KWOK picks the PortForward objects up from an informer: wait.
            for rep in reps:
                hp = await runtime.service_target(spec.cluster_id, rep.name, 8080)
                deadline = time.monotonic() + 15
                while True:
                    try:
                        await http_client.get(f"http://{hp.host}:{hp.port}/warmup")
                        break
                    except httpx.TransportError:
                        assert time.monotonic() < deadline, "port-forward never worked"
                        await asyncio.sleep(0.3)
            seen = []
            for rep in reps:
                hp = await runtime.service_target(spec.cluster_id, rep.name, 8080)
                assert hp.host == "127.0.0.1"
                for i in range(2):
                    r = await http_client.get(f"http://{hp.host}:{hp.port}/p{i}")
                    assert r.status_code == 200
                    seen.append(r.text)
        assert seen == ["alpha /p0", "alpha /p1", "beta /p0", "beta /p1"]
        # The same listener serves the same replica again.
        again = await runtime.service_target(spec.cluster_id, reps[0].name, 8080)
        assert again == await runtime.service_target(spec.cluster_id, reps[0].name, 8080)


async def test_telemetry_nvidia_smi_reports_its_source(running):
    runtime, spec, reps = running
    readings = await runtime.telemetry(spec.cluster_id)
    assert {t.replica for t in readings} == {r.name for r in reps}
    assert all(t.source == "nvidia-smi" for t in readings)
    if shutil.which("nvidia-smi"):
        # KWOK runs exec on this host: real GPUs answer.
        assert all(t.gpus for t in readings)
    else:
        assert all(not t.gpus for t in readings)
        assert all(t.note and "nvidia-smi is not available" in t.note for t in readings)
    # Bounded rate: a second call within the interval execs nothing new.
    again = await runtime.telemetry(spec.cluster_id)
    assert again == readings


DCGM_TEXT = """# HELP DCGM_FI_DEV_GPU_UTIL GPU utilization (in %).
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
{rows}
"""


async def test_telemetry_from_dcgm_exporter(running, admin, namespace):
    runtime, spec, reps = running
    rows = []
    for i, rep in enumerate(reps):
        labels = (
            f'gpu="{i}",UUID="GPU-{i}",modelName="NVIDIA H100 80GB HBM3",'
            f'container="main",namespace="{namespace}",pod="{rep.name}"'
        )
        rows += [
            f"DCGM_FI_DEV_GPU_UTIL{{{labels}}} {40 + i}",
            f"DCGM_FI_DEV_FB_USED{{{labels}}} 1000",
            f"DCGM_FI_DEV_FB_FREE{{{labels}}} 80000",
            f"DCGM_FI_DEV_GPU_TEMP{{{labels}}} 55",
            f"DCGM_FI_DEV_POWER_USAGE{{{labels}}} 300.5",
        ]
    text = DCGM_TEXT.format(rows="\n".join(rows)).encode()

    class Exporter(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):
            pass

    core = client.CoreV1Api(admin)
    exporter = "dcgm-exporter-test"
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": exporter, "labels": {"app.kubernetes.io/name": "dcgm-exporter"}},
            "spec": {
                "containers": [{"name": "exporter", "image": "dcgm-exporter"}],
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
            },
        },
    )
    try:
        with local_server("dcgm", Exporter) as port:
            forward_pod_port(admin, namespace, exporter, 9400, port)
            deadline = time.monotonic() + 20
            while True:
                # Until KWOK runs the pod and knows the PortForward, the
                # runtime finds no (or a silent) exporter.
                runtime.gpu_telemetry.dcgm_cache = (0.0, None)
                readings = await runtime.telemetry(spec.cluster_id)
                if {t.source for t in readings} == {"dcgm"} and all(t.gpus for t in readings):
                    break
                assert time.monotonic() < deadline, readings
                await asyncio.sleep(0.3)
        by_name = {t.replica: t for t in readings}
        assert {t.source for t in readings} == {"dcgm"}
        for i, rep in enumerate(reps):
            (gpu,) = by_name[rep.name].gpus
            assert (gpu.uuid, gpu.utilization, gpu.memory_used_mib, gpu.memory_total_mib) == (
                f"GPU-{i}",
                40.0 + i,
                1000,
                81000,
            )
            assert gpu.power_w == 300.5 and gpu.temperature_c == 55.0
    finally:
        core.delete_namespaced_pod(exporter, namespace, grace_period_seconds=0)
        deadline = time.monotonic() + 30
        while core.list_namespaced_pod(
            namespace, label_selector="app.kubernetes.io/name=dcgm-exporter"
        ).items:
            assert time.monotonic() < deadline, "exporter pod not gone"
            await asyncio.sleep(0.2)
