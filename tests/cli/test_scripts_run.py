"""`scripts/run` on a fresh clone says what it is doing, one line per step, on stderr:
creating the environment, installing, starting the backend; then runs ecotui."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A stand-in for python3 on a fresh clone: `-m venv` makes a .venv whose python
# "installs" a stand-in ecotui; no network, no minute of pip.
FAKE_PY = """#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin"
    cat > "$3/bin/python" <<'INNER'
#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "pip" ]; then
    here="$(dirname "$0")"
    printf '#!/bin/sh\\necho "ecotui ran with: $*"\\n' > "$here/ecotui"
    chmod +x "$here/ecotui"
    exit 0
fi
cat > /dev/null  # the backend step's script: this stand-in has no backend to start
exit 0
INNER
    chmod +x "$3/bin/python"
    exit 0
fi
exit 1
"""


def _clone(tmp: Path) -> Path:
    repo = tmp / "clone"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts" / "run", repo / "scripts" / "run")
    return repo


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ECO_", "ECOLINK_"))}
    env.update(
        XDG_CONFIG_HOME=str(tmp / "config"),
        XDG_DATA_HOME=str(tmp / "data"),
        ECOLINK_STATE_DIR=str(tmp / "state"),
        **extra,
    )
    return env


def test_a_fresh_clone_says_each_step_before_it_takes_time(tmp_path: Path) -> None:
    repo = _clone(tmp_path)
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PY)
    fake.chmod(0o755)
    p = subprocess.run(
        [str(repo / "scripts" / "run"), "ls"],
        env=_env(tmp_path, PYTHON=str(fake)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0, p.stderr
    steps = p.stderr.splitlines()
    assert steps[0].startswith("ecotui: creating the Python environment in .venv")
    assert steps[1].startswith("ecotui: installing ecotui and its dependencies")
    assert steps[2] == "ecotui: installed"
    assert p.stdout == "ecotui ran with: ls\n"
    # Second run: nothing to create or install, so nothing said.
    p = subprocess.run(
        [str(repo / "scripts" / "run")],
        env=_env(tmp_path, PYTHON=str(fake)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 0 and p.stderr == "" and p.stdout == "ecotui ran with: \n"


def test_starting_the_backend_is_said_once(tmp_path: Path) -> None:
    repo = _clone(tmp_path)
    (repo / ".venv").symlink_to(Path(sys.executable).parent.parent)  # installed already
    env = _env(tmp_path)
    try:
        p = subprocess.run(
            [str(repo / "scripts" / "run"), "ls", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert p.returncode == 0, p.stderr
        lines = p.stderr.splitlines()
        assert lines[0].startswith("ecotui: starting the local backend (state in ")
        assert lines[1].startswith("ecotui: backend ready at http://127.0.0.1:")
        assert p.stdout.startswith("{")  # stdout is ecotui's alone
        p = subprocess.run(
            [str(repo / "scripts" / "run"), "ls", "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0 and p.stderr == ""
        # A backend of the user's choosing: nothing to start, nothing said.
        p = subprocess.run(
            [str(repo / "scripts" / "run"), "completion", "bash"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert p.returncode == 0 and p.stderr == "" and "complete -o default" in p.stdout
    finally:
        subprocess.run(
            [sys.executable, "-m", "ecolink", "stop", "--state-dir", str(tmp_path / "state")],
            env=env,
            capture_output=True,
            timeout=60,
        )
