"""The inventory's JSON Schema, made from what the core and each step declare.

Editors' YAML language servers (`# yaml-language-server: $schema=...`) then mark a
misspelt key or a port of `abc` while the file is typed, before any run. The
schema says no more than gpufab checks: every inventory it admits parses (the
structure, the names, each setting's kind); what it cannot say (unique names,
a reachable address) is still told at run time, one line naming the file.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from . import inventory as inv
from .declared import CLUSTER, NODE, declared, sections

DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _closed(properties: Mapping[str, Any], **extra: Any) -> Dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": dict(properties), **extra}


def vars_schema(place: str) -> Dict[str, Any]:
    """`vars:` of the cluster (CLUSTER) or of one node (NODE): every setting read there, each of its kind."""
    properties = {}
    for s in declared():
        if place in s.where:
            doc = f"{s.doc} (default: {s.default})" if s.default else s.doc
            # `key:` with nothing after it is YAML's null: the setting's default, as gpufab reads it.
            properties[s.name] = {"anyOf": [dict(s.kind.schema), {"type": "null"}], "description": doc}
    return {"anyOf": [_closed(properties), {"type": "null"}]}


def _pattern(regex: Any) -> Dict[str, Any]:
    return {"type": "string", "pattern": regex.pattern}


def inventory_schema() -> Dict[str, Any]:
    """The whole inventory (inventory/hosts.yaml) as JSON Schema."""
    port = {"type": "integer", "minimum": 1, "maximum": 65535}
    ssh = _closed({"user": _pattern(inv.USER_RE), "port": port, "key": _pattern(inv.PATH_RE),
                   "known_hosts": _pattern(inv.PATH_RE)})
    roles = {"anyOf": [{"type": "array", "items": _pattern(inv.NAME_RE)}, {"type": "string"}]}
    node = _closed({
        "name": _pattern(inv.NAME_RE), "public": {"type": "string", "minLength": 1},
        "private": {"anyOf": [{"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]},
                              {"type": "null"}]},
        "role": {"enum": list(inv.ROLES)}, "roles": roles, "user": _pattern(inv.USER_RE), "port": port,
        "key": _pattern(inv.PATH_RE), "vars": vars_schema(NODE),
    }, required=["name", "public"])
    listed = {name: {"anyOf": [{"type": "array", "items": item}, {"type": "null"}]}
              for name, item in sections().items()}
    docker = _closed({
        "daemon": {"anyOf": [{"type": "object"}, {"type": "null"}], "description": "daemon.json keys"},
        "images": {"anyOf": [{"type": "array", "items": {"type": "string", "pattern": inv.IMAGE_REF_RE.pattern}},
                             {"type": "null"}]},
        **{name.split(".", 1)[1]: schema for name, schema in listed.items() if name.startswith("docker.")},
    })
    top = {name: schema for name, schema in listed.items() if "." not in name}
    return {
        "$schema": DIALECT,
        "title": "gpufab inventory",
        "description": "inventory/hosts.yaml of gpufab (docs/usage.md#inventory; settings: docs/settings.md)",
        **_closed({"ssh": {"anyOf": [ssh, {"type": "null"}]}, "nodes": {"type": "array", "minItems": 1, "items": node},
                   "vars": vars_schema(CLUSTER), "docker": {"anyOf": [docker, {"type": "null"}]}, **top},
                  required=["nodes"]),
    }
