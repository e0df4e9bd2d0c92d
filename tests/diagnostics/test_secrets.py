from __future__ import annotations

from pathlib import Path

import pytest

from llmops_ci.core.yamldoc import parse_yaml
from llmops_ci.diagnostics.secrets import scan

SECRETS = {
    "openai": "sk-proj-Abcdefghijklmnopqrstuvwxyz0123456789",
    "github": "ghp_" + "a1B2" * 9,
    "azure_hex": "0123456789abcdef0123456789abcdef",
    "storage": "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=" + "A" * 40 + "==",
}


@pytest.mark.parametrize(("key", "value"), [
    ("api_key", SECRETS["azure_hex"]),
    ("description", SECRETS["openai"]),
    ("note", SECRETS["github"]),
    ("connection_string", SECRETS["storage"]),
    ("password", "hunter22"),
    ("OPENAI_API_KEY", "plain-text-key"),
])
def test_literal_secrets_are_found_and_never_repeated(key: str, value: str) -> None:
    doc = parse_yaml(f"a:\n  b:\n    {key}: '{value}'\n", Path("x.yaml"))
    (f,) = scan(doc)
    assert (f.rule, f.line, f.column) == ("secret-literal", 3, len(key) + 7)
    assert value not in f.message and value[:8] not in f.message


def test_custom_connection_secrets_block() -> None:
    doc = parse_yaml("c:\n  secrets:\n    anything: literal\n    other: ${env:X}\n", Path("x.yaml"))
    assert [f.line for f in scan(doc)] == [3]


@pytest.mark.parametrize("value", ["${env:OPENAI_API_KEY}", "${inputs.key}", "<your-key>", "", "***",
                                   "https://${env:HOST}/x"])
def test_references_and_placeholders_are_fine(value: str) -> None:
    assert scan(parse_yaml(f"api_key: '{value}'\nmax_tokens: 300\ntokens_total: 5\n", Path("x.yaml"))) == []
