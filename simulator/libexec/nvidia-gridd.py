"""gpusim's nvidia-gridd, the vGPU guest licensing daemon (see simulator/gpusim/license.py)."""
import os
import sys

_here = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.dirname(_here))  # simulator/ in a checkout; harmless when installed

from gpusim.license import daemon_main  # noqa: E402

sys.exit(daemon_main(sys.argv[1:]))
