"""A vaestudy plugin package: an objective (`objective.py`), a network (`network.py`) and a
dataset (`shapes.py`) vaestudy does not ship, registered by entry points in this folder's
`pyproject.toml`; `study.yaml` compares the objective with built-in ones."""
