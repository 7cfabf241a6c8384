"""The `ecolink` command: serve's address rules and server.json, stop, accounts, keys,
filesystems, and the state directory from --state-dir or ECOLINK_STATE_DIR."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "backend"), str(ROOT / "src"), env.get("PYTHONPATH", "")]
    )
    env.pop("ECOLINK_STATE_DIR", None)
    env.update(extra)
    return env


def ecolink(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecolink", *args],
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_refuses_plain_http_off_loopback(tmp_path: Path) -> None:
    r = ecolink("serve", "--host", "0.0.0.0", "--port", "0", "--state-dir", str(tmp_path))
    assert r.returncode == 1 and "refusing to serve plain HTTP" in r.stderr
    r = ecolink(
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--tls-cert",
        "c.pem",
        "--state-dir",
        str(tmp_path),
    )
    assert r.returncode == 1 and "go together" in r.stderr
    assert not (tmp_path / "server.json").exists()


def test_server_json_stop_and_a_second_server_refused(ecolink_server: Any) -> None:
    info = json.loads((ecolink_server.state_dir / "server.json").read_text())
    assert info["url"] == ecolink_server.url and info["pid"] == ecolink_server.proc.pid
    assert info["runtime"] == "local" and info["version"]
    assert ecolink_server.url.startswith("http://127.0.0.1:")
    second = ecolink_server.cli("serve", "--port", "0", check=False, timeout=30)
    assert second.returncode == 1 and "another ecolink serve" in second.stderr
    with ecolink_server.client() as c:
        cl = c.post(
            "/gpu-clusters",
            json={
                "name": "s",
                "region": "us-east",
                "gpu_type": "L40S",
                "gpu_count": 1,
                "replicas": 2,
                "image": "python:3.12",
                "estimated_duration_hours": 1,
                "startup_command": "sleep infinity",
            },
        ).json()
    time.sleep(1.0)
    out = ecolink_server.cli("stop")
    assert "stopped" in out.stdout
    assert ecolink_server.proc.wait(5) == 0
    assert not (ecolink_server.state_dir / "server.json").exists()
    # The clean shutdown posted the charges up to the moment it stopped.
    store = ecolink_server.store()
    try:
        c = store.cluster(cl["id"])
        assert c is not None and c.spent_total > 0 and c.suspended
        assert store.audit() == []
    finally:
        store.close()
    assert ecolink_server.cli("stop", check=False).returncode == 1


def test_accounts_and_credit(tmp_path: Path) -> None:
    d = ["--state-dir", str(tmp_path)]
    r = ecolink("accounts", "create", "acme", "--credit", "12.5", *d)
    assert r.returncode == 0 and "12.500000" in r.stdout
    assert ecolink("accounts", "create", "acme", *d).returncode == 1
    assert ecolink("accounts", "create", "bad name", *d).returncode == 1
    r = ecolink("accounts", "credit", "acme", "7.25", *d)
    assert r.returncode == 0 and "19.750000" in r.stdout
    r = ecolink("accounts", "credit", "acme", "-100", *d)
    assert r.returncode == 1 and "below zero" in r.stderr
    assert ecolink("accounts", "credit", "acme", "1.0000001", *d).returncode == 1
    assert ecolink("accounts", "credit", "nobody", "1", *d).returncode == 1
    listing = ecolink("accounts", "list", *d).stdout
    assert "acme" in listing and "19.750000" in listing
    # ECOLINK_STATE_DIR works as well as --state-dir.
    r = ecolink("accounts", "list", env=_env(ECOLINK_STATE_DIR=str(tmp_path)))
    assert "acme" in r.stdout
    assert oct((tmp_path).stat().st_mode & 0o777) == "0o700"


def test_keys_create_list_revoke(tmp_path: Path) -> None:
    d = ["--state-dir", str(tmp_path)]
    ecolink("accounts", "create", "acme", *d)
    k1 = ecolink("keys", "create", "--account", "acme", *d).stdout.split()[-1]
    k2 = ecolink("keys", "create", "--account", "acme", *d).stdout.split()[-1]
    assert k1.startswith("eco_") and k1 != k2
    listing = ecolink("keys", "list", *d).stdout
    assert k1[:12] in listing and k1 not in listing
    assert ecolink("keys", "create", "--account", "nobody", *d).returncode == 1
    r = ecolink("keys", "revoke", "eco_", *d)
    assert r.returncode == 1  # too short to name one key
    r = ecolink("keys", "revoke", k1[:12], *d)
    assert r.returncode == 0
    assert "revoked" in ecolink("keys", "list", *d).stdout


def test_filesystems_are_listed_and_attachable(ecolink_server: Any) -> None:
    r = ecolink_server.cli("filesystems", "create", "weights", "--description", "model weights")
    assert (ecolink_server.state_dir / "filesystems" / "weights").is_dir()
    assert ecolink_server.cli("filesystems", "create", "Bad_Name", check=False).returncode == 1
    assert r.returncode == 0
    with ecolink_server.client() as c:
        assert c.get("/filesystems").json() == {
            "filesystems": [{"name": "weights", "description": "model weights"}]
        }
        r2 = c.post(
            "/gpu-clusters",
            json={
                "name": "fs",
                "region": "us-east",
                "gpu_type": "L40S",
                "gpu_count": 1,
                "replicas": 2,
                "image": "python:3.12",
                "estimated_duration_hours": 1,
                "startup_command": "sleep infinity",
                "shared_filesystems": ["weights"],
            },
        )
        assert r2.status_code == 201 and r2.json()["shared_filesystems"] == ["weights"]


def test_port_zero_and_healthz_version(ecolink_server: Any) -> None:
    from ecolink import __version__

    assert ecolink_server.port > 0
    assert httpx.get(ecolink_server.url + "/healthz").json() == {
        "status": "ok",
        "version": __version__,
    }


def test_serve_over_tls_sets_a_secure_session_cookie(
    ecolink_server_factory: Any, tmp_path: Path
) -> None:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make a test certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    srv = ecolink_server_factory(
        extra_args=["--tls-cert", str(cert), "--tls-key", str(key)], verify=str(cert)
    )
    assert srv.url.startswith("https://127.0.0.1:")
    with srv.client() as c:
        r = c.post("/auth/session")
        assert r.status_code == 201
        assert "secure" in r.headers["set-cookie"].lower().replace("samesite", "")
    # The port does not also answer plain HTTP.
    with pytest.raises(httpx.HTTPError):
        httpx.get(srv.url.replace("https://", "http://") + "/healthz", timeout=3)
