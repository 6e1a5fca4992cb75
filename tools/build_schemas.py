"""Derive batchrun's request-body JSON Schemas from the official OpenAI OpenAPI documents.

    python tools/build_schemas.py [REFERENCE_DIR]

REFERENCE_DIR (default: ``../shared/reference``) holds ``createrun-v1.openapi.yaml`` and
``createrun-v2.openapi.yaml``, the seed's Create Run cut-outs, and the whole official
document ``openai-openapi-f85dbe2.yaml``. Writes ``batchrun/schemas/v1.json`` and
``v2.json`` (``CreateRunRequest``), ``responses.json`` (``CreateResponse``) and ``chat.json``
(``CreateChatCompletionRequest``). The output is a function of the input files alone: keys
are sorted and the same files always give the same bytes.

The conversion is mechanical, so the shipped schemas stay faithful to the official ones:
OpenAPI 3.0 ``nullable: true`` becomes a ``"null"`` type (an ``enum`` keeps its members:
as in OpenAPI 3.0.3, ``nullable`` does not add ``null`` to an enum),
``#/components/schemas/X`` references become ``#/$defs/X``, and documentation-only keys
(``description``, ``example``, ``x-*``) are dropped. One deliberate change: v1's
``required`` lists ``thread_id``, a path parameter that ``additionalProperties: false``
forbids in the body, so no body could ever pass; it is corrected to ``[assistant_id]``.
The full document needs a few more steps, listed in :func:`convert_component`, and two
corrections so that its own request examples pass (``REQUEST_SIDE_TWINS``).
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
        if key == "properties" and isinstance(value, dict):
            # Property names are data, not keywords: a property called "description" (a
            # function's) is kept and checked like any other.
            out[key] = {name: convert(schema) for name, schema in value.items()}
            continue
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


# The whole official document: CreateResponse and CreateChatCompletionRequest are cut from it.
OPENAPI_FILE = "openai-openapi-f85dbe2.yaml"
OPENAPI_COMMIT = "f85dbe2"
ENDPOINT_SCHEMAS = {
    "responses": ("CreateResponse", "CreateResponse (Responses API)"),
    "chat": ("CreateChatCompletionRequest", "CreateChatCompletionRequest (Chat Completions)"),
}
COMPONENT_REF = "#/components/schemas/"
# CreateResponse reaches two response-side shapes whose ``required`` lists the document's
# own examples break: the "Functions" example sends a function tool without ``strict``, the
# "Image input" example an image part without ``detail``. The document also has their
# request-side twins, which require only what a request must send; their lists are used.
REQUEST_SIDE_TWINS = {
    "FunctionTool": "FunctionToolParam",
    "InputImageContent": "InputImageContentParamAutoParam",
}
# OpenAPI's own annotations, which JSON Schema does not validate. A ``discriminator`` only
# names the property that tells oneOf branches apart; the branches' ``type`` enums already
# do that in JSON Schema (see the tests, which check that official examples still pass).
OPENAPI_ONLY_KEYS = {"discriminator", "deprecated", "xml", "externalDocs", "$recursiveAnchor"}
# Keywords whose keys are names (of properties, of definitions), never keywords.
SCHEMA_MAPS = {"properties", "patternProperties", "$defs", "dependentSchemas"}
# Keywords whose values are data, converted as they are.
DATA_KEYS = {"enum", "const", "required"}


def convert_component(node: Any, component: str) -> Any:
    """Return ``node``, a part of the component schema ``component`` of an OpenAPI 3.1
    document, as JSON Schema 2020-12.

    :func:`convert` (the createRun cut-outs) keeps names under ``properties`` too; this
    one also keeps them under the other maps of names, and differs where the full document
    needs it: a ``oneOf`` with a ``discriminator`` becomes an ``anyOf`` (see below);
    ``$recursiveRef: "#"`` (2019-09 recursion) becomes a reference to the enclosing
    component, because in a cut-out document "#" would be the request itself; OpenAPI's
    ``discriminator`` and ``deprecated`` are dropped; and ``nullable: true`` beside an
    ``enum`` adds ``null`` to the enum too (the document's intent: in OpenAPI 3.1
    ``nullable`` is not even a keyword, and every other nullable field takes null).
    """
    if isinstance(node, list):
        return [convert_component(item, component) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DOC_KEYS or key in OPENAPI_ONLY_KEYS or key.startswith("x-"):
            continue
        if key == "nullable":
            continue
        if key == "$ref":
            out[key] = _component_ref(value)
        elif key == "$recursiveRef":
            if value != "#":
                raise ValueError(f"{component}: unexpected $recursiveRef {value!r}")
            out["$ref"] = f"#/$defs/{component}"
        elif key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: convert_component(sub, component) for name, sub in value.items()}
        elif key in DATA_KEYS:
            out[key] = value
        elif key == "oneOf" and "discriminator" in node:
            # The discriminator picks one branch by its ``type``; JSON Schema's oneOf instead
            # demands that exactly one branch fit, and the document's branches overlap (an
            # input message fits both EasyInputMessage and Item's InputMessage), so oneOf
            # would refuse the official examples. anyOf accepts what the discriminator does.
            out["anyOf"] = convert_component(value, component)
        else:
            out[key] = convert_component(value, component)
    if node.get("nullable") is True:
        if "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = types if "null" in types else [*types, "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _component_ref(ref: Any) -> str:
    if (
        not isinstance(ref, str)
        or not ref.startswith(COMPONENT_REF)
        or "/" in ref.removeprefix(COMPONENT_REF)
    ):
        raise ValueError(f"cannot cut a reference to {ref!r}: only whole components are kept")
    return "#/$defs/" + ref.removeprefix(COMPONENT_REF)


def load_openapi(path: Path) -> dict[str, Any]:
    """The parsed OpenAPI document (the C loader when PyYAML has it: the file is 3 MB)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open(encoding="utf-8") as stream:
        document: dict[str, Any] = yaml.load(stream, Loader=loader)
    return document


def build_endpoint(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """Cut the request-body schema of endpoint ``name`` (``responses`` or ``chat``) out of
    the whole OpenAPI document, with every component it reaches, transitively, in $defs."""
    component, title = ENDPOINT_SCHEMAS[name]
    components = spec["components"]["schemas"]
    request = components[component]
    names = sorted(referenced(components, request))
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://batchrun.invalid/schemas/{name}.json",
        "$comment": f"Cut from openai/openai-openapi at {OPENAPI_COMMIT} by tools/build_schemas.py",
        "title": title,
        **convert_component(request, component),
    }
    defs = {ref: convert_component(components[ref], ref) for ref in names}
    for shape, twin in REQUEST_SIDE_TWINS.items():
        if shape in defs:
            defs[shape]["required"] = list(components[twin]["required"])
    schema["$defs"] = defs
    return schema


def render(schema: dict[str, Any]) -> str:
    """The schema as shipped: sorted keys, two-space indent, a final newline."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def build_all(reference: Path) -> dict[str, str]:
    """Every shipped schema, by file stem, as the exact text to write."""
    built = {
        version: build(reference / f"createrun-{version}.openapi.yaml", version)
        for version in ("v1", "v2")
    }
    spec = load_openapi(reference / OPENAPI_FILE)
    built.update({name: build_endpoint(spec, name) for name in ENDPOINT_SCHEMAS})
    return {name: render(schema) for name, schema in built.items()}


def main(argv: list[str]) -> int:
    reference = Path(argv[1]) if len(argv) > 1 else ROOT.parent / "shared" / "reference"
    for name, text in build_all(reference).items():
        target = ROOT / "batchrun" / "schemas" / f"{name}.json"
        target.write_text(text, encoding="utf-8")
        print(f"wrote {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
