"""Errors devstack reports to the user; the CLI prints their message and exits non-zero."""


class DevstackError(Exception):
    """Base class of every error devstack raises on purpose."""


class TemplateError(DevstackError):
    """The template, a parameter override or an intrinsic function cannot be used."""


class StartupError(DevstackError):
    """The local stack could not start (moto, provisioning, a custom resource, the environment)."""
