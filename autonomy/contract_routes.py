"""The published contract, served by every service of the layer: GET /openapi.yaml and /signal.schema.json."""
from __future__ import annotations

from flask import Blueprint, Response

from . import openapi
from .signal_contract import SCHEMA_RESOURCE

contract_bp = Blueprint("contract", __name__)
SIGNAL_SCHEMA_TYPE = "application/schema+json"


@contract_bp.get("/openapi.yaml")
def openapi_document():
    """The OpenAPI 3.1 document as shipped (no authentication: it holds no data)."""
    return Response(openapi.document_text(), content_type=f"{openapi.MEDIA_TYPE}; charset=utf-8")


@contract_bp.get("/signal.schema.json")
def signal_schema():
    """The signal's JSON Schema as shipped: what the document's `signal.schema.json` references resolve to."""
    return Response(openapi.shipped_text(SCHEMA_RESOURCE), content_type=SIGNAL_SCHEMA_TYPE)
