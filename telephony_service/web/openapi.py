"""The OpenAPI document for /api/v1; tests check responses against these schemas."""

from __future__ import annotations

from typing import Any

from telephony_service.domain.categories import INQUIRY_CATEGORIES, Category
from telephony_service.domain.statuses import TaskStatus
from telephony_service.services.intake import FIELD_LIMITS
from telephony_service.services.tasks import MAX_PAGE

_nullable_str = {"type": ["string", "null"]}
_nullable_time = {"type": ["string", "null"], "format": "date-time"}

TASK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "id",
        "category",
        "status",
        "phone",
        "no_callback_number",
        "name",
        "reason",
        "source",
        "priority",
        "created_at",
        "due_at",
        "next_action",
        "next_action_at",
        "call_count",
        "has_voicemail",
        "owner",
        "messages",
        "timeline",
    ],
    "properties": {
        "id": {"type": "integer"},
        "category": {"enum": [c.value for c in Category]},
        "status": {"enum": [s.value for s in TaskStatus]},
        "phone": {
            "type": ["string", "null"],
            "pattern": r"^\+[1-9][0-9]{6,14}$",
            "description": "E.164; null when the caller ID was withheld or unusable",
        },
        "no_callback_number": {"type": "boolean"},
        "name": _nullable_str,
        "reason": _nullable_str,
        "source": {"type": "string"},
        "priority": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "due_at": {
            "type": "string",
            "format": "date-time",
            "description": "first response due, counted in the practice's business hours",
        },
        "next_action": _nullable_str,
        "next_action_at": _nullable_time,
        "call_count": {"type": "integer", "minimum": 0},
        "has_voicemail": {"type": "boolean"},
        "owner": _nullable_str,
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sid", "purpose", "status", "sent_at"],
                "properties": {
                    "sid": _nullable_str,
                    "purpose": {"type": "string"},
                    "status": {"type": "string"},
                    "sent_at": _nullable_time,
                },
            },
        },
        "timeline": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["at", "kind", "text"],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "kind": {"type": "string"},
                    "text": _nullable_str,
                },
            },
        },
    },
}

INQUIRY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["category", "phone"],
    "properties": {
        "category": {"enum": sorted(c.value for c in INQUIRY_CATEGORIES)},
        "phone": {"type": "string", "description": "any common format; stored as E.164"},
        **{field: {"type": "string", "maxLength": limit} for field, limit in FIELD_LIMITS.items()},
        "timezone": {
            "type": "string",
            "description": "the patient's IANA time zone, if known (e.g. America/Chicago); "
            "texts keep to the patient's local hours, which the number's area code only guesses",
        },
        "state": {
            "type": "string",
            "pattern": "^[A-Za-z]{2}$",
            "description": "the patient's US state, if known (e.g. TX): its texting rules apply",
        },
    },
}

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def _response(description: str, schema: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def openapi_document(base_url: str) -> dict[str, Any]:
    errors = {
        "401": _response("missing, unknown or revoked API key", "Error"),
        "422": _response("invalid input; `errors` names each bad field", "Error"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Patient callback service", "version": "1"},
        "servers": [{"url": f"{base_url}/api/v1"}],
        "security": [{"apiKey": []}],
        "paths": {
            "/inquiries": {
                "post": {
                    "summary": "Create a callback task from a web form or an integration",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                            "description": "a retry with the same key returns the first task",
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Inquiry"}}
                        },
                    },
                    "responses": {
                        "201": _response("the task created", "Task"),
                        "200": _response("the task an earlier request with this key made", "Task"),
                        "409": _response("the key was used with a different body", "Error"),
                        **errors,
                    },
                }
            },
            "/tasks": {
                "get": {
                    "summary": "Tasks of the key's practice, earliest deadline first",
                    "parameters": [
                        _query("status", "comma-separated statuses, or `open`"),
                        _query("category", "comma-separated categories"),
                        _query("phone", "the patient's number, any common format"),
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
                        },
                        _query("cursor", "`next_cursor` of the previous page"),
                    ],
                    "responses": {
                        "200": _response("a page of tasks", "TaskList"),
                        **errors,
                    },
                }
            },
            "/tasks/{id}": {
                "get": {
                    "summary": "One task with its timeline",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "responses": {
                        "200": _response("the task", "Task"),
                        "401": errors["401"],
                        "404": _response("no such task in this practice", "Error"),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Task": TASK_SCHEMA,
                "TaskList": {
                    "type": "object",
                    "required": ["tasks", "next_cursor"],
                    "properties": {
                        "tasks": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}},
                        "next_cursor": _nullable_str,
                    },
                },
                "Inquiry": INQUIRY_SCHEMA,
                "Error": ERROR_SCHEMA,
            },
        },
    }


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "string"}, "description": description}
