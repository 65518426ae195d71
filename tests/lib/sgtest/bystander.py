"""A second user with a live mosh session and a nohup job that tests must not touch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Tuple

from . import procfs
from .escapees import Escapee, start_escapees
from .waiting import wait_for

if TYPE_CHECKING:  # pragma: no cover
    from .mosh import MoshSession
    from .users import TestUser


class Bystander:
    """Records every live process of its user once setup has settled.

    :meth:`assert_untouched` fails if any recorded process is gone or was
    replaced (start time differs), or if the mosh client no longer runs.
    """

    def __init__(self, user: "TestUser", session: "MoshSession", job: Escapee) -> None:
        self.user = user
        self.session = session
        self.job = job
        self.recorded: Dict[Tuple[int, int], procfs.Proc] = {}

    def record(self, timeout: float = 15.0) -> None:
        # Wait until the ssh login that bootstrapped mosh has gone (only the daemon,
        # the shell and the job remain), so nothing transient is recorded.
        def _settled():
            procs = self.user.processes()
            return procs if not any(p.comm.startswith("sshd") for p in procs) else None

        procs = wait_for(_settled, timeout, lambda: "bystander's ssh bootstrap to finish: "
                         + "; ".join(str(p) for p in self.user.processes()))
        self.recorded = {p.key(): p for p in procs}
        must = {self.session.server.key(), self.session.shell.key(), self.job.proc.key()}
        missing = must - set(self.recorded)
        assert not missing, f"bystander processes not recorded: {missing}"

    @property
    def pids(self) -> List[int]:
        return sorted(p.pid for p in self.recorded.values())

    def problems(self) -> List[str]:
        out = [f"bystander process gone or replaced: {p}" for p in self.recorded.values() if not p.alive()]
        if not self.session.client_running():
            out.append(f"bystander mosh client not running (exit status "
                       f"{self.session.client_exit_status()}); screen:\n{self.session.term._safe_screen()}")
        return out

    def assert_untouched(self) -> None:
        problems = self.problems()
        assert not problems, "\n".join(problems)

    def __repr__(self) -> str:
        return f"<Bystander {self.user.name} server={self.session.server_pid} job={self.job.pid}>"


def make_bystander(user: "TestUser", session: "MoshSession") -> Bystander:
    job = start_escapees(session, ["nohup"], tag="sgby")["nohup"]
    b = Bystander(user, session, job)
    b.record()
    return b
