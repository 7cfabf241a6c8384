"""`ecotui gpus [NAME] [--json] [--unhealthy]`: every GPU of the fleet (or of one
cluster) with its health verdict and why, worst first. With NAME, the full health
readings of each GPU that is not ok follow the table."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from ecotui.cli_io import WIDTH, Parser, Subcommands
from ecotui.cli_io import table as render_table
from ecotui.client.rest import ApiRefusal, EcoClient
from ecotui.gpu_health import health_lines, health_rank, label, summarize


def register(sub: Subcommands, *parents: Parser) -> None:
    s = sub.add_parser(
        "gpus", parents=list(parents), help="every GPU with its health (of one cluster with NAME)"
    )
    s.add_argument("name", nargs="?", help="only this cluster's GPUs (name or id)")
    s.add_argument("--unhealthy", action="store_true", help="only degraded and failing GPUs")


def render_gpus(rows: list[dict[str, Any]], *, detail: bool) -> str:
    if not rows:
        return "No GPUs."
    rows = sorted(
        rows,
        key=lambda g: (
            -health_rank((g.get("health") or {}).get("verdict")),
            str(g.get("cluster")),
            str(g.get("replica")),
            int(g.get("index") or 0),
        ),
    )
    table = []
    for g in rows:
        h = g.get("health") or {}
        table.append(
            [
                label(h.get("verdict")),
                f"{g.get('cluster')}/{g.get('replica')}",
                str(g.get("index")),
                f"{float(g.get('utilization') or 0):.0f}%",
                f"{(g.get('memory_used_mib') or 0) / 1024:.0f}/{(g.get('memory_total_mib') or 0) / 1024:.0f}",
                f"{float(g.get('temperature_c') or 0):.0f}C",
                h.get("reason") or "",
            ]
        )
    out = [
        render_table(
            ["HEALTH", "CLUSTER/REPLICA", "GPU", "UTIL", "MEM GIB", "TEMP", "REASON"],
            table,
            right={2, 3, 4, 5},
            shrink=6,
        )
    ]
    counts = summarize(rows)
    out.append(
        f"{len(rows)} GPUs: {counts['failing']} failing, {counts['degraded']} degraded, "
        f"{counts['unknown']} unknown, {counts['ok']} ok"
    )
    if detail:
        for g in rows:
            h = g.get("health") or {}
            if h.get("verdict") == "ok":
                continue
            out.append("")
            out.append(
                f"{g.get('cluster')}/{g.get('replica')} GPU {g.get('index')}  "
                f"{g.get('name') or ''}  {g.get('uuid') or ''}"
            )
            for key, value in health_lines(h):
                out.append(
                    f"  {key:<15} {value}"[:WIDTH] if "XID" not in key else f"  {key:<15} {value}"
                )
    return "\n".join(out)


async def cmd_gpus(client: EcoClient, args: argparse.Namespace) -> int:
    data = await client.fleet_gpus(unhealthy=args.unhealthy)
    # The rows as the backend sent them (`--json` prints them so).
    rows = [g.model_dump(mode="json", exclude_unset=True) for g in data.gpus]
    if args.name:
        rows = [g for g in rows if args.name in (g.get("cluster"), g.get("cluster_id"))]
        if not rows:
            c = await client.cluster(args.name)  # a refusal (404) says the name is wrong
            if c.status not in ("running", "pending", "stopping"):
                raise ApiRefusal(409, "conflict", f"cluster {c.name} is {c.status}: it has no GPUs")
    if args.json:
        body = (
            {"gpus": rows, "health": data.health.model_dump(mode="json", exclude_unset=True)}
            if not args.name
            else {"gpus": rows}
        )
        sys.stdout.write(json.dumps(body, indent=2) + "\n")
        return 0
    print(render_gpus(rows, detail=bool(args.name)))
    return 0


def health_summary(c: dict[str, Any]) -> str | None:
    """The `ecotui show` line: the cluster's GPU health in words."""
    s = c.get("gpu_summary") or {}
    h = s.get("health")
    if not h or c.get("status") not in ("running", "pending", "stopping"):
        return None
    verdict = h.get("verdict") or "unknown"
    text = label(verdict)
    if verdict in ("failing", "degraded"):
        parts = []
        if h.get("failing"):
            parts.append(f"{h['failing']} failing")
        if h.get("degraded"):
            parts.append(f"{h['degraded']} degraded")
        text += f" ({', '.join(parts)} of {s.get('gpus', 0)} GPUs): {h.get('reason') or ''}"
    elif verdict == "unknown" and h.get("reason"):
        text += f" ({h['reason']})"
    return text
