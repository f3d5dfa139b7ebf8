"""Byte-for-byte comparison of nutups with NUT's own upsd + dummy-ups on the same confpath.

Each case is one connection: the bytes are sent at once, the client half-closes,
and everything up to the server's close is compared.  Only what the issue allows
to differ is masked (see nutprocs.normalize): the VER/server.info text, tracking
ids, and what each server says about its own driver (driver.*).
"""

from __future__ import annotations

import pytest
from conftest import requires_nut
from nutprocs import RawClient, normalize, poll_until, session

pytestmark = [requires_nut, pytest.mark.realnut]


def both(pair, data: bytes) -> tuple[bytes, bytes]:
    real = session(pair.real.port, data)
    ours = session(pair.ours.port, data)
    return normalize(real), normalize(ours)


def assert_same(pair, data: bytes) -> bytes:
    real, ours = both(pair, data)
    assert ours == real, f"request {data!r}"
    return ours


SIMPLE = [
    # version and help
    b"VER\n", b"VER x\n", b"NETVER\n", b"NETVER 1\n", b"PROTVER\n", b"HELP\n", b"HELP me\n",
    b"ver\n", b"Help\n",
    b"STARTTLS\n", b"STARTTLS x\n",
    # GET and its errors in upsd's order
    b"GET\n", b"GET VAR\n", b"GET VAR hat\n", b"GET VAR hat ups.status\n",
    b"GET VAR HAT UPS.STATUS\n", b"get var Hat Battery.Charge\n", b"GET VAR hat ups.status extra args\n",
    b"GET VAR nope ups.status\n", b"GET VAR hat nope.var\n", b"GET VAR ghost ups.status\n",
    b"GET VAR nope server.info\n", b"GET VAR nope SERVER.VERSION\n", b"GET VAR hat server.nothing\n",
    b"GET VAR ghost server.version\n",
    b"GET VAR hat Ups.Weird\n", b"GET VAR hat ups.weird\n", b"GET VAR hat experimental.escaped\n",
    b"GET VAR hat experimental.spaces\n", b"GET VAR hat experimental.empty.quoted\n",
    b"GET TYPE hat\n", b"GET TYPE hat ups.status\n", b"GET TYPE hat battery.charge\n",
    b"GET TYPE hat ups.serial\n", b"GET TYPE hat driver.name\n", b"GET TYPE hat device.type\n",
    b"GET TYPE hat ups.weird\n", b"GET TYPE hat nope\n", b"GET TYPE nope ups.status\n",
    b"GET TYPE ghost ups.status\n", b"GET TYPE hat input.voltage\n", b"GET TYPE hat outlet.1.status\n",
    b"GET DESC hat battery.charge\n", b"GET DESC hat BATTERY.CHARGE\n", b"GET DESC hat nope.nothing\n",
    b"GET DESC nope battery.charge\n", b"GET DESC ghost battery.charge\n", b"GET DESC hat\n",
    b"GET CMDDESC hat load.off\n", b"GET CMDDESC hat LOAD.OFF\n", b"GET CMDDESC hat b'load.off'\n",
    b"GET CMDDESC hat nope\n", b"GET CMDDESC nope load.off\n",
    b"GET UPSDESC hat\n", b"GET UPSDESC other\n", b"GET UPSDESC HAT\n", b"GET UPSDESC nope\n",
    b"GET UPSDESC ghost\n", b"GET UPSDESC\n",
    b"GET NUMLOGINS hat\n", b"GET NUMLOGINS nope\n", b"GET NUMLOGINS ghost\n", b"GET NUMLOGINS\n",
    b"GET TRACKING\n", b"GET TRACKING 1234\n", b"GET tracking\n",
    b"GET FOO\n", b"GET FOO hat\n", b"GET FOO hat bar\n", b"GET FOO hat bar baz\n",
    # LIST
    b"LIST\n", b"LIST UPS\n", b"LIST ups extra\n", b"LIST VAR\n", b"LIST VAR hat\n", b"LIST VAR HAT\n",
    b"LIST VAR other\n", b"LIST VAR nope\n", b"LIST VAR ghost\n", b"LIST RW hat\n", b"LIST RW Hat\n",
    b"LIST CMD hat\n", b"LIST CMD nope\n", b"LIST CMD ghost\n", b"LIST CLIENT hat\n",
    b"LIST CLIENT nope\n", b"LIST CLIENT ghost\n", b"LIST ENUM hat ups.status\n",
    b"LIST ENUM hat\n", b"LIST ENUM hat nope\n", b"LIST RANGE hat battery.charge\n",
    b"LIST RANGE hat nope\n", b"LIST ENUM nope ups.status\n", b"LIST ENUM ghost ups.status\n",
    b"LIST FOO hat\n", b"LIST FOO hat bar\n", b"LIST FOO\n", b"LIST VAR hat extra\n",
    # authentication gate
    b"LOGIN hat\n", b"PRIMARY hat\n", b"MASTER hat\n", b"FSD hat\n", b"SET VAR hat x y\n",
    b"INSTCMD hat load.off\n", b"SET TRACKING ON\n", b"LOGIN\n",
    b"USERNAME\n", b"USERNAME a b\n", b"USERNAME admin\nUSERNAME admin\n",
    b"PASSWORD\n", b"PASSWORD x\nPASSWORD x\n", b"USERNAME admin\nLOGIN hat\n",
    b"PASSWORD adminpass\nLOGIN hat\n",
    b"USERNAME monuser\nPASSWORD wrong\nLOGIN hat\n",
    b"USERNAME Monuser\nPASSWORD secret\nLOGIN hat\n",
    b"USERNAME monuser\nPASSWORD secret\nLOGIN nope\nLOGIN hat\nLOGIN hat\nLOGIN other\n",
    b"USERNAME monuser\nPASSWORD secret\nLOGIN\nLOGIN a b\n",
    b"USERNAME observer\nPASSWORD pw\nLOGIN hat\nPRIMARY hat\nMASTER hat\nFSD hat\n",
    b"USERNAME monuser\nPASSWORD secret\nPRIMARY hat\nMASTER HAT\nPRIMARY nope\nPRIMARY\nMASTER a b\n",
    b"USERNAME admin\nPASSWORD adminpass\nLOGIN hat\nPRIMARY hat\nFSD nope\nFSD\n",
    b"USERNAME admin\nPASSWORD adminpass\nGET NUMLOGINS hat\n",
    b"USERNAME monuser\nPASSWORD secret\nLOGIN hat\nGET NUMLOGINS hat\nLIST CLIENT hat\n",
    # SET and INSTCMD paths that change nothing
    b"USERNAME admin\nPASSWORD adminpass\nSET\nSET VAR\nSET VAR hat\nSET VAR hat ups.mfr\n",
    b"USERNAME admin\nPASSWORD adminpass\nSET TRACKING\nSET TRACKING maybe\nSET TRACKING on off\n",
    b"USERNAME admin\nPASSWORD adminpass\nSET TRACKING ON\nGET TRACKING\nSET TRACKING off\nGET TRACKING\n",
    b"USERNAME admin\nPASSWORD adminpass\nSET TRACKING ON\nGET TRACKING 0000\n",
    b"USERNAME admin\nPASSWORD adminpass\nSET FOO hat x y\nSET VAR nope x y\nSET VAR ghost x y\n",
    b"USERNAME admin\nPASSWORD adminpass\nSET VAR hat nope.var 1\nSET VAR hat driver.name x\n",
    b"USERNAME admin\nPASSWORD adminpass\nSET VAR hat device.type x\n",
    b"USERNAME admin\nPASSWORD adminpass\nSET VAR hat ups.mfr " + b"x" * 33 + b"\n",
    # 17 characters pass ups.serial's STRING:32 (dummy-ups' table lists it twice and
    # uses the first entry); the value is the one already there, so nothing changes.
    b"USERNAME admin\nPASSWORD adminpass\nSET VAR hat ups.serial SN-0001-0002-0003-X\n",
    b"USERNAME monuser\nPASSWORD secret\nSET VAR hat ups.mfr x\n",
    b"USERNAME admin\nPASSWORD wrong\nSET VAR hat ups.mfr x\n",
    b"USERNAME admin\nPASSWORD adminpass\nINSTCMD\nINSTCMD hat\nINSTCMD nope x\nINSTCMD ghost x\n",
    b"USERNAME admin\nPASSWORD adminpass\nINSTCMD hat load.on\nINSTCMD hat nope\n",
    b"USERNAME monuser\nPASSWORD secret\nINSTCMD hat load.off\n",
    b"USERNAME cmduser\nPASSWORD cmdpass\nINSTCMD hat beeper.off\n",
    b"USERNAME observer\nPASSWORD pw\nINSTCMD hat load.off\nSET VAR hat ups.mfr x\n",
    # LOGOUT
    b"LOGOUT\n", b"LOGOUT now\n", b"LOGOUT\nVER\n", b"USERNAME monuser\nPASSWORD secret\nLOGIN hat\nLOGOUT\n",
    # tokenizer
    b"\n", b"   \n", b"# only a comment\n", b"VER # comment\n", b"VER#comment\n", b"\"VER\"\n",
    b"V\"E\"R\n", b"\\VER\n", b"V\\ER\n", b"VER\\\n\n", b"\\\nVER\n", b"VER\r\n", b"VER\r\r\n",
    b"GET\tVAR\that\tups.status\n", b"GET VAR hat=ups.status\n", b"GET=VAR hat ups.status\n",
    b"GET VAR \"hat\" \"ups.status\"\n", b"GET VAR \"h\\at\" ups\\.status\n", b"GET VAR \"\" \"\"\n",
    b"GET VAR \"hat ups.status\"\n", b"\x01V\x02E\x7fR\n", b"V\x80E\xffR\n", b"GET VAR h\x00at ups.status\n",
    b"\"abc\nVER\n", b"\"abc\nVER\n\"\n", b"\"\n", b"VER \"#\"\n", b"a\nGET VAR \"hat#\" x\nVER\n",
    b"GET VAR hat ups.status\rLIST UPS\n", b"VER\x0bNETVER\n", b"VER\x0cx\n",
    b"GET VAR hat ups.status" + b" x" * 40 + b"\n",
    b"GET VAR hat " + b"u" * 600 + b"\n",
    b"GET VAR " + b"h" * 600 + b" ups.status\n",
    b"LIST VAR hat\nGET VAR hat ups.status\nLIST UPS\nVER\nNETVER\n" * 5,
    b"GET VAR hat ups.status\n" * 60,
    b"x" * 700 + b"\nVER\n",
    b"GET VAR \"" + b"q" * 520 + b"#\"\nVER\n" * 2,
]


@pytest.mark.parametrize("data", SIMPLE, ids=[repr(d[:40]) for d in SIMPLE])
def test_same_bytes(pair, data):
    assert_same(pair, data)


def test_list_var_matches_including_escapes(pair):
    """The crafted .dev file's variables come out the same, escapes and all."""
    out = assert_same(pair, b"LIST VAR hat\nLIST RW hat\n")
    assert b'VAR hat experimental.escaped "back\\\\slash \\"dq\\" hash\\# end"' in out


def test_set_var_changes_value_like_dummy_ups(pair):
    with RawClient(pair.real.port) as r, RawClient(pair.ours.port) as o:
        for c in (r, o):
            assert c.request(b"USERNAME admin\n") == b"OK\n"
            assert c.request(b"PASSWORD adminpass\n") == b"OK\n"
            assert c.request(b"SET VAR setups battery.charge 42\n") == b"OK\n"
            assert c.request(b'SET VAR setups ups.serial "new serial"\n') == b"OK\n"
        # dummy-ups applies a SET asynchronously: wait for it (an event, not a delay).
        for port in (pair.real.port, pair.ours.port):
            with RawClient(port) as c:  # the later of the two SETs
                poll_until(lambda: c.request(b"GET VAR setups ups.serial\n")
                           == b'VAR setups ups.serial "new serial"\n', f"SET to take effect on {port}")
    assert_same(pair, b"GET VAR setups battery.charge\nGET VAR setups ups.serial\nLIST RW setups\n")


def test_set_value_with_escaped_quote_is_kept_whole(pair):
    """Deviation: dummy-ups cuts a SET value at an escaped quote ('x\\"y' becomes 'x');
    nutups stores the whole value."""
    with RawClient(pair.ours.port) as c:
        c.request(b"USERNAME admin\n")
        c.request(b"PASSWORD adminpass\n")
        assert c.request(b'SET VAR setups ups.load "x\\"y"\n') == b"OK\n"
        # as with upsd, OK means the driver has it; the value follows a moment later
        poll_until(lambda: c.request(b"GET VAR setups ups.load\n") == b'VAR setups ups.load "x\\"y"\n',
                   "the SET to take effect")


def test_fsd_latch(pair):
    data = b"USERNAME admin\nPASSWORD adminpass\nFSD fsdups\nGET VAR fsdups ups.status\nLIST VAR fsdups\n"
    out = assert_same(pair, data)
    assert b'VAR fsdups ups.status "FSD OB DISCHRG"' in out
    # the latch stays for every later client
    assert_same(pair, b"GET VAR fsdups ups.status\nGET VAR FSDUPS UPS.STATUS\n")


def test_instcmd_ok_and_tracking(pair):
    assert_same(pair, b"USERNAME admin\nPASSWORD adminpass\nINSTCMD hat load.off\n")
    assert_same(pair, b"USERNAME cmduser\nPASSWORD cmdpass\nINSTCMD hat LOAD.OFF now\n")
    assert_same(pair, b"USERNAME admin\nPASSWORD adminpass\nSET TRACKING ON\nINSTCMD hat load.off\n")


def test_numlogins_and_list_client_across_connections(pair):
    """Two upsmon-style logins show in NUMLOGINS and LIST CLIENT (newest first), and go away."""
    for port in (pair.real.port, pair.ours.port):
        a, b = RawClient(port), RawClient(port)
        for c, (user, pw) in ((a, (b"monuser", b"secret")), (b, (b"observer", b"pw"))):
            assert c.request(b"USERNAME " + user + b"\n") == b"OK\n"
            assert c.request(b"PASSWORD " + pw + b"\n") == b"OK\n"
            assert c.request(b"LOGIN other\n") == b"OK\n"
        with RawClient(port) as q:
            assert q.request(b"GET NUMLOGINS other\n") == b"NUMLOGINS other 2\n"
            assert q.request(b"LIST CLIENT other\n") == (
                b"BEGIN LIST CLIENT other\nCLIENT other 127.0.0.1\nCLIENT other 127.0.0.1\nEND LIST CLIENT other\n"
            )
            a.close()
            poll_until(lambda: q.request(b"GET NUMLOGINS other\n") == b"NUMLOGINS other 1\n",
                       "NUMLOGINS to drop after a client closed")
            b.close()


def test_a_reply_over_512_bytes_keeps_its_lf_where_upsd_drops_it():
    """The one documented deviation (README): upsd builds a reply in a 512-byte buffer, so a
    longer one (here UPSDESC of a 500-character desc) loses its LF and runs into the next reply;
    nutups sends the same bytes with the LF.  LIST UPS, whose lines are each shorter, is equal."""
    import shutil

    from conftest import start_pair
    from nutprocs import make_confdir, nut_tmpdir

    confdir = make_confdir(nut_tmpdir(), f'[q]\n driver = dummy-ups\n port = q.dev\n desc = "{"d" * 500}"\n',
                           "", "", files={"q.dev": "ups.status: OL\n"})
    pair = start_pair(confdir, ["q"])
    try:
        request = b"GET UPSDESC q\nGET VAR q ups.status\n"
        real, ours = session(pair.real.port, request), session(pair.ours.port, request)
        desc_reply = b'UPSDESC q "' + b"d" * 500 + b'"'
        assert len(desc_reply) == 512
        assert real == desc_reply + b'VAR q ups.status "OL"\n'
        assert ours == desc_reply + b'\nVAR q ups.status "OL"\n'
        assert_same(pair, b"LIST UPS\nGET VAR q ups.status\n")
    finally:
        pair.real.stop()
        pair.ours.stop()
        shutil.rmtree(confdir, ignore_errors=True)
