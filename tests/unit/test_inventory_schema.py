"""The inventory's JSON Schema (`inv inventory.schema`): made from the declarations, and no stricter or
looser than gpufab where it speaks (issue 34: "a JSON Schema of the inventory ... usable by editors").

Held to the parser both ways on the keys (hypothesis over names: the schema refuses exactly the names
parse_inventory refuses), to each setting's own reader on the values (hypothesis draws values from each
setting's kind, hypothesis-jsonschema, and the reader's check takes every one), and to the inventories
people actually have (the example, the lab's).
"""

from __future__ import annotations

import copy
import json

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings, strategies as st
from hypothesis_jsonschema import from_schema
from jsonschema import Draft202012Validator

from fabfile.core import declared
from fabfile.core.errors import InputError
from fabfile.core.inventory import VAR_KEY_RE, parse_inventory
from fabfile.core.schema import inventory_schema, vars_schema

from helpers import REPO

SCHEMA = inventory_schema()
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=Draft202012Validator.FORMAT_CHECKER)
SETTINGS = {s.name: s for s in declared.declared()}

BASE = {
    "ssh": {"user": "gpu", "port": 22},
    "nodes": [{"name": "a", "public": "198.18.0.11", "private": "198.19.0.11", "role": "head"},
              {"name": "b", "public": "198.18.0.12", "private": "198.19.0.12", "vars": {"nic": "eth1"}}],
    "vars": {"ray_port": 6379, "mesh": False, "packages": ["tmux", "nvtop"], "nofile": 65536},
    "docker": {"daemon": {"log-driver": "json-file"}, "images": ["ubuntu:24.04"],
               "containers": [{"name": "redis", "image": "redis:7", "ports": ["6380:6379"]}]},
    "steps": [{"name": "repo", "command": "true", "where": "head", "timeout": 60}],
}


def valid(doc) -> bool:
    return VALIDATOR.is_valid(doc)


def parses(doc) -> bool:
    try:
        parse_inventory(yaml.safe_dump(doc), "hosts.yaml")
    except InputError:
        return False
    return True


def test_the_schema_is_valid_json_schema_and_what_the_task_prints(capsys):
    from invoke import Context
    from fabfile import inventory
    Draft202012Validator.check_schema(SCHEMA)
    inventory.schema(Context())
    assert json.loads(capsys.readouterr().out) == SCHEMA


def test_the_example_the_labs_and_a_full_inventory_are_valid():
    from fabfile.lab import plan
    example = yaml.safe_load((REPO / "inventory" / "example.yaml").read_text())
    lab = yaml.safe_load(plan.lab_inventory(plan.plan_hosts(3), "/k", "/kh", {"node1": "hgx-h100"}, "AB" * 20))
    for doc in (example, lab, BASE):
        assert list(VALIDATOR.iter_errors(doc)) == [] and parses(doc)


@pytest.mark.parametrize("where", ["top", "ssh", "node", "vars", "node vars", "docker", "steps", "containers"])
def test_a_misspelt_key_anywhere_is_refused_by_the_schema_and_by_the_parser(where):
    doc = copy.deepcopy(BASE)
    spot = {"top": doc, "ssh": doc["ssh"], "node": doc["nodes"][0], "vars": doc["vars"],
            "node vars": doc["nodes"][1]["vars"], "docker": doc["docker"], "steps": doc["steps"][0],
            "containers": doc["docker"]["containers"][0]}[where]
    spot["ray_verison" if "vars" in where else "nmae"] = "x"
    assert not valid(doc)
    from fabfile.ops import containers, scripts
    with pytest.raises(InputError, match="nmae|ray_verison"):
        inv = parse_inventory(yaml.safe_dump(doc), "hosts.yaml")
        # steps: and containers: are read by their own steps, which refuse the key there
        containers.parse_container(inv.docker_containers[0], 0, inv.path)
        scripts.user_steps(inv, ["storage"])


def test_a_value_of_the_wrong_kind_is_marked():
    for key, value in (("ray_port", "abc"), ("ray_port", 70000), ("mesh", [1]), ("storage", "ceph"),
                       ("nofile", 10), ("allreduce_sizes", "1T"), ("ray_venv", "relative/venv"),
                       ("packages", "tmux; rm -rf /")):
        doc = copy.deepcopy(BASE)
        doc["vars"][key] = value
        assert not valid(doc), (key, value)


@settings(max_examples=150, deadline=None)
@given(st.from_regex(VAR_KEY_RE, fullmatch=True) | st.sampled_from(sorted(SETTINGS)),
       st.sampled_from([declared.CLUSTER, declared.NODE]))
@example("__line__", declared.CLUSTER)  # the loader's own bookkeeping key: was dropped unread
def test_a_name_is_valid_in_the_schema_exactly_where_the_parser_takes_it(key, place):
    doc = copy.deepcopy(BASE)
    (doc["vars"] if place == declared.CLUSTER else doc["nodes"][1]["vars"])[key] = None
    assert valid(doc) == parses(doc) == (key in SETTINGS and place in SETTINGS[key].where), key


CHECKED = sorted(n for n, s in SETTINGS.items() if s.check is not None)


def test_most_settings_carry_their_readers_check():
    assert len(CHECKED) >= 25, CHECKED


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of([st.tuples(st.just(n), from_schema(SETTINGS[n].kind.schema)) for n in CHECKED]))
def test_every_value_a_settings_kind_admits_its_reader_takes(drawn):
    name, value = drawn
    SETTINGS[name].check(value)


# hypothesis-jsonschema's own object strategy leans on Hypothesis internals that moved; each setting's
# value is drawn from its own schema (vars_schema's properties), the mapping by Hypothesis.
CLUSTER_VARS = vars_schema(declared.CLUSTER)["anyOf"][0]["properties"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(st.fixed_dictionaries({}, optional={name: from_schema(schema) for name, schema in CLUSTER_VARS.items()}))
def test_any_vars_the_schema_admits_the_inventory_parser_takes(drawn):
    doc = copy.deepcopy(BASE)
    doc["vars"] = drawn
    assert valid(doc)
    parse_inventory(yaml.safe_dump(doc), "hosts.yaml")


@pytest.mark.parametrize("key, value, says", [
    ("ray_port", "abc", "ray_port: invalid Ray port 'abc'"),
    ("nofile", 10, "nofile: nofile 10 is out of range"),
    ("storage", "ceph", "storage: unknown storage backend 'ceph'"),
    ("ray_venv", 1, "ray_venv: 1 is not an absolute path"),
    ("allreduce_sizes", "1T", "allreduce_sizes: invalid size '1T'"),
])
def test_a_bad_value_of_a_declared_setting_names_the_file_and_line_before_any_step(key, value, says):
    text = yaml.safe_dump({"nodes": BASE["nodes"], "vars": {"mesh": True, key: value}}, sort_keys=False)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if t.strip().startswith(f"{key}:"))
    with pytest.raises(InputError) as caught:
        parse_inventory(text, "inventory/hosts.yaml")
    assert str(caught.value).startswith(f"inventory/hosts.yaml:{line}: {says}"), str(caught.value)
    assert not valid({"nodes": BASE["nodes"], "vars": {key: value}})


def test_a_bad_value_in_a_config_files_gpufab_section_names_that_file():
    with pytest.raises(InputError, match=r"^/etc/gpufab\.yaml: memlock: invalid memlock 'lots'"):
        declared.check_config_section({"memlock": "lots"}, lambda key: "/etc/gpufab.yaml")
