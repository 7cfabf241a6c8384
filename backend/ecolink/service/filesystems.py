"""Shared filesystems of the local runtime."""

from __future__ import annotations

from pathlib import Path


def local_filesystems(state_dir: Path) -> list[dict[str, str]]:
    """Shared filesystems of the local runtime: directories under `filesystems/`."""
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
