"""Scale-out benchmark: ecolink on Postgres, one and three instances, beside the
single-instance SQLite run in the same run (same machine, catalog and client code).

Three set-ups run side by side for the whole run and are measured in turn, round
after round:
- `sqlite x1`: one `ecolink serve` on its state dir's SQLite file (the baseline);
- `pg x1`:     one instance on a Postgres database of its own;
- `pg x3`:     three instances on one Postgres database, clients spread round-robin.

Measured:
1. requests/s of `GET /gpu-clusters/{id}` (wrk, `--connections` in all, shared out
   over the instances, cycling over the set-up's clusters) for `--seconds`;
2. launches/s (`POST /gpu-clusters`, `--clients` concurrent clients for `--seconds`),
   all clients on one account, then spread over `--accounts` accounts; the clusters
   launched are terminated after each run, outside the timing;
3. watch propagation: a `/watch` on instance B and one on instance A of `pg x3`,
   `--changes` extends sent through A, the time from A's answer to the frame on B
   (across instances) and on A (the same instance), with the same on `sqlite x1`;
4. leader failover over `--kills` kills: three fresh instances on Postgres with
   `--leader-election postgres`; the leader (`ecolink_leader 1` on `/metrics`) is
   SIGKILLed, the time until another instance reports `ecolink_leader 1` is taken,
   and the killed one is started again to keep three.

Every server process runs on this machine, as does the load: on a small machine the
three instances share its cores with the clients and Postgres, so the figures say
what one machine gives, not what three nodes would.

Usage: python bench/scale_out.py [--seconds 10] [--rounds 3] [--kills 10] [--quick]
Needs wrk (`apt-get install wrk`) and the Postgres server binaries (as the tests).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "backend"), str(ROOT / "src"), str(ROOT / "tests")]

from support.postgres import PostgresServer  # noqa: E402
from support.server import EcolinkServer  # noqa: E402

CATALOG = """
[[regions]]
name = "bench"
gpu_budget = 1000000

[[regions.gpu_types]]
name = "L40S"
rate_per_gpu_hour = "0.95"
gpu_counts = [1, 2, 4, 8]
"""

CREDIT = "100000000"


def launch_body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "region": "bench",
        "gpu_type": "L40S",
        "gpu_count": 1,
        "replicas": 2,
        "image": "busybox",
        "estimated_duration_hours": 1,
        "startup_command": "sleep 3600",
    }


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --------------------------------------------------------------------------- set-ups


@dataclass
class Setup:
    name: str
    servers: list[EcolinkServer]
    key: str = ""
    keys: list[str] = field(default_factory=list)  # --accounts accounts, for launches
    clusters: list[str] = field(default_factory=list)  # launched before the GET runs

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]


def start_instances(
    root: Path,
    name: str,
    n: int,
    database: str | None,
    workers: int,
    extra: list[str] | None = None,
) -> list[EcolinkServer]:
    catalog = root / "catalog.toml"
    if not catalog.exists():
        catalog.write_text(CATALOG)
    env = {"ECOLINK_DATABASE_URL": database} if database else {}
    servers = []
    for i in range(n):
        state = root / f"{name}-{i}"
        state.mkdir()
        srv = EcolinkServer(
            state,
            catalog=str(catalog),
            env=env,
            account=f"owner{i}",
            extra_args=["--workers", str(workers), *(extra or [])],
        )
        srv.start()
        servers.append(srv)
    return servers


def close_all(servers: list[EcolinkServer]) -> None:
    with ThreadPoolExecutor(max(1, len(servers))) as pool:
        list(pool.map(lambda s: s.close(), servers))


async def launch_clusters(setup: Setup, n: int) -> None:
    """n clusters of the set-up's main account, launched round-robin over its instances."""
    for i in range(n):
        url = setup.urls[i % len(setup.urls)]
        async with httpx.AsyncClient(
            base_url=url, timeout=60, headers={"Authorization": f"Bearer {setup.key}"}
        ) as c:
            r = await c.post("/gpu-clusters", json=launch_body(f"get{i}"))
            assert r.status_code in (201, 202), r.text
            setup.clusters.append(r.json()["id"])


# --------------------------------------------------------------------------- 1. GET req/s

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _seconds(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk_get(
    url: str, connections: int, seconds: float, key: str, script: Path
) -> tuple[float, float, float, int]:
    """(req/s, median s, p99 s, non-2xx or socket errors) of one wrk run."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds:g}s",
        "--latency",
        "--timeout",
        "10s",
        "-H",
        f"Authorization: Bearer {key}",
        "-s",
        str(script),
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
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


def get_script(root: Path, setup: Setup) -> Path:
    """A wrk script that cycles over the set-up's clusters."""
    ids = ", ".join(json.dumps(c) for c in setup.clusters)
    path = root / f"get-{setup.name.replace(' ', '')}.lua"
    path.write_text(
        f"local ids = {{{ids}}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i + 1\n"
        '  return wrk.format("GET", "/gpu-clusters/" .. ids[(i % #ids) + 1])\n'
        "end\n"
    )
    return path


def get_round(setup: Setup, script: Path, connections: int, seconds: float) -> dict[str, float]:
    n = len(setup.urls)
    shares = [connections // n + (1 if i < connections % n else 0) for i in range(n)]
    with ThreadPoolExecutor(n) as pool:
        rs = list(
            pool.map(
                lambda a: wrk_get(a[0], a[1], seconds, setup.key, script),
                zip(setup.urls, shares, strict=True),
            )
        )
    return {
        "rps": sum(r[0] for r in rs),
        "p50": max(r[1] for r in rs),
        "p99": max(r[2] for r in rs),
        "errors": sum(r[3] for r in rs),
    }


# --------------------------------------------------------------------------- 2. launches/s


async def launch_round(
    setup: Setup, keys: list[str], clients: int, seconds: float, tag: str
) -> dict[str, Any]:
    """`clients` clients launch for `seconds`; client i goes to instance i % n with
    account i % len(keys). Answers that arrive after the end still count as done
    (their time is inside the run's elapsed time)."""
    conns = [
        httpx.AsyncClient(base_url=u, timeout=120, limits=httpx.Limits(max_connections=clients))
        for u in setup.urls
    ]
    launched: list[tuple[int, str, str]] = []  # (instance, key, id)
    errors: list[str] = []
    latencies: list[float] = []
    start = asyncio.Event()
    stop_at = 0.0

    async def client(i: int) -> None:
        inst, key = i % len(conns), keys[i % len(keys)]
        c = conns[inst]
        n = 0
        await start.wait()
        while time.perf_counter() < stop_at:
            t = time.perf_counter()
            r = await c.post(
                "/gpu-clusters",
                json=launch_body(f"{tag}-{i}-{n}"),
                headers={"Authorization": f"Bearer {key}"},
            )
            latencies.append(time.perf_counter() - t)
            n += 1
            if r.status_code in (201, 202):
                launched.append((inst, key, r.json()["id"]))
            else:
                errors.append(f"{r.status_code} {r.text[:200]}")

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    start.set()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t0
    try:
        await terminate_all(conns, launched)
    finally:
        for c in conns:
            await c.aclose()
    return {
        "lps": len(launched) / elapsed,
        "launched": len(launched),
        "p50": med(latencies),
        "p99": pct(latencies, 99),
        "errors": errors,
    }


async def terminate_all(
    conns: list[httpx.AsyncClient], launched: list[tuple[int, str, str]]
) -> None:
    """Terminate what a run launched (through the instance that launched it) and wait
    until every one is terminated, so that the next run starts on a quiet machine."""
    sem = asyncio.Semaphore(8)

    async def one(inst: int, key: str, cid: str) -> None:
        h = {"Authorization": f"Bearer {key}"}
        async with sem:
            r = await conns[inst].delete(f"/gpu-clusters/{cid}", headers=h)
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            async with sem:
                r = await conns[inst].get(f"/gpu-clusters/{cid}", headers=h)
            if r.json()["status"] == "terminated":
                return
            await asyncio.sleep(0.5)
        print(f"  (cluster {cid} not terminated after 120 s)")

    await asyncio.gather(*(one(*x) for x in launched))


# --------------------------------------------------------------------------- 3. watch


async def watch_latency(
    change_url: str, watch_urls: list[str], key: str, cid: str, changes: int
) -> list[list[float]]:
    """`changes` extends of `cid` through change_url; for each watch URL, the times
    from each extend's answer to the first frame that shows it there."""
    h = {"Authorization": f"Bearer {key}"}
    sockets = [
        await websockets.connect(
            "ws://" + u.split("://", 1)[1] + "/watch", additional_headers=h, max_size=None
        )
        for u in watch_urls
    ]
    out: list[list[float]] = [[] for _ in sockets]
    try:
        hours: list[float] = []
        for ws in sockets:
            snap = json.loads(await ws.recv())
            assert snap["type"] == "snapshot"
            hours = [
                float(c["estimated_duration_hours"]) for c in snap["clusters"] if c["id"] == cid
            ]
        current = hours[0]
        async with httpx.AsyncClient(base_url=change_url, timeout=60, headers=h) as api:

            async def seen(ws: Any, want: float) -> float:
                while True:
                    f = json.loads(await ws.recv())
                    if (
                        f["type"] == "cluster"
                        and f["cluster"]["id"] == cid
                        and float(f["cluster"]["estimated_duration_hours"]) >= want - 1e-6
                    ):
                        return time.perf_counter()

            for _ in range(changes):
                want = current + 1
                waits = [asyncio.create_task(seen(ws, want)) for ws in sockets]
                await asyncio.sleep(0)
                r = await api.post(f"/gpu-clusters/{cid}/extend", json={"hours": 1})
                answered = time.perf_counter()
                assert r.status_code == 200, r.text
                current = float(r.json()["estimated_duration_hours"])
                for i, w in enumerate(waits):
                    try:
                        at = await asyncio.wait_for(w, 10)
                    except TimeoutError:
                        print(f"  (no frame on {watch_urls[i]} within 10 s)")
                        continue
                    out[i].append(at - answered)
                await asyncio.sleep(0.05)
    finally:
        for ws in sockets:
            await ws.close()
    return out


# --------------------------------------------------------------------------- 4. failover


def leader_flags(servers: list[EcolinkServer], key: str) -> list[int | None]:
    """ecolink_leader of each instance (None: no answer)."""
    flags: list[int | None] = []
    for s in servers:
        try:
            r = httpx.get(s.url + "/metrics", headers={"Authorization": f"Bearer {key}"}, timeout=2)
            m = re.search(r"^ecolink_leader\s+([\d.]+)", r.text, re.M)
            flags.append(int(float(m.group(1))) if m else None)
        except httpx.HTTPError:
            flags.append(None)
    return flags


def wait_one_leader(servers: list[EcolinkServer], key: str, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        flags = leader_flags(servers, key)
        if flags.count(1) == 1 and None not in flags:
            return flags.index(1)
        time.sleep(0.05)
    raise SystemExit(f"no single leader within {timeout:g} s: {leader_flags(servers, key)}")


def failover(root: Path, pg: PostgresServer, kills: int, workers: int) -> dict[str, Any]:
    servers = start_instances(
        root, "failover", 3, pg.new_database(), workers, ["--leader-election", "postgres"]
    )
    key = servers[0].key
    times: list[float] = []
    doubles = 0
    try:
        for k in range(kills):
            leader = wait_one_leader(servers, key, 60)
            others = [s for i, s in enumerate(servers) if i != leader]
            t0 = time.perf_counter()
            servers[leader].kill()
            took = None
            while time.perf_counter() - t0 < 60:
                flags = leader_flags(others, key)
                if flags.count(1) > 1:
                    doubles += 1
                if 1 in flags:
                    took = time.perf_counter() - t0
                    break
                time.sleep(0.02)
            if took is None:
                raise SystemExit(f"kill {k + 1}: no new leader within 60 s")
            times.append(took)
            print(
                f"  kill {k + 1}/{kills}: instance {leader} killed, new leader after {took:.3f} s"
            )
            servers[leader].restart()
    finally:
        close_all(servers)
    return {"times": times, "doubles": doubles}


# --------------------------------------------------------------------------- the run


@contextlib.contextmanager
def setups(root: Path, pg: PostgresServer, args: argparse.Namespace) -> Iterator[list[Setup]]:
    made: list[Setup] = []
    try:
        made.append(Setup("sqlite x1", start_instances(root, "sqlite", 1, None, args.workers)))
        made.append(
            Setup("pg x1", start_instances(root, "pg1", 1, pg.new_database(), args.workers))
        )
        made.append(
            Setup("pg x3", start_instances(root, "pg3", 3, pg.new_database(), args.workers))
        )
        for s in made:
            s.key = s.servers[0].new_account("bench", credit=CREDIT)
            s.keys = [s.key] + [
                s.servers[0].new_account(f"bench{i}", credit=CREDIT)
                for i in range(1, args.accounts)
            ]
        yield made
    finally:
        close_all([srv for s in made for srv in s.servers])


def ratio_line(label: str, values: dict[str, list[float]], unit: str, fmt: str) -> None:
    base = med(values["sqlite x1"])
    cells = []
    for name, vs in values.items():
        m = med(vs)
        cells.append(f"{name} {m:{fmt}} {unit} (x{m / base:.2f})")
    print(f"  {label:28s} " + "   ".join(cells))


def run(args: argparse.Namespace) -> None:
    root = Path(tempfile.mkdtemp(prefix="ecolink-scale-"))
    pg = PostgresServer()  # its own temp dir, which the postgres user owns
    try:
        with setups(root, pg, args) as all_setups:
            asyncio.run(_measure(root, all_setups, args))
        print()
        print(
            f"4. leader failover: 3 instances on Postgres, --leader-election postgres, "
            f"{args.kills} SIGKILLs of the leader"
        )
        fo = failover(root, pg, args.kills, args.workers)
        t = fo["times"]
        print(
            f"  time from SIGKILL to another instance's ecolink_leader 1: median "
            f"{med(t):.3f} s, max {max(t):.3f} s, min {min(t):.3f} s (bound 15 s); "
            f"two leaders seen at once: {fo['doubles']} times"
        )
    finally:
        pg.close()
        shutil.rmtree(root, ignore_errors=True)


async def _measure(root: Path, all_setups: list[Setup], args: argparse.Namespace) -> None:
    for s in all_setups:
        await launch_clusters(s, args.clusters)
    print(
        "set-ups: "
        + ", ".join(f"{s.name} ({len(s.servers)} x --workers {args.workers})" for s in all_setups)
        + f"; {args.clusters} clusters each for the GETs"
    )

    # 1. GET /gpu-clusters/{id}
    print()
    print(
        f"1. GET /gpu-clusters/{{id}}: wrk, {args.connections} connections shared out over the "
        f"instances, {args.seconds:g} s x {args.rounds} rounds, set-ups interleaved"
    )
    scripts = {s.name: get_script(root, s) for s in all_setups}
    for s in all_setups:  # warm up
        get_round(s, scripts[s.name], args.connections, 1)
    rps: dict[str, list[float]] = {s.name: [] for s in all_setups}
    p99: dict[str, list[float]] = {s.name: [] for s in all_setups}
    errors = 0
    for r in range(args.rounds):
        for s in all_setups:
            g = get_round(s, scripts[s.name], args.connections, args.seconds)
            rps[s.name].append(g["rps"])
            p99[s.name].append(g["p99"] * 1000)
            errors += int(g["errors"])
            print(
                f"  round {r + 1} {s.name:10s} {g['rps']:8.0f} req/s  p99 {g['p99'] * 1000:.1f} ms"
            )
    ratio_line("requests/s, median", rps, "req/s", ".0f")
    ratio_line("p99 latency, median", p99, "ms", ".1f")
    print(f"  non-2xx or socket errors: {errors}")

    # 2. launches/s
    print()
    print(
        f"2. POST /gpu-clusters: {args.clients} concurrent clients round-robin over the "
        f"instances, {args.seconds:g} s x {args.rounds} rounds; one account, then "
        f"{args.accounts} accounts (clusters terminated after each run, outside the timing)"
    )
    for variant, nkeys in (("one account", 1), (f"{args.accounts} accounts", args.accounts)):
        lps: dict[str, list[float]] = {s.name: [] for s in all_setups}
        lp99: dict[str, list[float]] = {s.name: [] for s in all_setups}
        failed: list[str] = []
        for r in range(args.rounds):
            for s in all_setups:
                tag = f"l{nkeys}r{r}"
                res = await launch_round(s, s.keys[:nkeys], args.clients, args.seconds, tag)
                lps[s.name].append(res["lps"])
                lp99[s.name].append(res["p99"] * 1000)
                failed += res["errors"]
                print(
                    f"  {variant}, round {r + 1} {s.name:10s} {res['lps']:7.1f} launches/s "
                    f"({res['launched']})  p50 {res['p50'] * 1000:.0f} ms  "
                    f"p99 {res['p99'] * 1000:.0f} ms"
                )
        ratio_line(f"launches/s, {variant}", lps, "/s", ".1f")
        ratio_line(f"launch p99, {variant}", lp99, "ms", ".0f")
        print(f"  refused or failed: {len(failed)}" + (f" (first: {failed[0]})" if failed else ""))

    # The money side after all those launches and terminations: the ledger's invariants.
    for s in all_setups:
        store = s.servers[0].store()
        try:
            problems = store.audit()
        finally:
            store.close()
        print(
            f"  ledger audit, {s.name}: " + ("clean" if not problems else "; ".join(problems[:5]))
        )

    # 3. watch propagation
    print()
    print(
        f"3. watch: {args.changes} extends through instance A; from A's answer to the "
        f"frame on the watch"
    )
    base = all_setups[0]
    pg3 = all_setups[2]
    (same_sqlite,) = await watch_latency(
        base.urls[0], base.urls, base.key, base.clusters[0], args.changes
    )
    across, same_pg = await watch_latency(
        pg3.urls[0], [pg3.urls[1], pg3.urls[0]], pg3.key, pg3.clusters[0], args.changes
    )
    b = med(same_sqlite)
    for label, vs in (
        ("sqlite x1, same instance", same_sqlite),
        ("pg x3, same instance (A)", same_pg),
        ("pg x3, across (A -> B)", across),
    ):
        print(
            f"  {label:26s} median {med(vs) * 1000:7.1f} ms  p95 {pct(vs, 95) * 1000:7.1f} ms  "
            f"max {max(vs, default=float('nan')) * 1000:7.1f} ms  (x{med(vs) / b:.1f} median; "
            f"{len(vs)}/{args.changes} seen)"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="length of each timed run")
    p.add_argument("--rounds", type=int, default=3, help="rounds of the timed runs")
    p.add_argument("--kills", type=int, default=10, help="leader kills")
    p.add_argument("--changes", type=int, default=50, help="extends for the watch latency")
    p.add_argument("--connections", type=int, default=32, help="wrk connections (GETs)")
    p.add_argument("--clients", type=int, default=32, help="concurrent launching clients")
    p.add_argument("--accounts", type=int, default=8, help="accounts of the spread launches")
    p.add_argument("--clusters", type=int, default=12, help="clusters of each set-up (GETs)")
    p.add_argument("--workers", type=int, default=1, help="front processes per instance")
    p.add_argument(
        "--quick",
        action="store_true",
        help="short: --seconds 3 --rounds 1 --kills 3 --changes 15 --clusters 6",
    )
    args = p.parse_args()
    if args.quick:
        args.seconds, args.rounds, args.kills, args.changes, args.clusters = 3, 1, 3, 15, 6
    t = time.perf_counter()
    print(f"load average before: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    run(args)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}; took {time.perf_counter() - t:.0f} s")


if __name__ == "__main__":
    main()
