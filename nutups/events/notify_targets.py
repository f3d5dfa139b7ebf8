"""Notification targets as apprise URLs: checking a URL without sending, keeping its secrets out
of every text we write, and sending one message in a worker thread with a time limit.

apprise (github.com/caronc/apprise) knows the URL syntax of ntfy (`ntfy://`, `ntfys://`),
Telegram (`tgram://`), Pushover (`pover://`), Gotify (`gotify://`), Discord (`discord://`),
Slack (`slack://`), e-mail over SMTP (`mailto://`, `mailtos://`) and JSON webhooks
(`json://`, `jsons://`), among some hundred others.  Its calls block (requests, smtplib), so
each send runs in a thread of its own, and the event loop waits for it at most ``timeout``
seconds: a service that hangs past that is given up (its thread is a daemon and ends with
apprise's own socket time-outs), and the message stays queued for the next try.

A URL's secrets (tokens, passwords, topic names, chat ids) are every part of it but the
scheme: apprise's own log lines can carry them, so they never reach our log; what we report
comes from those lines with every such part replaced.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlencode

log = logging.getLogger("nutups.notifications")

KINDS = ("info", "success", "warning", "failure")  # apprise's NotifyType values
SCHEMES_HINT = "ntfy://, ntfys://, tgram://, pover://, gotify://, discord://, slack://, mailto://, json://"
_MIN_SECRET = 3  # shorter parts of a URL ("80", "to") say nothing and would mangle the text
# ntfy shows a message by its priority and tags (docs.ntfy.sh/publish: priorities min..max, tags that
# are emoji short codes become emojis): a shutdown is urgent, mains back is good news.  A URL
# that sets priority= or tags= itself keeps its own.
NTFY_PRIORITY = {"failure": "max", "warning": "high", "success": "default", "info": "default"}
NTFY_TAGS = {"failure": "rotating_light", "warning": "warning", "success": "white_check_mark",
             "info": "information_source"}


def _apprise():
    import apprise  # late: loading apprise's plugins takes half a second, and only notify: needs it

    logging.getLogger(apprise.LOGGER_NAME).propagate = False  # its lines can carry secrets: see module doc
    # urllib3 (under apprise's requests) logs each request's path at DEBUG (nutups -v), and the path holds
    # Telegram's bot token and Discord's and Slack's webhook tokens
    for name in ("urllib3", "requests_oauthlib", "oauthlib"):
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLogger(name).level))
    return apprise


def secrets_of(url: str) -> list[str]:
    """Every part of ``url`` but its scheme, longest first (so that a part of a part goes after it)."""
    rest = url.split("://", 1)[-1]
    parts = {rest} if len(rest) >= _MIN_SECRET else set()
    for piece in re.split(r"[/:@?&=,;+#\s]+", rest):
        for form in (piece, unquote(piece)):
            if len(form) >= _MIN_SECRET:
                parts.add(form)
    return sorted(parts, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class _ThreadLines(logging.Handler):
    """apprise's log lines of one thread (sends to other targets run beside it)."""

    def __init__(self, thread: int) -> None:
        super().__init__(logging.WARNING)
        self.thread = thread
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.lines.append(record.getMessage())


def _collect_lines(fn):
    """Run ``fn(apprise)``; its result and apprise's warnings meanwhile (in this thread)."""
    apprise = _apprise()
    logger = logging.getLogger(apprise.LOGGER_NAME)
    handler = _ThreadLines(threading.get_ident())
    logger.addHandler(handler)
    if logger.level == logging.NOTSET or logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        return fn(apprise), handler.lines
    finally:
        logger.removeHandler(handler)


def check_url(url: str) -> str | None:
    """Why apprise cannot use ``url`` (without sending anything), or None when it can."""
    plugin, lines = _collect_lines(lambda apprise: apprise.Apprise.instantiate(url))
    if plugin is not None:
        return None
    scheme = url.split("://", 1)[0] if "://" in url else ""
    why = "; ".join(redact(line, secrets_of(url)) for line in lines if "Could not load" not in line)
    if "://" not in url:
        why = "it has no scheme://"
    return (f"not a notification URL apprise can use ({why or f'{scheme}:// is not a service apprise knows'}); "
            f"e.g. {SCHEMES_HINT}")


@dataclass
class Target:
    """One named target of `notify:`.  Its ``str()`` is its name: the URL is never shown."""

    name: str
    url: str = field(repr=False)

    def __post_init__(self) -> None:
        self.secrets = secrets_of(self.url)

    def __str__(self) -> str:
        return self.name

    def url_for(self, kind: str) -> str:
        """The URL for a message of this kind: ntfy's gets the kind's priority and tag."""
        scheme, _, rest = self.url.partition("://")
        if scheme.lower() not in ("ntfy", "ntfys") or kind not in NTFY_PRIORITY:
            return self.url
        base, _, query = rest.partition("?")
        params = parse_qsl(query, keep_blank_values=True)
        given = {key.lower() for key, _ in params}
        if "priority" not in given:
            params.append(("priority", NTFY_PRIORITY[kind]))
        if "tags" not in given and "xtags" not in given:
            params.append(("tags", NTFY_TAGS[kind]))
        return f"{scheme}://{base}?{urlencode(params)}"

    def _deliver(self, title: str, body: str, kind: str) -> tuple[bool, str]:
        apprise = _apprise()
        try:
            bundle = apprise.Apprise(asset=apprise.AppriseAsset(app_id="nutups", app_desc="nutups UPS server",
                                                                storage_mode="memory"))
            if not bundle.add(self.url_for(kind)):
                return False, "apprise cannot use this URL (nutups config check says why)"
            # a fresh bundle each time: apprise spaces the sends of one plugin object some seconds apart
            result = bundle.notify(body=body, title=title, notify_type=apprise.NotifyType(kind))
            entries = result.logs() if hasattr(result, "logs") else []  # apprise 2.3's AppriseResult
            lines = [entry.message for entry in entries if entry.level in ("WARNING", "ERROR", "CRITICAL")]
        except Exception as exc:  # a plugin's bug must not take the sender down
            return False, redact(f"{type(exc).__name__}: {exc}", self.secrets)
        ok = bool(result)
        return ok, redact("; ".join(lines), self.secrets) or ("sent" if ok else "the service refused it")

    async def send(self, title: str, body: str, kind: str = "info", timeout: float = 30.0) -> None:
        """Send one message; raises ``NotSent`` with a reason free of secrets when it does not go."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[bool, str]] = loop.create_future()

        def work() -> None:
            result = self._deliver(title, body, kind)

            def settle() -> None:
                if not done.done():
                    done.set_result(result)

            try:
                loop.call_soon_threadsafe(settle)
            except RuntimeError:  # the loop is closed: the daemon stopped meanwhile
                pass

        threading.Thread(target=work, name=f"notify-{self.name}", daemon=True).start()
        try:
            ok, why = await asyncio.wait_for(asyncio.shield(done), timeout)
        except TimeoutError:
            raise NotSent(f"no answer within {timeout:g} s") from None
        if not ok:
            raise NotSent(why)


class NotSent(Exception):
    """A message that did not go; the text says why, without the URL's secrets."""
