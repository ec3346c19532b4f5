"""The simulated camera: realistic nights of FITS files for the demo, tests and benchmarks."""
