"""gpusim's hardware catalogue: the collection's own table of NVIDIA's facts.

The rows live once, in ``plugins/module_utils/_catalogue.py`` (one place per
fact: the modules validate against them before the driver can answer, gpusim
builds its devices from them).  This file loads that file by path, so gpusim
needs neither ansible nor the collection on ``sys.path``, and re-exports it.

Where to find the file: ``$GPUSIM_CATALOGUE`` if set, else the checkout that
holds this simulator (``../../plugins/module_utils/_catalogue.py`` from this
file's real location; the fleet test hosts bind the whole checkout).
"""

from __future__ import annotations

import importlib.util
import os
import sys


def _path() -> str:
    override = os.environ.get("GPUSIM_CATALOGUE")
    if override:
        return override
    here = os.path.dirname(os.path.realpath(__file__))
    return os.path.normpath(os.path.join(here, "..", "..", "plugins", "module_utils", "_catalogue.py"))


def _load():
    path = _path()
    if not os.path.isfile(path):
        raise ImportError(f"gpusim: the catalogue {path} is missing (set GPUSIM_CATALOGUE to the collection's "
                          "plugins/module_utils/_catalogue.py)")
    spec = importlib.util.spec_from_file_location("gpusim._catalogue_rows", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_rows = _load()
globals().update({k: v for k, v in vars(_rows).items() if not k.startswith("__")})
