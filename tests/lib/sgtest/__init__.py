"""sgtest: the live test harness of sessionguard.mosh (tests/README.md).

Real users, real sshd logins (with pam_loginuid), real mosh sessions in tmux, real Ansible runs,
on the machine itself (:class:`Harness`, a fleet of one host) or on a fleet of namespaced hosts
(:mod:`sgtest.fleet`). The pytest fixtures built on it are in tests/conftest.py.
"""

from .bystander import Bystander, make_bystander
from .escapees import ALL_KINDS, Escapee, command_for, find_escapee, start_escapees
from .harness import BaseFleet, Harness
from .host import HarnessError, Host, LocalHost
from .mosh import MOSH_EXITING, MoshSession, install_server_copy, spoofed_server
from .procfs import (AUDIT_UNSET, Proc, alive, descendants, iter_procs, kill_procs, kill_uid, pids_of_uid,
                     procs_of_uid, read_proc, signal_proc, starttime, udp_ports, wait_gone)
from .scope import Scope
from .ssh import SshSession
from .sshd import Sshd
from .tmux import Terminal
from .users import TestUser, create_user
from .utmp import UtmpRecord, mosh_record, read_utmp, records, retire_records
from .waiting import WaitTimeout, wait_for

__all__ = [
    "ALL_KINDS", "AUDIT_UNSET", "BaseFleet", "Bystander", "Escapee", "Harness", "HarnessError", "Host",
    "LocalHost", "MOSH_EXITING", "MoshSession", "Proc", "Scope", "SshSession", "Sshd", "Terminal",
    "TestUser", "UtmpRecord", "WaitTimeout", "alive", "command_for", "create_user", "descendants",
    "find_escapee", "install_server_copy", "iter_procs", "kill_procs", "kill_uid", "make_bystander",
    "mosh_record", "pids_of_uid", "procs_of_uid", "read_proc", "read_utmp", "records",
    "retire_records", "signal_proc", "spoofed_server", "start_escapees", "starttime", "udp_ports",
    "wait_for", "wait_gone",
]
