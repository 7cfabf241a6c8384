"""`python -m ecolink.front.build [-v] [--status]`: compile the front's request path
with mypyc (see `ecolink.front.compiled`), or say which front a process would run.

Exit status: 0 when the compiled front is there (built now or before); 1 when it
is not (no compiler, no mypy: the front then runs as Python, and says so).
"""

from __future__ import annotations

import sys

from ecolink.front import compiled


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if "--status" in args:
        print(compiled.describe())
        return 0 if compiled.ACTIVE else 1
    if any(a not in ("-v",) for a in args):
        print("usage: python -m ecolink.front.build [-v] [--status]", file=sys.stderr)
        return 2
    try:
        d = compiled.build(quiet="-v" not in args)
    except Exception as exc:  # no compiler, no mypy: the front runs as Python
        print(f"front: not compiled ({exc!r}); it runs as Python", file=sys.stderr)
        return 1
    print(f"front: compiled by mypyc: {d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
