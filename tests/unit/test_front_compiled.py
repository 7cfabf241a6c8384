"""The front's request path compiled by mypyc: the tests run the compiled front
(scripts/test builds it), and a build is used only for the sources it was made of."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from ecolink.front import compiled


def test_the_front_the_tests_run_is_the_compiled_one() -> None:
    from ecolink.front import client_head, proxy, upstream

    assert compiled.ACTIVE, compiled.REASON
    build = compiled.build_dir()
    for module in (proxy, client_head, upstream):
        assert module.__file__ is not None
        path = Path(module.__file__)
        assert path.suffix != ".py" and path.is_relative_to(build), path
    assert compiled.describe().startswith("front: compiled (")


def _copy_front(tmp_path: Path) -> Path:
    front = tmp_path / "front"
    shutil.copytree(compiled.FRONT, front, ignore=shutil.ignore_patterns("__pycache__"))
    return front


def test_a_changed_source_names_another_build(tmp_path: Path) -> None:
    front = _copy_front(tmp_path)
    before = compiled.source_hash(front, ())
    assert compiled.source_hash(front, ()) == before  # stable
    path = front / "client_head.py"
    path.write_text(path.read_text() + "\n# changed\n")
    assert compiled.source_hash(front, ()) != before
    # A module the hot ones only import counts as well.
    front2 = _copy_front(tmp_path / "again")
    shared = front2 / "shared.py"
    shared.write_text(shared.read_text() + "\n")
    assert compiled.source_hash(front2, ()) != before


def test_no_build_or_half_a_build_leaves_the_front_in_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOLINK_FRONT_BUILD", str(tmp_path))
    monkeypatch.delenv("ECOLINK_FRONT_PYTHON", raising=False)
    monkeypatch.setattr(compiled, "ACTIVE", False)
    monkeypatch.setattr(compiled, "REASON", "")
    monkeypatch.setattr(sys, "path", list(sys.path))
    path: list[str] = ["/somewhere"]
    assert not compiled.activate(path)
    assert path == ["/somewhere"] and not compiled.ACTIVE
    assert "python -m ecolink.front.build" in compiled.REASON
    # Every hot module but one: still not used.
    d = compiled.build_dir()
    mods = d / "ecolink" / "front"
    mods.mkdir(parents=True)
    (d / f"abc__mypyc{compiled._EXT}").write_bytes(b"")
    for m in compiled.HOT[:-1]:
        (mods / f"{m}{compiled._EXT}").write_bytes(b"")
    assert not compiled.activate(path) and path == ["/somewhere"]
    # Whole: first on the package's path, its shared runtime on sys.path.
    (mods / f"{compiled.HOT[-1]}{compiled._EXT}").write_bytes(b"")
    assert compiled.activate(path)
    assert path == [str(mods), "/somewhere"] and str(d) in sys.path
    assert compiled.ACTIVE and str(d) in compiled.describe()


def test_the_python_front_can_be_asked_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled, "ACTIVE", False)
    monkeypatch.setattr(compiled, "REASON", "")
    monkeypatch.setenv("ECOLINK_FRONT_PYTHON", "1")
    path: list[str] = []
    assert not compiled.activate(path) and path == []
    assert compiled.describe() == "front: Python (ECOLINK_FRONT_PYTHON is set)"
