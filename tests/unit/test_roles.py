"""Every role's meta/argument_specs.yml matches its defaults/main.yml."""

from __future__ import annotations

import os

import pytest
import yaml

ROLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "roles")
NAMES = sorted(d for d in os.listdir(ROLES) if os.path.isdir(os.path.join(ROLES, d))) if os.path.isdir(ROLES) else []


@pytest.mark.parametrize("role", NAMES)
def test_argument_specs_match_defaults(role):
    with open(os.path.join(ROLES, role, "defaults", "main.yml")) as fh:
        defaults = yaml.safe_load(fh) or {}
    with open(os.path.join(ROLES, role, "meta", "argument_specs.yml")) as fh:
        options = yaml.safe_load(fh)["argument_specs"]["main"]["options"]
    assert sorted(defaults) == sorted(k for k, v in options.items() if "default" in v or not v.get("required"))
    for name, value in defaults.items():
        assert options[name].get("default") == value, f"{role}: default of {name} differs"
        assert name.startswith(role + "_"), f"{role}: variable {name} is not prefixed with the role name"


# ---- vgpu_guest: one module run per host, and state: absent takes out what present set ---------------------

CONTROLLER_ONLY = {"ansible.builtin.assert", "ansible.builtin.fail", "ansible.builtin.debug", "ansible.builtin.set_fact"}


def _vgpu_guest_tasks(name: str = "main.yml", when: str = "") -> list[dict]:
    """The role's tasks, with those of each include_tasks in its place (under the include's condition)."""
    with open(os.path.join(ROLES, "vgpu_guest", "tasks", name)) as fh:
        tasks = yaml.safe_load(fh)
    out = []
    for task in tasks:
        both = " and ".join(w for w in (when, task.get("when", "")) if w)
        if "ansible.builtin.include_tasks" in task:
            out += _vgpu_guest_tasks(task["ansible.builtin.include_tasks"], both)
        else:
            out.append(dict(task, when=both) if both else task)
    return out


def _action(task: dict) -> str:
    return next(key for key in task if "." in key)


@pytest.mark.parametrize("state", ["present", "absent"])
def test_vgpu_guest_runs_the_module_once_per_state(state):
    remote = []
    for task in _vgpu_guest_tasks():
        when = task.get("when", "")
        other = "absent" if state == "present" else "present"
        if f"vgpu_guest_state == '{other}'" in when:
            continue
        if _action(task) not in CONTROLLER_ONLY:
            remote.append(_action(task))
    expected = ["ansible.builtin.command", "gpuops.sharing.vgpu_license"] if state == "present" \
        else ["gpuops.sharing.vgpu_license"]
    assert remote == expected      # timedatectl (present only) and one module call, no 'command -v' probe


def test_vgpu_guest_absent_removes_the_keys_of_the_variables_it_zips():
    from ansible_collections.gpuops.sharing.plugins.modules import vgpu_license

    with open(os.path.join(ROLES, "vgpu_guest", "vars", "main.yml")) as fh:
        options = yaml.safe_load(fh)["vgpu_guest_managed_options"]
    absent = next(t for t in _vgpu_guest_tasks() if "vgpu_guest_state == 'absent'" in t.get("when", ""))
    zipped = absent["gpuops.sharing.vgpu_license"]["remove"].split("zip([", 1)[1].split("])", 1)[0]
    names = [name.strip() for name in zipped.split(",")]
    assert names == [f"vgpu_guest_{option}" for option in options]
    spec = vgpu_license.argument_spec()
    assert set(options) <= set(spec["remove"]["choices"])
    present = next(t for t in _vgpu_guest_tasks() if "vgpu_guest_state == 'present'" in t.get("when", "")
                   and _action(t) == "gpuops.sharing.vgpu_license")
    assert set(options) <= set(present["gpuops.sharing.vgpu_license"])   # every key present sets, absent removes
