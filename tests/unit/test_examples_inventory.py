"""The shipped example inventory (examples/inventory) fits site.yml and the roles it runs."""

from __future__ import annotations

import os

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INVENTORY = os.path.join(ROOT, "examples", "inventory")
TYPES = {"str": str, "int": int, "bool": bool, "list": list, "dict": dict, "path": str}


def load(path: str):
    with open(path) as fh:
        return yaml.safe_load(fh)


def groups(node: dict, found: dict | None = None) -> dict[str, list[str]]:
    found = {} if found is None else found
    for name, body in (node.get("children") or {}).items():
        found[name] = sorted((body or {}).get("hosts") or {})
        groups(body or {}, found)
    return found


INVENTORY_GROUPS = groups(load(os.path.join(INVENTORY, "hosts.yml"))["all"])


def plays(path: str) -> list[dict]:
    """The plays of a playbook, with those of the playbooks it imports (vgpu_hypervisor.yml)."""
    out = []
    for play in load(path):
        if "ansible.builtin.import_playbook" in play:
            out += plays(os.path.join(os.path.dirname(path), play["ansible.builtin.import_playbook"]))
        else:
            out.append(play)
    return out


PLAYS = plays(os.path.join(ROOT, "playbooks", "site.yml"))


def roles_of(group: str) -> list[str]:
    return [r["role"].rsplit(".", 1)[-1] for play in PLAYS
            if group in str(play["hosts"]).split(":") for r in play.get("roles", [])]


def options(role: str) -> dict:
    return load(os.path.join(ROOT, "roles", role, "meta", "argument_specs.yml"))["argument_specs"]["main"]["options"]


def test_every_group_site_yml_configures_has_hosts():
    wanted = {g for play in PLAYS for g in str(play["hosts"]).split(":") if g != "all"}
    assert wanted == {"mig_training", "mig_inference", "mps_inference", "vgpu_guests", "vgpu_hosts"}
    assert {g: INVENTORY_GROUPS.get(g) for g in wanted if not INVENTORY_GROUPS.get(g)} == {}


def test_a_host_in_a_mig_group_and_in_mps_inference_shows_mps_on_mig():
    mig = set(INVENTORY_GROUPS["mig_training"]) | set(INVENTORY_GROUPS["mig_inference"])
    assert mig & set(INVENTORY_GROUPS["mps_inference"])


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(os.path.join(INVENTORY, "group_vars")) if n != "all.yml"))
def test_group_vars_are_options_of_the_groups_roles(name):
    group = name[:-4]
    assert group in INVENTORY_GROUPS, f"group_vars/{name} is for a group the inventory does not have"
    roles = roles_of(group)
    assert roles, f"site.yml runs no role on {group}"
    specs = {k: v for role in roles for k, v in options(role).items()}
    for var, value in load(os.path.join(INVENTORY, "group_vars", name)).items():
        assert var in specs, f"group_vars/{name}: {var} is not an option of {', '.join(roles)}"
        kind = TYPES.get(specs[var].get("type", "str"))
        if kind and not (isinstance(value, str) and "{{" in value):
            assert isinstance(value, kind), f"group_vars/{name}: {var} should be a {specs[var]['type']}"
