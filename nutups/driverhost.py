"""Runs one of our drivers as a standalone NUT driver process, serving NUT's driver socket.

`nutups driver -a NAME` (or an executable named like a NUT driver, `nutups-x120x`,
`nutups-dummy-ups`) reads the section NAME of ups.conf in NUT_CONFPATH, runs our
driver for it, and serves `<STATEPATH>/<driver>-<NAME>` exactly as NUT's drivers
do (drivers/main.c, drivers/dstate.c), so that the stock upsd, upsdrvctl and
upsmon work with it unchanged.  The protocol itself is in nut/sockproto.py.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import logging
import os
import signal
import sys
from pathlib import Path

from . import __version__
from .config.nutconf import parse_ups_conf, ups_conf_globals
from .configuration import load_configuration
from .drivers import DRIVERS, Driver, DriverError
from .events.devices import MqttSettings, make_device
from .events.outlets import Outlets
from .events.outputs import Outputs
from .hardware.backend import Hardware
from .hardware.gpio import GpioError
from .hardware.simcontrol import SocketInUse
from .nut import sockproto
from .paths import NUT_CONFPATH, resolve_confpath, resolve_nut_statepath
from .process import (
    ProcessError,
    become,
    daemonize,
    remove_pid_file,
    report_ready,
    setup_logging,
    signal_running,
    supervise,
    target_user,
    write_pid_file,
)
from .state import CommandResult, UpsState

log = logging.getLogger("nutups.driver")

RESTART_DELAY = 5.0
# ups.conf driver names this host runs, and which of our drivers each one is.
HOSTED = {"nutups-x120x": "x120x", "nutups-dummy-ups": "dummy-ups", "x120x": "x120x", "dummy-ups": "dummy-ups"}


class DriverSocketServer:
    """The driver's end of the socket: any number of upsd connections, each answered
    and kept up to date with every change of the state."""

    def __init__(self, state: UpsState, path: Path) -> None:
        self.state = state
        self.path = path
        self.writers: dict[asyncio.StreamWriter, bool] = {}  # writer -> wants broadcasts
        self._server: asyncio.AbstractServer | None = None
        self._vars: dict[str, None] = {}  # changed since the last flush, in order
        self._cmds: dict[str, None] = {}
        self._flush_scheduled = False
        self._formatter = sockproto.ChangeFormatter()
        self._stale = True
        self._tasks: set[asyncio.Task] = set()
        state.on_change(self._on_change)
        state.on_publish(self._on_publish)

    async def start(self) -> None:
        try:
            self.path.unlink()  # a socket left by a crashed driver (NUT drivers do the same)
        except FileNotFoundError:
            pass
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o660)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self.writers):
            writer.close()
        try:
            self.path.unlink()
        except OSError:
            pass

    # --- pushed updates (dstate.c send_to_all) ---------------------------------

    def _on_change(self, kind: str, key: str) -> None:
        if kind == "connected":  # a driver that lost its device: DATASTALE, as NUT's drivers say
            self._on_publish(self.state)
            return
        (self._vars if kind == "var" else self._cmds)[key] = None
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Send what changed since the last flush: one write per connection."""
        self._flush_scheduled = False
        if not self._vars and not self._cmds:
            return
        data = self._formatter.changes(self.state, self._vars, self._cmds)
        self._vars.clear()
        self._cmds.clear()
        self._broadcast(data)

    def _on_publish(self, state: UpsState) -> None:
        # DATAOK/DATASTALE only on a change, as dstate_dataok()/dstate_datastale() do;
        # a quiet driver is kept alive by upsd's PING.
        self.flush()
        stale = self._now_stale()
        if stale != self._stale:
            self._stale = stale
            self._broadcast(b"DATASTALE\n" if stale else b"DATAOK\n")

    def _now_stale(self) -> bool:
        return self.state.stale or not self.state.connected

    def _broadcast(self, data: bytes) -> None:
        for writer, wanted in list(self.writers.items()):
            if wanted and not writer.is_closing():
                writer.write(data)

    # --- one upsd connection -----------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers[writer] = True
        lines = sockproto.LineReader()
        try:
            while data := await reader.read(65536):
                for words in lines.feed(data):
                    self._request(sockproto.parse_request(words), writer)
        except (ConnectionError, OSError):
            pass
        finally:
            self.writers.pop(writer, None)
            writer.close()

    def _request(self, req: sockproto.Request, writer: asyncio.StreamWriter) -> None:
        if req.kind == "PING":
            writer.write(b"PONG\n")
        elif req.kind == "DUMPALL":
            self.flush()  # the others get what is pending; this one gets it in the dump
            writer.write(sockproto.format_dump(self.state, self._now_stale()))
            self._formatter.remember(self.state)
        elif req.kind == "BROADCAST":
            self.writers[writer] = req.on
        elif req.kind == "GETPID":
            writer.write(f"PID {os.getpid()}\n".encode())
        elif req.kind in ("INSTCMD", "SET"):
            task = asyncio.get_running_loop().create_task(self._command(req, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            log.warning("unknown command on the driver socket: %s", " ".join(req.words))

    async def _command(self, req: sockproto.Request, writer: asyncio.StreamWriter) -> None:
        st = self.state
        handler = st.instcmd_handler if req.kind == "INSTCMD" else st.setvar_handler
        result = CommandResult.UNKNOWN
        if handler is not None:
            try:
                outcome = handler(req.name, req.value)
                result = await outcome if inspect.isawaitable(outcome) else outcome
            except Exception as exc:  # a driver bug must not take the socket down
                log.error("%s %s failed: %s", req.kind, req.name, exc)
                result = CommandResult.FAILED
        if result is CommandResult.UNKNOWN:
            log.warning("%s: unknown %s [%s]", req.kind.lower(), "command" if req.kind == "INSTCMD" else
                        "variable", req.name)
        self.flush()  # the change a SET made goes out before its TRACKING answer, as in dstate.c
        if req.tracking is not None and not writer.is_closing():
            writer.write(sockproto.format_tracking(req.tracking, result))


# --- the process: NUT driver command line, pid file, privileges -------------------------


def build_parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, add_help=False,
                                description="Runs a nutups driver as a NUT driver (drivers/main.c's options).")
    p.add_argument("-a", dest="ups", metavar="ID", help="autoconfig using ups.conf section ID")
    p.add_argument("-D", dest="debug", action="count", default=0, help="raise debugging level (stay foreground)")
    p.add_argument("-F", dest="foreground", action="count", default=0, help="stay foregrounded")
    p.add_argument("-B", dest="background", action="store_true", help="stay backgrounded even with -D")
    p.add_argument("-u", dest="user", metavar="USER", help="switch to USER (if started as root)")
    p.add_argument("-g", dest="group", metavar="GROUP", help="accepted for NUT compatibility")
    p.add_argument("-x", dest="extra", action="append", default=[], metavar="VAR=VAL",
                   help="set driver variable VAR to VAL (overrides ups.conf)")
    p.add_argument("-k", dest="kill", action="store_true", help="force shutdown (where the driver can)")
    p.add_argument("-c", dest="command", choices=("reload", "exit"),
                   help="send a command to the running driver of -a ID (via its pid file)")
    p.add_argument("-P", dest="pid", type=int, help="with -c: signal this PID instead of the pid file's")
    p.add_argument("-q", dest="quiet", action="count", default=0, help="raise log level threshold")
    p.add_argument("-r", dest="chroot", metavar="DIR", help="accepted; nutups does not chroot")
    p.add_argument("-i", dest="interval", metavar="SEC", help="poll interval (pollinterval)")
    p.add_argument("-V", dest="version", action="store_true", help="print version, then exit")
    p.add_argument("-h", "--help", dest="help", action="store_true", help="display this help")
    return p


def _die(prog: str, message: str, code: int = 1) -> int:
    print(f"{prog}: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None, prog: str | None = None, driver_kind: str | None = None) -> int:
    """A NUT driver's main(): `driver_kind` is the driver an executable stands for (None:
    the one ups.conf names)."""
    prog = prog or Path(sys.argv[0]).name
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.help:
        parser.print_help()
        return 0
    if args.version:
        print(f"Network UPS Tools - nutups driver host {__version__}")
        return 0
    if not args.ups:
        return _die(prog, "give the UPS with -a <id> (a section of ups.conf)")
    confpath, statepath = resolve_confpath(NUT_CONFPATH), resolve_nut_statepath()
    sections, problems = parse_ups_conf(confpath / "ups.conf")
    ups_globals = ups_conf_globals(confpath / "ups.conf")
    section = next((s for s in sections if s.name == args.ups), None)
    if section is None:
        if problems and not (confpath / "ups.conf").exists():
            return _die(prog, f"{confpath / 'ups.conf'}: file not found (set NUT_CONFPATH)")
        return _die(prog, f"no section [{args.ups}] in {confpath / 'ups.conf'}")
    progname = section.driver or prog  # upsd looks for <STATEPATH>/<driver>-<ups>
    kind = driver_kind or HOSTED.get(progname)
    if kind not in DRIVERS:
        return _die(prog, f"[{section.name}] driver = {section.driver}: not a nutups driver "
                          f"(nutups runs: {', '.join(sorted(HOSTED))})")
    pidfile = statepath / f"{progname}-{section.name}.pid"
    if args.command:
        try:
            signal_running(pidfile, args.pid, args.command, "the driver")
        except ProcessError as exc:
            return _die(prog, str(exc))
        return 0
    for item in args.extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            return _die(prog, f"-x {item}: expected VAR=VAL")
        if key.lower() == "port":
            section.port = value
        elif key.lower() == "desc":
            section.desc = value
        else:
            section.options[key.lower()] = value
    if args.interval:
        section.options["pollinterval"] = args.interval
    setup_logging(args.debug, args.quiet)
    state = UpsState(section.name, section.desc, maxage=float("inf"))
    cls = DRIVERS[kind]
    try:
        hardware = cls.hardware_for(section, confpath)  # chosen once: the HAT, or its simulator
        driver = cls(state, section, confpath, statepath=statepath, hardware=hardware)
    except (DriverError, ValueError) as exc:
        return _die(prog, str(exc))
    if args.kill:
        return _shutdown(prog, driver)
    outlets = _outlets(confpath, state, hardware or Hardware())
    try:
        user = target_user(args.user, ups_globals.get("user"))
    except ProcessError as exc:
        return _die(prog, str(exc))
    foreground = (args.foreground or args.debug) and not args.background
    ready_fd = None if foreground else daemonize(wait_for_ready=True)
    if ready_fd is not None:
        setup_logging(args.debug, args.quiet, syslog=True)
    try:
        code = asyncio.run(_run(driver, state, statepath / f"{progname}-{section.name}", pidfile, user,
                                ready_fd, outlets))
    except KeyboardInterrupt:
        code = 0
    return code


def _shutdown(prog: str, driver: Driver) -> int:
    """-k: NUT's upsdrv_shutdown. Neither the HAT nor dummy-ups has a command that cuts power."""
    return _die(prog, f"-k: the {driver.name} driver cannot switch the UPS off; nothing was done")


def _outlets(confpath: Path, state: UpsState, hardware: Hardware):
    """The relay and smart plugs of nutups.yaml (beside ups.conf) as outlet.N with their
    commands, as `nutups serve` offers them: so that upscmd through upsd switches them."""
    if not (confpath / "nutups.yaml").exists():
        return None
    cfg = load_configuration(confpath, require_ups_conf=False)
    yaml_file = str(confpath / "nutups.yaml")
    for problem in cfg.problems:
        if problem.file == yaml_file:
            (log.warning if problem.warning else log.error)("%s", problem)
    ev = cfg.events
    if ev.relay is None and not ev.devices:
        return None
    outputs = None
    if ev.relay is not None:
        try:
            outputs = Outputs(hardware.gpiod(), {"relay": ev.relay}, chip_paths=hardware.chip_paths)
        except GpioError as exc:
            log.warning("relay: %s; no relay outlet", exc)
    devices = {name: make_device(dc, MqttSettings(**ev.mqtt), ev.action_timeout) for name, dc in ev.devices.items()}
    if outputs is None and not devices:
        return None
    return Outlets(state, outputs, devices, ev.device_poll)


async def _run(driver: Driver, state: UpsState, sock: Path, pidfile: Path, user, ready_fd: int | None,
               outlets=None) -> int:
    server = DriverSocketServer(state, sock)
    try:
        if user is not None and os.geteuid() == 0:
            become(user)  # as NUT's drivers: the socket and pid file then belong to the user
        await server.start()
        write_pid_file(pidfile)
    except OSError as exc:
        log.error("cannot serve %s: %s", sock, exc.strerror or exc)
        report_ready(ready_fd, False)
        return 1
    report_ready(ready_fd, True)
    log.info("%s: serving [%s] on %s", driver.name, state.name, sock)
    control = None  # a simulated HAT's control socket (`nutups sim`)
    if driver.hardware is not None:
        control = driver.hardware.control_server(sock.parent / f"nutups-{state.name}.sim", driver)
    if control is not None:
        try:
            await control.start()
        except SocketInUse as exc:
            log.error("%s", exc)
            control = None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("reload: nutups drivers read ups.conf when "
                                                            "they start; restart the driver to apply changes"))
    runner = loop.create_task(_supervise(driver))
    stopper = loop.create_task(stop.wait())
    extra = [loop.create_task(outlets.poll())] if outlets is not None and outlets.devices else []
    await asyncio.wait({runner, stopper}, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if runner.done():
        code = runner.result()
    for task in (runner, stopper, *extra):
        task.cancel()
    await asyncio.gather(runner, stopper, *extra, return_exceptions=True)
    await server.close()
    if control is not None:
        await control.close()
    remove_pid_file(pidfile)
    return code


async def _supervise(driver: Driver) -> int:
    """Run the driver; restart it after a crash; stop (exit 1) on a configuration error."""

    def crashed() -> None:
        driver.state.connected = False
        driver.state.data_stale("driver restarting")

    return 0 if await supervise(driver.run, "driver", log, (DriverError,), crashed, RESTART_DELAY) else 1


def x120x_main() -> None:
    """The `nutups-x120x` executable (driver = nutups-x120x in ups.conf)."""
    sys.exit(main(driver_kind="x120x"))


def dummy_ups_main() -> None:
    """The `nutups-dummy-ups` executable (driver = nutups-dummy-ups in ups.conf)."""
    sys.exit(main(driver_kind="dummy-ups"))


__all__ = ["DriverSocketServer", "main"]
