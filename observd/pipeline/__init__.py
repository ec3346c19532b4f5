"""Moving frames through the core: intake, the reducer, batch runs, nightly stacking."""
