"""gpusim's nvidia-cuda-mps-control, the MPS control daemon and its client (see simulator/gpusim/mps.py)."""
import os
import sys

_here = os.path.dirname(os.path.realpath(__file__))
sys.path.insert(0, os.path.dirname(_here))  # simulator/ in a checkout; harmless when installed

if len(sys.argv) == 1:  # the client: commands on stdin (the common case, kept light)
    from gpusim.mps_client import client_main
    sys.exit(client_main())

from gpusim.mps import main  # noqa: E402

sys.exit(main())
