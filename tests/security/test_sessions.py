"""Console sessions die with their credential: a session belongs to the API key that
minted it, and revoking that key in another process (`ecolink keys revoke`, the CLI
on the same state directory) ends its sessions at once in the serving process;
`ecolink sessions list|revoke` shows and ends them."""

from __future__ import annotations

from typing import Any

import httpx

from support.edge import is_error, launch_service


def _mint(srv: Any, key: str) -> str:
    with srv.client(key) as c:
        r = c.post("/auth/session")
        assert r.status_code == 201, r.text
        return str(r.cookies["eco_session"])


def _opens(srv: Any, path: str, token: str) -> int:
    r = httpx.get(srv.url + path, headers={"Cookie": f"eco_session={token}"}, timeout=15)
    if r.status_code == 401:
        is_error(r, 401, "unauthenticated")
    return r.status_code


def test_revoking_a_key_ends_its_sessions_at_once(ecolink_server: Any) -> None:
    srv = ecolink_server
    with srv.client() as api:
        cluster = launch_service(api, "sess-web")
    service = f"/gpu-clusters/{cluster['id']}/service/"
    second = srv.cli("keys", "create", "--account", "test").stdout.split()[-1]
    by_first = [_mint(srv, srv.key), _mint(srv, srv.key)]
    by_second = _mint(srv, second)
    for token in (*by_first, by_second):
        assert _opens(srv, service, token) == 200
    listed = srv.cli("sessions", "list").stdout
    assert listed.count(srv.key[:12]) == 2 and listed.count(second[:12]) == 1, listed
    # Another process revokes the first key: both of its sessions end on their next use.
    r = srv.cli("keys", "revoke", srv.key[:12])
    assert r.returncode == 0, r.stderr
    for token in by_first:
        assert _opens(srv, service, token) == 401
    assert _opens(srv, service, by_second) == 200
    listed = srv.cli("sessions", "list").stdout
    assert srv.key[:12] not in listed and second[:12] in listed, listed
    # A revoked key mints nothing either.
    with srv.client(srv.key) as c:
        is_error(c.post("/auth/session"), 401, "unauthenticated")


def test_sessions_cli_lists_and_revokes(ecolink_server: Any) -> None:
    srv = ecolink_server
    with srv.client() as api:
        cluster = launch_service(api, "cli-web")
    service = f"/gpu-clusters/{cluster['id']}/service/"
    other_key = srv.new_account("other-acct", "10")
    a1, a2 = _mint(srv, srv.key), _mint(srv, srv.key)
    b1 = _mint(srv, other_key)
    rows = srv.cli("sessions", "list").stdout.splitlines()
    assert rows[0].split() == ["ID", "ACCOUNT", "KEY", "CREATED", "EXPIRES"], rows
    assert len(rows) == 4, rows
    # No token and no hash of one is shown whole.
    assert not any(t in "\n".join(rows) for t in (a1, a2, b1))
    only_other = srv.cli("sessions", "list", "--account", "other-acct").stdout.splitlines()
    assert len(only_other) == 2 and "other-acct" in only_other[1], only_other
    # By id: ends exactly one of the test account's two sessions.
    ids = [r.split()[0] for r in rows[1:] if r.split()[1] == "test"]
    r = srv.cli("sessions", "revoke", ids[0])
    assert r.returncode == 0 and "ended 1 console session" in r.stdout, (r.stdout, r.stderr)
    assert sorted(_opens(srv, service, t) for t in (a1, a2)) == [200, 401]
    # By account: the rest of them.
    r = srv.cli("sessions", "revoke", "--account", "test")
    assert r.returncode == 0, r.stderr
    assert [_opens(srv, service, t) for t in (a1, a2)] == [401, 401]
    # By key: the other account's.
    r = srv.cli("sessions", "revoke", "--key", other_key[:12])
    assert r.returncode == 0 and "ended 1" in r.stdout, r.stdout
    assert srv.cli("sessions", "list").stdout.splitlines()[1:] == []
    # Clear refusals.
    for args, words in (
        (("revoke",), "say which sessions"),
        (("revoke", "zz-not-hex"), "hexadecimal"),
        (("revoke", "abcdef"), "no session matches"),
        (("revoke", "--account", "nobody"), "no account named"),
    ):
        r = srv.cli("sessions", *args, check=False)
        assert r.returncode == 1 and words in r.stderr, (args, r.stderr)
