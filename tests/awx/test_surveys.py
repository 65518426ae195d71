"""The job templates' survey specs (extensions/awx/surveys/*.json) and example answers, checked against AWX's own
rules as restated in sgtest.awx (ansible/awx: awx/api/views/__init__.py JobTemplateSurveySpec._validate_spec_data,
awx/main/models/mixins.py SurveyJobTemplateMixin._survey_element_validation and _update_unified_job_kwargs), and
every survey variable against what the playbook accepts: the role's argument spec, or the playbook's own variables."""

from __future__ import annotations

import copy
import glob
import os

import pytest
import yaml

from sgtest import awx
from sgtest.interpreters import REPO

SURVEYS = sorted(os.path.basename(p)[:-5] for p in glob.glob(os.path.join(awx.SURVEYS, '*.json')))
# Survey -> the role whose argument spec takes its variables (None: the playbook reads them itself).
ROLE_OF = {'revoke': 'revoke', 'audit': 'audit', 'restore': None, 'reconcile': 'reconcile'}


def test_there_is_a_survey_for_each_template():
    assert set(SURVEYS) == {'revoke', 'restore', 'audit', 'reconcile'}, SURVEYS
    for name in SURVEYS:
        assert os.path.exists(os.path.join(awx.AWX_PROJECT, name + '.yml')), name


@pytest.mark.parametrize('name', SURVEYS)
def test_awx_accepts_the_survey_spec(name):
    spec = awx.load_survey(name)
    assert awx.survey_spec_error(spec) is None
    for q in spec['spec']:
        # Every variable has a default (API, EDA and schedule launches get only what validates), and a multiplechoice
        # default is a single choice: surveys have no boolean, so yes/no choices stand in for one.
        assert 'default' in q, q['variable']
        if q['type'] == 'multiplechoice':
            assert q['default'] in q['choices'], q
        # The canonical form awx.awx compares against on each run: choices as a list.
        assert not isinstance(q.get('choices', []), str), q['variable']
        assert q['type'] != 'multiselect', 'a multiselect default is dropped at launch: %s' % q['variable']


@pytest.mark.parametrize('bad, error', [
    ({'min': ''}, "The min limit in survey question 0 expected to be integer."),
    ({'default': ['a']}, "Default value ['a'] in survey question 0 expected to be string."),
    ({'type': 'boolean'}, "'boolean' in survey question 0 is not one of 'text, textarea, password, multiplechoice, "
                          "multiselect, integer, float' allowed question types."),
    ({'required': 'yes'}, "'required' in survey question 0 expected to be boolean."),
])
def test_the_rules_refuse_what_awx_refuses(bad, error):
    spec = copy.deepcopy(awx.load_survey('revoke'))
    spec['spec'][0].update(bad)
    assert awx.survey_spec_error(spec) == error


def test_the_rules_refuse_a_duplicate_and_a_bad_default():
    spec = copy.deepcopy(awx.load_survey('revoke'))
    spec['spec'].append(dict(spec['spec'][0]))
    assert "'variable' 'revoke_users' duplicated" in awx.survey_spec_error(spec)
    spec = copy.deepcopy(awx.load_survey('revoke'))
    dry = next(q for q in spec['spec'] if q['variable'] == 'revoke_dry_run')
    dry['default'] = 'maybe'
    assert awx.survey_spec_error(spec) == 'Default choice must be answered from the choices listed.'


GOOD = {
    'revoke': {'revoke_users': 'bob\nalice\n', 'revoke_reason': 'INC-1 left', 'revoke_scope': 'interactive',
               'revoke_notice': 'Access revoked', 'revoke_grace_period': 0, 'revoke_dry_run': 'yes'},
    'restore': {'restore_users': 'bob', 'restore_force': 'no'},
    'audit': {'audit_users': '', 'audit_include_ssh': 'no'},
    'reconcile': {'reconcile_allowed_groups': 'staff,admins', 'reconcile_max_users': 10, 'reconcile_dry_run': 'yes'},
}


@pytest.mark.parametrize('name', sorted(GOOD))
def test_good_answers_launch(name):
    extra, errors, ignored = awx.survey_launch(awx.load_survey(name), GOOD[name])
    assert errors == [] and ignored == []
    assert extra == GOOD[name]


@pytest.mark.parametrize('answers, error', [
    ({'revoke_dry_run': True}, "Value True for 'revoke_dry_run' expected to be one of ['no', 'yes']."),
    ({'revoke_grace_period': '5'}, "Value 5 for 'revoke_grace_period' expected to be an integer."),
    ({'revoke_grace_period': 301}, "'revoke_grace_period' value 301 is too large (must be no more than 300)."),
    ({'revoke_users': ['bob']}, "Value ['bob'] for 'revoke_users' expected to be a string."),
    ({'revoke_users': ''}, "'revoke_users' value  is too small (length is 0 must be at least 1)."),
    ({'revoke_scope': 'everything'}, "Value everything for 'revoke_scope' expected to be one of ['all', 'interactive', 'mosh']."),
])
def test_bad_answers_are_refused_at_launch(answers, error):
    good = dict(GOOD['revoke'])
    good.update(answers)
    errors = awx.survey_launch(awx.load_survey('revoke'), good)[1]
    assert errors == [error]


def test_a_launch_without_the_required_answers_is_refused_and_the_defaults_fill_the_rest():
    spec = awx.load_survey('revoke')
    errors = awx.survey_launch(spec, {'revoke_users': 'bob'})[1]
    assert errors == ["'revoke_scope' value missing", "'revoke_grace_period' value missing",
                      "'revoke_dry_run' value missing"]
    extra, errors, ignored = awx.survey_launch(spec, {'revoke_users': 'bob', 'revoke_scope': 'all',
                                                      'revoke_grace_period': 5, 'revoke_dry_run': 'no',
                                                      'not_in_survey': 1})
    assert errors == [] and ignored == ['not_in_survey']
    # A "" default of a question with min 1 does not validate and is not applied; the rest are.
    assert extra == {'revoke_users': 'bob', 'revoke_reason': '', 'revoke_scope': 'all', 'revoke_notice': '',
                     'revoke_grace_period': 5, 'revoke_dry_run': 'no'}


def role_options(role):
    with open(os.path.join(REPO, 'roles', role, 'meta', 'argument_specs.yml')) as f:
        return yaml.safe_load(f)['argument_specs']['main']['options']


@pytest.mark.parametrize('name', SURVEYS)
def test_every_survey_variable_is_taken_by_the_playbook(name):
    spec = awx.load_survey(name)
    role = ROLE_OF[name]
    if role:
        options = role_options(role)
        with open(os.path.join(REPO, 'roles', role, 'defaults', 'main.yml')) as f:
            defaults = yaml.safe_load(f)
        for q in spec['spec']:
            assert q['variable'] in options, (name, q['variable'])
            # A variable without a default is one the role requires: the survey must require it too.
            if q['variable'] not in defaults:
                assert options[q['variable']].get('required') and q['required'], (name, q['variable'])
            kind = options[q['variable']]['type']
            # What the survey sends must be what the spec's type takes: a textarea string for raw users, yes/no
            # strings for bool, an int for int/float, one of the choices for a str with choices; a list only as a
            # comma-separated text, which a list option splits.
            if q['type'] in ('text', 'textarea'):
                assert kind in ('str', 'raw', 'path') or (kind == 'list' and q['type'] == 'text'
                                                          and 'comma-separated' in q['question_description']), \
                    (q['variable'], kind)
            elif q['type'] == 'integer':
                assert kind in ('int', 'float'), (q['variable'], kind)
            elif q['type'] == 'multiplechoice':
                if kind == 'bool':
                    assert set(q['choices']) == {'yes', 'no'}, q
                else:
                    assert set(q['choices']) == set(options[q['variable']]['choices']), q
    else:
        with open(os.path.join(REPO, 'playbooks', name + '.yml')) as f:
            text = f.read()
        for q in spec['spec']:
            assert '%s | default(' % q['variable'] in text, (name, q['variable'])


def test_the_extravars_file_is_written_as_awx_writes_it():
    text = awx.safe_dump({'revoke_users': 'bob', 'site': 'eu', 'n': 2}, {'site': 'eu'})
    assert text == "!unsafe 'revoke_users': !unsafe 'bob'\nsite: eu\n!unsafe 'n': 2\n"


def test_the_inventory_script_slices_as_awx_does():
    hosts = {'web%02d' % i: {} for i in range(1, 8)}
    got = [awx.script_data(hosts, {}, k, 3)['all']['hosts'] for k in (1, 2, 3)]
    assert got == [['web01', 'web04', 'web07'], ['web02', 'web05'], ['web03', 'web06']]
