"""The published JSON Schema (2020-12) of the manifest, generated from the model.

`schemas/palfrey.schema.json` is this function's output, committed; a test fails when
they drift. Editors use it for completion and hover docs (taplo's `#:schema`,
yaml-language-server's `$schema=`); `x-env` and `x-cli` tell where else each key can be
set.
"""

from __future__ import annotations

import json
from typing import Any

from palfrey.config.model import SECTIONS, Config
from palfrey.config.registry import options, section_doc

SCHEMA_ID = "urn:palfrey:schema:manifest:1"
DIALECT = "https://json-schema.org/draft/2020-12/schema"


def build_schema() -> dict[str, Any]:
    schema = Config.model_json_schema(mode="validation")
    defs = schema.get("$defs", {})
    properties = schema["properties"]
    for option in options():
        if option.section is None:
            target = properties[option.name]
        else:
            target = defs[SECTIONS[option.section].__name__]["properties"][option.name]
        # pydantic writes a property's keywords sorted; the description takes its place there.
        described = sorted({**target, "description": option.description}.items())
        target.clear()
        target.update(described)
        if option.optional and "anyOf" in target:
            # TOML has no null: "none" is how a manifest unsets an optional key.
            target["anyOf"].append({"const": "none"})
        target["x-env"] = list(option.env_names)
        target["x-cli"] = option.cli_flag or "APP"
        if option.secret:
            target["writeOnly"] = True
    for section in SECTIONS:
        prop = properties[section]
        prop["description"] = section_doc(section)
        prop.pop("default", None)  # the section's own defaults say the same, key by key
        prop["x-env"] = [f"PALFREY_{section.upper()}__<KEY>"]
    properties["$schema"] = {
        "type": "string",
        "description": "The schema this manifest follows (for editors); ignored by Palfrey.",
    }
    ordered = {"$schema": DIALECT, "$id": SCHEMA_ID}
    ordered.update(schema)
    return ordered


def schema_text() -> str:
    """The exact bytes of schemas/palfrey.schema.json."""
    return json.dumps(build_schema(), indent=2, ensure_ascii=False) + "\n"
