"""UI sessions: a cookie that expires, dies at logout, and never outlives the token.

The cookie is `<session id>.<expiry>.<mac>`: the mac is an HMAC (key: COORD_SESSION_SECRET, or the
API token) over the id, the expiry and a fingerprint of the current API token. A cookie counts
only while its id is among the sessions this process opened and has not closed — so logging out
ends it for good, a restart ends every session, and a new token (which needs a restart, and
changes the fingerprint) can never be reached with an old cookie.

Failed logins are logged on `partyline.security` with the client address and answered after a
delay that grows with the failures from that address (1 s, 2 s, … `MAX_DELAY_S`).
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import logging
import math
import secrets
import threading
import time

from coordinator.settings import CoordinatorSettings

security_log = logging.getLogger("partyline.security")

SESSION_COOKIE = "partyline_session"
MAX_DELAY_S = 5.0


def _mac(settings: CoordinatorSettings, sid: str, expires: int) -> str:
    key = (settings.session_secret or settings.api_token).encode()
    token_fp = hashlib.sha256(settings.api_token.encode()).hexdigest()[:16]
    msg = f"{sid}.{expires}.{token_fp}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


MAX_TRACKED = 10_000  # client addresses whose failed logins are counted
FAILURES_FORGOTTEN_S = 3600.0  # a count of failed logins lapses this long after the last


class UiSessions:
    """The open UI sessions of this coordinator process (thread-safe)."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self._open: dict[str, float] = {}  # session id → expiry (epoch seconds)
        # client address → (failed logins in a row, time of the last): at most MAX_TRACKED
        # addresses, the least recent dropped first; forgotten FAILURES_FORGOTTEN_S after the last
        self._failures: collections.OrderedDict[str, tuple[int, float]] = collections.OrderedDict()
        self._lock = threading.Lock()

    def open(self, settings: CoordinatorSettings) -> str:
        """A new session; returns the cookie value."""
        sid = secrets.token_urlsafe(18)
        expires = math.ceil(time.time() + self.lifetime_s)  # never shorter than the lifetime
        with self._lock:
            now = time.time()
            self._open = {s: e for s, e in self._open.items() if e > now}
            self._open[sid] = expires
        return f"{sid}.{expires}.{_mac(settings, sid, expires)}"

    def _parse(self, settings: CoordinatorSettings, cookie: str | None) -> str | None:
        """The session id of a valid cookie, else None."""
        if not cookie or cookie.count(".") != 2:
            return None
        sid, exp, mac = cookie.split(".")
        if not exp.isdigit() or not secrets.compare_digest(mac, _mac(settings, sid, int(exp))):
            return None
        if int(exp) <= time.time():
            return None
        with self._lock:
            return sid if self._open.get(sid) == int(exp) else None

    def valid(self, settings: CoordinatorSettings, cookie: str | None) -> bool:
        return self._parse(settings, cookie) is not None

    def close(self, settings: CoordinatorSettings, cookie: str | None) -> None:
        sid = self._parse(settings, cookie)
        if sid is not None:
            with self._lock:
                self._open.pop(sid, None)

    def failed_login(self, client: str) -> float:
        """Record a failed login from `client`; returns how long to wait before answering."""
        now = time.monotonic()
        with self._lock:
            n, last = self._failures.pop(client, (0, now))
            n = n + 1 if now - last < FAILURES_FORGOTTEN_S else 1
            self._failures[client] = (n, now)
            while len(self._failures) > MAX_TRACKED:
                self._failures.popitem(last=False)
        security_log.warning("failed UI login from %s (%d in a row)", client, n)
        return min(float(n), MAX_DELAY_S)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
