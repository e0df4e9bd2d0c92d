"""What is a secret, how it is masked, and where masking reaches (text, data, files)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from llmops_ci.core import redaction
from llmops_ci.core.redaction import (
    MASK,
    add,
    add_all,
    from_environment,
    is_secret_name,
    redact,
    redact_data,
    redact_files,
)


def test_a_registered_value_is_masked_wherever_it_appears() -> None:
    add("hunter2-secret")
    assert redact("pw=hunter2-secret; again hunter2-secret.") == "pw=***; again ***."


def test_values_are_stripped_and_non_strings_ignored() -> None:
    add("  padded-secret \n")
    add(12345678)
    add(None)
    assert redact("x padded-secret y 12345678") == "x *** y 12345678"


@pytest.mark.parametrize("short", ["true", "8080", "abcde"])
def test_short_values_are_never_masked(short: str) -> None:
    """A value like ``true`` or a port would redact ordinary text."""
    add(short)
    assert redact(f"enabled={short} on port {short}") == f"enabled={short} on port {short}"


def test_the_minimum_length_is_six() -> None:
    assert redaction.MIN_LENGTH == 6
    add("abcdef")
    assert redact("abcdef abcde") == "*** abcde"


def test_the_longest_secret_wins_when_secrets_overlap() -> None:
    add("token")  # too short: ignored
    add("secret1")
    add("secret1-and-more")
    assert redact("a secret1-and-more b secret1 c") == "a *** b *** c"
    redaction.reset()
    add("secret1-and-more")
    add("secret1")  # registered later, shorter: still the longer one is matched first
    assert redact("[secret1-and-more]") == "[***]"


def test_the_longest_secret_wins_whatever_its_spelling() -> None:
    add("zz-secret")
    add("aa-zz-secret")  # contains the other, sorts before it
    assert redact("<aa-zz-secret>") == "<***>"


def test_values_are_matched_literally_not_as_patterns() -> None:
    add("a.b+c*d(e")
    assert redact("axbbcd(e a.b+c*d(e") == "axbbcd(e ***"


def test_adding_twice_and_add_all() -> None:
    add_all(["first-secret", "second-secret", "first-secret", 7])
    assert redact("first-secret second-secret") == "*** ***"


def test_reset_forgets_everything() -> None:
    add("forget-me-please")
    redaction.reset()
    assert redact("forget-me-please") == "forget-me-please"
    add("another-secret")
    assert redact("forget-me-please another-secret") == "forget-me-please ***"


@pytest.mark.parametrize("name", [
    "GITHUB_TOKEN", "GH_TOKEN", "ACTIONS_RUNTIME_TOKEN", "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
    "ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_CACHE_URL", "ACTIONS_RESULTS_URL", "SYSTEM_ACCESSTOKEN",
    "AZURE_DEVOPS_EXT_PAT", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN", "DATABRICKS_TOKEN",
    "DATABRICKS_CLIENT_SECRET", "OPENAI_API_KEY", "openai_api_key", "AZURE_OPENAI_KEY", "MY-SECRET", "DB_PASSWORD",
    "DB_PASSWD", "DB_PWD", "HF_TOKEN", "ACCESS_TOKEN", "AUTH_TOKEN", "STORAGE_SAS_TOKEN", "STORAGE_SAS",
    "CONNECTION_STRING", "DB_CONNECTION-STRING", "AWS_ACCESS_KEY", "ACCOUNT_KEY", "SUBSCRIPTION_KEY",
    "GOOGLE_CREDENTIALS", "GOOGLE_CREDENTIAL", "ADO_PAT", "APIKEY", "X_APIKEY", "SERVICE_CLIENT_SECRET", "KEY",
    "ENDPOINT_AUTH_abc", "SECUREFILE_TICKET_1", "GH_ENTERPRISE_TOKEN",
])
def test_credential_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["PWD", "OLDPWD", "pwd", "PATH", "HOME", "KEYBOARD", "MONKEY", "TOKENIZER",
                                  "SECRET_NAME_PREFIX",
                                  "PATH_COMPAT", "TOKENS", "PASSWORD_HINT_URL", "OPENAI_BASE_URL"])
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


def test_from_environment_takes_credentials_and_the_named_fields_only() -> None:
    environ = {
        "GITHUB_TOKEN": "ghs-value-123456",
        "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.actions.example/abc?x=1",
        "MY_SERVICE_SECRET": "svc-secret-value",
        "ENDPOINT": "https://ordinary.example/",
        "DB_USER_FIELD": "read-into-secret",
        "PWD": "/home/runner/work",
    }
    from_environment(environ, secret_names=["DB_USER_FIELD"])
    text = " ".join(environ.values())
    assert redact(text) == "*** *** *** https://ordinary.example/ *** /home/runner/work"


@pytest.mark.parametrize(("text", "expected"), [
    ("key sk-" + "a" * 24 + " end", "key *** end"),
    ("key sk-proj-" + "A1_-" * 6 + " end", "key *** end"),
    ("token ghp_" + "x" * 36, "token ***"),
    ("token github_pat_" + "x_" * 20, "token ***"),
    ("DefaultEndpointsProtocol=https;AccountKey=" + "Ab+/" * 10 + "==;", "DefaultEndpointsProtocol=https;***;"),
    ("aws AKIA" + "ABCDEFGHIJ234567" + " x", "aws *** x"),
    ("slack xoxb-" + "1234567890-abc", "slack ***"),
    ("jwt eyJ" + "h" * 12 + ".eyJ" + "p" * 12 + ".sig_nature", "jwt ***"),
    ("dbx dapi" + "0123456789abcdef" * 2, "dbx ***"),
    ("Authorization: Bearer abc.def-ghi_123", "Authorization: Bearer ***"),
    ("authorization: bearer abcdefgh", "authorization: bearer ***"),
    ("https://x.blob/c?sv=1&sig=abcdEFGH1234%2B&se=2", "https://x.blob/c?sv=1&sig=***&se=2"),
    ("https://api/x?api-key=abcdefgh12", "https://api/x?api-key=***"),
    ("https://api/x?code=abcdefgh12&token=zyxwvuts99", "https://api/x?code=***&token=***"),
])
def test_well_known_formats_are_masked_without_being_registered(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize("text", [
    "sk-short", "ghp_short", "Bearer abc", "?sig=1234567", "AKIA1234", "dapi1234", "a task-list of skills",
    "https://api/x?page=abcdefgh12",
])
def test_ordinary_text_that_resembles_a_format_stays(text: str) -> None:
    assert redact(text) == text


def test_redact_data_masks_strings_at_every_depth_keys_included() -> None:
    add("nested-secret")
    data = {
        "nested-secret": "v",
        "list": ["a", "nested-secret", 3, None, True],
        "tuple": ("nested-secret",),
        "deep": {"k": [{"x": "pre nested-secret post"}]},
        "number": 1.5,
    }
    assert redact_data(data) == {
        MASK: "v",
        "list": ["a", MASK, 3, None, True],
        "tuple": [MASK],
        "deep": {"k": [{"x": "pre *** post"}]},
        "number": 1.5,
    }
    assert redact_data("nested-secret") == MASK
    assert redact_data(7) == 7


def test_redact_files_rewrites_text_files_below_a_folder(tmp_path: Path) -> None:
    add("file-secret-value")
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.log").write_text("x file-secret-value y\n", encoding="utf-8")
    (tmp_path / "sub" / "b.json").write_text('{"k": "file-secret-value"}', encoding="utf-8")
    (tmp_path / "clean.txt").write_text("nothing here", encoding="utf-8")
    binary = b"\xff\xfe file-secret-value \x00"
    (tmp_path / "store.sqlite").write_bytes(binary)
    redact_files(tmp_path)
    assert (tmp_path / "a.log").read_text(encoding="utf-8") == "x *** y\n"
    assert (tmp_path / "sub" / "b.json").read_text(encoding="utf-8") == '{"k": "***"}'
    assert (tmp_path / "clean.txt").read_text(encoding="utf-8") == "nothing here"
    assert (tmp_path / "store.sqlite").read_bytes() == binary


def test_redact_files_takes_a_single_file_and_a_missing_path(tmp_path: Path) -> None:
    add("file-secret-value")
    one = tmp_path / "one.txt"
    one.write_text("file-secret-value", encoding="utf-8")
    other = tmp_path / "other.txt"
    other.write_text("file-secret-value", encoding="utf-8")
    redact_files(one)
    assert one.read_text(encoding="utf-8") == MASK
    assert other.read_text(encoding="utf-8") == "file-secret-value"
    redact_files(tmp_path / "missing")  # nothing to do, no error


def test_redact_files_leaves_large_files_and_links(tmp_path: Path) -> None:
    add("file-secret-value")
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target.txt"
    target.write_text("file-secret-value", encoding="utf-8")
    folder = tmp_path / "run"
    folder.mkdir()
    os.symlink(target, folder / "link.txt")
    big = folder / "big.txt"
    big.write_text("file-secret-value" + "x" * 100, encoding="utf-8")
    exact = folder / "exact.txt"
    exact.write_text("file-secret-value" + "x" * 83, encoding="utf-8")  # 100 bytes: at the limit, still rewritten
    redact_files(folder, limit=100)
    assert target.read_text(encoding="utf-8") == "file-secret-value"  # a link is not followed out of the folder
    assert big.read_text(encoding="utf-8").startswith("file-secret-value")
    assert exact.read_text(encoding="utf-8") == "***" + "x" * 83


def test_redact_files_without_registered_secrets_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("nothing registered", encoding="utf-8")
    before = path.stat().st_mtime_ns
    redact_files(tmp_path)
    assert path.stat().st_mtime_ns == before
