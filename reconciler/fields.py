"""The pydantic pieces lab.yaml's models share: the core's (spec/models.py) and each kind module's own
table model alike.  Outside spec/ on purpose: spec builds its `Lab` from the kind registry, so a kind
module's model must import nothing of spec."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from . import values
from .source import as_written

RESERVED_PREFIXES = ("volatile.", "image.", "user.reconciler.")


CONFIG_KEY = r"[A-Za-z0-9][A-Za-z0-9._-]*"


def lxd_string(value: Any) -> str:
    """A YAML scalar in LXD's string form: true -> "true", 5 -> "5"; a number as written: 010 -> "010"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None or value == "":
        # LXD drops a key set to "": it would show as drift forever. Leave the key out instead.
        raise ValueError("needs a value (LXD drops empty keys; to unset one, leave it out)")
    if isinstance(value, (int, float)):
        return as_written(value) or str(value)
    if isinstance(value, str):
        return value
    raise ValueError(f"must be a string, number or boolean, not {type(value).__name__}")


def name_schema(pattern: str) -> dict:
    return {"pattern": values.anchored(pattern)}


VALUE_SCHEMA = {"type": ["string", "number", "boolean"], "minLength": 1}
CONFIG_KEY_SCHEMA = {"pattern": values.anchored(CONFIG_KEY),
                     "not": {"pattern": "^(?:" + "|".join(map(re.escape, RESERVED_PREFIXES)) + ")"}}


def config_schema(properties: Mapping[str, dict] | None = None) -> dict:
    schema = {"type": "object", "propertyNames": CONFIG_KEY_SCHEMA, "additionalProperties": VALUE_SCHEMA}
    return schema | ({"properties": dict(properties)} if properties else {})


def keyed(pattern: str, description: str) -> Any:
    """A Field whose mapping's keys follow `pattern` (checked in pass 2, stated in the schema)."""
    return Field(default_factory=dict, description=description,
                 json_schema_extra={"propertyNames": name_schema(pattern)})


LxdValue = Annotated[str, BeforeValidator(lxd_string), WithJsonSchema(VALUE_SCHEMA)]
Config = Annotated[dict[str, LxdValue], WithJsonSchema(config_schema() | {
    "description": "LXD config keys; values become strings"})]


class Strict(BaseModel):
    model_config = ConfigDict(defer_build=True, extra="forbid", frozen=True)


def own_keys(config: dict[str, str]) -> dict[str, str]:
    for key in config:
        if key.startswith(RESERVED_PREFIXES):
            raise ValueError(f"{key!r}: volatile.*, image.* and user.reconciler.* keys belong to LXD or to reconciler")
    return config


OwnConfig = Annotated[Config, AfterValidator(own_keys)]
