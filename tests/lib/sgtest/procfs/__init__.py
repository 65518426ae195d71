"""The test's own view of /proc: an oracle, independent of the code under test.

The collection reads the process table in ``plugins/module_utils/_procfs.py``; tests must not
trust that reader to tell them whether it worked. This package reads /proc again, written
separately and kept simple (no psutil), and is what every assertion about live processes,
sockets and held (stopped or frozen) processes is checked against. The duplication is deliberate.

    table    Proc snapshots, the process table and queries over it
    net      file descriptors, sockets (/proc/PID/net), pty masters
    held     stopped and cgroup-frozen processes
    signals  signalling by PID and start time; killing every process of a UID
"""

from .held import cgroup2_mount, frozen_procs, held_procs, stopped_procs
from .net import fd_targets, has_ptmx, inet_sockets, socket_inodes, udp_ports
from .signals import kill_all_as, kill_procs, kill_uid, signal_proc, wait_gone
from .table import (AUDIT_UNSET, PROC, Proc, alive, all_pids, ancestors, child_pids, children, descendants,
                    environ, exe, find_by_argv, iter_procs, ns_link, parse_stat, pids_of_uid, procs_of_uid,
                    read_file, read_proc, starttime, stat_fields)

__all__ = [
    "AUDIT_UNSET", "PROC", "Proc", "alive", "all_pids", "ancestors", "cgroup2_mount", "child_pids", "children",
    "descendants", "environ", "exe", "fd_targets", "find_by_argv", "frozen_procs", "has_ptmx", "held_procs",
    "inet_sockets", "iter_procs", "kill_all_as", "kill_procs", "kill_uid", "ns_link", "parse_stat",
    "pids_of_uid", "procs_of_uid", "read_file", "read_proc", "signal_proc", "socket_inodes", "starttime",
    "stat_fields", "stopped_procs", "udp_ports", "wait_gone",
]
