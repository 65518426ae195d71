"""Names and loopback addresses of fleet hosts: host K (1-based) is ``sghostKK`` on 127.0.0.(K+1):22.

Only 127.0.0.0/8 is used: the hosts share the machine's network namespace and are told apart by
their address.
"""

from __future__ import annotations

from typing import Set

from ..host import HarnessError
from ..sshd import port_free

MAX_HOSTS = 250  # 127.0.0.2 .. 127.0.0.251


def host_name(index: int) -> str:
    """sghost01, sghost02, ... (1-based)."""
    return f"sghost{index:02d}"


def address_of(index: int) -> str:
    """Host 1 -> 127.0.0.2, host 20 -> 127.0.0.21."""
    if not 1 <= index <= MAX_HOSTS:
        raise ValueError(f"host index {index} outside 1..{MAX_HOSTS}")
    return f"127.0.0.{index + 1}"


def address_free(index: int) -> bool:
    """Nothing listens on host ``index``'s address, port 22."""
    return port_free(address_of(index), 22)


def free_block(n: int, used: Set[int]) -> int:
    """The first index of the lowest block of ``n`` hosts whose indexes are not in ``used`` (recorded by
    other fleets) and whose addresses are free."""
    for first in range(1, MAX_HOSTS - n + 2):
        block = range(first, first + n)
        if not used.intersection(block) and all(address_free(i) for i in block):
            return first
    raise HarnessError(f"no block of {n} free loopback addresses for a fleet")
