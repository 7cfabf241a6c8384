"""Fixtures of the CLI tests: an account on the shared backend, and running `ecotui`."""

from __future__ import annotations

import json
import secrets

import pytest

from ecotui import cli


@pytest.fixture
def env(shared_ecolink_server, monkeypatch, tmp_path):
    """A new $10,000 account on the shared backend, set in ECO_API_URL / ECO_API_KEY."""
    key = shared_ecolink_server.new_account("cli-" + secrets.token_hex(4), "10000")
    monkeypatch.setenv("ECO_API_URL", shared_ecolink_server.url)
    monkeypatch.setenv("ECO_API_KEY", key)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    yield {"ECO_API_URL": shared_ecolink_server.url, "ECO_API_KEY": key}
    # End this account's replicas now rather than all at once at server shutdown.
    with shared_ecolink_server.client(key) as api:
        for c in api.get("/gpu-clusters").json()["clusters"]:
            api.delete(f"/gpu-clusters/{c['id']}")


class Run:
    def __init__(self, capsys):
        self.capsys = capsys

    def __call__(self, *argv: str) -> tuple[int, str, str]:
        code = cli.main(list(argv))
        out = self.capsys.readouterr()
        return code, out.out, out.err

    def json(self, *argv: str):
        code, out, err = self(*argv, "--json")
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def run(capsys, env):
    return Run(capsys)
