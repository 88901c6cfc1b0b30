"""Exceptions that the CLI turns into exit codes."""


class MxplainError(Exception):
    """Base class of mxplain's own errors."""


class UserError(MxplainError):
    """Bad config, bad input or an unknown name: the CLI prints ``error: <message>`` and exits 2."""


class NotAvailableError(UserError):
    """A config asks for a capability whose plugin is not installed or not written yet."""


class PluginError(UserError):
    """A plugin problem a user can fix: duplicate or unknown names."""
