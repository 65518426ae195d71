"""Run Ansible against the fleet: ad-hoc modules and playbooks, results as Python data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Dict, Mapping, Optional, Sequence

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def _bin(name: str) -> str:
    venv = os.path.join(REPO, ".venv", "bin", name)
    if os.path.exists(venv):
        return venv
    return os.path.join(os.path.dirname(sys.executable), name)


def ansible_env(extra: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    env = dict(os.environ)
    if "ANSIBLE_COLLECTIONS_PATH" not in env:
        env["ANSIBLE_COLLECTIONS_PATH"] = subprocess.check_output(
            ["bash", os.path.join(REPO, "tests", "tools", "collection-path.sh")], text=True).strip()
    env.update({
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_FORKS": env.get("ANSIBLE_FORKS", "20"),
    })
    env.update(extra or {})
    return env


@dataclass
class AnsibleRun:
    argv: Sequence[str]
    rc: int
    stdout: str
    stderr: str
    hosts: Dict[str, dict] = field(default_factory=dict)  # host -> result of the (last) task

    def ok(self, host: str) -> bool:
        r = self.hosts.get(host)
        return r is not None and not r.get("failed") and not r.get("unreachable")

    def describe(self) -> str:
        return f"{' '.join(self.argv)}\nrc={self.rc}\nstdout:\n{self.stdout[-4000:]}\nstderr:\n{self.stderr[-2000:]}"


def _read_tree(tree: str) -> Dict[str, dict]:
    hosts: Dict[str, dict] = {}
    if os.path.isdir(tree):
        for name in os.listdir(tree):
            with open(os.path.join(tree, name)) as fh:
                try:
                    hosts[name] = json.load(fh)
                except ValueError:
                    continue
    return hosts


def _tree_env(tree: str, extra: Optional[Mapping[str, str]]) -> Dict[str, str]:
    # ansible-core has no json stdout callback (that is ansible.posix.json); the tree callback
    # writes each host's last result as JSON to TREE/<host>.
    return ansible_env({"ANSIBLE_LOAD_CALLBACK_PLUGINS": "1", "ANSIBLE_CALLBACKS_ENABLED": "ansible.builtin.tree",
                        "ANSIBLE_CALLBACK_TREE_DIR": tree, **(extra or {})})


def adhoc(inventory: str, pattern: str, module: str, args: Optional[str] = None,
          extra_vars: Optional[Mapping[str, object]] = None, timeout: float = 600.0,
          env: Optional[Mapping[str, str]] = None) -> AnsibleRun:
    """``ansible -i INVENTORY PATTERN -m MODULE [-a ARGS] [-e JSON]``; ``hosts`` maps each host
    to its result (the tree callback's JSON; ``unreachable``/``failed`` set where they apply)."""
    argv = [_bin("ansible"), "-i", inventory, pattern, "-m", module]
    if args is not None:
        argv += ["-a", args]
    if extra_vars:
        argv += ["-e", json.dumps(dict(extra_vars))]
    with tempfile.TemporaryDirectory(prefix="sgfleet-adhoc-") as tmp:
        tree = os.path.join(tmp, "tree")
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=tmp,
                            env=_tree_env(tree, env))
        hosts = _read_tree(tree)
    return AnsibleRun(argv, cp.returncode, cp.stdout, cp.stderr, hosts)


def playbook(inventory: str, plays: Sequence[dict], extra_vars: Optional[Mapping[str, object]] = None,
             timeout: float = 900.0, env: Optional[Mapping[str, str]] = None) -> AnsibleRun:
    """Run ``plays`` (a list of play dicts) with ansible-playbook; ``hosts`` holds each host's
    result of the last task that ran on it (tree callback)."""
    with tempfile.TemporaryDirectory(prefix="sgfleet-play-") as tmp:
        book = os.path.join(tmp, "play.yml")
        with open(book, "w") as fh:
            json.dump(list(plays), fh)
        argv = [_bin("ansible-playbook"), "-i", inventory, book]
        if extra_vars:
            argv += ["-e", json.dumps(dict(extra_vars))]
        tree = os.path.join(tmp, "tree")
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=tmp,
                            env=_tree_env(tree, env))
        hosts = _read_tree(tree)
    return AnsibleRun(argv, cp.returncode, cp.stdout, cp.stderr, hosts)
