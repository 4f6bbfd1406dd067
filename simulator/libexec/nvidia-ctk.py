"""gpusim's nvidia-ctk: ``cdi generate`` and ``cdi list`` (see simulator/gpusim/cdi.py)."""
import os
import sys

_here = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.dirname(_here))  # simulator/ in a checkout; harmless when installed

from gpusim.cdi import main  # noqa: E402

sys.exit(main())
