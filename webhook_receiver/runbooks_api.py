"""The runbooks the alerts link to, served from the package (no checkout needed)."""
from __future__ import annotations

import re
from importlib import resources

from flask import Blueprint, Response

from autonomy.http_edge import ApiError

runbooks_bp = Blueprint("runbooks", __name__)
RUNBOOK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{0,80}\.md$")


@runbooks_bp.get("/runbooks/<name>")
def runbook(name: str):
    if not RUNBOOK_NAME.match(name):
        raise ApiError(404, "no such runbook")
    path = resources.files("webhook_receiver").joinpath("runbooks", name)
    if not path.is_file():
        raise ApiError(404, f"no runbook {name}")
    return Response(path.read_text(encoding="utf-8"), content_type="text/markdown; charset=utf-8")
