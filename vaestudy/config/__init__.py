"""Configuration: what a run and its parts are, validated with pydantic before anything starts
(`run`: the data / model / objective / train sections; `objectives`: each objective's and the
multipliers' settings; `plugins`: a user's parts by entry point or import path; `dotted`: dotted
keys). Imports neither torch, Ray nor MLflow."""
