# Copyright (c) sessionguard.mosh contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

# Note that this doc fragment is **PRIVATE** to the collection. It can have breaking changes at any time.

from __future__ import annotations


class ModuleDocFragment(object):

    # What every module of the collection needs on the managed node.
    DOCUMENTATION = r"""
options: {}
requirements:
  - Linux with C(/proc) on the managed node
  - Python 3.9 or newer on the managed node
  - C(psutil) is optional; without it the modules read C(/proc) directly with the same results
  - Root on the managed node, through C(become=true), to see and signal other users' processes
notes:
  - Processes are identified by what they are, not by name. A mosh server is a process holding a UDP socket
    and a C(/dev/ptmx) pty master whose executable is (or was) a mosh-server binary, so renamed, copied,
    deleted and self-built servers are found.
  - The kernel audit session id (C(/proc/PID/sessionid), set by C(pam_loginuid) at SSH login) and the logind
    C(session-N.scope) tie every process of a login together, including C(nohup), C(setsid), double-forked
    and C(tmux) escapees. Where neither is set, the process tree and pty session are used.
  - Client addresses of mosh sessions come from utmp, which mosh-server writes and the user can influence.
    They are hints, reported together with their source.
"""
