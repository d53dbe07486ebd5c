"""The JSON Schema of a rule file, assembled from the steps' own fragments.

`xenrules schema` prints it. Only `check` and cache rebuilds use it: the
event path never imports jsonschema.
"""
from .context import SOURCE_KINDS
from .sources import all_source_kinds
from .steps import all_step_types

NAME = "^[A-Za-z_][A-Za-z0-9_]*$"
SCALAR = {"type": ["string", "integer", "number", "boolean"]}
SCALARS = {"anyOf": [SCALAR, {"type": "array", "items": SCALAR, "minItems": 1}]}
NAMES = {"anyOf": [{"type": "string", "pattern": NAME},
                   {"type": "array", "items": {"type": "string", "pattern": NAME}, "minItems": 1}]}
ON_ERROR = ("fail", "ignore", "busy")

CONDITION = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        "set": NAMES,
        "unset": NAMES,
        "equals": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": NAME},
                   "additionalProperties": SCALARS},
        "matches": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": NAME},
                    "additionalProperties": {"type": "string"}},
        "not": {"$ref": "#/definitions/condition"},
        "all": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/condition"}},
        "any": {"type": "array", "minItems": 1, "items": {"$ref": "#/definitions/condition"}},
    },
}

SOURCE = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": False,
    "properties": {
        "xenstore": {"type": "string"},
        "param": {"type": "string", "minLength": 1},
        "env": {"type": "string", "minLength": 1},
        "conf": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "value": SCALAR,
        "first_bridge": {"const": True},
        "bridge_alias": {"type": "string"},
        "link_mtu": {"type": "string"},
        "when": {"$ref": "#/definitions/condition"},
    },
}
assert set(SOURCE["properties"]) == set(SOURCE_KINDS) | {"when"}


def step_args_schema(cls):
    return {
        "description": cls.summary,
        "type": ["object", "null"],
        "additionalProperties": False,
        "required": list(cls.required),
        "properties": dict(cls.properties, when={"$ref": "#/definitions/condition"},
                           on_error={"enum": list(ON_ERROR)}),
    }


def build():
    steps = {name: step_args_schema(cls) for name, cls in all_step_types().items()}
    source = dict(SOURCE, properties=dict(SOURCE["properties"]))
    for kind, cls in all_source_kinds().items():
        source["properties"][kind] = dict(cls.schema, description=cls.summary)
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "xenrules rule",
        "definitions": {
            "condition": CONDITION,
            "source": source,
            "step": {"type": "object", "minProperties": 1, "maxProperties": 1,
                     "additionalProperties": False, "properties": steps},
        },
        "type": "object",
        "required": ["rule", "match", "actions"],
        "additionalProperties": False,
        "properties": {
            "rule": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.@-]*$"},
            "description": {"type": "string"},
            "require": NAMES,
            "match": {"type": "object", "minProperties": 1, "propertyNames": {"pattern": NAME},
                      "additionalProperties": SCALARS},
            "vars": {
                "type": "object",
                "propertyNames": {"pattern": NAME},
                "additionalProperties": {
                    "if": {"type": "array"},
                    "then": {"items": {"$ref": "#/definitions/source"}, "minItems": 1},
                    "else": {"if": {"type": "object"},
                             "then": {"$ref": "#/definitions/source"},
                             "else": SCALAR},
                },
            },
            "actions": {
                "type": "object",
                "minProperties": 1,
                "propertyNames": {"pattern": "^[a-z][a-z0-9_-]*$"},
                "additionalProperties": {"type": ["array", "null"],
                                         "items": {"$ref": "#/definitions/step"}},
            },
        },
    }
