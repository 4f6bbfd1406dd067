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
