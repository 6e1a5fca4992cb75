"""Derive batchrun's request-body JSON Schemas from the official createRun OpenAPI cut-outs.

    python tools/build_schemas.py [REFERENCE_DIR]

REFERENCE_DIR holds ``createrun-v1.openapi.yaml`` and ``createrun-v2.openapi.yaml``
(default: ``../shared/reference``). Writes ``batchrun/schemas/v1.json`` and ``v2.json``.

The conversion is mechanical, so the shipped schemas stay faithful to the official ones:
OpenAPI 3.0 ``nullable: true`` becomes a ``"null"`` type (an ``enum`` keeps its members:
as in OpenAPI 3.0.3, ``nullable`` does not add ``null`` to an enum),
``#/components/schemas/X`` references become ``#/$defs/X``, and documentation-only keys
(``description``, ``example``, ``x-*``) are dropped. One deliberate change: v1's
``required`` lists ``thread_id``, a path parameter that ``additionalProperties: false``
forbids in the body, so no body could ever pass; it is corrected to ``[assistant_id]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DOC_KEYS = {"description", "example", "examples", "title", "default"}


def convert(node: Any) -> Any:
    """Return ``node`` (an OpenAPI 3.0 schema) as JSON Schema 2020-12."""
    if isinstance(node, list):
        return [convert(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DOC_KEYS or key.startswith("x-") or key == "nullable":
            continue
        if key == "$ref":
            out[key] = value.replace("#/components/schemas/", "#/$defs/")
        else:
            out[key] = convert(value)
    if node.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
        if "type" not in out and "enum" not in out:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def referenced(defs: dict[str, Any], root: Any) -> set[str]:
    """Names of the component schemas reachable from ``root``."""
    seen: set[str] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in seen:
                    seen.add(name)
                    stack.append(defs[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return seen


def build(spec_path: Path, version: str) -> dict[str, Any]:
    """Build the CreateRunRequest JSON Schema of one API version from its OpenAPI file."""
    spec = yaml.safe_load(spec_path.read_text(encoding="utf-8"))
    components = spec["components"]["schemas"]
    request = dict(components["CreateRunRequest"])
    if version == "v1":
        request["required"] = [name for name in request["required"] if name != "thread_id"]
    names = sorted(referenced(components, request))
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://batchrun.invalid/schemas/create-run-{version}.json",
        "title": f"CreateRunRequest (Assistants {version})",
        **convert(request),
    }
    if names:
        schema["$defs"] = {name: convert(components[name]) for name in names}
    return schema


def main(argv: list[str]) -> int:
    reference = Path(argv[1]) if len(argv) > 1 else ROOT.parent / "shared" / "reference"
    for version in ("v1", "v2"):
        schema = build(reference / f"createrun-{version}.openapi.yaml", version)
        target = ROOT / "batchrun" / "schemas" / f"{version}.json"
        target.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
