"""Where the local runtime keeps things on disk.

Under the state dir: `logs/<cluster>/<replica>` and `filesystems/<name>` (the
shared filesystems, each a directory, or a link to one outside when replicas run
under their own uids). Under the files root (the state dir, or the replica root
when replicas run under their own uids): `replicas/<cluster>/<replica>/`, each
replica's working dir, beside the cluster's `runtime.json` (which process runs
which replica, to find them after a crash of the backend) and `expires_at`.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from ecolink.runtime.local.proc import start_time
from ecolink.runtime.local.replica import LocalCluster
from ecolink.runtime.local.users import ReplicaUsers


def scan_filesystems(state_dir: Path) -> list[dict[str, str]]:
    """The shared filesystems: directories under `filesystems/`, each with the
    description in its `.description` file."""
    root = state_dir / "filesystems"
    out: list[dict[str, str]] = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            if d.is_dir() and not d.name.startswith("."):
                desc_file = d / ".description"
                try:
                    desc = desc_file.read_text("utf-8").strip()
                except OSError:
                    desc = ""
                out.append({"name": d.name, "description": desc or f"local directory {d.name}"})
    return out


class Layout:
    def __init__(self, state_dir: Path, users: ReplicaUsers | None) -> None:
        self.state_dir = state_dir
        self.users = users
        # Where replicas' own files live: outside the state dir when they run as others.
        self.files_root = users.root if users is not None else state_dir

    def workdir(self, cid: str, name: str | None = None) -> Path:
        d = self.files_root / "replicas" / cid
        return d / name if name else d

    def replicas_root(self) -> Path:
        return self.files_root / "replicas"

    def logs_dir(self, cid: str) -> Path:
        return self.state_dir / "logs" / cid

    def record_path(self, cid: str) -> Path:
        return self.workdir(cid) / "runtime.json"

    def expiry_path(self, cid: str) -> Path:
        return self.workdir(cid) / "expires_at"

    def write_expiry(self, cid: str, expires_at: str) -> None:
        path = self.expiry_path(cid)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(".expires_at.tmp")
        tmp.write_text(expires_at + "\n")
        tmp.chmod(0o644)
        os.replace(tmp, path)  # readers never see a half-written file

    def shared_filesystem_dir(self, name: str) -> Path:
        if self.users is not None:
            return self.users.shared_filesystem(name)
        target = self.state_dir / "filesystems" / name
        target.mkdir(parents=True, exist_ok=True)
        return target.resolve()

    def filesystems(self) -> list[dict[str, str]]:
        return scan_filesystems(self.state_dir)

    def write_record(self, c: LocalCluster) -> None:
        rec = {
            "cluster_id": c.spec.cluster_id,
            "replicas": {
                r.name: {
                    "pid": r.proc.pid if r.proc else None,
                    "start_time": start_time(r.proc.pid) if r.proc else None,
                    "uid": r.uid,
                    "port": r.port,
                }
                for r in c.replicas.values()
            },
        }
        path = self.record_path(c.spec.cluster_id)
        with contextlib.suppress(OSError):
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(rec))
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)

    def recorded_roots(self, cid: str) -> list[int]:
        """The pids the record names that still run the same process."""
        try:
            rec = json.loads(self.record_path(cid).read_text())
        except (OSError, ValueError):
            return []
        out = []
        for r in rec.get("replicas", {}).values():
            pid, st = r.get("pid"), r.get("start_time")
            if isinstance(pid, int) and st is not None and start_time(pid) == st:
                out.append(pid)
        return out
