"""The one exception of the keypin CLI: a message for the user, exit status 1."""


class CommandError(Exception):
    """A failure the user can act on; printed as ``keypin: <command>: <message>``."""
