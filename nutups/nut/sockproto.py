"""NUT's driver socket protocol (driver <-> upsd) as a sans-IO core: lines in, state and lines out.

The rules come from NUT's docs/sock-protocol.txt and from what NUT 2.8.0 does
(drivers/dstate.c on the driver side, server/sstate.c on upsd's side); where
the two disagree, the code follows the binaries installed here:

* every line on the socket is parsed by parseconf, like the network protocol,
  so values travel quoted and escaped with pconf_encode (``\\``, ``"``, ``#``);
* a driver answers ``DUMPALL`` with, per variable in case-insensitive name
  order: ``SETINFO``, its ``ADDENUM``s, its ``ADDRANGE``s, ``SETAUX`` (the
  string length, when there is one), ``SETFLAGS`` (``RW``/``STRING``, when
  there are any); then one ``ADDCMD`` per command, ``DATAOK`` or ``DATASTALE``,
  and ``DUMPDONE`` (dstate.c st_tree_dump_conn / sock_arg);
* a NUMBER variable is one without the STRING flag: dummy-ups 2.8.0 sends
  ``SETFLAGS battery.charge RW`` and nothing else for it;
* ``PING`` is answered ``PONG``; ``INSTCMD cmd [param] [TRACKING id]`` and
  ``SET var "value" [TRACKING id]`` are answered, when a TRACKING id came with
  them, by ``TRACKING <id> <status>`` with upshandler.h's numbers (0 handled,
  1 unknown, 2 invalid argument, 3 failed); an unknown command is logged by
  the driver and otherwise ignored;
* ``NOBROADCAST`` / ``BROADCAST [n]`` turn the pushed updates off and on for one
  connection (NUT >= 2.8.1; harmless to support), ``GETPID`` gets ``PID <n>``.

Nothing here touches a socket: :class:`LineReader` splits bytes into words,
the ``format_*`` functions build what a driver sends, :func:`parse_request`
reads what upsd sends, and :class:`StateFeed` applies what a driver sends to
a :class:`~nutups.state.UpsState`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..parseconf import LineTokenizer, quote
from ..state import CommandResult, UpsState, Variable

# pconf_encode (``\\``, ``"`` and ``#`` get a backslash): dstate.c sends every value through it,
# as NUT 2.8.0's dummy-ups shows for a value with a ``#`` in it.
encode = quote


# upshandler.h: STAT_INSTCMD_* and STAT_SET_* share these numbers.
STATUS_OF_RESULT = {
    CommandResult.SUCCESS: 0,
    CommandResult.UNKNOWN: 1,
    CommandResult.INVALID_ARGUMENT: 2,
    CommandResult.FAILED: 3,
}
RESULT_OF_STATUS = {number: result for result, number in STATUS_OF_RESULT.items()}


def result_of_status(text: str) -> CommandResult:
    """A TRACKING status number as upsd reports it (anything unexpected is a failure)."""
    try:
        return RESULT_OF_STATUS.get(int(text), CommandResult.FAILED)
    except ValueError:
        return CommandResult.FAILED


class LineReader:
    """Bytes from a socket in, complete lines (lists of words) out, parsed by parseconf."""

    __slots__ = ("_tokenizer",)

    def __init__(self) -> None:
        self._tokenizer = LineTokenizer()

    def feed(self, data: bytes) -> list[list[str]]:
        lines, _ = self._tokenizer.feed(data)
        return [line.words for line in lines if line.error is None and line.words]


# --- the driver side: what a driver sends ------------------------------------


def format_variable(var: Variable) -> list[str]:
    """The lines that describe one variable entirely, in dstate.c's dump order."""
    name = var.name
    lines = [f'SETINFO {name} "{encode(var.value)}"\n']
    lines.extend(f'ADDENUM {name} "{encode(e)}"\n' for e in var.enums)
    lines.extend(f"ADDRANGE {name} {lo} {hi}\n" for lo, hi in var.ranges)
    if var.string_len > 0:
        lines.append(f"SETAUX {name} {var.string_len}\n")
    flags = _flags(var)
    if flags:
        lines.append(f"SETFLAGS {name}{flags}\n")
    return lines


def format_dump(state: UpsState, stale: bool) -> bytes:
    """The whole answer to DUMPALL."""
    lines: list[str] = []
    for var in state.sorted_variables():
        lines.extend(format_variable(var))
    lines.extend(f"ADDCMD {cmd}\n" for cmd in state.sorted_commands())
    lines.append("DATASTALE\n" if stale else "DATAOK\n")
    lines.append("DUMPDONE\n")
    return "".join(lines).encode()


def _flags(var: Variable) -> str:
    return (" RW" if var.rw else "") + (" STRING" if var.string_len > 0 else "")


class ChangeFormatter:
    """Pushed updates, as dstate.c sends them: only what changed since the last push.

    dstate_setinfo() sends SETINFO when the value changes, dstate_setflags() SETFLAGS
    when the flags do, dstate_setaux() SETAUX, dstate_addenum()/addrange() one line per
    new entry; a new variable is SETINFO, then its flags, then its aux (dummy-ups'
    order).  The formatter remembers what it last described, so that a driver that
    sets a whole variable at once still sends only its differences.
    """

    def __init__(self) -> None:
        self._sent: dict[str, tuple[str, str, int, tuple[str, ...], tuple[tuple[int, int], ...]]] = {}
        self._cmds: set[str] = set()

    def remember(self, state: UpsState) -> None:
        """A dump described the whole state (the next changes are relative to it)."""
        self._sent = {key: self._snapshot(var) for key, var in state.variables.items()}
        self._cmds = set(state.commands)

    @staticmethod
    def _snapshot(var: Variable):
        return (var.value, _flags(var), var.string_len, tuple(var.enums), tuple(var.ranges))

    def changes(self, state: UpsState, variables: Iterable[str], commands: Iterable[str]) -> bytes:
        lines: list[str] = []
        for key in variables:
            var = state.variables.get(key)
            old = self._sent.pop(key, None)
            if var is None:
                if old is not None:
                    lines.append(f"DELINFO {key}\n")
                continue
            new = self._snapshot(var)
            self._sent[key] = new
            name = var.name
            if old is None or old[0] != new[0]:
                lines.append(f'SETINFO {name} "{encode(var.value)}"\n')
            if (old is None and new[1]) or (old is not None and old[1] != new[1]):
                lines.append(f"SETFLAGS {name}{new[1]}\n")
            if (old is None and new[2]) or (old is not None and old[2] != new[2]):
                lines.append(f"SETAUX {name} {new[2]}\n")
            old_enums = old[3] if old is not None else ()
            lines.extend(f'DELENUM {name} "{encode(e)}"\n' for e in old_enums if e not in new[3])
            lines.extend(f'ADDENUM {name} "{encode(e)}"\n' for e in new[3] if e not in old_enums)
            old_ranges = old[4] if old is not None else ()
            lines.extend(f"DELRANGE {name} {lo} {hi}\n" for lo, hi in old_ranges if (lo, hi) not in new[4])
            lines.extend(f"ADDRANGE {name} {lo} {hi}\n" for lo, hi in new[4] if (lo, hi) not in old_ranges)
        for key in commands:
            name = state.commands.get(key)
            if name is not None and key not in self._cmds:
                self._cmds.add(key)
                lines.append(f"ADDCMD {name}\n")
            elif name is None and key in self._cmds:
                self._cmds.discard(key)
                lines.append(f"DELCMD {key}\n")
        return "".join(lines).encode()


def format_tracking(tracking_id: str, result: CommandResult) -> bytes:
    return f"TRACKING {tracking_id} {STATUS_OF_RESULT.get(result, 3)}\n".encode()


# --- the driver side: what upsd asks ------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One request from upsd to a driver.

    ``kind`` is PING, DUMPALL, INSTCMD, SET, BROADCAST (``on`` says which way),
    GETPID, or UNKNOWN (the words are kept for the log).
    """

    kind: str
    name: str = ""
    value: str | None = None  # INSTCMD's parameter, SET's value
    tracking: str | None = None
    on: bool = True
    words: tuple[str, ...] = ()


def _split_tracking(args: list[str]) -> tuple[list[str], str | None]:
    if len(args) >= 2 and args[-2].upper() == "TRACKING":
        return args[:-2], args[-1]
    return args, None


def parse_request(words: list[str]) -> Request:
    """What upsd (or any client of the socket) sent, as one :class:`Request`."""
    head = words[0].upper()
    args = words[1:]
    if head in ("PING", "DUMPALL", "GETPID") and not args:
        return Request(head)
    if head == "NOBROADCAST" and not args:
        return Request("BROADCAST", on=False)
    if head == "BROADCAST" and len(args) <= 1:
        try:
            on = int(args[0]) > 0 if args else True
        except ValueError:
            on = True
        return Request("BROADCAST", on=on)
    if head == "INSTCMD" and args:
        rest, tracking = _split_tracking(args[1:])
        if len(rest) <= 1:
            return Request("INSTCMD", args[0], rest[0] if rest else None, tracking)
    if head == "SET" and len(args) >= 2:
        rest, tracking = _split_tracking(args[2:])
        if not rest:
            return Request("SET", args[0], args[1], tracking)
    return Request("UNKNOWN", words=tuple(words))


def format_instcmd(command: str, param: str | None, tracking: str | None) -> bytes:
    """What upsd sends for an INSTCMD (server/netinstcmd.c): the parameter escaped, unquoted."""
    text = f"INSTCMD {command}"
    if param is not None:
        text += f" {encode(param)}"
    if tracking is not None:
        text += f" TRACKING {tracking}"
    return (text + "\n").encode()


def format_set(name: str, value: str, tracking: str | None) -> bytes:
    """What upsd sends for a SET VAR (server/netset.c)."""
    text = f'SET {name} "{encode(value)}"'
    if tracking is not None:
        text += f" TRACKING {tracking}"
    return (text + "\n").encode()


# --- upsd's side: what a driver sends, applied to a UpsState --------------------


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class StateFeed:
    """Applies a driver's lines to a UpsState as upsd's sstate.c does.

    ``apply(words)`` returns what the caller (which owns the socket) must act
    on: ``"DUMPDONE"``, ``"PONG"``, ``"DATAOK"``, ``"DATASTALE"``,
    ``("TRACKING", id, result)``, or None for a plain state change.  The
    state's data_ok/data_stale are left to the caller, which also knows when
    the driver last spoke.
    """

    def __init__(self, state: UpsState) -> None:
        self.state = state
        self.strings: set[str] = set()  # variables with the STRING flag (upsd: ST_FLAG_STRING)
        self.aux: dict[str, int] = {}

    def reset(self) -> None:
        """A new connection: upsd flushes what it had and starts again with DUMPALL."""
        self.state.clear()
        self.strings.clear()
        self.aux.clear()

    def apply(self, words: list[str]):  # noqa: C901 - one branch per message, as sstate.c
        head = words[0].upper()
        args = words[1:]
        st = self.state
        n = len(args)
        if head == "SETINFO" and n >= 2:
            st.set(args[0], args[1])
        elif head == "DELINFO" and n >= 1:
            st.delete(args[0])
        elif head == "ADDENUM" and n >= 2:
            var = st.get(args[0])
            if var is not None and args[1] not in var.enums:
                st.set(var.name, var.value, enums=[*var.enums, args[1]])
        elif head == "DELENUM" and n >= 2:
            var = st.get(args[0])
            if var is not None and args[1] in var.enums:
                st.set(var.name, var.value, enums=[e for e in var.enums if e != args[1]])
        elif head in ("ADDRANGE", "DELRANGE") and n >= 3:
            var = st.get(args[0])
            lo, hi = _int(args[1]), _int(args[2])
            if var is not None and lo is not None and hi is not None:
                if head == "ADDRANGE" and (lo, hi) not in var.ranges:
                    st.set(var.name, var.value, ranges=[*var.ranges, (lo, hi)])
                elif head == "DELRANGE" and (lo, hi) in var.ranges:
                    st.set(var.name, var.value, ranges=[r for r in var.ranges if r != (lo, hi)])
        elif head == "SETAUX" and n >= 2:
            aux = _int(args[1])
            if aux is not None:
                self.aux[args[0].lower()] = aux
                self._flags_changed(args[0])
        elif head == "SETFLAGS" and n >= 1:
            flags = {f.upper() for f in args[1:]}
            var = st.get(args[0])
            if var is not None:
                key = var.name.lower()
                if "STRING" in flags:
                    self.strings.add(key)
                else:
                    self.strings.discard(key)
                st.set(var.name, var.value, rw="RW" in flags)
                self._flags_changed(var.name)
        elif head == "ADDCMD" and n >= 1:
            st.add_command(args[0])
        elif head == "DELCMD" and n >= 1:
            st.delete_command(args[0])
        elif head in ("DUMPDONE", "PONG", "DATAOK", "DATASTALE") and n == 0:
            return head
        elif head == "TRACKING" and n >= 2:
            return ("TRACKING", args[0], result_of_status(args[1]))
        return None

    def _flags_changed(self, name: str) -> None:
        # upsd reports STRING:<aux> for a STRING variable (netget.c get_type); our
        # Variable keeps that as string_len > 0, so a STRING without aux shows as 1.
        var = self.state.get(name)
        if var is None:
            return
        key = var.name.lower()
        length = max(self.aux.get(key, 0), 1) if key in self.strings else 0
        self.state.set(var.name, var.value, string_len=length)
