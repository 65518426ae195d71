"""Templates as code: the awx.awx playbook, the notification it saves, the wrapper project, the execution environment."""

from __future__ import annotations

import datetime
import json
import os
import subprocess

import pytest
import yaml
from jinja2 import ChainableUndefined, StrictUndefined, sandbox
from jinja2.exceptions import UndefinedError

from sgtest import ansible
from sgtest.interpreters import REPO

AWX_DIR = os.path.join(REPO, 'extensions', 'awx')
CONFIGURE = os.path.join(AWX_DIR, 'configure_controller.yml')


def awx_collections():
    return subprocess.check_output(['bash', os.path.join(REPO, 'tests', 'tools', 'awx-collection-path.sh')],
                                   text=True).strip()


def syntax_check(playbook, collections, cwd):
    argv = [ansible.venv_bin('ansible-playbook'), '--syntax-check', '-i', 'localhost,', playbook]
    return subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=300, check=False,
                          env=ansible.ansible_env({'ANSIBLE_COLLECTIONS_PATH': collections}))


def test_the_configuration_playbook_passes_the_syntax_check_with_awx_awx(tmp_path):
    both = awx_collections() + os.pathsep + ansible.collections_path()
    cp = syntax_check(CONFIGURE, both, str(tmp_path))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    # Without awx.awx the same check fails: the check resolves the modules.
    cp = syntax_check(CONFIGURE, ansible.collections_path(), str(tmp_path))
    assert cp.returncode != 0 and 'awx.awx' in cp.stdout + cp.stderr


def test_every_template_has_its_survey_and_playbook():
    with open(CONFIGURE) as f:
        play = yaml.safe_load(f)[0]
    templates = play['vars']['sessionguard_awx_templates']
    assert [t['name'] for t in templates] == ['Revoke user access', 'Restore user access', 'Fleet session audit',
                                              'Reconcile with the directory']
    for t in templates:
        assert os.path.exists(os.path.join(AWX_DIR, 'surveys', t['survey'])), t
        assert os.path.exists(os.path.join(AWX_DIR, 'project', t['playbook'])), t
    scheduled = [t['awx.awx.schedule']['unified_job_template'] for t in play['tasks'] if 'awx.awx.schedule' in t]
    assert scheduled == ['Fleet session audit', 'Reconcile with the directory']


@pytest.mark.parametrize('playbook', sorted(p for p in os.listdir(os.path.join(AWX_DIR, 'project')) if p.endswith('.yml')))
def test_the_wrapper_project_playbooks_import_the_collection(playbook, tmp_path):
    path = os.path.join(AWX_DIR, 'project', playbook)
    cp = syntax_check(path, ansible.collections_path(), str(tmp_path))
    assert cp.returncode == 0, cp.stdout + cp.stderr
    with open(path) as f:
        assert yaml.safe_load(f) == [{'name': 'Run sessionguard.mosh.%s' % playbook[:-4],
                                      'ansible.builtin.import_playbook': 'sessionguard.mosh.%s' % playbook[:-4]}]
    with open(os.path.join(AWX_DIR, 'project', 'collections', 'requirements.yml')) as f:
        assert yaml.safe_load(f)['collections'][0]['name'] == 'sessionguard.mosh'


# --- The notification: AWX's save-time check and run-time rendering, restated --------------------------------------
# ansible/awx @ e21dd0a, awx/api/serializers.py NotificationTemplateSerializer._validate_messages: every message is
# rendered in an ImmutableSandboxedEnvironment whose undefined (DescriptiveUndefined) fails on any use, against
# awx/main/models/notifications.py JobNotificationMixin.context_stub() (artifacts == {}); a webhook body likewise.
# At run time (notifications.py build_notification_message) the sandbox uses ChainableUndefined and the job's context.

class DescriptiveUndefined(StrictUndefined):
    __repr__ = __str__ = StrictUndefined._fail_with_undefined_error

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._undefined_hint = self._undefined_name


def context_stub():
    """The parts of JobNotificationMixin.context_stub() a message may use (the job's fields, url, names)."""
    job = {'allow_simultaneous': False, 'artifacts': {}, 'controller_node': 'foo_controller',
           'created': datetime.datetime(2018, 11, 13, 6, 4, 0, 0, tzinfo=datetime.timezone.utc),
           'description': 'Sample job description', 'diff_mode': False, 'elapsed': 0.403018,
           'execution_node': 'awx', 'failed': False, 'finished': False, 'force_handlers': False, 'forks': 0,
           'host_status_counts': {'skipped': 1, 'ok': 5, 'changed': 3, 'failures': 0, 'dark': 0, 'failed': False,
                                  'processed': 0, 'rescued': 0},
           'id': 42, 'job_explanation': 'Sample job explanation', 'job_slice_count': 1, 'job_slice_number': 0,
           'job_tags': '', 'job_type': 'run', 'launch_type': 'workflow', 'limit': 'bar_limit',
           'name': 'Stub JobTemplate', 'playbook': 'ping.yml', 'scm_branch': '', 'scm_revision': '', 'skip_tags': '',
           'start_at_task': '', 'started': '2019-07-29T17:38:14.137461Z', 'status': 'running', 'summary_fields': {},
           'timeout': 0, 'type': 'job', 'url': '/api/v2/jobs/13/', 'use_fact_cache': False, 'verbosity': 0}
    return {'job': job, 'job_friendly_name': 'Job', 'url': 'https://platformhost/#/jobs/playbook/1010',
            'approval_status': 'approved', 'approval_node_name': 'Approve Me',
            'workflow_url': 'https://platformhost/#/jobs/workflow/1010', 'job_metadata': '{}'}


def save_time_error(text):
    env = sandbox.ImmutableSandboxedEnvironment(undefined=DescriptiveUndefined)
    try:
        env.from_string(text).render(context_stub())
    except UndefinedError as exc:
        return "Field '{}' unavailable".format(exc.message)
    return None


def run_time(text, context):
    return sandbox.ImmutableSandboxedEnvironment(undefined=ChainableUndefined).from_string(text).render(context)


def error_messages():
    with open(CONFIGURE) as f:
        play = yaml.safe_load(f)[0]
    task = next(t for t in play['tasks'] if 'awx.awx.notification_template' in t)['awx.awx.notification_template']
    error = task['messages']['error']
    # What Ansible sends AWX: the raw markers keep the play's own templating off AWX's placeholders.
    message = error['message'].replace('{% raw %}', '').replace('{% endraw %}', '')
    with open(os.path.join(AWX_DIR, 'notification_body.json.j2')) as f:
        body = f.read()
    return message, body


def test_the_notification_passes_awx_save_time_check():
    message, body = error_messages()
    assert save_time_error(message) is None
    assert save_time_error(body) is None
    assert isinstance(json.loads(run_time(body, context_stub())), dict)
    # What the check is there to catch: a key of the empty artifacts read directly.
    assert save_time_error('{{ job.artifacts.sessionguard_summary.not_confirmed }}') == \
        "Field 'sessionguard_summary' unavailable"


@pytest.mark.parametrize('key', ['sessionguard_summary', 'sessionguard_summary_77'])
def test_the_notification_names_the_unconfirmed_hosts_of_a_failed_job(key):
    body = error_messages()[1]
    context = context_stub()
    context['job'].update({'id': 77, 'status': 'failed', 'host_status_counts': {'changed': 3, 'failures': 1}})
    context['job']['artifacts'] = {key: {'not_confirmed': ['sghost04'], 'unreachable': ['sghost04'],
                                         'users': ['bob'], 'all_confirmed': False}}
    rendered = json.loads(run_time(body, context))
    assert rendered['text'] == 'Job 77 (Stub JobTemplate) failed: not confirmed on sghost04'
    assert rendered['summary']['unreachable'] == ['sghost04']
    assert rendered['host_status_counts'] == {'changed': 3, 'failures': 1}


# --- Execution environment ------------------------------------------------------------------------------------------

def test_ansible_builder_creates_a_build_context(tmp_path):
    ctx = tmp_path / 'context'
    cp = subprocess.run([ansible.venv_bin('ansible-builder'), 'create', '-f',
                         os.path.join(AWX_DIR, 'execution-environment.yml'), '-c', str(ctx)],
                        capture_output=True, text=True, cwd=str(tmp_path), timeout=300, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert (ctx / 'Dockerfile').exists()
    with open(ctx / '_build' / 'requirements.yml') as f:
        assert yaml.safe_load(f)['collections'] == [{'name': 'sessionguard.mosh', 'version': '>=1.0.0'}]
    assert 'ansible-core>=2.19,<2.20' in (ctx / 'Dockerfile').read_text()


def test_the_collection_declares_what_runs_beside_ansible(tmp_path):
    """ansible-builder reads meta/execution-environment.yml: PyJWT for the SSF source and the SSH client; not psutil,
    which the modules use on the managed nodes."""
    cp = subprocess.run([ansible.venv_bin('ansible-builder'), 'introspect', '--sanitize', ansible.collections_path()],
                        capture_output=True, text=True, cwd=str(tmp_path), timeout=300, check=False)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    data = yaml.safe_load(cp.stdout.split('---', 1)[1])
    assert data['python'] == ['PyJWT[crypto]>=2.8  # from collection sessionguard.mosh']
    assert data['system'] == ['openssh-clients [platform:rpm]  # from collection sessionguard.mosh',
                              'openssh-client [platform:dpkg]  # from collection sessionguard.mosh']
