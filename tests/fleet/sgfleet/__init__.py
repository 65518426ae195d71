"""sgfleet: a fleet of Linux "hosts" on one machine, for live tests of sessionguard.mosh.

Each host is a PID + mount + UTS namespace with a small reaping init as PID 1, its own
sshd on 127.0.0.N:22, its own /etc (accounts, sudoers, host keys), /home, /root, /tmp,
/var/log, /var/tmp and /run (utmp). See tests/fleet/README.md.

    from sgfleet import Fleet
    fleet = Fleet("/tmp/sessionguard-fleet/mine").up(4)
    user = fleet.create_user(hosts=fleet.hosts[:2])
    ...
    fleet.down()
"""

import os
import sys

_LIB = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "lib")
if _LIB not in sys.path:
    sys.path.insert(0, _LIB)

# pylint: disable=wrong-import-position
from .fleet import (DEFAULT_STATE_DIR, PROFILES, STATE_ROOT, Fleet, FleetError, FleetHost,  # noqa: E402
                    HostSshd, Profile, address_of, host_name)
from .scope import FleetScope  # noqa: E402
from .users import FleetUser  # noqa: E402

__all__ = [
    "DEFAULT_STATE_DIR", "Fleet", "FleetError", "FleetHost", "FleetScope", "FleetUser", "HostSshd",
    "PROFILES", "Profile", "STATE_ROOT", "address_of", "host_name",
]
