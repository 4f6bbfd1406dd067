"""gpusim's ``pynvml``: the real nvidia-ml-py binding over a simulated driver.

With ``PYTHONPATH=simulator`` (or this file installed ahead of the real binding
on a test host), ``import pynvml`` runs this shim.  It loads the *real*
nvidia-ml-py module from the rest of ``sys.path``, makes its
``CDLL("libnvidia-ml.so.1")`` return gpusim's FakeLibrary instead of the
driver's shared object, and puts that real module into ``sys.modules`` under
the name ``pynvml``.  Callers therefore get nvidia-ml-py's own functions,
constants, structs and NVMLError classes; only the library underneath is
simulated.

The library "is installed" when the host has a gpusim state: $GPUSIM_STATE, or
/var/lib/gpusim/state.json.  Without one (or with the library-missing fault),
loading it fails like a host without the NVIDIA driver: NVMLError_LibraryNotFound.
"""

import importlib.machinery
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load_real_binding():
    search = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
    extra = os.environ.get("GPUSIM_BINDING_DIR")
    if extra:
        search.insert(0, extra)
    spec = importlib.machinery.PathFinder.find_spec("pynvml", search)
    if spec is None or spec.origin is None or os.path.dirname(os.path.abspath(spec.origin)) == _HERE:
        raise ImportError("gpusim needs the real nvidia-ml-py binding installed (pip install nvidia-ml-py): "
                          "it simulates only the driver library underneath it")
    module = importlib.util.module_from_spec(spec)
    sys.modules["pynvml"] = module
    spec.loader.exec_module(module)
    return module


def _install():
    if _HERE not in [os.path.abspath(p) for p in sys.path if p]:
        sys.path.insert(0, _HERE)  # so that "import gpusim" works next to this file
    real = _load_real_binding()
    from gpusim import fakelib
    from gpusim import state as gstate

    real_cdll = real.CDLL

    def cdll(name, *args, **kwargs):
        if not str(name).startswith("libnvidia-ml.so"):
            return real_cdll(name, *args, **kwargs)
        try:
            data = gstate.load()
        except gstate.StateError:
            if gstate.path_is_explicit():
                raise
            raise OSError(f"{name}: cannot open shared object file: No such file or directory") from None
        if not data.get("library_present", True):
            raise OSError(f"{name}: cannot open shared object file: No such file or directory")
        return fakelib.FakeLibrary()  # resolves the state path on every call

    real.CDLL = cdll
    real.__gpusim__ = True
    return real


_install()
