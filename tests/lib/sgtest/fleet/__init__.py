"""A fleet of Linux "hosts" on one machine, for live tests of sessionguard.mosh.

Each host is a PID + mount + UTS namespace with a small reaping init as PID 1, its own
sshd on 127.0.0.N:22, its own /etc (accounts, sudoers, host keys), /home, /root, /tmp,
/var/log, /var/tmp and /run (utmp). See tests/fleet/README.md.

    from sgtest.fleet import Fleet
    fleet = Fleet("/tmp/sessionguard-fleet/mine").up(4)
    user = fleet.create_user(hosts=fleet.hosts[:2])
    ...
    fleet.down()

By job: ``addresses`` (names and loopback addresses), ``profiles`` (interpreter and psutil per
host), ``build`` (the files a host is made of), ``hosts`` (a host seen from outside), ``sshd``
(a host's own sshd), ``inventory`` (Ansible's view), ``lifecycle`` (up, down, leftovers),
``mounts`` (mounts of the fleet's files), ``fleet`` (the whole), ``hostinit`` (PID 1 of a host)
and ``cli`` (``tests/fleet/fleet``).
"""

from .addresses import address_of, host_name
from .fleet import Fleet, fleet_of, purge_stale_fleets
from .hosts import NAMESPACES, FleetHost
from .lifecycle import DEFAULT_STATE_DIR, STATE_ROOT, new_state_dir
from .profiles import PROFILE_BY_NAME, PROFILES, Profile
from .sshd import HostSshd

__all__ = [
    "DEFAULT_STATE_DIR", "Fleet", "FleetHost", "HostSshd", "NAMESPACES", "PROFILES", "PROFILE_BY_NAME", "Profile",
    "STATE_ROOT", "address_of", "fleet_of", "host_name", "new_state_dir", "purge_stale_fleets",
]
