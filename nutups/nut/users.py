"""NUT's checks on the users of upsd.users (server/user.c): who may log in, set, force shutdown, run a command."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from ..config.users import User

_NOBODY = secrets.token_hex(16)  # compared against when the user does not exist


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class UserTable:
    """The users of upsd.users and NUT's checks on them (server/user.c)."""

    def __init__(self, users: dict[str, User] | None = None) -> None:
        self.users = users or {}

    def _find(self, username: str | None, password: str | None) -> User | None:
        # upsd compares the user name and then the password, both case-sensitively.
        if username is None or password is None:
            return None
        # The password is compared in constant time, and compared even when the user does not
        # exist, so that timing tells a guesser neither.
        user = self.users.get(username)
        stored = user.password if user is not None and user.password is not None else None
        same = hmac.compare_digest(_digest(password), _digest(stored if stored is not None else _NOBODY))
        return user if same and stored is not None else None

    def authenticate(self, username: str | None, password: str | None) -> bool:
        """The name and password match a user of upsd.users (what that user may do is another check)."""
        return self._find(username, password) is not None

    def check_action(self, username: str | None, password: str | None, action: str) -> bool:
        user = self._find(username, password)
        return user is not None and action.upper() in user.actions

    def check_instcmd(self, username: str | None, password: str | None, command: str) -> bool:
        user = self._find(username, password)
        return user is not None and ("all" in user.instcmds or command.lower() in user.instcmds)


__all__ = ["User", "UserTable"]
