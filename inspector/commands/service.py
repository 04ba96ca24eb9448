"""`inspector service install|uninstall`: run a line at boot under systemd, one instance per configuration."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.commands.argtypes import positive


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("service", help="install or remove the systemd service that runs a line at boot")
    ss = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    i = ss.add_parser("install", help="write inspector@NAME.service (template + this line's drop-in)")
    i.add_argument("--config", metavar="FILE", required=True, help="the YAML configuration this line runs with")
    i.add_argument("--user", metavar="USER", help="account it runs as (default: the sudo caller, else you)")
    i.add_argument("--name", metavar="NAME", help="instance name: inspector@NAME.service (default: config file stem)")
    i.add_argument(
        "--watchdog-sec",
        metavar="S",
        type=positive,
        default=10.0,
        help="restart when frames or inspection stall this long (WatchdogSec=, default 10)",
    )
    i.add_argument("--unit-dir", metavar="DIR", default="/etc/systemd/system", help="where units go")
    i.add_argument("--dry-run", action="store_true", help="print the units instead of writing them")
    i.set_defaults(func=run_install)
    u = ss.add_parser("uninstall", help="remove inspector@NAME.service's drop-in (and the template if unused)")
    u.add_argument("--name", metavar="NAME", required=True, help="instance name, as given to install")
    u.add_argument("--unit-dir", metavar="DIR", default="/etc/systemd/system", help="where units are")
    u.set_defaults(func=run_uninstall)


def run_install(args: argparse.Namespace) -> int:
    from inspector.service.unit import install, plan

    p = plan(args.config, name=args.name, user=args.user, unit_dir=Path(args.unit_dir), watchdog_s=args.watchdog_sec)
    for w in p.warnings:
        print(f"warning: {w}", file=sys.stderr)
    if args.dry_run:
        print(f"# {p.template_path}\n{p.template}\n# {p.dropin_path}\n{p.dropin}", end="")
        return 0
    for path in install(p):
        print(f"wrote {path}")
    print("next: " + " && ".join(p.next_steps()[:2]) + f"   (logs: {p.next_steps()[2]})")
    return 0


def run_uninstall(args: argparse.Namespace) -> int:
    from inspector.service.unit import uninstall

    unit = f"inspector@{args.name}.service"
    print(f"first: systemctl disable --now {unit}")
    for path in uninstall(args.name, Path(args.unit_dir)):
        print(f"removed {path}")
    print("then: systemctl daemon-reload")
    return 0
