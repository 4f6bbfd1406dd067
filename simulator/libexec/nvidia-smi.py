"""gpusim's nvidia-smi (see simulator/gpusim/smi.py)."""
import os
import sys

_here = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.dirname(_here))  # simulator/ in a checkout; harmless when installed

from gpusim.smi import main  # noqa: E402

sys.exit(main())
