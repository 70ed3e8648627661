"""Training objectives: configs in `configs.py`, the interface in `base.py`, one module each,
and `registry.build_objective` to build one by name."""
