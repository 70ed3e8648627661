"""Errors that mean "the user's input cannot be used": the CLI prints them and exits with 2."""


class UserError(Exception):
    """Base class; the message names the file, key or path and what was expected."""


class ConfigError(UserError):
    """A config or study file (or a --set override) that does not validate."""


class DataError(UserError):
    """A dataset that is missing or unreadable."""


class ClusterError(UserError):
    """Ray cannot be started or reached at the address given."""
