"""Command line of the fleet: ``tests/fleet/fleet {up N|down|status|inventory|run HOST CMD...}``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import List, Optional

from ..host import HarnessError
from .fleet import Fleet
from .lifecycle import DEFAULT_STATE_DIR
from .profiles import PROFILE_BY_NAME

USAGE = """\
examples:
  fleet up 4                 bring up sghost01..sghost04 (127.0.0.2..127.0.0.5)
  fleet status               hosts, profiles, whether sshd answers
  fleet inventory            print the Ansible inventory (--path: only its path)
  ansible -i "$(fleet inventory --path)" fleet -m ansible.builtin.ping
  fleet run sghost02 -- ps -ef      run a command as root inside a host
  fleet down                 stop everything by PID, verify, remove the state dir

The state dir is --state-dir, else $SG_FLEET_STATE_DIR, else {default}.
""".format(default=DEFAULT_STATE_DIR)


def _fleet(args) -> Fleet:
    return Fleet(args.state_dir, kind="cli")


def cmd_up(args) -> int:
    fleet = _fleet(args)
    t0 = time.monotonic()
    fleet.up(args.n, profiles=args.profile or None, timeout=args.timeout,
             first=None if args.first == "auto" else int(args.first))
    phases = ", ".join(f"{k} {v:.1f}s" for k, v in fleet.timings.items() if k != "up")
    print(f"fleet up: {len(fleet.hosts)} hosts in {time.monotonic() - t0:.1f}s (state dir {fleet.state_dir}; "
          f"cumulative: {phases})")
    _print_status(fleet)
    print(f"inventory: {fleet.inventory_path}")
    return 0


def cmd_down(args) -> int:
    fleet = _fleet(args)
    if not fleet.hosts and not os.path.exists(fleet.state_dir):
        print(f"no fleet in {fleet.state_dir}")
        return 0
    t0 = time.monotonic()
    n = len(fleet.hosts)
    problems = fleet.down(timeout=args.timeout, check=False)
    if problems:
        print(f"fleet down: left things behind (state dir kept: {fleet.state_dir}):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print(f"fleet down: {n} hosts stopped and verified gone in {time.monotonic() - t0:.1f}s")
    return 0


def _print_status(fleet: Fleet) -> int:
    rows = fleet.status()
    if not rows:
        print(f"no fleet in {fleet.state_dir}")
        return 1
    bad = 0
    print(f"{'host':<10} {'address':<11} {'init':>7} {'sshd':<9} {'profile':<22} python")
    for r in rows:
        ok = r["init_alive"] and r["sshd_answers"]
        bad += not ok
        sshd = "answers" if r["sshd_answers"] else ("DOWN" if r["init_alive"] else "-")
        init = str(r["init_pid"]) if r["init_alive"] else "DEAD"
        print(f"{r['name']:<10} {r['address']:<11} {init:>7} {sshd:<9} {r['profile']:<22} {r['python']}")
    return 1 if bad else 0


def cmd_status(args) -> int:
    fleet = _fleet(args)
    if args.json:
        print(json.dumps({"state_dir": fleet.state_dir, "inventory": fleet.inventory_path,
                          "hosts": fleet.status()}, indent=1))
        return 0 if fleet.hosts and fleet.is_up() else 1
    return _print_status(fleet)


def cmd_inventory(args) -> int:
    fleet = _fleet(args)
    if not fleet.hosts:
        print(f"no fleet in {fleet.state_dir}", file=sys.stderr)
        return 1
    if args.path:
        print(fleet.inventory_path)
    else:
        with open(fleet.inventory_path) as fh:
            sys.stdout.write(fh.read())
    return 0


def cmd_run(args) -> int:
    fleet = _fleet(args)
    host = fleet.host(args.host)
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        argv = ["bash", "-l"]
    return subprocess.call(host.wrap(argv))


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="fleet", description="A fleet of namespaced sshd hosts on this machine "
                                 "(tests/fleet/README.md).", epilog=USAGE,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state-dir", default=None, help=f"state directory (default {DEFAULT_STATE_DIR})")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("up", help="bring up N hosts")
    p.add_argument("n", type=int)
    p.add_argument("--profile", action="append", choices=sorted(PROFILE_BY_NAME),
                   help="host profiles to take in turn (repeatable; default: all four)")
    p.add_argument("--first", default="1", help="index of the first host (host K listens on 127.0.0.(K+1)); "
                   "'auto': the lowest free block (default 1)")
    p.add_argument("--timeout", type=float, default=120.0)
    p.set_defaults(func=cmd_up)
    p = sub.add_parser("down", help="stop the fleet and verify nothing is left")
    p.add_argument("--timeout", type=float, default=30.0)
    p.set_defaults(func=cmd_down)
    p = sub.add_parser("status", help="list hosts and whether sshd answers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = sub.add_parser("inventory", help="print the Ansible inventory")
    p.add_argument("--path", action="store_true", help="print only its path")
    p.set_defaults(func=cmd_inventory)
    p = sub.add_parser("run", help="run a command as root inside a host (default: a login shell)")
    p.add_argument("host")
    p.add_argument("argv", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_run)
    args = ap.parse_args(argv)
    try:
        return args.func(args)
    except (HarnessError, KeyError) as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # e.g. `fleet status | head -1`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
