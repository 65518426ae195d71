"""Run the collection's modules through real ansible-playbook runs, on chosen target interpreters.

Each run writes a one-task playbook, runs ``ansible-playbook`` with the collection on
ANSIBLE_COLLECTIONS_PATH and the ``tree`` callback, and returns the task's result dict.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYENV_ROOT = Path(os.environ.get('PYENV_ROOT', '/root/.pyenv'))


def _venv_python():
    venv = REPO / '.venv' / 'bin' / 'python'
    return str(venv) if venv.exists() else sys.executable


def _bin(name):
    candidate = Path(_venv_python()).parent / name
    return str(candidate) if candidate.exists() else name


def collections_path():
    return subprocess.check_output(['bash', str(REPO / 'tests' / 'tools' / 'collection-path.sh')], text=True).strip()


def _pyenv_python(version):
    matches = sorted(PYENV_ROOT.glob('versions/%s.*/bin/python%s' % (version, version)))
    if not matches:
        raise RuntimeError('pyenv Python %s is missing under %s; tests/bootstrap.sh installs the test setup' % (version, PYENV_ROOT))
    return str(matches[-1])


# A package named psutil that refuses to import: puts the module on its /proc reader.
BLOCKER = REPO / 'tests' / 'lib' / 'no_psutil'

# Target interpreters the live suite runs the modules on. ``reader`` is what the module must report.
TARGETS = {
    'py311-psutil': {'python': _venv_python, 'env': {}, 'reader': 'psutil'},
    'py311-procfs': {'python': _venv_python, 'env': {'PYTHONPATH': str(BLOCKER)}, 'reader': 'procfs'},
    'py39': {'python': lambda: _pyenv_python('3.9'), 'env': {}, 'reader': 'procfs'},
    'py313': {'python': lambda: _pyenv_python('3.13'), 'env': {}, 'reader': 'psutil'},
}


class Target(object):
    """Where and how modules run: local connection, one interpreter, an environment."""

    def __init__(self, name):
        spec = TARGETS[name]
        self.name = name
        self.python = spec['python']()
        self.env = dict(spec['env'])
        self.reader = spec['reader']

    def __repr__(self):
        return 'Target(%s)' % self.name

    def run(self, module, args=None, check=False, timeout=300, nofile=None):
        """Run ``sessionguard.mosh.<module>`` once; returns the result dict (``failed`` set on failure).

        ``nofile``: run ansible-playbook under ``prlimit --nofile=N:N``, so the module process inherits
        soft and hard RLIMIT_NOFILE ``N`` (ansible-core leaves the limit alone by default).
        """
        with tempfile.TemporaryDirectory(prefix='sg-run-') as tmp:
            play = [{
                'name': 'Run %s' % module,
                'hosts': 'all',
                'gather_facts': False,
                'environment': self.env,
                'tasks': [{
                    'name': 'Module under test',
                    'sessionguard.mosh.%s' % module: args or {},
                    'check_mode': bool(check),
                }],
            }]
            book = Path(tmp) / 'play.yml'
            book.write_text(json.dumps(play))
            tree = Path(tmp) / 'tree'
            env = dict(os.environ)
            env.update({
                'ANSIBLE_COLLECTIONS_PATH': collections_path(),
                'ANSIBLE_CALLBACKS_ENABLED': 'ansible.builtin.tree',
                'ANSIBLE_CALLBACK_TREE_DIR': str(tree),
                'ANSIBLE_LOAD_CALLBACK_PLUGINS': '1',
                'ANSIBLE_NOCOLOR': '1',
                'ANSIBLE_HOST_KEY_CHECKING': 'False',
                'ANSIBLE_LOCALHOST_WARNING': 'False',
                'ANSIBLE_RETRY_FILES_ENABLED': 'False',
            })
            limit = ['prlimit', '--nofile=%d:%d' % (nofile, nofile), '--'] if nofile else []
            proc = subprocess.run(
                limit + [_bin('ansible-playbook'), '-i', 'localhost,', '-c', 'local', str(book),
                         '-e', 'ansible_python_interpreter=%s' % self.python],
                env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp, check=False)
            out = tree / 'localhost'
            if not out.exists():
                raise AssertionError('ansible-playbook produced no result (rc=%d)\n%s\n%s' % (proc.returncode, proc.stdout, proc.stderr))
            result = json.loads(out.read_text())
            # The tree callback drops the 'failed' flag; the play's exit status carries it.
            result.setdefault('failed', proc.returncode != 0)
            result['_rc'] = proc.returncode
            result['_stdout'] = proc.stdout
            return result

    def playbook(self, tasks, env=None, timeout=300):
        """Run ``tasks`` as one play with the default stdout callback (what an operator's terminal shows).

        ``env`` adds to the environment (e.g. ``ANSIBLE_CALLBACK_RESULT_FORMAT=yaml``). Returns the
        ``subprocess.CompletedProcess`` with ``stdout`` and ``stderr`` as raw bytes, so a test can check
        every byte ansible-playbook printed.
        """
        with tempfile.TemporaryDirectory(prefix='sg-play-') as tmp:
            play = [{'name': 'Playbook', 'hosts': 'all', 'gather_facts': False, 'environment': self.env,
                     'tasks': tasks}]
            book = Path(tmp) / 'play.yml'
            book.write_text(json.dumps(play))
            full = dict(os.environ)
            full.pop('ANSIBLE_STDOUT_CALLBACK', None)
            full.update({
                'ANSIBLE_COLLECTIONS_PATH': collections_path(),
                'ANSIBLE_NOCOLOR': '1',
                'ANSIBLE_HOST_KEY_CHECKING': 'False',
                'ANSIBLE_LOCALHOST_WARNING': 'False',
                'ANSIBLE_RETRY_FILES_ENABLED': 'False',
            })
            full.update(env or {})
            return subprocess.run(
                [_bin('ansible-playbook'), '-i', 'localhost,', '-c', 'local', str(book),
                 '-e', 'ansible_python_interpreter=%s' % self.python],
                env=full, capture_output=True, timeout=timeout, cwd=tmp, check=False)
