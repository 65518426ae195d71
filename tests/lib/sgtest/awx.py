"""Run a playbook the way AWX runs a job: an AWX-shaped private data dir handed to ansible-runner.

What AWX writes, and how, is reimplemented here from its source (ansible/awx, awx/main/tasks/jobs.py:
``RunJob.build_args``, ``build_extra_vars_file``, ``BaseTask.write_inventory_file``, ``build_env`` and the
runner parameters of ``BaseTask.run``; awx/main/utils/safe_yaml.py ``safe_dump``; awx/main/models/inventory.py
``get_script_data`` / ``get_sliced_hosts``; awx/main/models/unified_jobs.py and jobs.py ``awx_meta_vars``):

- ``env/extravars``: the job template's extra vars, then the ``awx_*`` meta variables, then the survey answers,
  every string tagged ``!unsafe`` except top-level values equal to the template's own extra vars;
- ``env/cmdline``: ``--check`` for a check job, ``-u`` the credential's user (``root`` without one), ``--become``,
  ``--forks=N``, ``-l LIMIT``, ``-v``..., joined by ``ansible_runner.utils.args2cmdline``;
- ``env/settings``: ``job_timeout``, ``suppress_ansible_output``, ``suppress_output_file``;
- ``inventory/hosts``: an executable Python script printing the inventory as JSON, enabled hosts only, sorted by
  name, a slice taking ``hosts[n-1::count]``, with ``remote_tower_id`` host vars;
- the project checked out in ``project/``, collections from its ``collections/requirements.yml`` first on
  ``ANSIBLE_COLLECTIONS_PATH``.

AWX itself needs Kubernetes or containers and is out of reach here; the job runs in this process's Python instead
of an execution environment container, which changes nothing about what ansible-playbook is given.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

import yaml

from .ansible import collections_path
from .interpreters import REPO, venv_bin

AWX_PROJECT = os.path.join(REPO, "extensions", "awx", "project")
SURVEYS = os.path.join(REPO, "extensions", "awx", "surveys")


class _UnsafeDumper(yaml.SafeDumper):
    """awx/main/utils/safe_yaml.py SafeStringDumper: every string is written as ``!unsafe``."""

    def represent_data(self, data):
        if isinstance(data, str):
            return self.represent_scalar("!unsafe", data)
        return super().represent_data(data)


def safe_dump(extra_vars: Mapping, safe_dict: Optional[Mapping] = None) -> str:
    """awx/main/utils/safe_yaml.py ``safe_dump``: top-level entries equal to the template's own extra vars are
    written plainly, everything else as ``!unsafe``."""
    safe_dict = safe_dict or {}
    out = []
    for k, v in extra_vars.items():
        dumper = _UnsafeDumper if (k not in safe_dict or safe_dict.get(k) != v) else yaml.SafeDumper
        out.append(yaml.dump_all([{k: v}], None, Dumper=dumper, default_flow_style=False))
    return "".join(out)


@dataclass
class JobTemplate:
    """The fields of an AWX job template (and launch) that change what the job runs."""

    playbook: str
    job_type: str = "run"
    forks: int = 0
    limit: str = ""
    verbosity: int = 0
    become_enabled: bool = True
    extra_vars: Dict = field(default_factory=dict)
    credential_user: str = ""
    name: str = "Revoke user access"
    timeout: int = 0


@dataclass
class Job:
    """A finished job: its runner, events and the ``set_stats`` artifact as AWX stores it (``job.artifacts``)."""

    id: int
    private_data_dir: str
    status: str
    rc: int
    events: List[dict]
    extravars_text: str
    cmdline: str

    @property
    def stats(self) -> dict:
        return next(e for e in self.events if e["event"] == "playbook_on_stats")["event_data"]

    @property
    def artifacts(self) -> dict:
        # awx/main/tasks/callback.py: job.artifacts = the playbook_on_stats event's artifact_data.
        return self.stats.get("artifact_data") or {}

    def host_status_counts(self) -> Dict[str, int]:
        """awx/main/models/events.py: each host in one bucket, the later key winning: skipped, ok, changed,
        failures, dark."""
        buckets: Dict[str, str] = {}
        for key in ("skipped", "ok", "changed", "failures", "dark"):
            for host in self.stats.get(key) or {}:
                buckets[host] = key
        counts: Dict[str, int] = {}
        for key in buckets.values():
            counts[key] = counts.get(key, 0) + 1
        return counts

    def failed_hosts(self) -> List[str]:
        """JobHostSummary.failed = dark or failures (awx/main/models/jobs.py)."""
        return sorted(set(self.stats.get("failures") or {}) | set(self.stats.get("dark") or {}))

    def events_of(self, kind: str) -> List[dict]:
        return [e for e in self.events if e["event"] == kind]

    def stdout(self) -> str:
        return "\n".join(e.get("stdout", "") for e in self.events)


def script_data(hosts: Mapping[str, dict], groups: Mapping[str, List[str]], slice_number: int = 1,
                slice_count: int = 1) -> dict:
    """awx/main/models/inventory.py get_script_data(hostvars=True, towervars=True): enabled hosts by name, sliced."""
    names = sorted(hosts)
    if slice_count > 1 and slice_number > 0:
        names = names[slice_number - 1::slice_count]
    data: dict = {"all": {"hosts": [], "children": sorted(groups)}}
    grouped = set()
    for group, members in groups.items():
        kept = [h for h in members if h in names]
        if kept:
            data[group] = {"hosts": kept}
            grouped.update(kept)
    data["all"]["hosts"] = [h for h in names if h not in grouped]
    data["_meta"] = {"hostvars": {}}
    for i, name in enumerate(names):
        hv = dict(hosts[name])
        hv.update({"remote_host_enabled": "true", "remote_host_id": i + 1,
                   "remote_tower_enabled": "true", "remote_tower_id": i + 1})
        data["_meta"]["hostvars"][name] = hv
    return data


def fleet_inventory(fleet) -> (Dict[str, dict], Dict[str, List[str]]):
    """The fleet as an AWX inventory: host variables (the user comes from the machine credential, become from the
    job template), and the ``fleet`` group."""
    with open(fleet.inventory_path) as f:
        inv = yaml.safe_load(f)
    # The key stays a host variable: the fleet's ssh arguments say IdentitiesOnly, which keeps ssh from offering the
    # agent's key that runner would load from a credential.
    drop = {"ansible_user", "ansible_become", "ansible_become_method"}
    hosts = {name: {k: v for k, v in hv.items() if k not in drop}
             for name, hv in inv["all"]["children"]["fleet"]["hosts"].items()}
    return hosts, {"fleet": sorted(hosts)}


_job_ids = iter(range(1000, 100000))


def run_job(base_dir: str, template: JobTemplate, answers: Optional[Mapping] = None, *,
            hosts: Mapping[str, dict], groups: Mapping[str, List[str]],
            slice_number: int = 1, slice_count: int = 1, workflow_job_id: Optional[int] = None,
            job_id: Optional[int] = None, project: str = AWX_PROJECT) -> Job:
    """Prepare the private data dir as AWX does for one job (one slice of a sliced job) and run it."""
    import ansible_runner  # pylint: disable=import-outside-toplevel
    from ansible_runner.utils import args2cmdline  # pylint: disable=import-outside-toplevel

    job_id = job_id if job_id is not None else next(_job_ids)
    pdd = os.path.join(base_dir, "job_%d" % job_id)
    for sub in ("env", "inventory"):
        os.makedirs(os.path.join(pdd, sub), mode=0o700)
    os.makedirs(os.path.join(pdd, "cp"), mode=0o700)
    shutil.copytree(project, os.path.join(pdd, "project"), symlinks=True)

    # build_extra_vars_file: JT extra vars, then meta vars; survey answers were merged into the job's extra vars
    # at launch (awx/main/models/mixins.py _update_unified_job_kwargs), after the template's.
    extra = dict(template.extra_vars)
    extra.update(answers or {})
    meta = {"job_id": job_id, "job_launch_type": "manual", "job_template_id": 7, "job_template_name": template.name,
            "inventory_id": 3, "inventory_name": "fleet", "user_id": 1, "user_name": "helpdesk",
            "user_email": "helpdesk@example.com", "user_first_name": "", "user_last_name": "",
            "project_revision": "0" * 40, "project_scm_branch": "main", "execution_node": "localhost"}
    if workflow_job_id is not None:
        meta.update({"workflow_job_id": workflow_job_id, "workflow_job_name": template.name,
                     "workflow_job_launch_type": "manual"})
    for prefix in ("awx", "tower"):
        extra.update({"%s_%s" % (prefix, k): v for k, v in meta.items()})
    extravars_text = safe_dump(extra, template.extra_vars)
    with open(os.path.join(pdd, "env", "extravars"), "w") as f:
        f.write(extravars_text)

    # RunJob.build_args
    args = []
    if template.job_type == "check":
        args.append("--check")
    args.extend(["-u", template.credential_user or "root"])
    if template.become_enabled:
        args.append("--become")
    if template.forks:
        args.append("--forks=%d" % min(template.forks, 200))
    if template.limit:
        args.extend(["-l", template.limit])
    if template.verbosity:
        args.append("-%s" % ("v" * min(5, template.verbosity)))
    cmdline = args2cmdline(*args)
    with open(os.path.join(pdd, "env", "cmdline"), "w") as f:
        f.write(cmdline)

    # write_inventory_file: an executable script printing the JSON.
    inv_path = os.path.join(pdd, "inventory", "hosts")
    data = script_data(hosts, groups, slice_number, slice_count)
    with open(inv_path, "w") as f:
        f.write("#! /usr/bin/env python3\n# -*- coding: utf-8 -*-\nprint(%r)\n" % json.dumps(data))
    os.chmod(inv_path, 0o700)

    with open(os.path.join(pdd, "env", "settings"), "w") as f:
        json.dump({"job_timeout": template.timeout, "suppress_ansible_output": True, "suppress_output_file": True}, f)

    # build_env: collections the project sync installed from collections/requirements.yml come first.
    env = {"JOB_ID": str(job_id), "INVENTORY_ID": "3", "PROJECT_REVISION": "0" * 40,
           "ANSIBLE_RETRY_FILES_ENABLED": "False", "MAX_EVENT_RES": "700000", "AWX_HOST": "https://awx.example.com",
           "AWX_PRIVATE_DATA_DIR": pdd, "ANSIBLE_SSH_CONTROL_PATH_DIR": os.path.join(pdd, "cp"),
           "ANSIBLE_COLLECTIONS_PATH": ":".join([collections_path(), "~/.ansible/collections",
                                                 "/usr/share/ansible/collections"]),
           "ANSIBLE_HOST_KEY_CHECKING": "False",
           # The job's home is throwaway in AWX; here the revocation log's default path lands in the job's private
           # data dir instead of the machine's root account.
           "XDG_STATE_HOME": os.path.join(pdd, "state"),
           # ansible-runner runs ansible-playbook from PATH, as the execution environment has it.
           "PATH": os.path.dirname(venv_bin("ansible-playbook")) + os.pathsep + os.environ.get("PATH", "/usr/bin:/bin")}
    params = {"ident": job_id, "private_data_dir": pdd, "playbook": template.playbook, "inventory": inv_path,
              "suppress_env_files": True, "envvars": env, "fact_cache_type": "", "quiet": True}
    runner = ansible_runner.run(**params)
    return Job(job_id, pdd, runner.status, runner.rc, list(runner.events), extravars_text, cmdline)


def run_sliced(base_dir: str, template: JobTemplate, answers: Optional[Mapping], slice_count: int, *,
               hosts: Mapping[str, dict], groups: Mapping[str, List[str]]) -> List[Job]:
    """A job template with job_slice_count > 1: a workflow job of one job per slice (awx/main/models/jobs.py
    create_unified_job with is_sliced_job), each with its own job id and the workflow's id in its meta vars."""
    workflow_id = next(_job_ids)
    return [run_job(base_dir, template, answers, hosts=hosts, groups=groups, slice_number=n, slice_count=slice_count,
                    workflow_job_id=workflow_id) for n in range(1, slice_count + 1)]


def load_survey(name: str) -> dict:
    with open(os.path.join(SURVEYS, name + ".json")) as f:
        return json.load(f)


# --- Surveys: AWX's own rules, restated ----------------------------------------------------------------------------
# ansible/awx @ e21dd0a: awx/main/constants.py SURVEY_TYPE_MAPPING; awx/api/views/__init__.py
# JobTemplateSurveySpec._validate_spec_data (what POST .../survey_spec/ accepts); awx/main/models/mixins.py
# SurveyJobTemplateMixin._survey_element_validation, _accept_or_ignore_variables and _update_unified_job_kwargs
# (what a launch accepts, and which defaults it applies). Messages are AWX's.

SURVEY_TYPE_MAPPING = {'text': str, 'textarea': str, 'password': str, 'multiplechoice': str, 'multiselect': str,
                       'integer': int, 'float': (float, int)}


def survey_spec_error(new_spec: Mapping) -> Optional[str]:
    """_validate_spec_data: None when AWX would store the spec, else its error (HTTP 400)."""
    error = None
    for fld, expect_type, label in [('name', str, 'string'), ('description', str, 'string'),
                                    ('spec', list, 'list of items')]:
        if fld not in new_spec:
            error = "Field '{}' is missing from survey spec.".format(fld)
        elif not isinstance(new_spec[fld], expect_type):
            error = "Expected {} for field '{}', received {} type.".format(label, fld, type(new_spec[fld]).__name__)
    if isinstance(new_spec.get('spec'), list) and len(new_spec['spec']) < 1:
        error = "'spec' doesn't contain any items."
    if error:
        return error
    variables = set()
    for idx, item in enumerate(new_spec['spec']):
        if not isinstance(item, dict):
            return "Survey question %s is not a json object." % idx
        for name in ['type', 'question_name', 'variable', 'required']:
            if name not in item:
                return "'{}' missing from survey question {}".format(name, idx)
            allow, label = (bool, 'boolean') if name == 'required' else (str, 'string')
            if not isinstance(item[name], allow):
                return "'{}' in survey question {} expected to be {}.".format(name, idx, label)
        if item['variable'] in variables:
            return "'variable' '%s' duplicated in survey question %s." % (item['variable'], idx)
        variables.add(item['variable'])
        qtype = item['type']
        if qtype not in SURVEY_TYPE_MAPPING:
            return "'{}' in survey question {} is not one of '{}' allowed question types.".format(
                qtype, idx, ', '.join(SURVEY_TYPE_MAPPING))
        if 'default' in item and item['default'] != '':
            if not isinstance(item['default'], SURVEY_TYPE_MAPPING[qtype]):
                label = qtype if qtype in ['integer', 'float'] else 'string'
                return "Default value {} in survey question {} expected to be {}.".format(item['default'], idx, label)
        for key in ['min', 'max']:
            if key in item and item[key] is not None and not isinstance(item[key], int):
                return "The {} limit in survey question {} expected to be integer.".format(key, idx)
        if qtype in ('multiselect', 'multiplechoice'):
            if 'choices' not in item:
                return "Survey question {} of type {} must specify choices.".format(idx, qtype)
            choices = item['choices']
            if isinstance(choices, str):
                choices = '\n'.join(c for c in choices.splitlines() if c.strip() != '')
            if 'default' in item:
                if isinstance(item['default'], str):
                    defaults = '\n'.join(c for c in item['default'].splitlines() if c.strip() != '').splitlines()
                else:
                    defaults = item['default']
                if qtype == 'multiplechoice' and len(defaults) > 1:
                    return "Multiple Choice (Single Select) can only have one default value."
                if any(d not in choices for d in defaults):
                    return "Default choice must be answered from the choices listed."
    return None


def _choices(element: Mapping) -> list:
    choices = element['choices']
    if isinstance(choices, str):
        choices = [c for c in choices.splitlines() if c.strip() != '']
    return list(choices)


def survey_element_errors(element: Mapping, data: Mapping, validate_required: bool = True) -> List[str]:
    """_survey_element_validation (passwords' $encrypted$ placeholder left out: the surveys here have none)."""
    var = element['variable']
    errors: List[str] = []
    if var not in data and element['required']:
        if validate_required:
            errors.append("'%s' value missing" % var)
        return errors
    if var not in data:
        return errors
    value = data[var]
    qtype = element['type']

    def has(k):
        return k in element and element[k] not in ["", None]

    if qtype in ("textarea", "text", "password"):
        if not isinstance(value, str):
            return ["Value %s for '%s' expected to be a string." % (value, var)]
        if has('min') and len(value) < int(element['min']):
            errors.append("'%s' value %s is too small (length is %s must be at least %s)."
                          % (var, value, len(value), element['min']))
        if has('max') and len(value) > int(element['max']):
            errors.append("'%s' value %s is too large (must be no more than %s)." % (var, value, element['max']))
    elif qtype == 'integer':
        if type(value) is not int:  # pylint: disable=unidiomatic-typecheck  # AWX's own test: bool is refused
            return ["Value %s for '%s' expected to be an integer." % (value, var)]
        if has('min') and value < int(element['min']):
            errors.append("'%s' value %s is too small (must be at least %s)." % (var, value, element['min']))
        if has('max') and value > int(element['max']):
            errors.append("'%s' value %s is too large (must be no more than %s)." % (var, value, element['max']))
    elif qtype == 'float':
        if type(value) not in (float, int):
            return ["Value %s for '%s' expected to be a numeric type." % (value, var)]
        if has('min') and value < float(element['min']):
            errors.append("'%s' value %s is too small (must be at least %s)." % (var, value, element['min']))
        if has('max') and value > float(element['max']):
            errors.append("'%s' value %s is too large (must be no more than %s)." % (var, value, element['max']))
    elif qtype == 'multiselect':
        if type(value) is not list:  # pylint: disable=unidiomatic-typecheck
            errors.append("'%s' value is expected to be a list." % var)
        else:
            for v in value:
                if v not in _choices(element):
                    errors.append("Value %s for '%s' expected to be one of %s." % (v, var, _choices(element)))
    elif qtype == 'multiplechoice':
        if value not in _choices(element):
            errors.append("Value %s for '%s' expected to be one of %s." % (value, var, _choices(element)))
    return errors


def survey_launch(spec: Mapping, answers: Mapping, jt_extra_vars: Optional[Mapping] = None,
                  ask_variables_on_launch: bool = False):
    """A launch with a survey: (extra vars of the job, errors, ignored). ``errors`` non-empty means AWX answers
    HTTP 400 and no job starts (variables_needed_to_start); ``ignored`` are variables dropped as not allowed."""
    jt_extra_vars = dict(jt_extra_vars or {})
    extra = dict(answers)
    errors: List[str] = []
    accepted: Dict = {}
    for element in spec['spec']:
        key = element['variable']
        element_errors = survey_element_errors(element, answers)
        if element_errors:
            errors += element_errors
            extra.pop(key, None)
        elif key in extra:
            accepted[key] = extra.pop(key)
    if ask_variables_on_launch:
        accepted.update(extra)
        extra = {}
    for key in set(jt_extra_vars) & set(extra):
        if jt_extra_vars[key] == extra[key]:
            extra.pop(key)
    # _update_unified_job_kwargs: template extra vars, then the defaults that pass validation, then the answers.
    merged = dict(jt_extra_vars)
    for element in spec['spec']:
        default = element.get('default')
        if default is not None and not survey_element_errors(element, {element['variable']: default}):
            merged[element['variable']] = default
    merged.update(accepted)
    return merged, errors, sorted(extra)
