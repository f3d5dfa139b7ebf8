"""The client side of the NUT network protocol, without I/O: request lines out, replies in.

What upsc, upscmd, upsrw and PeaNUT send, and how upsd 2.8 answers (docs/net-protocol.txt
in NUT): one reply per request, in order; a reply is one line, or a ``BEGIN LIST ...`` line,
its items and ``END LIST ...``; a refusal is ``ERR CODE``.  Replies are split into words by
NUT's own tokenizer (nutups/parseconf.py: upsd quotes values with pconf_encode, which
that tokenizer undoes), so a value with quotes, backslashes or a ``#`` reads back exactly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..parseconf import LineTokenizer, quote

# What may be sent bare in a request (a UPS, variable or command name): anything else is refused
# before it reaches the wire, so a name can never add words or lines to a request.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_REPLY_LINES = 100_000  # a LIST longer than this is not a UPS: the connection is dropped


class NutError(Exception):
    """The server answered ``ERR CODE``; ``code`` is the CODE (ACCESS-DENIED, DATA-STALE ...)."""

    def __init__(self, code: str, context: str = "", by_driver: bool = False) -> None:
        super().__init__(f"ERR {code}" + (f" ({context})" if context else ""))
        self.code = code
        self.by_driver = by_driver  # a tracked command's result: the driver refused, not upsd


class ProtocolError(Exception):
    """The server said something a NUT server does not say (not a NUT server, or a broken one)."""


@dataclass
class Reply:
    """One reply: the words of its line, and for a LIST the words of each item."""

    words: list[str]
    items: list[list[str]] = field(default_factory=list)

    @property
    def error(self) -> str | None:
        return self.words[1] if len(self.words) > 1 and self.words[0] == "ERR" else None


class ReplyReader:
    """Bytes from the server in, whole replies out."""

    def __init__(self) -> None:
        self._tokens = LineTokenizer()
        self._list: Reply | None = None

    def feed(self, data: bytes) -> list[Reply]:
        lines, _ = self._tokens.feed(data)
        out = []
        for line in lines:
            words = line.words
            if self._list is not None:
                if words[:2] == ["END", "LIST"]:
                    out.append(self._list)
                    self._list = None
                elif len(self._list.items) >= MAX_REPLY_LINES:
                    raise ProtocolError("a LIST reply without an end")
                else:
                    self._list.items.append(words)
            elif words[:2] == ["BEGIN", "LIST"]:
                self._list = Reply(words)
            elif words:
                out.append(Reply(words))
            # an empty line is not a reply (upsd never sends one)
        return out


def name_word(name: str, what: str) -> str:
    """A name as a request word; ValueError for one that could smuggle words into the line."""
    if not NAME.match(name):
        raise ValueError(f"{name!r} is not a {what} name")
    return name


def request(*words: str, value: str | None = None) -> bytes:
    """A request line: bare words (names, checked), then one quoted value if any."""
    line = " ".join(words)
    if value is not None:
        line += f' "{quote(value)}"'
    return (line + "\n").encode("ascii", errors="strict")


def checked(reply: Reply, sent: bytes) -> Reply:
    """The reply, or NutError for ERR."""
    code = reply.error
    if code is not None:
        words = sent.decode(errors="replace").split()
        command = words[:2] if words and words[0] in ("LIST", "GET", "SET") else words[:1]  # LIST VAR, INSTCMD
        raise NutError(code, "to " + " ".join(command))
    return reply


def variables(reply: Reply, ups: str) -> dict[str, str]:
    """``LIST VAR ups`` -> {name: value}, in the server's order."""
    out = {}
    for words in reply.items:
        if len(words) >= 4 and words[0] == "VAR" and words[1].lower() == ups.lower():
            out[words[2]] = words[3]
        else:
            raise ProtocolError(f"not a VAR line in LIST VAR: {' '.join(words)[:80]!r}")
    return out


def names(reply: Reply, kind: str, ups: str) -> list[str]:
    """``LIST CMD ups`` / ``LIST RW ups`` -> the names (third word of each item)."""
    return [w[2] for w in reply.items if len(w) >= 3 and w[0] == kind and w[1].lower() == ups.lower()]


def last_words(reply: Reply, kind: str) -> list[list[str]]:
    """The items' words after ``KIND ups var`` (LIST ENUM, LIST RANGE)."""
    return [w[3:] for w in reply.items if len(w) > 3 and w[0] == kind]


@dataclass
class VarType:
    """GET TYPE: RW, and STRING:n or NUMBER (ENUM and RANGE are listed separately)."""

    rw: bool = False
    string_len: int = 0
    enum: bool = False
    range: bool = False

    @classmethod
    def parse(cls, reply: Reply) -> VarType:
        out = cls()
        for word in reply.words[3:]:
            if word == "RW":
                out.rw = True
            elif word.startswith("STRING:"):
                try:
                    out.string_len = int(word[7:])
                except ValueError:
                    pass
            elif word == "ENUM":
                out.enum = True
            elif word == "RANGE":
                out.range = True
        return out
