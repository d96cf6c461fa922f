"""The platform admin of the local stack (`AdminSecret`, created by the `AdminBootstrap` custom resource).

`make run` must leave a usable admin: given credentials when the developer sets them, otherwise a
generated password that is shown once, since it lives only in this stack's memory.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

from devstack.errors import StartupError

ADMIN_SECRET_ID = "AdminSecret"  # noqa: S105 - a logical id, not a secret
USERNAME_VARIABLE = "FLOWGATE_ADMIN_USERNAME"
PASSWORD_VARIABLE = "FLOWGATE_ADMIN_PASSWORD"  # noqa: S105 - a variable name


@dataclass(frozen=True)
class AdminCredentials:
    """The admin's username and password."""

    username: str
    password: str

    def secret_string(self) -> str:
        """The AdminSecret value, in the shape GenerateSecretString produces."""
        return json.dumps({"username": self.username, "password": self.password})


def admin_from_environment(environ: Mapping[str, str]) -> AdminCredentials | None:
    """Credentials from FLOWGATE_ADMIN_USERNAME/PASSWORD; None when neither is set."""
    username = environ.get(USERNAME_VARIABLE, "")
    password = environ.get(PASSWORD_VARIABLE, "")
    if not username and not password:
        return None
    if not username or not password:
        raise StartupError(f"set both {USERNAME_VARIABLE} and {PASSWORD_VARIABLE}, or neither")
    return AdminCredentials(username, password)


def admin_banner(secret_string: str, given: bool) -> str:
    """The line that tells the developer how to log in; a given password is never printed."""
    credentials = json.loads(secret_string)
    username = credentials["username"]
    if given:
        return f"Platform admin: username={username} (from {USERNAME_VARIABLE}/{PASSWORD_VARIABLE})"
    return f"Platform admin: username={username} password={credentials['password']} (generated; shown once)"
