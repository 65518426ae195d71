"""A syslog daemon per fleet host, writing to the host's own /var/log.

This machine runs no syslog daemon, and programs log through the fixed path ``/dev/log``. /dev is the machine's
in every host, so ``/dev/log`` is made a symbolic link to ``/run/sgfleet/dev-log``: /run is each host's own tmpfs,
where the host's ``rsyslogd`` (started by hostinit) listens. On the machine itself the link leads nowhere, as
/dev/log did before (a program's syslog() there is dropped, as it was). Standard library only.
"""

from __future__ import annotations

import os
from typing import List

from ..host import HarnessError

RSYSLOGD = "/usr/sbin/rsyslogd"
SOCKET = "/run/sgfleet/dev-log"
DEV_LOG = "/dev/log"
AUTH_LOG = "/var/log/auth.log"    # on the host: HOSTDIR/var-log/auth.log from the machine

CONFIG = f"""# sessionguard fleet host: /dev/log -> {SOCKET} (the host's own /run); files in the host's /var/log
module(load="imuxsock" SysSock.Name="{SOCKET}" SysSock.Unlink="on")
$FileCreateMode 0640
auth,authpriv.*                 {AUTH_LOG}
*.*;auth,authpriv.none          /var/log/syslog
"""


def ensure_dev_log() -> None:
    """``/dev/log`` as the link to the hosts' sockets (created once; an existing /dev/log is left alone)."""
    if os.path.islink(DEV_LOG) and os.readlink(DEV_LOG) == SOCKET:
        return
    if os.path.lexists(DEV_LOG):
        raise HarnessError(f"{DEV_LOG} exists and is not the fleet's link to {SOCKET}: a syslog daemon runs on this "
                           "machine; the fleet hosts could not have their own")
    os.symlink(SOCKET, DEV_LOG)


def syslogd_argv(hostdir: str) -> List[str]:
    """Write the host's rsyslog configuration; the command hostinit starts inside the host."""
    if not os.access(RSYSLOGD, os.X_OK):
        raise HarnessError(f"{RSYSLOGD} missing: run tests/bootstrap.sh (it installs rsyslog)")
    conf = os.path.join(hostdir, "rsyslog.conf")
    with open(conf, "w") as fh:
        fh.write(CONFIG)
    return [RSYSLOGD, "-n", "-f", conf, "-i", "/run/rsyslogd.pid"]


def auth_log(hostdir: str) -> str:
    """The host's auth.log, as the machine sees it."""
    return os.path.join(hostdir, "var-log", "auth.log")


__all__ = ["AUTH_LOG", "auth_log", "ensure_dev_log", "syslogd_argv"]
