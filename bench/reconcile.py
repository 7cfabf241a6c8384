"""Benchmark of the kubernetes runtime against the real test control plane.

Starts scripts/k8s-testenv (or uses --kubeconfig), adds the KWOK nodes it
needs, and measures:

1. Scale 2 -> 32 replicas until all are ready, through ecolink (a real
   `ecolink serve --runtime kubernetes`, POST /scale, then GET until 32 are
   ready), beside `kubectl scale` plus `kubectl rollout status` on a Deployment
   of the same shape on the same control plane in the same run (the official
   Python client does the same when kubectl is not installed). Median of
   --rounds rounds, alternating.
2. API server requests per minute while --pods pods are watched: ecolink's
   runtime (list once, then watch) beside a poller that lists the same pods
   every 2 seconds, counted on the client and, as a cross-check, from the API
   server's own `apiserver_request_total` for pods (minus an idle baseline).

Prints the figures and their ratios.

Usage: python bench/reconcile.py [--rounds 3] [--pods 1000] [--window 60] [--kubeconfig FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "src")]

from kubernetes import client, config  # noqa: E402

from ecolink.runtime.base import ClusterSpec  # noqa: E402
from ecolink.runtime.kubernetes import KubernetesRuntime  # noqa: E402
from ecolink.runtime.kubernetes.client import load_target  # noqa: E402

PRODUCT = "NVIDIA-H100-80GB-HBM3"
CATALOG = f"""
[[regions]]
name = "bench"
gpu_budget = 100000
node_labels = {{ "topology.kubernetes.io/region" = "bench" }}

[[regions.gpu_types]]
name = "H100-80GB"
rate_per_gpu_hour = "2.50"
gpu_counts = [1, 2, 4, 8]
node_labels = {{ "nvidia.com/gpu.product" = "{PRODUCT}" }}
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ control plane


class ControlPlane:
    def __init__(self, kubeconfig: str | None) -> None:
        self.proc: subprocess.Popen[str] | None = None
        if kubeconfig:
            self.kubeconfig = kubeconfig
            return
        log("starting scripts/k8s-testenv (builds what is missing) ...")
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "k8s-testenv")],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("KUBECONFIG="):
            raise SystemExit("scripts/k8s-testenv did not start")
        self.kubeconfig = line.split("=", 1)[1]

    def close(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(60)


def api_client(kubeconfig: str) -> client.ApiClient:
    cfg = client.Configuration()
    config.load_kube_config(kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


def add_nodes(
    api: client.ApiClient, prefix: str, count: int, region: str, gpus: int, pods: int
) -> None:
    core = client.CoreV1Api(api)
    for i in range(count):
        cap = {"cpu": "1000", "memory": "4Ti", "pods": str(pods), "nvidia.com/gpu": str(gpus)}
        body = {
            "metadata": {
                "name": f"{prefix}-{i}",
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "kubernetes.io/hostname": f"{prefix}-{i}",
                    "type": "kwok",
                    "nvidia.com/gpu.product": PRODUCT,
                    "topology.kubernetes.io/region": region,
                },
            },
            "spec": {
                "taints": [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]
            },
            "status": {"capacity": cap, "allocatable": cap},
        }
        try:
            core.create_node(body)
        except client.ApiException as e:
            if e.status != 409:
                raise
    deadline = time.monotonic() + 60
    while True:
        ready = sum(
            1
            for n in core.list_node(label_selector=f"topology.kubernetes.io/region={region}").items
            if any(c.type == "Ready" and c.status == "True" for c in n.status.conditions or [])
        )
        if ready >= count:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"bench nodes {prefix} not Ready")
        time.sleep(0.2)


def make_namespace(api: client.ApiClient) -> str:
    core = client.CoreV1Api(api)
    name = f"bench-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    while True:
        try:
            core.read_namespaced_service_account("default", name)
            return name
        except client.ApiException:
            time.sleep(0.1)


# ------------------------------------------------------------------ part 1: scale


class Ecolink:
    def __init__(self, kubeconfig: str, namespace: str, state: Path) -> None:
        self.state = state
        self.env = dict(
            os.environ,
            KUBECONFIG=kubeconfig,
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join([str(ROOT / "backend"), str(ROOT / "src")]),
        )
        (state / "catalog.toml").write_text(CATALOG)
        self.cli("accounts", "create", "bench", "--credit", "1000000")
        self.key = self.cli("keys", "create", "--account", "bench").split()[-1]
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ecolink",
                "serve",
                "--port",
                "0",
                "--runtime",
                "kubernetes",
                "--namespace",
                namespace,
                "--catalog",
                str(state / "catalog.toml"),
                "--state-dir",
                str(state),
            ],
            env=self.env,
            stdout=open(state / "serve.out", "ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                info = json.loads((state / "server.json").read_text())
                self.url = info["url"]
                if httpx.get(self.url + "/healthz", timeout=2).status_code == 200:
                    break
            except (OSError, ValueError, KeyError, httpx.HTTPError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(
                    "ecolink serve did not start:\n" + (state / "serve.out").read_text()[-3000:]
                )
            time.sleep(0.1)
        self.http = httpx.Client(
            base_url=self.url, timeout=30, headers={"Authorization": f"Bearer {self.key}"}
        )

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "ecolink", *args, "--state-dir", str(self.state)],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def ready_count(self, cid: str) -> int:
        return int(self.http.get(f"/gpu-clusters/{cid}").json()["ready_replicas"])

    def wait_ready(self, cid: str, n: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            c = self.http.get(f"/gpu-clusters/{cid}").json()
            if c["ready_replicas"] == n and len(c["replica_states"]) == n:
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"cluster not at {n} ready: {json.dumps(c)[:1500]}")
            time.sleep(0.02)

    def close(self) -> None:
        self.http.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)


def kubectl_like_deployment(api: client.ApiClient, namespace: str, name: str) -> None:
    """A Deployment of the same shape as ecolink's, that ecolink does not own."""
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"bench": name}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 1},
            },
            "template": {
                "metadata": {"labels": {"bench": name}},
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "example/app:1",
                            "command": ["sh", "-c", "sleep infinity"],
                            "resources": {"limits": {"nvidia.com/gpu": "1"}},
                        }
                    ],
                    "nodeSelector": {
                        "nvidia.com/gpu.product": PRODUCT,
                        "topology.kubernetes.io/region": "bench",
                    },
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                },
            },
        },
    }
    client.AppsV1Api(api).create_namespaced_deployment(
        namespace, client.V1Deployment.from_dict(body)
    )


def wait_deployment(api: client.ApiClient, namespace: str, name: str, n: int) -> None:
    apps = client.AppsV1Api(api)
    deadline = time.monotonic() + 300
    while True:
        d = apps.read_namespaced_deployment(name, namespace)
        if (d.status.ready_replicas or 0) == n and (d.status.replicas or 0) == n:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"deployment {name} not at {n}")
        time.sleep(0.05)


def kubectl_scale(
    kubeconfig: str, api: client.ApiClient, namespace: str, name: str, n: int
) -> tuple[float, str]:
    kubectl = shutil.which("kubectl")
    start = time.monotonic()
    if kubectl:
        env = dict(os.environ, KUBECONFIG=kubeconfig)
        subprocess.run(
            [kubectl, "-n", namespace, "scale", f"deployment/{name}", f"--replicas={n}"],
            env=env,
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [kubectl, "-n", namespace, "rollout", "status", f"deployment/{name}", "--timeout=300s"],
            env=env,
            check=True,
            capture_output=True,
        )
        how = "kubectl scale + kubectl rollout status"
    else:
        client.AppsV1Api(api).patch_namespaced_deployment_scale(
            name, namespace, {"spec": {"replicas": n}}
        )
        wait_deployment(api, namespace, name, n)
        how = "python client: patch scale + poll (kubectl not installed)"
    return time.monotonic() - start, how


def bench_scale(kubeconfig: str, rounds: int) -> dict[str, Any]:
    api = api_client(kubeconfig)
    add_nodes(api, "bench-h100", 5, "bench", 8, 110)
    ns = make_namespace(api)
    state = Path(tempfile.mkdtemp(prefix="bench-reconcile-"))
    eco = Ecolink(kubeconfig, ns, state)
    try:
        r = eco.http.post(
            "/gpu-clusters",
            json={
                "name": "scale",
                "region": "bench",
                "gpu_type": "H100-80GB",
                "gpu_count": 1,
                "replicas": 2,
                "image": "example/app:1",
                "estimated_duration_hours": 2,
                "startup_command": "sleep infinity",
            },
        )
        r.raise_for_status()
        cid = r.json()["id"]
        eco.wait_ready(cid, 2)
        plain = "plain-scale"
        kubectl_like_deployment(api, ns, plain)
        wait_deployment(api, ns, plain, 2)
        eco_times, kube_times, how = [], [], ""
        for i in range(rounds):
            start = time.monotonic()
            eco.http.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 32}).raise_for_status()
            eco.wait_ready(cid, 32)
            eco_times.append(time.monotonic() - start)
            eco.http.post(f"/gpu-clusters/{cid}/scale", json={"replicas": 2}).raise_for_status()
            eco.wait_ready(cid, 2)

            t, how = kubectl_scale(kubeconfig, api, ns, plain, 32)
            kube_times.append(t)
            client.AppsV1Api(api).patch_namespaced_deployment_scale(
                plain, ns, {"spec": {"replicas": 2}}
            )
            wait_deployment(api, ns, plain, 2)
            log(f"round {i + 1}: ecolink {eco_times[-1]:.2f}s, {how} {kube_times[-1]:.2f}s")
        eco.http.delete(f"/gpu-clusters/{cid}")
        return {
            "ecolink_s": statistics.median(eco_times),
            "kubectl_s": statistics.median(kube_times),
            "kubectl_how": how,
            "rounds": rounds,
            "all_ecolink": eco_times,
            "all_kubectl": kube_times,
        }
    finally:
        eco.close()
        client.CoreV1Api(api).delete_namespace(ns)
        shutil.rmtree(state, ignore_errors=True)


# ------------------------------------------------------------------ part 2: requests


class Counter:
    """Counts the HTTP requests one ApiClient makes."""

    def __init__(self, api: client.ApiClient) -> None:
        self.count = 0
        self.lock = threading.Lock()
        rest = api.rest_client
        orig = rest.request

        def counted(*a: Any, **kw: Any) -> Any:
            with self.lock:
                self.count += 1
            return orig(*a, **kw)

        rest.request = counted  # type: ignore[method-assign]


def server_pod_requests(api: client.ApiClient) -> float:
    """apiserver_request_total for pods (LIST and WATCH), from /metrics."""
    resp = api.rest_client.request(
        "GET", api.configuration.host + "/metrics", headers={"Accept": "text/plain"}
    )
    text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (
            line.startswith("apiserver_request_total{")
            and 'resource="pods"' in line
            and ('verb="LIST"' in line or 'verb="WATCH"' in line)
            and 'subresource=""' in line
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


class Quiet:
    def replicas_changed(self, cluster_id: str, replicas: Any) -> None: ...
    def runtime_event(
        self, cluster_id: str, kind: str, message: str, replica: str | None = None
    ) -> None: ...
    def cluster_failed(self, cluster_id: str, message: str) -> None: ...


async def bench_watch(kubeconfig: str, pods: int, window: float) -> dict[str, Any]:
    api = api_client(kubeconfig)
    per_node = 500
    add_nodes(api, "bench-big", max(1, -(-pods // per_node)), "bench-big", per_node, per_node + 10)
    ns = make_namespace(api)
    os.environ["KUBECONFIG"] = kubeconfig
    runtime = KubernetesRuntime(load_target(namespace=ns))
    await runtime.start(Quiet(), [])
    clusters = max(1, pods // 100)
    specs = [
        ClusterSpec(
            cluster_id=f"bench{i}",
            account_id="bench",
            name=f"b{i}",
            region="bench-big",
            gpu_type="H100",
            gpu_count=1,
            replicas=pods // clusters,
            image="example/app:1",
            node_selector=(("topology.kubernetes.io/region", "bench-big"),),
        )
        for i in range(clusters)
    ]
    log(f"creating {pods} pods in {clusters} clusters ...")
    t0 = time.monotonic()
    for s in specs:
        await runtime.apply(s)
    while sum(len([r for r in runtime.replicas(s.cluster_id) if r.ready]) for s in specs) < pods:
        if time.monotonic() - t0 > 900:
            raise SystemExit("pods did not become ready")
        await asyncio.sleep(0.5)
    log(f"{pods} pods ready after {time.monotonic() - t0:.1f}s")
    await asyncio.sleep(5)  # let the last status updates settle

    admin = api_client(kubeconfig)
    # Baseline: what the API server serves for pods with neither of us asking
    # (controllers, scheduler, KWOK) - measured with ecolink's watches open,
    # which cost nothing while nothing changes; subtracted from both.
    base0 = server_pod_requests(admin)
    await asyncio.sleep(window)
    baseline = (server_pod_requests(admin) - base0) / window * 60

    counter = Counter(runtime.target.api_client)
    stats0 = runtime.watch_stats()
    s0 = server_pod_requests(admin)
    c0 = counter.count
    await asyncio.sleep(window)
    eco_client = (counter.count - c0) / window * 60
    eco_server = (server_pod_requests(admin) - s0) / window * 60 - baseline
    stats1 = runtime.watch_stats()
    watches = sum(v["watches"] for v in stats1.values()) - sum(
        v["watches"] for v in stats0.values()
    )
    # Each watch is renewed when the server ends it (after the runtime's watch
    # timeout): that is the steady rate even where a window sees none.
    renewal = len(stats1) / runtime.informer.watch_timeout_s * 60
    await runtime.shutdown(stop_replicas=False)

    poll_api = api_client(kubeconfig)
    poll_counter = Counter(poll_api)
    core = client.CoreV1Api(poll_api)
    stop = threading.Event()
    sizes: list[int] = []

    def poll() -> None:
        while not stop.is_set():
            resp = core.list_namespaced_pod(
                ns, label_selector="app.kubernetes.io/managed-by=ecolink", _preload_content=False
            )
            sizes.append(len(resp.data))
            stop.wait(2.0)

    s1 = server_pod_requests(admin)
    t = threading.Thread(target=poll, daemon=True)
    t.start()
    await asyncio.sleep(window)
    stop.set()
    t.join()
    poll_client = poll_counter.count / window * 60
    poll_server = (server_pod_requests(admin) - s1) / window * 60 - baseline

    # Clean up the 1,000 pods quickly.
    client.CoreV1Api(admin).delete_namespace(ns)
    return {
        "pods": pods,
        "window_s": window,
        "baseline_server_per_min": baseline,
        "ecolink_client_per_min": eco_client,
        "ecolink_server_per_min": eco_server,
        "ecolink_watch_requests_in_window": watches,
        "ecolink_renewal_per_min": renewal,
        "watch_timeout_s": runtime.informer.watch_timeout_s,
        "watched_collections": len(stats1),
        "poller_client_per_min": poll_client,
        "poller_server_per_min": poll_server,
        "poller_bytes_per_list": statistics.median(sizes) if sizes else 0,
    }


def ratio(a: float, b: float) -> str:
    if b <= 0:
        return "inf (the other made no request)" if a > 0 else "n/a"
    return f"{a / b:.1f}x"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--pods", type=int, default=1000)
    p.add_argument("--window", type=float, default=60.0, help="seconds per request window")
    p.add_argument("--kubeconfig", default=None)
    p.add_argument("--skip-scale", action="store_true")
    p.add_argument("--skip-watch", action="store_true")
    args = p.parse_args()
    cp = ControlPlane(args.kubeconfig)
    try:
        if not args.skip_scale:
            s = bench_scale(cp.kubeconfig, args.rounds)
            print(f"scale 2 -> 32 to all ready (median of {s['rounds']}):")
            print(f"  through ecolink (POST /scale, GET until ready): {s['ecolink_s']:.2f} s")
            print(f"  {s['kubectl_how']}: {s['kubectl_s']:.2f} s")
            print(f"  ratio ecolink / kubectl: {s['ecolink_s'] / s['kubectl_s']:.2f}")
        if not args.skip_watch:
            w = asyncio.run(bench_watch(cp.kubeconfig, args.pods, args.window))
            print(
                f"API server requests per minute while {w['pods']} pods are watched "
                f"({w['window_s']:.0f} s windows):"
            )
            print(
                f"  ecolink watch: {w['ecolink_client_per_min']:.2f}/min counted by the "
                f"client ({w['ecolink_watch_requests_in_window']} watch requests), "
                f"{w['ecolink_server_per_min']:.2f}/min by the API server over baseline"
            )
            print(
                f"  2-second poller: {w['poller_client_per_min']:.2f}/min counted by the "
                f"client, {w['poller_server_per_min']:.2f}/min by the API server over "
                f"baseline, {w['poller_bytes_per_list'] / 1e6:.2f} MB per list"
            )
            print(
                f"  (API server baseline for pods, neither asking: "
                f"{w['baseline_server_per_min']:.2f}/min)"
            )
            print(
                f"  ecolink's steady rate from watch renewal: {w['watched_collections']} "
                f"watches renewed every {w['watch_timeout_s']} s = "
                f"{w['ecolink_renewal_per_min']:.2f}/min"
            )
            print(
                f"  ratio poller / ecolink, measured in the window: "
                f"{ratio(w['poller_client_per_min'], w['ecolink_client_per_min'])}"
            )
            print(
                f"  ratio poller / ecolink, against the renewal rate: "
                f"{ratio(w['poller_client_per_min'], w['ecolink_renewal_per_min'])}"
            )
    finally:
        cp.close()


if __name__ == "__main__":
    main()
