"""Service-URL benchmark: the public service URL of a real backend against nginx as a
reverse proxy to the same replicas and against the replicas directly, in one run.

    python bench/proxy.py [--seconds 5] [--rounds 3] [--connections 32,256]
                          [--workers N] [--upload-mib 1024]

Load comes from `wrk` (Debian's package; `apt-get install wrk nginx`): a Python
client would cap the baseline and hide the gap. Three backends run: one with the
front that ships (compiled by mypyc, `python -m ecolink.front.build`, run first; its
event loop SCHED_BATCH), the same front under the normal scheduling policy
(`ECOLINK_FRONT_SCHEDULING=normal`), and the same front as plain Python
(`ECOLINK_FRONT_PYTHON=1`). One nginx (1 worker, upstream keepalive, least_conn)
serves two ways: doing the service URL's job as the front does it (the key checked
and stripped, the prefix stripped, the forwarded headers set, the sandbox header
added: the replicas get the same request head from both, and the demo service
echoes that head back), which is the baseline of the goal; and as a bare proxy.
On a machine of several cores, a fourth backend runs the front as it ships, one
process per core, beside a second nginx doing the same job with as many workers.
Rounds are interleaved (every target, then again) and the medians of the rounds
are reported, with the ratios to both and the machine's core count. Also
measured, through the URL and directly: time to the first event of a streamed
answer, WebSocket echo round trip, and the throughput of one large upload.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from exec import _env  # noqa: E402  (the bench's environment for ecolink)

SINK = r"""
import asyncio, os
async def handle(reader, writer):
    while True:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        left = length
        while left:
            chunk = await reader.read(min(left, 1 << 20))
            if not chunk:
                return
            left -= len(chunk)
        body = str(length).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(os.environ["PORT"]))
    await server.serve_forever()
asyncio.run(main())
"""


NGINX = "nginx (same job)"
NGINX_BARE = "nginx (bare proxy)"


def need(tool: str) -> str:
    path = shutil.which(tool) or next(
        (p for p in (f"/usr/sbin/{tool}", f"/usr/local/sbin/{tool}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        raise SystemExit(f"{tool} is not installed: apt-get install wrk nginx")
    return path


class Backend:
    def __init__(self, state: Path, workers: int | None, env: dict[str, str] | None = None) -> None:
        self.state = state
        self.workers = workers
        self.env = {**_env(), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.key = ""

    def cli(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "ecolink", *args, "--state-dir", str(self.state)],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def start(self) -> None:
        self.state.mkdir(parents=True, exist_ok=True)
        self.cli("accounts", "create", "bench", "--credit", "100000")
        self.key = self.cli("keys", "create", "--account", "bench").split()[-1]
        log = open(self.state / "serve.out", "ab")  # noqa: SIM115
        cmd = [
            sys.executable,
            "-m",
            "ecolink",
            "serve",
            "--port",
            "0",
            "--state-dir",
            str(self.state),
        ]
        if self.workers:
            cmd += ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                info = json.loads((self.state / "server.json").read_text())
                if info["pid"] == self.proc.pid:
                    self.url = info["url"]
                    return
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        raise SystemExit("the backend did not start")

    def front(self) -> str:
        """Which front the backend runs, as its log says: compiled, or Python."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = re.search(r"front: (\w+) ", (self.state / "serve.out").read_text(errors="replace"))
            if m:
                return m.group(1)
            time.sleep(0.05)
        return "unknown"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)

    def launch(self, name: str, replicas: int, command: str | None = None) -> tuple[str, list[int]]:
        h = {"Authorization": f"Bearer {self.key}"}
        body: dict[str, object] = {
            "name": name,
            "region": "us-east",
            "gpu_type": "H100-80GB",
            "gpu_count": 1,
            "replicas": replicas,
            "image": "bench",
            "estimated_duration_hours": 1,
            "expose": {"port": 8080},
        }
        if command:
            body["startup_command"] = command
        r = httpx.post(self.url + "/gpu-clusters", json=body, headers=h)
        r.raise_for_status()
        cid = str(r.json()["id"])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            c = httpx.get(f"{self.url}/gpu-clusters/{cid}", headers=h).json()
            if c["replica_states"] and all(s["ready"] for s in c["replica_states"]):
                from ecolink.runtime.local.users import default_replica_root, replica_uids_wanted

                # Where the local runtime keeps replica files (own uids: outside the state dir).
                root = default_replica_root(self.state) if replica_uids_wanted() else self.state
                rec = json.loads((root / "replicas" / cid / "runtime.json").read_text())
                ports = sorted(r["port"] for r in rec["replicas"].values())
                for p in ports:  # ready = the process runs: wait until it listens
                    wait_port(p)
                return cid, ports
            time.sleep(0.1)
        raise SystemExit("replicas did not get ready")


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_nginx(
    binary: str,
    workdir: Path,
    ports: list[int],
    service: tuple[str, str] | None = None,
    workers: int = 1,
) -> tuple[subprocess.Popen[bytes], int]:
    """nginx (`workers` workers, upstream keepalive, least_conn) in front of the replicas.

    `/` is a bare reverse proxy. With `service` = (cluster id, API key), the same
    server also does the service URL's job, as the front does it: the key checked,
    then stripped; the `/gpu-clusters/<id>/service` prefix stripped; X-Forwarded-For,
    -Proto, -Host and -Prefix, Forwarded and X-Real-IP set; the sandboxing
    Content-Security-Policy added to every answer. The replicas then get the same
    request head from both proxies (the demo service echoes it back, so its size
    is part of what every answer costs)."""
    from ecolink.api import edge_rules

    listen = free_port()
    workdir.mkdir(exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    servers = "".join(f"    server 127.0.0.1:{p};\n" for p in ports)
    same_job = ""
    key_map = ""
    if service is not None:
        cid, key = service
        prefix = f"/gpu-clusters/{cid}/service"
        key_map = f'  map_hash_bucket_size 256;\n  map $http_authorization $key_ok {{ "Bearer {key}" 1; default 0; }}\n'
        same_job = f"""
    location {prefix}/ {{
      if ($key_ok = 0) {{ return 401; }}
      proxy_pass http://replicas/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
      proxy_set_header X-Forwarded-Prefix {prefix};
      proxy_set_header Forwarded "for=\\"$remote_addr\\";proto=$scheme;host=\\"$host\\"";
      proxy_set_header X-Real-IP $remote_addr;
      proxy_buffering off;
      add_header Content-Security-Policy "{edge_rules.service_csp(False)}" always;
    }}"""
    conf = workdir / "nginx.conf"
    conf.write_text(f"""
worker_processes {workers};
error_log {workdir}/logs/error.log warn;
pid {workdir}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 1000000;
{key_map}  upstream replicas {{
{servers}    least_conn;
    keepalive 256;
  }}
  server {{
    listen 127.0.0.1:{listen} backlog=4096{" reuseport" if workers > 1 else ""};
    location / {{
      proxy_pass http://replicas;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_buffering off;
    }}{same_job}
  }}
}}
""")
    proc = subprocess.Popen(
        [binary, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    wait_port(listen)
    return proc, listen


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    binary: str, url: str, connections: int, seconds: float, headers: dict[str, str]
) -> tuple[float, float, float, int]:
    """(req/s, median s, p99 s, non-2xx or socket errors) of one wrk run."""
    cmd = [binary, "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency", "--timeout", "10s"]
    for k, v in headers.items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _seconds(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _seconds(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    errors = 0
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if m:
        errors += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        errors += sum(int(x) for x in m.groups())
    return rps, p50, p99, errors


def wrk_split(
    binary: str, urls: list[str], connections: int, seconds: float, headers: dict[str, str]
) -> tuple[float, float, float, int]:
    """Several wrk at once (one per replica, connections shared out): summed req/s,
    the worst median and p99."""
    from concurrent.futures import ThreadPoolExecutor

    per = max(1, connections // len(urls))
    with ThreadPoolExecutor(len(urls)) as pool:
        rs = list(pool.map(lambda u: wrk(binary, u, per, seconds, headers), urls))
    return (
        sum(r[0] for r in rs),
        max(r[1] for r in rs),
        max(r[2] for r in rs),
        sum(r[3] for r in rs),
    )


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU the processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- streaming


def first_event(port: int, path: str, headers: dict[str, str]) -> float:
    """Seconds from sending a GET to the first body bytes of a streamed answer."""
    s = socket.create_connection(("127.0.0.1", port))
    head = (
        f"GET {path} HTTP/1.1\r\nHost: b\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "Connection: close\r\n\r\n"
    )
    t0 = time.perf_counter()
    s.sendall(head.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    rest = buf.split(b"\r\n\r\n", 1)[1]
    while b"chunk 0" not in rest:
        rest += s.recv(65536)
    elapsed = time.perf_counter() - t0
    s.close()
    return elapsed


async def ws_rtt(url: str, headers: dict[str, str], n: int) -> float:
    import websockets

    async with websockets.connect(
        url, additional_headers=headers, proxy=None, compression=None
    ) as ws:
        for _ in range(20):
            await ws.send("warm")
            await ws.recv()
        times = []
        for i in range(n):
            t0 = time.perf_counter()
            await ws.send(f"m{i}")
            await ws.recv()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def upload(port: int, path: str, headers: dict[str, str], size: int) -> float:
    """Bytes per second of one POST of `size` bytes (Content-Length), to its answer."""
    s = socket.create_connection(("127.0.0.1", port))
    head = (
        f"POST {path} HTTP/1.1\r\nHost: b\r\nContent-Length: {size}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        + "Connection: close\r\n\r\n"
    )
    block = b"\0" * (1 << 20)
    t0 = time.perf_counter()
    s.sendall(head.encode())
    left = size
    while left:
        n = min(left, len(block))
        s.sendall(block[:n] if n < len(block) else block)
        left -= n
    data = b""
    while b"\r\n\r\n" not in data or not data.endswith(str(size).encode()):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    elapsed = time.perf_counter() - t0
    s.close()
    if not data.startswith(b"HTTP/1.1 200") or not data.endswith(str(size).encode()):
        raise SystemExit(f"upload failed: {data[:200]!r}")
    return size / elapsed


def _sequential(sock: socket.socket, n: int) -> list[float]:
    req = b"GET /healthz HTTP/1.1\r\nHost: b\r\n\r\n"
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        sock.sendall(req)
        buf = b""
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(65536)
        head, _, body = buf.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        while len(body) < length:
            body += sock.recv(65536)
        out.append(time.perf_counter() - t0)
    return out


def hop(front_port: int, api_socket: str, n: int = 2000) -> tuple[float, float]:
    """Median /healthz latency through the front and on the API's own unix socket,
    one keep-alive connection each, in interleaved blocks."""
    tcp = socket.create_connection(("127.0.0.1", front_port))
    tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    uds = socket.socket(socket.AF_UNIX)
    uds.connect(api_socket)
    via, direct = [], []
    for _ in range(n // 200):
        via += _sequential(tcp, 200)
        direct += _sequential(uds, 200)
    tcp.close()
    uds.close()
    return statistics.median(via), statistics.median(direct)


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", default="32,256")
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help=(
            "front processes (default 1, as nginx runs 1 worker here; 0: ecolink's own "
            "default, one per core)"
        ),
    )
    ap.add_argument("--upload-mib", type=int, default=1024)
    args = ap.parse_args()
    wrk_bin, nginx_bin = need("wrk"), need("nginx")
    conns = [int(c) for c in args.connections.split(",")]
    # The front that ships is compiled by mypyc (built here if these sources have no
    # build yet); the same front as plain Python runs beside it, in the same rounds.
    subprocess.run(
        [sys.executable, "-m", "ecolink.front.build"], env=_env(), check=False, capture_output=True
    )
    with tempfile.TemporaryDirectory() as tmp:
        tmpd = Path(tmp)
        be = Backend(tmpd / "state", args.workers or None)
        be_py = Backend(tmpd / "state-py", args.workers or None, {"ECOLINK_FRONT_PYTHON": "1"})
        # The same compiled front with the kernel's normal policy for its loop, not
        # SCHED_BATCH: what the default changes, in the same rounds.
        be_normal = Backend(
            tmpd / "state-normal", args.workers or None, {"ECOLINK_FRONT_SCHEDULING": "normal"}
        )
        backends = [be, be_py, be_normal]
        # As it ships, one front process per core, beside nginx with a worker per core.
        cores = os.cpu_count() or 1
        be_cores = None
        if args.workers == 1 and cores > 1:
            be_cores = Backend(tmpd / "state-cores", None)
            backends.append(be_cores)
        for b in backends:
            b.start()
        nginx_proc = nginx_cores = None
        try:
            cid, ports = be.launch("bench", 2)
            cid_py, _ = be_py.launch("bench", 2)
            cid_normal, _ = be_normal.launch("bench", 2)
            sink_script = tmpd / "sink.py"
            sink_script.write_text(SINK)
            # Run as root, replicas run under their own uids: they must reach the script.
            tmpd.chmod(0o755)
            sink_script.chmod(0o644)
            # The system's python3: this interpreter may sit where other uids cannot go.
            sink_id, sink_ports = be.launch("sink", 2, f"python3 {sink_script}")
            nginx_proc, nport = start_nginx(nginx_bin, tmpd, ports, (cid, be.key))
            bport = int(be.url.rsplit(":", 1)[1])
            auth = {"Authorization": f"Bearer {be.key}"}
            main_front = f"service URL ({be.front()} front)"
            py_front = f"service URL ({be_py.front()} front)"
            normal_front = f"service URL ({be_normal.front()}, normal sched)"
            targets = {
                main_front: ([f"{be.url}/gpu-clusters/{cid}/service/bench"], auth),
                normal_front: (
                    [f"{be_normal.url}/gpu-clusters/{cid_normal}/service/bench"],
                    {"Authorization": f"Bearer {be_normal.key}"},
                ),
                py_front: (
                    [f"{be_py.url}/gpu-clusters/{cid_py}/service/bench"],
                    {"Authorization": f"Bearer {be_py.key}"},
                ),
                # nginx doing the service URL's job (key, prefix, forwarded headers, the
                # sandbox header): the baseline of the goal. Then nginx as a bare proxy.
                NGINX: ([f"http://127.0.0.1:{nport}/gpu-clusters/{cid}/service/bench"], auth),
                NGINX_BARE: ([f"http://127.0.0.1:{nport}/bench"], {}),
                "direct": ([f"http://127.0.0.1:{p}/bench" for p in ports], {}),
            }
            # The proxies' own processes, whose CPU per request is reported beside.
            nginx_pids = children(nginx_proc.pid)
            proxy_pids = {
                main_front: front_pids(be),
                normal_front: front_pids(be_normal),
                py_front: front_pids(be_py),
                NGINX: nginx_pids,
                NGINX_BARE: nginx_pids,
            }
            pairs: list[tuple[str, str]] = []
            if be_cores is not None:
                cid_cores, ports_cores = be_cores.launch("bench", 2)
                nginx_cores, nport_cores = start_nginx(
                    nginx_bin, tmpd / "nginx-cores", ports_cores, (cid_cores, be_cores.key), cores
                )
                cores_front = f"service URL ({cores} front processes)"
                cores_nginx = f"nginx (same job, {cores} workers)"
                auth_cores = {"Authorization": f"Bearer {be_cores.key}"}
                path_cores = f"/gpu-clusters/{cid_cores}/service/bench"
                targets[cores_front] = ([f"{be_cores.url}{path_cores}"], auth_cores)
                targets[cores_nginx] = ([f"http://127.0.0.1:{nport_cores}{path_cores}"], auth_cores)
                proxy_pids[cores_front] = front_pids(be_cores)
                proxy_pids[cores_nginx] = children(nginx_cores.pid)
                pairs.append((cores_front, cores_nginx))
            results: dict[tuple[str, int], list[tuple[float, float, float, int]]] = {}
            cpu: dict[tuple[str, int], list[float]] = {}
            for urls, headers in targets.values():  # warm-up
                wrk_split(wrk_bin, urls, 32, 1, headers)
            for _ in range(args.rounds):
                for c in conns:
                    for name, (urls, headers) in targets.items():
                        pids = proxy_pids.get(name, [])
                        before = cpu_seconds(pids)
                        r = wrk_split(wrk_bin, urls, c, args.seconds, headers)
                        results.setdefault((name, c), []).append(r)
                        if pids:
                            used = cpu_seconds(pids) - before
                            cpu.setdefault((name, c), []).append(used / (r[0] * args.seconds))
            be_py.stop()
            be_normal.stop()
            if be_cores is not None:
                be_cores.stop()
            sse = {
                "service URL": statistics.median(
                    first_event(
                        bport, f"/gpu-clusters/{cid}/service/stream?chunks=2&delay=0.05", auth
                    )
                    for _ in range(30)
                ),
                "direct": statistics.median(
                    first_event(ports[0], "/stream?chunks=2&delay=0.05", {}) for _ in range(30)
                ),
            }
            ws_base = be.url.replace("http://", "ws://")
            ws = {
                "service URL": asyncio.run(
                    ws_rtt(f"{ws_base}/gpu-clusters/{cid}/service/ws", auth, 500)
                ),
                "direct": asyncio.run(ws_rtt(f"ws://127.0.0.1:{ports[0]}/ws", {}, 500)),
            }
            hop_via, hop_direct = hop(bport, str(be.state / "api.sock"))
            size = args.upload_mib << 20
            up = {
                "service URL": upload(bport, f"/gpu-clusters/{sink_id}/service/up", auth, size),
                "direct": upload(sink_ports[0], "/up", {}, size),
            }
        finally:
            for proc in (nginx_proc, nginx_cores):
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
            for b in backends:
                b.stop()
    print(
        f"GET through 2 demo-service replicas, wrk -t2, {args.seconds:g} s per run, "
        f"{args.rounds} interleaved rounds (medians), {os.cpu_count()} cores, "
        f"ecolink front processes: {args.workers or os.cpu_count()}, nginx workers: 1"
        + (f"; and {cores} front processes, nginx {cores} workers" if pairs else "")
    )
    for c in conns:
        print(f" {c} connections")
        med = {}
        for name in targets:
            runs = results[(name, c)]
            med[name] = (
                statistics.median(r[0] for r in runs),
                statistics.median(r[1] for r in runs),
                statistics.median(r[2] for r in runs),
                sum(r[3] for r in runs),
            )
            rps, p50, p99, errors = med[name]
            used = cpu.get((name, c))
            per = f"  proxy CPU {statistics.median(used) * 1e6:5.1f} us/request" if used else ""
            print(
                f"  {name:32s} {rps:9.0f} req/s  median {p50 * 1e3:7.2f} ms  "
                f"p99 {p99 * 1e3:7.2f} ms  errors {errors}{per}"
            )
        # The goal's baseline is nginx's 1 worker doing the same job; every front is
        # set against it and against the bare proxy. The front as it ships runs one
        # process per core (`pairs`), so it is also set against nginx with a worker per
        # core: the same number of processes on each side.
        ours_all = [main_front, normal_front, py_front] + [o for o, _ in pairs]
        for base in (NGINX, NGINX_BARE):
            n = med[base]
            for name in ours_all:
                s = med[name]
                goal = "  (goal: >= 0.8x and <= 1.5x)" if base == NGINX else ""
                print(f"  {name} / {base}: req/s {s[0] / n[0]:.2f}x, p99 {s[2] / n[2]:.2f}x{goal}")
        for ours, base in pairs:
            s, n = med[ours], med[base]
            print(f"  {ours} / {base}: req/s {s[0] / n[0]:.2f}x, p99 {s[2] / n[2]:.2f}x")
    print(
        f" first streamed event: service URL {sse['service URL'] * 1e3:.2f} ms, direct "
        f"{sse['direct'] * 1e3:.2f} ms ({sse['service URL'] / sse['direct']:.2f}x)"
    )
    print(
        f" WebSocket echo round trip: service URL {ws['service URL'] * 1e3:.3f} ms, direct "
        f"{ws['direct'] * 1e3:.3f} ms ({ws['service URL'] / ws['direct']:.2f}x)"
    )
    print(
        f" API /healthz, one keep-alive connection: through the front {hop_via * 1e3:.3f} ms, "
        f"on the API's unix socket {hop_direct * 1e3:.3f} ms "
        f"(hop {(hop_via - hop_direct) * 1e3:.3f} ms at the median; goal < 0.2 ms)"
    )
    print(
        f" {args.upload_mib} MiB upload: service URL {up['service URL'] / 2**20:.0f} MiB/s, "
        f"direct {up['direct'] / 2**20:.0f} MiB/s ({up['service URL'] / up['direct']:.2f}x)"
    )


def front_pids(be: Backend) -> list[int]:
    """The backend's process and its worker fronts."""
    assert be.proc is not None
    return [be.proc.pid] + [
        p
        for p in children(be.proc.pid)
        if b"ecolink.front.worker" in Path(f"/proc/{p}/cmdline").read_bytes()
    ]


if __name__ == "__main__":
    main()
