"""gpusim: NVIDIA GPUs and driver, simulated for tests, demos and benchmarks."""
