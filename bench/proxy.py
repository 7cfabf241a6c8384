"""Service-URL benchmark: requests per second and p99 latency through the public
service URL of a real backend, against the same replicas hit directly and through
nginx (Debian's package) as a reverse proxy, in one run.

    python bench/proxy.py [--seconds 5] [--concurrency 16]

The replicas run the built-in demo service (two replicas, round-robin in every
path). The load generator is a small keep-alive HTTP/1.1 client on asyncio, the
same for all three targets. nginx is looked up on PATH and in /usr/sbin; when it is
absent the bench says so and reports the other two.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from exec import Backend  # noqa: E402  (the same throwaway backend)


async def load(host: str, ports: list[int], path: str, headers: dict[str, str], seconds: float,
               concurrency: int) -> tuple[int, list[float], int]:
    """Keep-alive GETs from `concurrency` connections (spread over `ports`) for
    `seconds`: (requests done, latencies, errors)."""
    head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    req = head.encode()
    lat: list[float] = []
    errors = 0
    stop_at = time.perf_counter() + seconds

    async def worker(port: int) -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        try:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                writer.write(req)
                status_line = await reader.readline()
                if not status_line:  # the server ended the keep-alive: reconnect
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                    continue
                length = 0
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b""):
                        break
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        length = int(v.strip())
                await reader.readexactly(length)
                if not status_line.startswith(b"HTTP/1.1 200"):
                    errors += 1
                lat.append(time.perf_counter() - t0)
        finally:
            writer.close()

    await asyncio.gather(*(worker(ports[i % len(ports)]) for i in range(concurrency)))
    return len(lat), lat, errors


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None)


def start_nginx(binary: str, workdir: Path, ports: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        listen = s.getsockname()[1]
    (workdir / "logs").mkdir(exist_ok=True)
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in ports)
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
error_log {workdir}/logs/error.log warn;
pid {workdir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  keepalive_requests 1000000;
  upstream replicas {{
{servers}    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_buffering off;
    }}
  }}
}}
""")
    proc = subprocess.Popen([binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", listen)) == 0:
                return proc, listen
        if proc.poll() is not None:
            raise RuntimeError(f"nginx failed: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError("nginx did not start")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        be = Backend(tmpd / "state")
        be.state.mkdir()
        be.start()
        nginx_proc = None
        try:
            cid = launch_demo(be)
            rec = json.loads((be.state / "replicas" / cid / "runtime.json").read_text())
            ports = sorted(r["port"] for r in rec["replicas"].values())
            host, bport = be.url.split("://", 1)[1].split(":")
            targets: list[tuple[str, list[int], str, dict[str, str]]] = [
                ("service URL (ecolink)", [int(bport)], f"/gpu-clusters/{cid}/service/bench",
                 {"Authorization": f"Bearer {be.key}"}),
                # Half the connections to each replica, as the proxies spread them.
                ("replicas directly", ports, "/bench", {}),
            ]
            nginx = find_nginx()
            if nginx:
                nginx_proc, nport = start_nginx(nginx, tmpd, ports)
                targets.append(("nginx reverse proxy", [nport], "/bench", {}))
            results = {}
            for name, tports, path, headers in targets:
                asyncio.run(load("127.0.0.1", tports, path, headers, 0.5, args.concurrency))  # warm-up
                n, lat, errors = asyncio.run(
                    load("127.0.0.1", tports, path, headers, args.seconds, args.concurrency))
                results[name] = (n / args.seconds, statistics.median(lat), pct(lat, 99), errors)
        finally:
            if nginx_proc is not None:
                nginx_proc.terminate()
                nginx_proc.wait(10)
            be.stop()
    print(f"GET, {args.concurrency} keep-alive connections, {args.seconds:g} s each, "
          f"2 demo-service replicas")
    for name, (rps, med, p99, errors) in results.items():
        print(f"  {name:24s} {rps:9.0f} req/s   median {med * 1e3:7.2f} ms   p99 {p99 * 1e3:7.2f} ms"
              f"   errors {errors}")
    svc = results["service URL (ecolink)"]
    for other in ("replicas directly", "nginx reverse proxy"):
        if other in results:
            o = results[other]
            print(f"  ratio service URL / {other}: req/s {svc[0] / o[0]:.2f}, p99 {svc[2] / o[2]:.2f}x")
    if "nginx reverse proxy" not in results:
        print("  nginx: not installed (apt-get install nginx-light), no nginx figures")


def launch_demo(be: Backend) -> str:
    """A cluster running the built-in demo service (no startup command), exposed."""
    import httpx

    h = {"Authorization": f"Bearer {be.key}"}
    body = {"name": "bench", "region": "us-east", "gpu_type": "H100-80GB", "gpu_count": 1,
            "replicas": 2, "image": "bench", "estimated_duration_hours": 1,
            "expose": {"port": 8080}}
    r = httpx.post(be.url + "/gpu-clusters", json=body, headers=h)
    r.raise_for_status()
    cid = str(r.json()["id"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        c = httpx.get(f"{be.url}/gpu-clusters/{cid}", headers=h).json()
        if c["replica_states"] and all(s["ready"] for s in c["replica_states"]):
            return cid
        time.sleep(0.1)
    raise SystemExit("replicas did not get ready")


if __name__ == "__main__":
    main()
