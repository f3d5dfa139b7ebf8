"""Who is asking for a control: a dashboard login (cookie + CSRF token) or HTTP Basic, checked
against upsd.users; what that user may then do is decided by the NUT server core itself.

CSRF: the session cookie is SameSite=Strict and HttpOnly, and a control also needs the
session's token in the X-CSRF-Token header, which another site's page can neither read nor
send.  HTTP Basic is for scripts (curl): nutups never answers with a Basic challenge, so a
browser never remembers such credentials and cannot be made to send them.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..nut.users import UserTable

COOKIE = "nutups_session"
IDLE_S = 12 * 3600.0
# Sessions one user may hold: a new login beyond this ends that user's oldest session, never
# another user's (an account must not be able to log the admin out by logging in often).
MAX_SESSIONS_PER_USER = 16


@dataclass
class Login:
    username: str
    password: str
    csrf: str
    last_used: float


class Logins:
    """Dashboard sessions, in memory (a restart asks to log in again)."""

    def __init__(self, users: Callable[[], UserTable], clock: Callable[[], float] = time.monotonic) -> None:
        self.users = users  # the current table: SIGHUP may replace it
        self.clock = clock
        self._sessions: dict[str, Login] = {}

    def login(self, username: str, password: str) -> tuple[str, Login] | None:
        if not self.users().authenticate(username, password):
            return None
        now = self.clock()
        for sid, entry in list(self._sessions.items()):
            if now - entry.last_used > IDLE_S:
                del self._sessions[sid]
        own = [sid for sid, entry in self._sessions.items() if entry.username == username]
        if len(own) >= MAX_SESSIONS_PER_USER:
            del self._sessions[min(own, key=lambda sid: self._sessions[sid].last_used)]
        sid = secrets.token_urlsafe(32)
        entry = Login(username, password, secrets.token_urlsafe(24), now)
        self._sessions[sid] = entry
        return sid, entry

    def logout(self, sid: str | None) -> None:
        if sid:
            self._sessions.pop(sid, None)

    def session(self, sid: str | None) -> Login | None:
        entry = self._sessions.get(sid or "")
        if entry is None:
            return None
        now = self.clock()
        if now - entry.last_used > IDLE_S or not self.users().authenticate(entry.username, entry.password):
            self._sessions.pop(sid or "", None)  # expired, or the user changed in upsd.users
            return None
        entry.last_used = now
        return entry

    def credentials(self, cookie: str | None, csrf: str | None, authorization: str | None) -> tuple[str, str] | None:
        """(username, password) of a request that may act, or None (answer 401)."""
        if authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "basic":
                return None
            try:
                user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                return None
            if sep and self.users().authenticate(user, password):
                return user, password
            return None
        entry = self.session(cookie)
        if entry is None or not csrf or not secrets.compare_digest(csrf, entry.csrf):
            return None
        return entry.username, entry.password


def basic_user(authorization: str) -> str | None:
    """The user name of an HTTP Basic Authorization header (for the failed-login report), or None."""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        return base64.b64decode(value.strip(), validate=True).decode().partition(":")[0]
    except (binascii.Error, UnicodeDecodeError):
        return None
