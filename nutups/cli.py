"""The nutups command line: parses options and calls the layers."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .config import ConfigError
from .config.nutconf import UpsSection, parse_listen
from .configuration import Configuration, default_confpath, load_configuration
from .paths import resolve_datapath, resolve_statepath
from .process import setup_logging


def _listen_option(values: tuple[str, ...]) -> list[tuple[str, int]]:
    out = []
    for v in values:
        try:
            out.append(parse_listen(v))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--listen") from None
    return out


confpath_option = click.option(
    "--confpath", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Directory with ups.conf, upsd.conf, upsd.users, nutups.yaml "
         "(default: $NUT_CONFPATH, else /etc/nutups).",
)


datapath_option = click.option(
    "--datapath", type=click.Path(file_okay=False, path_type=Path), default=None,
    help="Where settings set with upsrw, the learned load, the event log and the history are kept "
         "(default: $STATE_DIRECTORY, nutups.yaml datapath, else /var/lib/nutups for root, "
         "$XDG_STATE_HOME/nutups otherwise).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="nutups")
def main() -> None:
    """A NUT-compatible UPS server for Geekworm X120X Raspberry Pi UPS HATs."""


def embedded_configuration(sim: bool) -> Configuration:
    """No configuration at all: one X1202 as UPS `ups` (the name Synology insists on)."""
    cfg = Configuration(confpath=Path("."))
    options = {"board": "x1202"}
    if sim:
        options["sim"] = "yes"
    desc = "Geekworm X1202 UPS HAT" + (" (simulated)" if sim else "")
    cfg.ups = [UpsSection("ups", 0, driver="x120x", desc=desc, options=options)]
    cfg.upsd.listen = [("127.0.0.1", 3493)]
    return cfg


def hat_present(bus: int = 1) -> bool:
    """A gauge answers on /dev/i2c-1 (quietly False without smbus2 or a bus)."""
    if not Path(f"/dev/i2c-{bus}").exists():
        return False
    try:
        from .hardware.gauge import GaugeError, open_smbus

        gauge = open_smbus(bus)
        try:
            gauge.identify()
            return True
        finally:
            gauge.close()
    except (GaugeError, OSError):
        return False


@main.command()
@confpath_option
@click.option("--listen", "listen", multiple=True, metavar="HOST:PORT",
              help="Listen here instead of upsd.conf's LISTEN (repeatable).")
@click.option("--statepath", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Runtime state directory (default: $NUT_STATEPATH, upsd.conf STATEPATH, "
                   "else /run/nutups or $XDG_RUNTIME_DIR/nutups). Sockets only.")
@datapath_option
@click.option("--sim", is_flag=True, help="Simulate the X120X HAT (the default when no HAT is present).")
@click.option("--web", default=None, metavar="HOST:PORT",
              help="Serve the dashboard, JSON API and /metrics here (instead of nutups.yaml's web.listen).")
@click.option("-v", "--verbose", count=True, help="Debug logging.")
def serve(confpath: Path | None, listen: tuple[str, ...], statepath: Path | None, datapath: Path | None,
          sim: bool, web: str | None, verbose: int) -> None:
    """Run the NUT server with the drivers of ups.conf (or, with no configuration, one X1202 as `ups`)."""
    from .daemon import Daemon

    setup_logging(verbose)
    log = logging.getLogger("nutups")
    if confpath is None and not default_confpath().is_dir():
        simulate = sim or not hat_present()
        if simulate and not sim:
            log.info("no X120X HAT found and no configuration in %s: serving a simulated X1202", default_confpath())
        cfg = embedded_configuration(simulate)
    else:
        confpath = confpath or default_confpath()
        cfg = load_configuration(confpath)
        for problem in cfg.problems:
            (log.warning if problem.warning else log.error)("%s", problem)
        if cfg.errors:  # as upsd: a broken configuration is refused, never half served
            log.error("cannot start: %d error(s) in %s", len(cfg.errors), confpath)
            raise SystemExit(2)
        if sim:
            for section in cfg.ups:
                if section.driver == "x120x":
                    section.options["sim"] = "yes"
    if datapath is not None:
        cfg.datapath = datapath
    if web is not None:
        try:
            cfg.web.listen = parse_listen(web, default_port=8080)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--web") from None
    try:
        daemon = Daemon(cfg, listen=_listen_option(listen) or None,
                        statepath=resolve_statepath(statepath, cfg.upsd.statepath))
        daemon.all_listen_required = bool(listen or cfg.upsd.listen)
    except (OSError, ValueError) as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    try:
        asyncio.run(daemon.run_forever())
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("%s", problem)
        log.error("cannot start: %d LISTEN address(es) cannot be bound", len(exc.problems))
        raise SystemExit(2) from None
    except OSError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


def _sim_socket(confpath: Path | None, statepath: Path | None, ups: str | None) -> Path:
    """The simulator's control socket, in the statepath `nutups serve` uses with the same options."""
    configured = None
    if confpath is not None:
        cfg = load_configuration(confpath)
        configured = cfg.upsd.statepath
        if ups is None:
            sims = [s.name for s in cfg.ups if s.driver == "x120x"]
            ups = sims[0] if len(sims) == 1 else None
    return resolve_statepath(statepath, configured) / f"nutups-{ups or 'ups'}.sim"


def _on_off(value: str) -> bool:
    v = value.lower()
    if v not in ("on", "off"):
        raise click.BadParameter(f"{value!r}: on or off")
    return v == "on"


@main.command(context_settings={"ignore_unknown_options": True})
@confpath_option
@click.option("--statepath", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The daemon's state directory, where the control socket is.")
@click.option("--ups", default=None, help="UPS name (default: ups, or the only x120x UPS of --confpath).")
@click.argument("words", nargs=-1, required=True)
def sim(confpath: Path | None, statepath: Path | None, ups: str | None, words: tuple[str, ...]) -> None:
    """Drive a simulated HAT: ac on|off, load W, soc PCT, fault i2c on|off, speed X,
    temperature C, dcout on|off, status."""
    from .hardware.simcontrol import request

    usage = ("ac on|off | load W | soc PCT | fault i2c on|off | speed X | temperature C | dcout on|off "
             "| pld stuck on|off | status")
    try:
        match [w.lower() for w in words]:
            case ["status"]:
                message: dict = {"cmd": "get"}
            case ["ac", value]:
                message = {"cmd": "set", "ac": _on_off(value)}
            case ["load", value]:
                message = {"cmd": "set", "load_w": float(value)}
            case ["soc", value]:
                message = {"cmd": "set", "soc": float(value)}
            case ["fault", "i2c", value]:
                message = {"cmd": "set", "i2c_fault": _on_off(value)}
            case ["speed", value]:
                message = {"cmd": "set", "speed": float(value)}
            case ["temperature", value]:
                message = {"cmd": "set", "temperature": float(value)}
            case ["dcout", value]:
                message = {"cmd": "set", "dc_out": _on_off(value)}
            case ["pld", "stuck", value]:
                message = {"cmd": "set", "pld_stuck": _on_off(value)}
            case _:
                raise click.UsageError(f"expected: {usage}")
    except ValueError:
        raise click.UsageError(f"not a number in {' '.join(words)!r}; expected: {usage}") from None
    path = _sim_socket(confpath, statepath, ups)
    try:
        reply = request(path, message)
    except (FileNotFoundError, ConnectionRefusedError):
        raise click.ClickException(f"no simulator at {path}: is `nutups serve --sim` running "
                                   "(with the same --statepath)?") from None
    except OSError as exc:
        raise click.ClickException(f"{path}: {exc.strerror or exc}") from None
    if not reply.get("ok"):
        raise click.ClickException(reply.get("error", "failed"))
    state = reply["state"]
    width = max(len(k) for k in state)
    for key, value in state.items():
        click.echo(f"{key:{width}}  {value}")


@main.command()
@confpath_option
@datapath_option
@click.option("--ups", "only", default=None, help="Only this UPS (a section of ups.conf).")
@click.option("--json", "as_json", is_flag=True, help="The learned figures as JSON.")
def battery(confpath: Path | None, datapath: Path | None, only: str | None, as_json: bool) -> None:
    """What nutups has learned of each HAT's battery: capacity, resistance, cycles, replace."""
    import json

    from .battery.learning import judge
    from .battery.report import report
    from .battery.store import load_record, record_path
    from .hardware.boards import BOARDS

    confpath = confpath or (default_confpath() if default_confpath().is_dir() else None)
    if confpath is None:
        raise click.ClickException("no configuration (give --confpath): nutups battery reports the x120x "
                                   "UPSes of ups.conf")
    cfg = load_configuration(confpath, require_ups_conf=False)
    datapath = datapath or cfg.datapath or resolve_datapath(None)  # as serve: --datapath wins
    sections = [u for u in cfg.ups if u.driver == "x120x" and (only is None or u.name == only)]
    if not sections:
        raise click.ClickException(f"no x120x UPS{' ' + only if only else ''} in {confpath}/ups.conf")
    out = {}
    for u in sections:
        opts = u.options
        board = BOARDS.get((opts.get("board") or "x1202").lower(), BOARDS["x1202"])
        try:
            nominal = float(opts.get("capacity_mah") or board.capacity_mah) / 1000.0
            below = float(opts.get("battery_replace_below") or 70) / 100.0
            new = float(opts.get("battery_resistance_new") or 0) or None
        except ValueError as exc:
            raise click.ClickException(f"[{u.name}] in ups.conf: {exc}") from None
        record = load_record(record_path(datapath, u.name))
        k = judge(record, nominal, below, new)
        if as_json:
            out[u.name] = {"capacity_nominal_ah": nominal, "capacity_ah": k.capacity_ah,
                           "capacity_sigma_ah": k.capacity_sigma_ah, "capacity_pct": k.capacity_pct,
                           "outages": k.outages, "resistance_ohm": k.resistance_ohm,
                           "resistance_new_ohm": k.resistance_new_ohm, "cycles": round(k.cycles, 3),
                           "replace": k.replace, "replace_reason": k.replace_reason,
                           "history": [list(h) for h in k.history]}
        else:
            click.echo(report(u.name, k, record, below))
    if as_json:
        click.echo(json.dumps(out, indent=1))


@main.command()
@confpath_option
@datapath_option
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only these event types (repeatable).")
@click.option("--since", default=None, help="From this time: ISO 8601 (UTC) or 30s, 10m, 2h, 1d ago.")
@click.option("--until", default=None, help="Up to this time (same forms).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new events as they come.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line, as in the log.")
@click.option("--types", "list_types", is_flag=True, help="List the event types, their sources, and which "
                                                           "this machine has.")
def events(confpath: Path | None, datapath: Path | None, types: tuple[str, ...], since: str | None,
           until: str | None, follow: bool, as_json: bool, list_types: bool) -> None:
    """Read the event log (rotated files included)."""
    from .events.log import follow_events, log_files, matches, parse_time, read_events
    from .events.types import SOURCES, EventType
    from .hardware.host import HostSensors

    if list_types:
        have = HostSensors().available()
        have.update({"pld": True, "gauge": True, "driver": True, "server": True, "actions": True,
                     "shutdown": True})
        for kind, (source, text) in SOURCES.items():
            mark = "available  " if have.get(source) else "unavailable"
            click.echo(f"{kind:28} {mark}  {text}")
        click.echo("\n(the simulator, nutups serve --sim, produces every type)")
        return
    unknown = [t for t in types if t.upper() not in EventType.__members__]
    if unknown:
        raise click.BadParameter(f"{unknown[0]!r} is not an event type (one of {', '.join(EventType)}; "
                                 "nutups events --types lists them)", param_hint="--type")
    wanted = {EventType(t.upper()) for t in types} or None
    try:
        t0 = parse_time(since) if since else None
        t1 = parse_time(until) if until else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    path = None
    confpath = confpath or (default_confpath() if default_confpath().is_dir() else None)
    if confpath is not None:
        cfg = load_configuration(confpath, require_ups_conf=False)
        path = cfg.events.event_log
        datapath = datapath or cfg.datapath
    if path is None:
        path = (datapath or resolve_datapath(None)) / "ups_events.log"
    warn = lambda text: click.echo(f"warning: {text}", err=True)  # noqa: E731

    def show(ev) -> None:
        if as_json:
            click.echo(ev.to_json())
        else:
            value = "" if ev.value is None else f" ({ev.value:g}{ev.unit or ''})"
            click.echo(f"{ev.time}  #{ev.seq:<5} {ev.ups:10} {ev.type:26} {ev.message}{value}")

    if not log_files(path) and not follow:
        raise click.ClickException(f"no event log at {path}")
    for ev in read_events(path, warn):
        if matches(ev, wanted, t0, t1):
            show(ev)
    if follow:
        for ev in follow_events(path):
            if matches(ev, wanted, t0, t1):
                show(ev)


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def driver(args: tuple[str, ...]) -> None:
    """Run a nutups driver as a NUT driver: -a NAME [-F] [-D] [-u USER] [-x VAR=VAL] [-k] [-c reload|exit]
    (ups.conf from $NUT_CONFPATH, socket in $NUT_STATEPATH; -h for all options)."""
    from .driverhost import main as driver_main

    sys.exit(driver_main(list(args), prog="nutups driver"))


@main.command(context_settings={"ignore_unknown_options": True, "help_option_names": []})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def upsd(args: tuple[str, ...]) -> None:
    """NUT's upsd, drop-in: -F, -FF, -D, -u USER, -c reload|stop, -P PID (-h for all). Serves only
    NUT drivers' sockets; configuration from $NUT_CONFPATH (default /etc/nut)."""
    from .upsd import main as upsd_main

    sys.exit(upsd_main(list(args)))


@main.command()
@click.option("--bus", default=1, show_default=True, help="I2C bus number.")
@confpath_option
@datapath_option
def doctor(bus: int, confpath: Path | None, datapath: Path | None) -> None:
    """Check this machine for an X120X HAT and what it needs; exit 1 if anything fails."""
    from .doctor import Machine, datapath_check, format_table, hat_absent, run_checks

    checks = run_checks(Machine(), bus=bus)
    if datapath is None:
        confpath = confpath or default_confpath()
        datapath = load_configuration(confpath).datapath if confpath.is_dir() else resolve_datapath(None)
    checks.append(datapath_check(datapath))
    click.echo(format_table(checks))
    failed = [c for c in checks if c.ok is False]
    if hat_absent(checks):
        click.echo("\nNo X120X HAT was found on this machine. To try nutups without one: nutups serve --sim")
    if failed:
        click.echo(f"\n{len(failed)} check(s) failed.")
        sys.exit(1)
    click.echo("\nAll checks passed.")


@main.group()
def config() -> None:
    """Work with the configuration files."""


@config.command("check")
@confpath_option
def config_check(confpath: Path | None) -> None:
    """Validate every configuration file; print file:line: problem for each; exit 1 on errors."""
    confpath = confpath or default_confpath()
    cfg = load_configuration(confpath)
    for problem in cfg.problems:
        click.echo(str(problem), err=True)
    if cfg.errors:
        click.echo(f"{len(cfg.errors)} error(s) in {confpath}", err=True)
        sys.exit(1)
    click.echo(f"{confpath}: OK ({len(cfg.ups)} UPS: {', '.join(s.name for s in cfg.ups) or 'none'})")


@main.group()
def notify() -> None:
    """Notifications (notify: in nutups.yaml)."""


@notify.command("test")
@confpath_option
@click.argument("targets", nargs=-1)
def notify_test(confpath: Path | None, targets: tuple[str, ...]) -> None:
    """Send a test message to TARGETS (names of notify: in nutups.yaml; default: every one).
    Exit 1 if any did not go."""
    confpath = confpath or default_confpath()
    cfg = load_configuration(confpath, require_ups_conf=False)
    yaml_file = str(confpath / "nutups.yaml")
    problems = [p for p in cfg.errors if p.file == yaml_file]
    for problem in problems:
        click.echo(str(problem), err=True)
    if problems:
        raise click.ClickException(f"{yaml_file} has errors: fix them first (nutups config check)")
    names = list(cfg.events.notify)
    if not names:
        raise click.ClickException(f"{yaml_file} names no notify: targets")
    unknown = [t for t in targets if t not in names]
    if unknown:
        raise click.BadParameter(f"{unknown[0]!r} is not a notify: target (there are: {', '.join(names)})",
                                 param_hint="TARGET")
    from .events.notifications import Notifier

    sender = Notifier(cfg.events, [], None)
    results = asyncio.run(sender.send_test(list(targets) or names))
    for name, why in results.items():
        click.echo(f"{name}: sent" if why is None else f"{name}: NOT sent: {why}")
    if any(why is not None for why in results.values()):
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
