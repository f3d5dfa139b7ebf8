"""Splits NUT protocol and configuration lines into words exactly as NUT's parseconf does.

upsd, the NUT drivers and the NUT configuration readers all share one
character-driven state machine (common/parseconf.c).  Its rules, which real
clients and real config files depend on:

* only LF ends a line; every other isspace() byte (CR included) separates words;
* ``"..."`` makes one word, ``""`` an empty one;
* a backslash takes the next byte literally, inside or outside quotes, and a
  backslash before LF continues the line;
* outside quotes ``#`` starts a comment, and ``=`` is always a word of its own;
* ``#`` inside quotes is a parse error (NUT 2.8.0: "Unbalanced word due to
  unescaped # in quotes");
* bytes below 0x20 and above 0x7f are dropped when they would be stored
  (CVE-2012-2944);
* words beyond 32 are dropped, a word is cut at 512 bytes.

The pure-Python state machine is exact but slow, so :meth:`LineTokenizer.feed`
takes a fast path for the common case: a whole line of plain printable words,
for which ``bytes.split()`` gives the same result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ARG_LIMIT = 32
WORDLEN_LIMIT = 512

# C isspace() in the "C" locale.
_SPACE = frozenset(b" \t\n\v\f\r")

_FIND_WORD_START = 1
_FIND_EOL = 2
_QUOTE_COLLECT = 3
_QC_LITERAL = 4
_COLLECT = 5
_COLLECT_LITERAL = 6

# A line is "plain" when nothing in it can change how split() reads it.
PLAIN_LINE = re.compile(rb"[ !$-<>-\[\]-~]*\n")
# Bytes that end or alter a word, in a bare word and in a quoted one.
_COLLECT_SPECIAL = re.compile(rb"[\s#=\\]")
_QUOTE_SPECIAL = re.compile(rb'[#"\\]')


@dataclass(slots=True)
class Line:
    """One complete line: its words, or a parse error in place of them."""

    words: list[str]
    error: str | None = None
    dropped: bool = False  # a byte outside printable ASCII was left out of a word, as NUT does


class LineTokenizer:
    """Stateful tokenizer: feed bytes, get complete lines back."""

    __slots__ = ("_state", "_word", "_words", "_dropped")

    def __init__(self) -> None:
        self._state = _FIND_WORD_START
        self._word = bytearray()
        self._words: list[str] = []
        self._dropped = False

    @property
    def idle(self) -> bool:
        """True when no partial line is buffered."""
        return self._state == _FIND_WORD_START and not self._words and not self._word

    def feed(self, data: bytes, stop_on_error: bool = False) -> tuple[list[Line], int]:
        """Consume ``data``; return the complete lines and how many bytes were used.

        With ``stop_on_error`` the tokenizer stops right after a parse error
        (upsd drops the rest of the read chunk then); otherwise it goes on.
        """
        lines: list[Line] = []
        pos = 0
        end = len(data)
        plain = PLAIN_LINE.match
        while pos < end:
            if self._state == _FIND_WORD_START and not self._words and not self._word:
                m = plain(data, pos)
                if m is not None:
                    words = data[pos : m.end() - 1].split()
                    if len(words) <= ARG_LIMIT and all(len(w) <= WORDLEN_LIMIT for w in words):
                        lines.append(Line([w.decode("ascii") for w in words]))
                        pos = m.end()
                        continue
            # Slow path: run the state machine up to the end of this line.
            nl = data.find(b"\n", pos)
            stop = end if nl < 0 else nl + 1
            while pos < stop:
                pos = self._skip(data, pos, stop)
                if pos >= stop:
                    break
                result = self._step(data[pos])
                pos += 1
                if result is not None:
                    lines.append(result)
                    if result.error is not None and stop_on_error:
                        return lines, pos
                    break
        return lines, pos

    def finish(self) -> Line | None:
        """End of input (a file without a final LF): tie off what is pending."""
        if self._word:  # parseconf: "still building a word? tie it off"
            self._end_word()
        words, self._words = self._words, []
        self._state = _FIND_WORD_START
        self._word.clear()
        dropped, self._dropped = self._dropped, False
        return Line(words, dropped=dropped) if words else None

    def _skip(self, data: bytes, pos: int, stop: int) -> int:
        """Jump over bytes that cannot change anything: a comment's text, or
        ordinary bytes once the word is full.  Keeps a flood of garbage cheap."""
        state = self._state
        if state == _FIND_EOL:
            return stop - 1 if data[stop - 1] == 0x0A else stop
        if len(self._word) >= WORDLEN_LIMIT:
            if state == _COLLECT:
                m = _COLLECT_SPECIAL.search(data, pos, stop)
                return m.start() if m else stop
            if state == _QUOTE_COLLECT:
                m = _QUOTE_SPECIAL.search(data, pos, stop)
                return m.start() if m else stop
        return pos

    # --- the state machine (parseconf.c) -------------------------------

    def _add(self, ch: int) -> None:
        if ch < 0x20 or ch > 0x7F:
            self._dropped = True
            return
        if len(self._word) >= WORDLEN_LIMIT:
            return
        self._word.append(ch)

    def _end_word(self) -> None:
        if len(self._words) < ARG_LIMIT:
            self._words.append(self._word.decode("ascii"))
        self._word.clear()

    def _eol(self) -> Line:
        words, self._words = self._words, []
        self._state = _FIND_WORD_START
        dropped, self._dropped = self._dropped, False
        return Line(words, dropped=dropped)

    def _step(self, ch: int) -> Line | None:
        state = self._state
        if state == _FIND_WORD_START:
            return self._find_word_start(ch)
        if state == _COLLECT:
            if ch == 0x23:  # '#'
                self._end_word()
                self._state = _FIND_EOL
            elif ch == 0x0A:
                self._end_word()
                return self._eol()
            elif ch in _SPACE:
                self._end_word()
                self._state = _FIND_WORD_START
            elif ch == 0x3D:  # '=' ends the word and is a word itself
                self._end_word()
                self._state = _FIND_WORD_START
                return self._find_word_start(ch)
            elif ch == 0x5C:
                self._state = _COLLECT_LITERAL
            else:
                self._add(ch)
            return None
        if state == _QUOTE_COLLECT:
            if ch == 0x23:
                self._end_word()
                words, self._words = self._words, []
                self._state = _FIND_WORD_START
                self._dropped = False
                return Line(words, "Unbalanced word due to unescaped # in quotes")
            if ch == 0x22:
                self._end_word()
                self._state = _FIND_WORD_START
            elif ch == 0x5C:
                self._state = _QC_LITERAL
            else:
                self._add(ch)
            return None
        if state == _QC_LITERAL:
            if ch != 0x0A:
                self._add(ch)
            self._state = _QUOTE_COLLECT
            return None
        if state == _COLLECT_LITERAL:
            if ch != 0x0A:
                self._add(ch)
            self._state = _COLLECT
            return None
        # _FIND_EOL
        if ch == 0x0A:
            return self._eol()
        return None

    def _find_word_start(self, ch: int) -> Line | None:
        if ch == 0x0A:
            return self._eol()
        if ch == 0x23:
            self._state = _FIND_EOL
        elif ch in _SPACE:
            self._state = _FIND_WORD_START
        elif ch == 0x5C:
            self._state = _COLLECT_LITERAL
        elif ch == 0x22:
            self._state = _QUOTE_COLLECT
        else:
            self._add(ch)
            if ch == 0x3D:
                self._end_word()
                self._state = _FIND_WORD_START
            else:
                self._state = _COLLECT
        return None


def split_line(text: str | bytes) -> Line:
    """Tokenize one line as NUT would (a missing final LF is tolerated)."""
    data = text.encode("latin-1") if isinstance(text, str) else text
    tok = LineTokenizer()
    lines, _ = tok.feed(data if data.endswith(b"\n") else data + b"\n")
    return lines[0] if lines else Line([])


def read_config_lines(data: bytes):
    """Yield ``(line_number, Line)`` for a whole config file, as pconf_file_next does.

    Empty lines are skipped; a parse error yields a Line with ``error`` set
    (and, as in NUT, the rest of that physical line is read as a new line);
    ``dropped`` says a byte NUT leaves out of a value was left out.
    The number is that of the physical line where the logical line ended.
    """
    tok = LineTokenizer()
    lineno = 1
    step = tok._step
    for ch in data:
        line = step(ch)
        if line is not None and (line.words or line.error):
            yield lineno, line
        if ch == 0x0A:
            lineno += 1
    tail = tok.finish()
    if tail is not None:
        yield lineno, tail


def quote(value: str) -> str:
    """Escape a value for a quoted reply, as pconf_encode does (``\\``, ``"``, ``#``)."""
    if "\\" in value or '"' in value or "#" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("#", "\\#")
    return value
