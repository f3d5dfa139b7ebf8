"""The protocol core without sockets: bytes in, bytes out, time injected."""

from __future__ import annotations

import asyncio

import pytest

from nutups.nut.descriptions import Descriptions
from nutups.nut.effects import EffectRunner, apply_here
from nutups.nut.protocol import ServerCore
from nutups.nut.users import User, UserTable
from nutups.parseconf import Line, LineTokenizer, quote, split_line
from nutups.state import CommandResult, UpsState


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def core(clock):
    ups = UpsState("hat", "A HAT", maxage=15, clock=clock)
    ups.connected = True
    ups.set("ups.status", "OL")
    ups.set("battery.charge", "80", rw=True, ranges=[(0, 100)])
    ups.set("battery.type", "Li-ion", rw=True, string_len=8, enums=["Li-ion", "LiFePO4"])
    ups.add_command("load.off")
    ups.data_ok()
    users = UserTable({
        "admin": User("admin", "pw", {"SET", "FSD"}, {"all"}),
        "mon": User("mon", "pw", {"LOGIN", "PRIMARY", "MASTER", "FSD"}),
    })
    return ServerCore({"hat": ups}, users, Descriptions({}, {}), clock=clock)


def test_stale_after_maxage_and_fresh_again(core, clock):
    s = core.session("127.0.0.1")
    assert s.receive(b"GET VAR hat ups.status\n") == b'VAR hat ups.status "OL"\n'
    clock.now += 15.5
    assert s.receive(b"GET VAR hat ups.status\n") == b"ERR DATA-STALE\n"
    # what upsd still answers while stale
    assert s.receive(b"LIST UPS\n").startswith(b"BEGIN LIST UPS\n")
    assert s.receive(b"GET UPSDESC hat\n") == b'UPSDESC hat "A HAT"\n'
    assert s.receive(b"GET VAR hat server.version\n") == b'VAR hat server.version "2.8.0"\n'
    core.upses["hat"].data_ok()
    assert s.receive(b"GET VAR hat ups.status\n") == b'VAR hat ups.status "OL"\n'


def test_stale_until_first_reading_and_explicit_stale(clock):
    ups = UpsState("u", clock=clock)
    ups.connected = True
    core = ServerCore({"u": ups}, UserTable(), Descriptions({}, {}), clock=clock)
    s = core.session("x")
    assert s.receive(b"LIST VAR u\n") == b"ERR DATA-STALE\n"
    ups.data_ok()
    assert s.receive(b"LIST VAR u\n") == b"BEGIN LIST VAR u\nEND LIST VAR u\n"
    ups.data_stale("I2C error")
    assert s.receive(b"LIST VAR u\n") == b"ERR DATA-STALE\n"
    ups.connected = False
    assert s.receive(b"LIST VAR u\n") == b"ERR DRIVER-NOT-CONNECTED\n"


def test_range_and_enum_checks(core):
    s = core.session("x")
    s.receive(b"USERNAME admin\nPASSWORD pw\n")
    core.upses["hat"].setvar_handler = lambda n, v: CommandResult.SUCCESS
    assert s.receive(b"SET VAR hat battery.charge 101\n") == b"ERR INVALID-VALUE\n"
    assert s.receive(b"SET VAR hat battery.charge 100\n") == b"OK\n"
    assert s.receive(b"SET VAR hat battery.type NiMH\n") == b"ERR INVALID-VALUE\n"
    assert s.receive(b"SET VAR hat battery.type LiFePO4\n") == b"OK\n"
    assert s.receive(b"SET VAR hat battery.type LiFePO4-long\n") == b"ERR TOO-LONG\n"
    assert s.receive(b"GET TYPE hat battery.type\n") == b"TYPE hat battery.type RW ENUM STRING:8\n"
    assert s.receive(b"GET TYPE hat battery.charge\n") == b"TYPE hat battery.charge RW RANGE NUMBER\n"
    assert s.receive(b"LIST RANGE hat battery.charge\n") == (
        b'BEGIN LIST RANGE hat battery.charge\nRANGE hat battery.charge "0" "100"\n'
        b"END LIST RANGE hat battery.charge\n")
    assert s.receive(b"LIST ENUM hat battery.type\n") == (
        b'BEGIN LIST ENUM hat battery.type\nENUM hat battery.type "Li-ion"\n'
        b'ENUM hat battery.type "LiFePO4"\nEND LIST ENUM hat battery.type\n')


def test_async_driver_command_is_tracked(core):
    """The core hands the command over as an effect; the driver's result, when it comes,
    reaches tracking through command_done."""
    async def go():
        gate = asyncio.get_running_loop().create_future()

        async def slow(cmd, param):
            await gate
            return CommandResult.SUCCESS

        core.upses["hat"].instcmd_handler = slow
        s = core.session("x")
        out = s.receive(b"USERNAME admin\nPASSWORD pw\nSET TRACKING ON\nINSTCMD hat load.off\n")
        tid = out.splitlines()[-1].split()[-1]
        [effect] = core.effects
        assert (effect.kind, effect.name, effect.value) == ("INSTCMD", "load.off", None)
        results = []
        reported = asyncio.Event()

        def report(*result) -> None:
            results.append(result)
            core.command_done(*result)
            reported.set()

        EffectRunner(report).apply(core.take_effects())
        assert s.receive(b"GET TRACKING " + tid + b"\n") == b"PENDING\n"
        gate.set_result(None)
        await reported.wait()
        assert results == [(effect.ticket, CommandResult.SUCCESS, "SUCCESS")]
        assert s.receive(b"GET TRACKING " + tid + b"\n") == b"SUCCESS\n"

    asyncio.run(go())


def test_driver_exception_is_ok_then_failed_in_tracking_and_logged(core):
    """As upsd: OK once the command is passed on; GET TRACKING tells the driver's result."""
    def broken(cmd, param):
        raise RuntimeError("relay stuck")

    warnings = []
    core.warn = warnings.append
    core.upses["hat"].instcmd_handler = broken
    s = core.session("x")
    assert s.receive(b"USERNAME admin\nPASSWORD pw\nINSTCMD hat load.off\n") == b"OK\nOK\nOK\n"
    out = s.receive(b"SET TRACKING ON\nINSTCMD hat load.off\n")
    tid = out.split()[-1]
    assert s.receive(b"GET TRACKING " + tid + b"\n") == b"PENDING\n"
    apply_here(core)
    assert s.receive(b"GET TRACKING " + tid + b"\n") == b"ERR FAILED\n"
    assert warnings == ["INSTCMD load.off on hat failed: relay stuck"] * 2


def test_starttls_discards_pipelined_plaintext(core):
    core.tls_available = True
    s = core.session("x")
    out = s.receive(b"STARTTLS\nUSERNAME admin\nPASSWORD pw\nFSD hat\n")
    assert out == b"OK STARTTLS\n"
    assert s.starttls_requested
    assert s.username is None and not core.upses["hat"].fsd
    s.tls = True
    assert s.receive(b"STARTTLS\n") == b"ERR ALREADY-SSL-MODE\n"


def test_logout_closes_after_the_current_read(core):
    s = core.session("x")
    assert s.receive(b"LOGOUT\nVER\n").startswith(b"OK Goodbye\nNetwork UPS Tools upsd 2.8.0 - ")
    assert s.close_requested


def test_numlogins_released_on_close(core):
    a = core.session("10.0.0.1")
    assert a.receive(b"USERNAME mon\nPASSWORD pw\nLOGIN hat\n") == b"OK\nOK\nOK\n"
    b = core.session("x")
    assert b.receive(b"GET NUMLOGINS hat\n") == b"NUMLOGINS hat 1\n"
    assert b.receive(b"LIST CLIENT hat\n") == b"BEGIN LIST CLIENT hat\nCLIENT hat 10.0.0.1\nEND LIST CLIENT hat\n"
    a.close()
    a.close()  # twice is harmless
    assert b.receive(b"GET NUMLOGINS hat\n") == b"NUMLOGINS hat 0\n"


def test_parse_error_drops_rest_of_512_byte_read(core):
    s = core.session("x")
    # as upsd: the error drops what remains of this 512-byte read, not the next one
    first = b'VER "#"\nNETVER\n'
    filler = b"x" * (512 - len(first) - 1) + b"\n"
    assert s.receive(first + filler + b"NETVER\n") == b"1.3\n"


def test_tokenizer_rules():
    assert split_line('GET VAR "a b" c\\ d e=f # x').words == ["GET", "VAR", "a b", "c d", "e", "=", "f"]
    assert split_line('""').words == [""]
    assert split_line("a\rb").words == ["a", "b"]
    assert split_line(" ".join(["w"] * 40)).words == ["w"] * 32
    assert split_line("x" * 600).words == ["x" * 512]
    assert split_line(b"a\x01b\x80c\xffd").words == ["abcd"]
    assert split_line(b"a\x80b").dropped and not split_line(b"ab # \x80").dropped  # a comment keeps nothing
    assert split_line('a "b#c"').error is not None
    tok = LineTokenizer()
    assert tok.feed(b'"open\n') == ([], 6)
    assert not tok.idle
    assert tok.feed(b'quote"\n')[0] == [Line(["openquote"], dropped=True)]  # the LF inside the quotes
    assert quote('a"b\\c#d') == 'a\\"b\\\\c\\#d'


def test_memory_bounded_for_endless_line():
    tok = LineTokenizer()
    for _ in range(200):
        tok.feed(b"y" * 50_000)
    assert len(tok._word) == 512
    tok.feed(b" " + b"z " * 100)
    assert len(tok._words) == 32


def test_reply_cache_follows_state_and_time(core, clock):
    """Cached replies are reused only while the UPS's state and freshness are unchanged."""
    ups = core.upses["hat"]
    s = core.session("x")
    q = b"GET VAR hat ups.status\n"
    assert s.receive(q) == b'VAR hat ups.status "OL"\n'
    assert q in core.reply_cache
    ups.set("ups.status", "OB")
    assert s.receive(q) == b'VAR hat ups.status "OB"\n'
    ups.fsd = True
    assert s.receive(q) == b'VAR hat ups.status "FSD OB"\n'
    clock.now += 16
    assert s.receive(q) == b"ERR DATA-STALE\n"
    ups.data_ok()
    assert s.receive(q * 2) == b'VAR hat ups.status "FSD OB"\n' * 2
    ups.connected = False
    assert s.receive(q) == b"ERR DRIVER-NOT-CONNECTED\n"
    ups.connected = True
    ups.data_stale("I2C")
    assert s.receive(q) == b"ERR DATA-STALE\n"
    # session-dependent replies are never cached
    assert s.receive(b"GET TRACKING\n") == b"OFF\n"
    assert b"GET TRACKING\n" not in core.reply_cache
    assert b"GET NUMLOGINS hat\n" not in core.reply_cache


def test_reply_cache_stays_bounded(core):
    from nutups.nut import protocol

    s = core.session("x")
    for i in range(20000):
        s.receive(b"LIST VAR hat" + b" " * (i % 200) + b"x" * (i // 200) + b"\n")
        assert core.reply_cache_bytes <= protocol.REPLY_CACHE_BYTES + 4096
    assert len(core.reply_cache) <= protocol.REPLY_CACHE_SIZE


def test_reply_cache_per_variable(core, clock):
    """A poll of an unchanged variable is answered from the cache while others change;
    a change, a new flag, a removal, FSD or staleness of its own is seen at once."""
    ups = core.upses["hat"]
    s = core.session("x")
    charge = b"GET VAR hat battery.charge\n"
    assert s.receive(charge) == b'VAR hat battery.charge "80"\n'
    cached = core.reply_cache[charge]
    ups.set("ups.status", "OB")  # another variable changes
    assert s.receive(charge) == b'VAR hat battery.charge "80"\n'
    assert core.reply_cache[charge] is cached  # still the same entry: it was a hit
    assert s.receive(b"GET VAR hat ups.status\n") == b'VAR hat ups.status "OB"\n'
    ups.set("battery.charge", "79")
    assert s.receive(charge) == b'VAR hat battery.charge "79"\n'
    assert s.receive(b"GET TYPE hat battery.charge\n") == b"TYPE hat battery.charge RW RANGE NUMBER\n"
    ups.set("battery.charge", "79", string_len=5)
    assert s.receive(b"GET TYPE hat battery.charge\n") == b"TYPE hat battery.charge RW RANGE STRING:5\n"
    ups.fsd = True
    assert s.receive(b"GET VAR hat ups.status\n") == b'VAR hat ups.status "FSD OB"\n'
    ups.delete("battery.charge")
    assert s.receive(charge) == b"ERR VAR-NOT-SUPPORTED\n"
    ups.set("battery.charge", "78")
    assert s.receive(charge) == b'VAR hat battery.charge "78"\n'
    assert s.receive(b"GET DESC hat battery.charge\n") == s.receive(b"GET DESC hat battery.charge\n")
    clock.now += 16
    assert s.receive(charge) == b"ERR DATA-STALE\n"
    assert s.receive(b"GET DESC hat battery.charge\n") == b"ERR DATA-STALE\n"
    ups.data_ok()
    ups.clear()
    assert s.receive(charge) == b"ERR VAR-NOT-SUPPORTED\n"
    # the same requests, not in plain words, take the tokenizer's path to the same answers
    ups.set("battery.charge", "77")
    assert s.receive(b'GET VAR hat "battery.charge"\n') == b'VAR hat battery.charge "77"\n'
    assert s.receive(b"get var hat battery.charge\n") == b'VAR hat battery.charge "77"\n'


@pytest.mark.parametrize("q, answer", [(b"GET DESC hat battery.charge\n", b'DESC hat battery.charge "'),
                                       (b"GET CMDDESC hat beeper.mute\n", b'CMDDESC hat beeper.mute "')])
def test_descriptions_are_answered_from_the_cache_while_the_state_changes(core, clock, q, answer):
    """A description never changes while running: a poll's GET DESC (or CMDDESC) is a cache
    hit however often the UPS's values change (it used to be rebuilt at every request)."""
    ups = core.upses["hat"]
    s = core.session("x")
    first = s.receive(q)
    assert first.startswith(answer)
    cached = core.reply_cache[q]
    for value in ("79", "78"):
        ups.set("battery.charge", value)
        ups.set("ups.status", "OB")
        assert s.receive(q) == first
        assert core.reply_cache[q] is cached  # the same entry: a hit, not a rebuilt reply
    clock.now += 16
    assert s.receive(q) == b"ERR DATA-STALE\n"  # freshness still counts, as for every GET
