"""Run the collection through real Ansible: ansible-playbook and ad hoc ``ansible``, results as Python data.

One runner for every test: :func:`playbook` and :func:`adhoc` take an inventory (the fleet's, or
``localhost,``) and return an :class:`AnsibleRun` with each host's result. :class:`Target` runs one
module task on this machine with a chosen interpreter (the local host is a fleet of one).

ansible-core has no JSON stdout callback (that is ``ansible.posix.json``); the ``tree`` callback
writes each host's last result as JSON to ``TREE/<host>``, which is how results are read here.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence, Union

from .interpreters import REPO, pyenv_python, venv_bin, venv_python

_collections_path: Optional[str] = None


def collections_path() -> str:
    """ANSIBLE_COLLECTIONS_PATH as set, else the one ``tests/tools/collection-path.sh`` makes."""
    global _collections_path  # pylint: disable=global-statement
    if "ANSIBLE_COLLECTIONS_PATH" in os.environ:
        return os.environ["ANSIBLE_COLLECTIONS_PATH"]
    if _collections_path is None:
        _collections_path = subprocess.check_output(
            ["bash", os.path.join(REPO, "tests", "tools", "collection-path.sh")], text=True).strip()
    return _collections_path


def ansible_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """This process's environment with the collection on the collections path and the output
    plain and predictable (no colour, no retry files, no host-key prompts, the default stdout
    callback whatever the caller's environment says)."""
    env = dict(os.environ)
    env.pop("ANSIBLE_STDOUT_CALLBACK", None)
    env.update({
        "ANSIBLE_COLLECTIONS_PATH": collections_path(),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_LOCALHOST_WARNING": "False",
        "ANSIBLE_FORKS": env.get("ANSIBLE_FORKS", "20"),
    })
    env.update(extra or {})
    return env


@dataclass
class AnsibleRun:
    """One ansible or ansible-playbook run: exit code, output (text, or bytes when asked for raw
    output) and ``hosts``: each host's result of the last task that ran on it."""

    argv: Sequence[str]
    rc: int
    stdout: Union[str, bytes]
    stderr: Union[str, bytes]
    hosts: Dict[str, dict] = field(default_factory=dict)

    def ok(self, host: str) -> bool:
        r = self.hosts.get(host)
        return r is not None and not r.get("failed") and not r.get("unreachable")

    def describe(self) -> str:
        out, err = (x if isinstance(x, str) else x.decode("utf-8", "backslashreplace") for x in (self.stdout, self.stderr))
        return f"{' '.join(self.argv)}\nrc={self.rc}\nstdout:\n{out[-4000:]}\nstderr:\n{err[-2000:]}"


def _run(argv: Sequence[str], tmp: str, timeout: float, env: Optional[Mapping[str, str]], raw: bool,
         prefix: Sequence[str] = ()) -> AnsibleRun:
    tree = os.path.join(tmp, "tree")
    full = ansible_env({"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.tree",
                        "ANSIBLE_CALLBACK_TREE_DIR": tree, **(env or {})})
    cp = subprocess.run(list(prefix) + list(argv), capture_output=True, text=not raw, timeout=timeout,
                        check=False, cwd=tmp, env=full)
    hosts: Dict[str, dict] = {}
    for name in (os.listdir(tree) if os.path.isdir(tree) else []):
        with open(os.path.join(tree, name)) as fh:
            try:
                hosts[name] = json.load(fh)
            except ValueError:
                continue
    return AnsibleRun(argv, cp.returncode, cp.stdout, cp.stderr, hosts)


def playbook(inventory: str, plays: Sequence[dict], extra_vars: Optional[Mapping[str, object]] = None,
             timeout: float = 900.0, env: Optional[Mapping[str, str]] = None, args: Sequence[str] = (),
             prefix: Sequence[str] = (), raw: bool = False) -> AnsibleRun:
    """``ansible-playbook -i INVENTORY`` of ``plays`` (a list of play dicts). ``args`` go after the
    playbook, ``prefix`` before the command (e.g. ``prlimit``); ``raw`` keeps the output as bytes."""
    with tempfile.TemporaryDirectory(prefix="sg-play-") as tmp:
        book = os.path.join(tmp, "play.yml")
        with open(book, "w") as fh:
            json.dump(list(plays), fh)
        argv = [venv_bin("ansible-playbook"), "-i", inventory, book] + list(args)
        if extra_vars:
            argv += ["-e", json.dumps(dict(extra_vars))]
        return _run(argv, tmp, timeout, env, raw, prefix)


def adhoc(inventory: str, pattern: str, module: str, args: Optional[str] = None,
          extra_vars: Optional[Mapping[str, object]] = None, timeout: float = 600.0,
          env: Optional[Mapping[str, str]] = None) -> AnsibleRun:
    """``ansible -i INVENTORY PATTERN -m MODULE [-a ARGS] [-e JSON]``."""
    argv = [venv_bin("ansible"), "-i", inventory, pattern, "-m", module]
    if args is not None:
        argv += ["-a", args]
    if extra_vars:
        argv += ["-e", json.dumps(dict(extra_vars))]
    with tempfile.TemporaryDirectory(prefix="sg-adhoc-") as tmp:
        return _run(argv, tmp, timeout, env, raw=False)


# --------------------------------------------------------------------------- modules on this machine

# A package named psutil that refuses to import: puts the module on its /proc reader.
BLOCKER = os.path.join(REPO, "tests", "lib", "no_psutil")

# Target interpreters the live suite runs the modules on. ``reader`` is what the module must report.
TARGETS = {
    "py311-psutil": {"python": venv_python, "env": {}, "reader": "psutil"},
    "py311-procfs": {"python": venv_python, "env": {"PYTHONPATH": BLOCKER}, "reader": "procfs"},
    "py39": {"python": lambda: pyenv_python("3.9"), "env": {}, "reader": "procfs"},
    "py313": {"python": lambda: pyenv_python("3.13"), "env": {}, "reader": "psutil"},
}


class Target:
    """Where and how modules run: this machine (local connection), one interpreter, an environment."""

    def __init__(self, name: str) -> None:
        spec = TARGETS[name]
        self.name = name
        self.python: str = spec["python"]()  # type: ignore[operator]
        self.env: Dict[str, str] = dict(spec["env"])  # type: ignore[call-overload]
        self.reader: str = spec["reader"]  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Target({self.name})"

    def _play(self, name: str, tasks: Sequence[dict], timeout: float, env: Optional[Mapping[str, str]] = None,
              prefix: Sequence[str] = (), raw: bool = False) -> AnsibleRun:
        play = {"name": name, "hosts": "all", "gather_facts": False, "environment": self.env, "tasks": list(tasks)}
        return playbook("localhost,", [play], timeout=timeout, env=env, prefix=prefix, raw=raw,
                        args=["-c", "local", "-e", f"ansible_python_interpreter={self.python}"])

    def run(self, module: str, args: Optional[dict] = None, check: bool = False, timeout: float = 300,
            nofile: Optional[int] = None) -> dict:
        """Run ``sessionguard.mosh.<module>`` once; returns the result dict (``failed`` set on failure).

        ``nofile``: run ansible-playbook under ``prlimit --nofile=N:N``, so the module process inherits
        soft and hard RLIMIT_NOFILE ``N`` (ansible-core leaves the limit alone by default).
        """
        task = {"name": "Module under test", f"sessionguard.mosh.{module}": args or {}, "check_mode": bool(check)}
        limit = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] if nofile else []
        run = self._play(f"Run {module}", [task], timeout, prefix=limit)
        if "localhost" not in run.hosts:
            raise AssertionError(f"ansible-playbook produced no result\n{run.describe()}")
        result = run.hosts["localhost"]
        # The tree callback drops the 'failed' flag; the play's exit status carries it.
        result.setdefault("failed", run.rc != 0)
        result["_rc"] = run.rc
        result["_stdout"] = run.stdout
        return result

    def playbook(self, tasks: Sequence[dict], env: Optional[Mapping[str, str]] = None,
                 timeout: float = 300) -> AnsibleRun:
        """Run ``tasks`` as one play with the default stdout callback (what an operator's terminal shows).

        ``env`` adds to the environment (e.g. ``ANSIBLE_CALLBACK_RESULT_FORMAT=yaml``). Returns the run with
        ``stdout`` and ``stderr`` as raw bytes, so a test can check every byte ansible-playbook printed.
        """
        return self._play("Playbook", tasks, timeout, env=env, raw=True)
