"""Who local replicas run as, and where their files live.

When the backend runs as root, every account's replicas (their processes, exec
shells and kept sessions) run under an unprivileged uid of that account's own, taken
from a reserved numeric range (no user database entry is needed: the kernel knows
uids, not names), with a private group of the same number plus one shared group for
the shared filesystems. The state directory (database, keys, logs) stays 0700 and
owned by the backend; what replicas may touch lives under a separate replica root:

    <replica root>/               0711 root   (traversable, not listable)
        bin/demo_service.py       0755 root   (the built-in demo service)
        replicas/<cluster>/       0711 root
            <replica>/            0700 the account's uid: the replica's HOME and cwd
        filesystems/<name>/       2770 root:the shared group (umask 007 keeps it shared)

When the backend cannot change uids (it is not root, or `ECOLINK_REPLICA_UIDS=off`),
replicas run as the backend's own user and could read everything it can: the local
runtime then serves one account only, and says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import stat
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

import ecolink

# Uids from here up are handed to accounts in order; the shared group is one below.
DEFAULT_UID_BASE = 1_700_000_000
UIDS_FILE = "replica-uids.json"


def replica_uids_wanted() -> bool:
    """Whether this process can (and may) run replicas under their own uids."""
    if os.environ.get("ECOLINK_REPLICA_UIDS", "auto").lower() in ("off", "0", "no"):
        return False
    return hasattr(os, "geteuid") and os.geteuid() == 0


def single_account_note() -> str:
    return (
        f"replicas run as this backend's own user (uid {os.geteuid()}), not under "
        "their own: the local runtime serves one account only (run the backend as "
        "root to give each account's replicas their own uid)"
    )


def default_replica_root(state_dir: Path) -> Path:
    """Where replica files live when replicas run under their own uids: outside the
    state directory (0700), at `ECOLINK_REPLICA_ROOT` or a directory of its own per
    state directory under /var/lib."""
    env = os.environ.get("ECOLINK_REPLICA_ROOT")
    if env:
        return Path(env)
    tag = hashlib.blake2b(str(state_dir.resolve()).encode(), digest_size=6).hexdigest()
    return Path("/var/lib/ecolink-replicas") / tag


@dataclass(frozen=True)
class Credentials:
    """What a replica's processes run as."""

    uid: int
    gid: int
    shared_gid: int


def _world_reachable(path: Path) -> bool:
    """Whether any user may execute `path` (every directory above it searchable)."""
    try:
        real = path.resolve()
        if not real.stat().st_mode & stat.S_IXOTH:
            return False
        return all(p.stat().st_mode & stat.S_IXOTH for p in real.parents)
    except OSError:
        return False


class ReplicaUsers:
    """The uid of each account's replicas and the replica root's layout."""

    def __init__(self, state_dir: Path, root: Path, *, uid_base: int | None = None) -> None:
        self.state_dir = state_dir
        self.root = root
        base = (
            uid_base
            if uid_base is not None
            else int(os.environ.get("ECOLINK_REPLICA_UID_BASE", DEFAULT_UID_BASE))
        )
        self.uid_base = base
        self.shared_gid = base - 1
        self._lock = threading.Lock()
        self._path = state_dir / UIDS_FILE
        self._uids: dict[str, int] = {}
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(self._path.read_text())
            self._uids = {str(k): int(v) for k, v in data.items()}

    # -- layout ----------------------------------------------------------------
    def prepare(self) -> None:
        """Create the replica root; lock the state directory to the backend."""
        for d in (self.root, self.root / "replicas", self.root / "filesystems", self.root / "bin"):
            d.mkdir(parents=True, exist_ok=True)
            os.chown(d, 0, 0)
            os.chmod(d, 0o711)
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        # The demo service, where every uid can read it, with an interpreter every
        # uid can run (a virtual environment under a private home is not one).
        src = Path(ecolink.__file__).resolve().parent / "demo_service.py"
        dst = self.root / "bin" / "demo_service.py"
        shutil.copyfile(src, dst)
        os.chmod(dst, 0o755)

    def python(self) -> str:
        return replica_python()

    def demo_argv(self) -> list[str]:
        return [self.python(), str(self.root / "bin" / "demo_service.py")]

    # -- uids ------------------------------------------------------------------
    def credentials(self, account_id: str) -> Credentials:
        with self._lock:
            uid = self._uids.get(account_id)
            if uid is None:
                taken = set(self._uids.values())
                uid = self.uid_base
                while uid in taken or _has_passwd_entry(uid):
                    uid += 1
                self._uids[account_id] = uid
                tmp = self._path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._uids))
                os.chmod(tmp, 0o600)
                os.replace(tmp, self._path)
        return Credentials(uid=uid, gid=uid, shared_gid=self.shared_gid)

    def own_workdir(self, workdir: Path, creds: Credentials) -> None:
        """The replica's directory: its own, 0700; the cluster directory above it
        traversable by the replica but not listable."""
        parent = workdir.parent
        os.chown(parent, 0, 0)
        os.chmod(parent, 0o711)
        os.chown(workdir, creds.uid, creds.gid)
        os.chmod(workdir, 0o700)

    def shared_filesystem(self, name: str) -> Path:
        """The directory of shared filesystem `name`, where replicas can reach it;
        `<state dir>/filesystems/<name>` links to it (a directory made there before
        moves here)."""
        target = self.root / "filesystems" / name
        entry = self.state_dir / "filesystems" / name
        if entry.is_dir() and not entry.is_symlink():
            if target.exists():
                shutil.rmtree(target)
            shutil.move(str(entry), str(target))
        target.mkdir(parents=True, exist_ok=True)
        if not entry.is_symlink():
            entry.parent.mkdir(parents=True, exist_ok=True)
            entry.symlink_to(target, target_is_directory=True)
        os.chown(target, 0, self.shared_gid)
        os.chmod(target, 0o2770)
        return target


def replica_python() -> str:
    """A Python interpreter every uid can run: this one where it can, else the
    system's (a virtual environment under a private home is out of replicas' reach)."""
    for cand in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if cand and _world_reachable(Path(cand)):
            return cand
    return sys.executable


def _has_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def directory_size(path: Path, limit: int | None = None) -> int:
    """Bytes of the regular files under `path` (symlinks not followed: shared
    filesystems linked in are not the replica's own); stops counting past `limit`."""
    total = 0
    stack = [str(path)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        if e.is_symlink():
                            continue
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                        elif e.is_file(follow_symlinks=False):
                            st = e.stat(follow_symlinks=False)
                            total += st.st_blocks * 512 if st.st_blocks else st.st_size
                    except OSError:
                        continue
        except OSError:
            continue
        if limit is not None and total > limit:
            break
    return total


class PopenAs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]
    umask: int


def popen_credentials(creds: Credentials | None) -> PopenAs:
    """`subprocess.Popen` arguments that start a child as `creds` (nothing for None):
    its uid, its private group, the shared group, and a umask that keeps its files
    from other users while shared directories stay writable by the group."""
    if creds is None:
        return {}
    return {
        "user": creds.uid,
        "group": creds.gid,
        "extra_groups": [creds.shared_gid],
        "umask": 0o007,
    }


def searchable_path(path: str) -> str:
    """`PATH` without the directories other users cannot search (a private home's
    tools): a replica looking a command up there would get "permission denied"
    instead of "not found"."""
    keep = []
    for d in path.split(os.pathsep):
        if d and _world_reachable(Path(d)) and d not in keep:
            keep.append(d)
    return os.pathsep.join(keep) or os.defpath
