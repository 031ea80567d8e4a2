"""Errors a user can fix: a bad option, spec, setting or file. The console script prints their message (which
names what is wrong and how to fix it) without a traceback and exits with status 2; any other exception is a
bug and shows its traceback."""


class UserError(Exception):
    """A problem the user can fix; the message says what and how."""


class SpecError(UserError, ValueError):
    """A run spec that its scenario cannot take (found when the env is built). A ValueError too, as callers
    that check a spec against its env expect."""
