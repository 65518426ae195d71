"""sgtest: live test harness for sessionguard.mosh.

Real users, a real sshd (with pam_loginuid), real mosh sessions in tmux.
See tests/conftest.py for the pytest fixtures built on it.
"""

from .bystander import Bystander, make_bystander
from .escapees import ALL_KINDS, Escapee, command_for, find_escapee, start_escapees
from .harness import Harness, Scope
from .host import HarnessError, Host, LocalHost, NamespacedHost
from .mosh import MOSH_EXITING, MoshSession, install_server_copy, spoofed_server
from .procfs import (AUDIT_UNSET, Proc, alive, descendants, iter_procs, kill_procs, kill_uid,
                     pids_of_uid, procs_of_uid, read_proc, signal_proc, starttime, udp_ports,
                     wait_gone)
from .ssh import SshSession
from .sshd import Sshd
from .tmux import Terminal
from .users import TestUser, UserFactory
from .utmp import UtmpRecord, mosh_record, read_utmp, records, retire_records
from .waiting import WaitTimeout, wait_for

__all__ = [
    "ALL_KINDS", "AUDIT_UNSET", "Bystander", "Escapee", "Harness", "HarnessError", "Host",
    "LocalHost", "MOSH_EXITING", "MoshSession", "NamespacedHost", "Proc", "Scope", "SshSession", "Sshd", "Terminal",
    "TestUser", "UserFactory", "UtmpRecord", "WaitTimeout", "alive", "command_for", "descendants",
    "find_escapee", "install_server_copy", "iter_procs", "kill_procs", "kill_uid", "make_bystander",
    "mosh_record", "pids_of_uid", "procs_of_uid", "read_proc", "read_utmp", "records",
    "retire_records", "signal_proc", "spoofed_server", "start_escapees", "starttime", "udp_ports",
    "wait_for", "wait_gone",
]
