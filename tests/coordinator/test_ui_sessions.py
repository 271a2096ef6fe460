"""The UI session and the security headers, over HTTP (TestClient = httpx) and pure logic."""

from __future__ import annotations

import logging
import time

from fastapi.testclient import TestClient

from coordinator.api.main import create_app
from coordinator.ui_sessions import SESSION_COOKIE, UiSessions

from .helpers import TOKEN, _settings


def _browser(env, **settings) -> TestClient:
    """A client without the bearer token: it gets in through the login cookie only."""
    return TestClient(create_app(_settings(env, **settings)), follow_redirects=False)


def _login(client: TestClient, token: str = TOKEN):
    return client.post("/login", data={"token": token})


def test_a_logged_out_cookie_is_dead_even_when_replayed(env):
    with _browser(env) as ui:
        r = _login(ui)
        assert r.status_code == 303
        cookie = r.cookies[SESSION_COOKIE]
        assert TOKEN not in cookie
        assert ui.get("/api/v1/jobs").status_code == 200  # the cookie works …
        ui.post("/logout")
        ui.cookies.set(SESSION_COOKIE, cookie)  # … someone kept a copy
        assert ui.get("/api/v1/jobs").status_code == 401
        assert ui.get("/").headers["location"] == "/login"


def test_a_cookie_expires(env):
    with _browser(env, session_lifetime_s=1) as ui:
        _login(ui)
        assert ui.get("/api/v1/jobs").status_code == 200
        time.sleep(2.1)
        assert ui.get("/api/v1/jobs").status_code == 401


def test_a_cookie_made_with_another_secret_or_token_is_refused(env):
    s = _settings(env, session_secret="session-secret-0123456789")
    sessions = UiSessions(3600)
    cookie = sessions.open(s)
    assert sessions.valid(s, cookie)
    other_secret = _settings(env, session_secret="another-secret-0123456789")
    assert not sessions.valid(other_secret, cookie)
    new_token = _settings(
        env, session_secret="session-secret-0123456789", api_token="a-new-token-0123456789"
    )
    assert not sessions.valid(new_token, cookie)  # a new token ends every old session
    sid, exp, mac = cookie.split(".")
    assert not sessions.valid(s, f"{sid}.{int(exp) + 3600}.{mac}")  # a longer life: forged


def test_failed_logins_are_slowed_and_logged(env, caplog):
    sessions = UiSessions(3600)
    with caplog.at_level(logging.WARNING, logger="partyline.security"):
        delays = [sessions.failed_login("10.0.0.9") for _ in range(7)]
    assert delays == [1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0]
    assert "failed UI login from 10.0.0.9 (7 in a row)" in caplog.records[-1].getMessage()
    sessions.succeeded("10.0.0.9")
    assert sessions.failed_login("10.0.0.9") == 1.0
    with _browser(env) as ui, caplog.at_level(logging.WARNING, logger="partyline.security"):
        r = _login(ui, "not-the-token-0123456789")
        assert r.status_code == 401 and SESSION_COOKIE not in r.cookies
    assert any("failed UI login from testclient" in m.getMessage() for m in caplog.records)


def test_every_page_carries_the_security_headers(env):
    with _browser(env) as ui:
        for path in ("/login", "/api/v1/jobs", "/docs", "/healthz"):
            h = ui.get(path).headers
            assert h["x-frame-options"] == "DENY", path
            assert h["x-content-type-options"] == "nosniff", path
            assert "frame-ancestors 'none'" in h["content-security-policy"], path
            assert "http" not in h["content-security-policy"], path  # no other origin


def test_swagger_and_redoc_are_served_by_the_app_itself(env):
    with _browser(env) as ui:
        for page, asset in (
            ("/docs", "/docs-assets/swagger-ui-bundle.js"),
            ("/redoc", "/docs-assets/redoc.standalone.js"),
        ):
            html = ui.get(page).text
            assert asset in html and "cdn" not in html.lower(), page
            assert ui.get(asset).status_code == 200


def test_failed_logins_are_remembered_for_a_bounded_number_of_addresses(monkeypatch):
    from coordinator import ui_sessions

    monkeypatch.setattr(ui_sessions, "MAX_TRACKED", 3)
    s = ui_sessions.UiSessions(60)
    for addr in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"):
        s.failed_login(addr)
    assert list(s._failures) == ["10.0.0.2", "10.0.0.3", "10.0.0.4"]
    assert s.failed_login("10.0.0.2") == 2.0  # still counted: it is among the kept


def test_a_count_of_failed_logins_lapses_after_an_hour(monkeypatch):
    from coordinator import ui_sessions

    s = ui_sessions.UiSessions(60)
    clock = [1000.0]
    monkeypatch.setattr(ui_sessions.time, "monotonic", lambda: clock[0])
    assert [s.failed_login("10.0.0.9") for _ in range(3)] == [1.0, 2.0, 3.0]
    clock[0] += ui_sessions.FAILURES_FORGOTTEN_S + 1
    assert s.failed_login("10.0.0.9") == 1.0
