"""The front door's pure rules (ecolink.api.edge_rules): one cookie parser for
authenticating and stripping, the service-URL sandbox, Origin checks, service host
names and per-route frame limits."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ecocore.money import MoneyError, hours_to_micro_hours, usd_to_micros
from ecolink.api import edge_rules as er

TOKEN = "AbC-123_xyz"


def test_the_session_token_is_found_in_every_cookie_form() -> None:
    forms = [
        [f"eco_session={TOKEN}"],
        [f"a=1; eco_session={TOKEN}; b=2"],
        [f"a=1,eco_session={TOKEN}"],
        [f"a=1 eco_session={TOKEN}"],
        [f"a=1;\teco_session={TOKEN}"],
        [f'eco_session="{TOKEN}"'],
        ["a=1", f"eco_session={TOKEN}"],
        [f"eco_session={TOKEN}", f"eco_session={TOKEN}"],  # the same twice is one
    ]
    for values in forms:
        assert er.session_token(values) == TOKEN, values
        stripped = er.strip_session_cookie(values) or ""
        assert "eco_session" not in stripped and TOKEN not in stripped, (values, stripped)
    assert er.strip_session_cookie([f"a=1; eco_session={TOKEN}; b=2"]) == "a=1; b=2"
    assert er.strip_session_cookie(["a=1", f"eco_session={TOKEN}"]) == "a=1"
    assert er.strip_session_cookie([f"eco_session={TOKEN}"]) is None
    # Two different tokens: no guessing.
    assert er.session_token(["eco_session=one; eco_session=two"]) is None
    assert er.session_tokens(["eco_session=one", "eco_session=two"]) == ["one", "two"]
    # Look-alike names are other cookies, kept and never taken for ours.
    assert er.session_token(["xeco_session=1; eco_session_x=2; Eco_Session=3"]) is None
    assert er.strip_session_cookie(["xeco_session=1; eco_session_x=2"]) == (
        "xeco_session=1; eco_session_x=2"
    )


@given(st.lists(st.text(alphabet=' ;,=\t"abceo_s0i', max_size=40), max_size=4))
def test_strip_and_find_agree_on_any_header(values: list[str]) -> None:
    # Whatever the headers hold, what authenticates is exactly what is stripped.
    stripped = er.strip_session_cookie(values)
    assert er.session_tokens([stripped] if stripped else []) == []


def test_the_cookie_opens_service_urls_only() -> None:
    assert er.cookie_allowed("/gpu-clusters/gc_1/service/")
    assert er.cookie_allowed("/gpu-clusters/web/service")
    assert er.cookie_allowed("/gpu-clusters/web/service/a/b?c")
    for path in (
        "/account",
        "/auth/session",
        "/watch",
        "/gpu-clusters/web",
        "/gpu-clusters/web/services",
        "/gpu-clusters/web/replicas/r/exec",
        "/gpu-clusters//service/",
        "/x/gpu-clusters/web/service/",
    ):
        assert not er.cookie_allowed(path), path


def test_the_sandbox_never_allows_same_origin_on_the_api_origin() -> None:
    tokens = er.service_csp(False).split()
    assert tokens[0] == "sandbox" and "allow-scripts" in tokens
    assert "allow-same-origin" not in tokens
    assert "allow-same-origin" in er.service_csp(True).split()


def test_origins() -> None:
    allowed = ["http://127.0.0.1:8000", "https://api.example.com/"]
    assert er.origin_allowed(None, allowed)
    assert er.origin_allowed("http://127.0.0.1:8000", allowed)
    assert er.origin_allowed("HTTPS://API.example.com:443", allowed)
    for bad in (
        "null",
        "http://127.0.0.1:8001",
        "https://api.example.com.evil.example",
        "http://api.example.com",
        "file://",
        "",
        "javascript:alert(1)",
    ):
        assert not er.origin_allowed(bad, allowed), bad


def test_service_hosts() -> None:
    assert er.normalize_suffix(" Svc.Example.COM. ") == "svc.example.com"
    for bad in ("", ".", "a..b", "-a.b", "a_b.c"):
        try:
            er.normalize_suffix(bad)
        except ValueError:
            continue
        raise AssertionError(bad)
    host = er.service_host("gc_0123456789abcdef", "svc.test")
    assert host == "gc-0123456789abcdef.svc.test"
    assert er.service_host_ref(host + ":8443", "svc.test") == "gc_0123456789abcdef"
    assert er.service_host_ref(host.upper(), "svc.test") == "gc_0123456789abcdef"
    for other in (
        "svc.test",
        "x.gc-0123456789abcdef.svc.test",
        "gc-0123.svc.test",
        "gc-0123456789abcdef.svc.test.evil",
        "web.svc.test",
        None,
    ):
        assert er.service_host_ref(other, "svc.test") is None, other
    assert er.service_host_ref(host, None) is None
    assert er.cookie_domain("svc.test:8443", "svc.test") == "svc.test"
    assert er.cookie_domain("api.svc.test", "svc.test") == "svc.test"
    assert er.cookie_domain("127.0.0.1:8000", "svc.test") is None


def test_frame_limits() -> None:
    assert er.frame_limit("/watch") == 8 * 1024
    assert er.frame_limit("/gpu-clusters/x/replicas/x-0/exec") == 1024 * 1024 + 1
    assert er.frame_limit("/gpu-clusters/x/sessions/s1/attach") == 1024 * 1024 + 1
    assert er.frame_limit("/gpu-clusters/x/service/ws") == 1024 * 1024
    # Port-forward: the client's 64 KiB reads go as one message each.
    assert er.frame_limit("/gpu-clusters/x/replicas/x-0/portforward") == 64 * 1024
    assert er.frame_limit("/anything/else") == 8 * 1024
    assert er.MAX_FRAME == max(
        er.frame_limit(p)
        for p in ("/watch", "/gpu-clusters/x/replicas/x-0/exec", "/gpu-clusters/x/service/")
    )


def test_portforward_sockets_are_counted_apart() -> None:
    assert er.is_portforward("/gpu-clusters/x/replicas/x-0/portforward")
    for path in (
        "/watch",
        "/gpu-clusters/x/replicas/x-0/exec",
        "/gpu-clusters/x/service/replicas/x-0/portforward",
        "/gpu-clusters/x/replicas/x-0/portforward/more",
    ):
        assert not er.is_portforward(path), path
    assert er.MAX_PORTFORWARDS_PER_ACCOUNT > er.MAX_WEBSOCKETS_PER_ACCOUNT


def test_absurd_magnitudes_are_refused_before_arithmetic() -> None:
    for value in (
        "1e999999",
        "-1e999999",
        "1e-999999",
        "1E+999999999",
        1e308,
        10**40,
        "0.01e999999",
    ):
        for parse in (hours_to_micro_hours, usd_to_micros):
            try:
                parse(value)
            except MoneyError as exc:
                assert str(exc) in ("out of range", "more than 6 decimal places"), exc
                continue
            raise AssertionError(value)
    assert hours_to_micro_hours("1e2") == 100_000_000
    assert usd_to_micros("0.000001") == 1
