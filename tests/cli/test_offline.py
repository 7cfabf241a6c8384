"""The CLI without a working backend: usage errors (exit 2), an unreachable
backend (exit 3), confirmations that refuse without a terminal, and the
connection settings (flag, environment, config file)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ecotui import cli
from ecotui.config import ConfigError, Connection, resolve_connection

ROOT = Path(__file__).resolve().parents[2]


def closed_port_url() -> str:
    # A loopback port nobody listens on: bind, read the port, close.
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def unreachable(monkeypatch, tmp_path):
    monkeypatch.setenv("ECO_API_URL", closed_port_url())
    monkeypatch.setenv("ECO_API_KEY", "eco_test")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    return os.environ["ECO_API_URL"]


@pytest.mark.parametrize(
    "argv",
    [
        ["ls"],
        ["ls", "--json"],
        ["show", "web"],
        ["show", "web", "--json"],
        [
            "launch",
            "--name",
            "a",
            "--region",
            "us-east",
            "--gpu-type",
            "H100-80GB",
            "--gpu-count",
            "1",
            "--replicas",
            "2",
            "--image",
            "x",
            "--hours",
            "1",
            "--yes",
        ],
        ["scale", "web", "3", "--yes"],
        ["extend", "web", "1", "--yes"],
        ["restart", "web", "--yes"],
        ["restart", "web", "web-0", "--yes"],
        ["stop", "web", "--yes"],
        ["resume", "web", "--yes"],
        ["terminate", "web", "--yes"],
        ["endpoint", "web", "8000", "--yes"],
        ["endpoint", "web", "--close", "--yes"],
        ["logs", "web", "web-0"],
        ["logs", "web", "web-0", "-f"],
        ["logs", "web", "web-0", "--json"],
        ["exec", "web", "web-0", "--", "true"],
        ["ledger"],
        ["ledger", "--csv"],
        ["ledger", "--json"],
    ],
)
def test_every_command_exits_3_when_the_backend_cannot_be_reached(unreachable, argv, capsys):
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "cannot reach the backend" in err
    assert unreachable in err


def test_unreachable_with_the_api_flag(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ECO_API_KEY", "eco_test")
    monkeypatch.delenv("ECO_API_URL", raising=False)
    url = closed_port_url()
    assert cli.main(["ls", "--api", url]) == 3
    assert cli.main(["--api", url, "ls"]) == 3


@pytest.mark.slow  # starts a process
def test_exec_to_unreachable_backend_exits_3_as_a_process(unreachable):
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(
            [str(ROOT / "src"), str(ROOT / "backend"), os.environ.get("PYTHONPATH", "")]
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "ecotui", "exec", "web", "web-0", "--", "ls"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 3, proc.stderr
    assert "cannot reach the backend" in proc.stderr


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["nosuch"],
        ["scale", "web"],
        ["scale", "web", "many"],
        ["extend"],
        ["launch", "--name", "x"],
        ["endpoint", "web"],
        ["endpoint", "web", "80", "--close"],
        ["exec", "web", "web-0"],
        ["exec", "web", "web-0", "--"],
        ["logs", "web"],
        ["--refresh", "0"],
    ],
)
def test_usage_errors_exit_2(unreachable, argv, capsys, monkeypatch):
    if argv == []:
        # No subcommand runs the dashboard; not a usage error. Checked elsewhere.
        argv = ["--bogus"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        [
            "launch",
            "--name",
            "a",
            "--region",
            "us-east",
            "--gpu-type",
            "H100-80GB",
            "--gpu-count",
            "1",
            "--replicas",
            "2",
            "--image",
            "x",
            "--hours",
            "1",
        ],
        ["scale", "web", "3"],
        ["extend", "web", "1"],
        ["stop", "web"],
        ["resume", "web"],
        ["terminate", "web"],
        ["restart", "web"],
        ["restart", "web", "web-0"],
        ["endpoint", "web", "8000"],
        ["endpoint", "web", "--close"],
    ],
)
def test_confirmations_refuse_without_a_terminal(unreachable, argv, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", open(os.devnull))  # not a terminal
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "--yes" in err


def test_version(capsys):
    assert cli.main(["--version"]) == 0
    from ecotui import __version__

    assert __version__ in capsys.readouterr().out


def test_no_subcommand_runs_the_dashboard(monkeypatch, unreachable):
    seen = {}

    def fake_run_app(connection, refresh_hz):
        seen["conn"], seen["hz"] = connection, refresh_hz
        return 0

    import ecotui

    fake = type(sys)("ecotui.app")
    fake.run_app = fake_run_app
    monkeypatch.setitem(sys.modules, "ecotui.app", fake)
    monkeypatch.setattr(ecotui, "app", fake, raising=False)
    assert cli.main(["--refresh", "10"]) == 0
    assert seen["conn"].url == unreachable and seen["conn"].key == "eco_test"
    assert seen["hz"] == 10.0


# -- connection settings ------------------------------------------------------------


def write_config(base: Path, text: str) -> None:
    (base / "ecotui").mkdir(parents=True, exist_ok=True)
    (base / "ecotui" / "config.toml").write_text(text)


def test_flag_beats_environment_beats_config(tmp_path):
    write_config(tmp_path, 'api_url = "http://127.0.0.1:3"\napi_key = "eco_file"\n')
    env = {
        "XDG_CONFIG_HOME": str(tmp_path),
        "ECO_API_URL": "http://127.0.0.1:2",
        "ECO_API_KEY": "eco_env",
    }
    assert resolve_connection("http://127.0.0.1:1/", None, env=env) == Connection(
        "http://127.0.0.1:1", "eco_env", "explicit"
    )
    assert resolve_connection(None, None, env=env).url == "http://127.0.0.1:2"
    env.pop("ECO_API_URL")
    env.pop("ECO_API_KEY")
    c = resolve_connection(None, None, env=env)
    assert (c.url, c.key, c.source) == ("http://127.0.0.1:3", "eco_file", "config")


def test_key_from_config_with_url_from_flag(tmp_path):
    write_config(tmp_path, 'api_key = "eco_file"\n')
    c = resolve_connection("http://127.0.0.1:9", None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert c.key == "eco_file"


def test_config_under_home_when_xdg_is_unset(tmp_path):
    write_config(tmp_path / ".config", 'api_url = "http://127.0.0.1:4"\napi_key = "k"\n')
    c = resolve_connection(None, None, env={"HOME": str(tmp_path)})
    assert c.url == "http://127.0.0.1:4"


def test_url_without_key_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="ECO_API_KEY"):
        resolve_connection("http://127.0.0.1:1", None, env={"XDG_CONFIG_HOME": str(tmp_path)})


def test_bad_config_and_bad_url_are_usage_errors(tmp_path, monkeypatch, capsys):
    write_config(tmp_path, "api_url = [\n")
    with pytest.raises(ConfigError):
        resolve_connection(None, None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    with pytest.raises(ConfigError):
        resolve_connection("ftp://x", "k", env={"XDG_CONFIG_HOME": str(tmp_path)})
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("ECO_API_URL", raising=False)
    assert cli.main(["ls"]) == 2


def test_no_url_anywhere_uses_the_embedded_backend(tmp_path, monkeypatch):
    calls = []

    class Emb:
        url, key = "http://127.0.0.1:5", "eco_embedded"

    fake = type(sys)("ecotui.embedded")
    fake.ensure_backend = lambda state_dir=None: calls.append(state_dir) or Emb()
    monkeypatch.setitem(sys.modules, "ecotui.embedded", fake)
    c = resolve_connection(None, None, env={"XDG_CONFIG_HOME": str(tmp_path)})
    assert (c.url, c.key, c.source) == ("http://127.0.0.1:5", "eco_embedded", "embedded")
    assert calls == [None]


def _subcommands() -> dict[str, object]:
    import argparse

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


# What changes or costs something, and what reads: the grammar every command follows.
CHANGES = {"launch", "scale", "extend", "restart", "stop", "resume", "terminate", "endpoint"}
READS = {"ls", "show", "ledger", "logs"}


def test_the_grammar_every_command_that_changes_takes_yes_and_every_read_json() -> None:
    commands = _subcommands()
    for name in CHANGES:
        opts = {o for a in commands[name]._actions for o in a.option_strings}
        assert {"--yes", "-y", "--json"} <= opts, name
    for name in READS:
        opts = {o for a in commands[name]._actions for o in a.option_strings}
        assert "--json" in opts and "--yes" not in opts, name
    assert CHANGES == set(cli.CONFIRMING)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_naming_every_command_and_option(shell, capsys) -> None:
    assert cli.main(["completion", shell]) == 0  # no backend needed
    out = capsys.readouterr().out
    for name, sub in _subcommands().items():
        assert name in out
        for action in sub._actions:
            for opt in action.option_strings:
                if opt.startswith("--"):
                    assert (opt if shell != "fish" else f"-l {opt[2:]}") in out, (name, opt)
    assert cli.main(["completion", "tcsh"]) == 2


@pytest.mark.slow  # starts a process
def test_bash_completion_completes_commands_options_and_choices(capsys, tmp_path) -> None:
    cli.main(["completion", "bash"])
    script = tmp_path / "ecotui.bash"
    script.write_text(capsys.readouterr().out)

    def complete(*words: str) -> list[str]:
        line = " ".join(f"'{w}'" for w in words)
        proc = subprocess.run(
            [
                "bash",
                "-c",
                f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1};"
                ' _ecotui; printf "%s\\n" "${COMPREPLY[@]}"',
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        return proc.stdout.split()

    assert complete("ecotui", "te") == ["terminate"]
    assert complete("ecotui", "--api", "http://x", "res") == ["restart", "resume"]
    assert complete("ecotui", "endpoint", "web", "--c") == ["--close"]
    assert complete("ecotui", "restart", "web", "--y") == ["--yes"]
    assert complete("ecotui", "completion", "") == ["-h", "--help", "bash", "zsh", "fish"]
