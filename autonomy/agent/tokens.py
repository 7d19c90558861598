"""A bearer token given as a value or by the name of its environment variable (NAME, or NAME_FILE)."""
from __future__ import annotations

import os
from typing import Mapping

from autonomy.secret import BEARER_TOKEN, Secret, read_secret


def resolve_token(token: str | Secret | None, token_env: str | None, what: str,
                  env: Mapping[str, str] | None = None) -> Secret | None:
    """The token WHAT uses: TOKEN itself, or read from TOKEN_ENV (its value, or the file TOKEN_ENV_FILE names);
    None when neither is given. ValueError names what is wrong, never the value."""
    if token is not None and token_env is not None:
        raise ValueError(f"{what}: pass the token or the name of its variable, not both")
    if isinstance(token, Secret):
        return token
    if token is not None:
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"{what}: the token must be a non-empty string")
        if not BEARER_TOKEN.fullmatch(token.strip()):
            raise ValueError(f"{what}: visible ASCII characters only, no spaces (it is sent as a bearer token)")
        return Secret(what, token.strip())
    if token_env is None:
        return None
    if not isinstance(token_env, str) or not token_env:
        raise ValueError(f"{what}: the token's variable must be named by a non-empty string")
    try:
        secret = read_secret(token_env, os.environ if env is None else env)
    except ValueError as exc:
        raise ValueError(f"{what}: {token_env}: {exc}") from None
    if secret is None:
        raise ValueError(f"{what}: neither {token_env} nor {token_env}_FILE is set")
    return secret
