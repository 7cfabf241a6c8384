"""The front's request path compiled to C by mypyc, where a build of these very
sources exists; plain Python where none does.

The modules every service-URL request runs through (`HOT`) are ordinary typed
Python. mypyc (part of mypy) compiles them, unchanged, to C extensions: their
classes become native (attributes in C structs, methods called directly), which
halves the Python the front spends on a request (bench/front_cpu.py: about 9.5 µs
down to 5.5 µs; bench/proxy.py runs both fronts beside nginx).

    python -m ecolink.front.build              # compile (about 30 s), or say it is there
    python -m ecolink.front.build --status     # which front a process would run

A build goes to a cache directory named by a hash of the front's sources, the
interpreter (`build_dir()`); `ecolink.front` uses it only when
that hash is the one of the sources it runs from. An edited module is never
shadowed by an older build: it runs as Python until it is built again.
`ECOLINK_FRONT_PYTHON=1` keeps the front in Python regardless.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path

# The modules of a request's path, compiled together (their classes build on each
# other: `proxy.ClientProtocol` is the top of `client_base.ClientBase`'s layers; what
# every connection shares, `shared.Front`, is read on every request).
HOT = (
    "exchange",
    "balancer",
    "upstream",
    "client_base",
    "client_tunnel",
    "client_upstream",
    "client_service",
    "client_head",
    "proxy",
    "shared",
    "cookies",
    "frames",
)
FRONT = Path(__file__).resolve().parent
# What the compiled modules were type-checked against, beside the front's own
# modules: a change there may change what mypyc assumed, so it is in the hash too.
_ALSO = (FRONT.parent / "api" / "edge_rules.py",)
_EXT = sysconfig.get_config_var("EXT_SUFFIX") or ".so"

# Set by `activate()`: whether this process runs the compiled front, and why not.
ACTIVE = False
REASON = "not looked for yet"


def source_hash(front: Path = FRONT, also: tuple[Path, ...] = _ALSO) -> str:
    """The build's name: the front's sources and the interpreter. (Not mypy's version:
    a build carries its own copy of mypyc's runtime, so a newer mypy does not touch
    it; reading the version would cost every process importlib.metadata, 40 ms.)"""
    h = hashlib.sha256()
    for path in sorted(front.glob("*.py")) + list(also):
        h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(f"{sys.implementation.cache_tag} {_EXT}".encode())
    return h.hexdigest()[:20]


def cache_root() -> Path:
    explicit = os.environ.get("ECOLINK_FRONT_BUILD")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ecolink" / "front"


def build_dir() -> Path:
    return cache_root() / source_hash()


def complete(d: Path) -> bool:
    """Every hot module's extension is in the build (and its shared runtime)."""
    mods = d / "ecolink" / "front"
    return all((mods / f"{m}{_EXT}").is_file() for m in HOT) and any(d.glob(f"*__mypyc{_EXT}"))


def activate(package_path: list[str]) -> bool:
    """Called by `ecolink.front` before any of its modules is imported: where the
    build of these sources is complete, its extensions come first on the package's
    path (and its shared runtime on `sys.path`)."""
    global ACTIVE, REASON
    if os.environ.get("ECOLINK_FRONT_PYTHON"):
        REASON = "ECOLINK_FRONT_PYTHON is set"
        return False
    try:
        d = build_dir()
    except OSError as exc:
        REASON = f"the front's sources cannot be read: {exc}"
        return False
    if not complete(d):
        REASON = f"no build of these sources (python -m ecolink.front.build): {d}"
        return False
    package_path.insert(0, str(d / "ecolink" / "front"))
    if str(d) not in sys.path:
        sys.path.append(str(d))
    ACTIVE = True
    REASON = f"mypyc build in {d}"
    return True


def describe() -> str:
    return f"front: {'compiled' if ACTIVE else 'Python'} ({REASON})"


def build(*, quiet: bool = True) -> Path:
    """Compile the hot modules into `build_dir()` (nothing to do if it is there).

    mypyc writes its C and objects to a scratch directory and the extensions to a
    fresh directory beside the target, renamed into place whole: a reader never
    sees half a build, and two builds at once leave one."""
    target = build_dir()
    if complete(target):
        return target
    from mypyc.build import mypycify  # the build's own dependencies: mypy, setuptools
    from setuptools import setup

    target.parent.mkdir(parents=True, exist_ok=True)
    # Only the hot modules' own errors stop a build; what they import is read for
    # its types (`ecocore` may sit beside `ecolink` or in a source tree of its own).
    roots = {str(FRONT.parents[1])}
    spec = importlib.util.find_spec("ecocore")
    if spec is not None and spec.origin:
        roots.add(str(Path(spec.origin).parents[1]))
    sources = [
        "--follow-imports=silent",
        "--ignore-missing-imports",
        *[str(FRONT / f"{m}.py") for m in HOT],
    ]
    with tempfile.TemporaryDirectory(prefix="ecolink-front-") as work:
        out = Path(tempfile.mkdtemp(prefix=f"{target.name}.", dir=target.parent))
        here = os.getcwd()
        mypy_path = os.environ.get("MYPYPATH")
        os.environ["MYPYPATH"] = os.pathsep.join(sorted(roots))
        os.chdir(work)  # mypy's cache and setuptools' leftovers stay in the scratch dir
        try:
            extensions = mypycify(sources, opt_level="3", target_dir=str(Path(work) / "c"))
            setup(
                name="ecolink-front",
                ext_modules=extensions,
                script_args=[
                    *(["-q"] if quiet else []),
                    "build_ext",
                    "--build-lib",
                    str(out),
                    "--build-temp",
                    str(Path(work) / "o"),
                ],
            )
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)
            raise
        finally:
            os.chdir(here)
            if mypy_path is None:
                os.environ.pop("MYPYPATH", None)
            else:
                os.environ["MYPYPATH"] = mypy_path
        if not complete(out):
            shutil.rmtree(out, ignore_errors=True)
            raise RuntimeError(f"mypyc left an incomplete build of {', '.join(HOT)}")
        try:
            out.rename(target)
        except OSError:
            shutil.rmtree(out, ignore_errors=True)  # another build got there first
            if not complete(target):
                raise
    return target
