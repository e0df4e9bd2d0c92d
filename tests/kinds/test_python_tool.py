from __future__ import annotations

from pathlib import Path

import pytest

from llmops_ci.kinds.dag.python_tool import ToolFileError, read_tool


def tool(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "t.py"
    path.write_text(source, encoding="utf-8")
    return path


def test_signature_defaults_kwonly_kwargs(tmp_path: Path) -> None:
    sig = read_tool(tool(tmp_path, "from promptflow.core import tool\n"
                                   "@tool\ndef f(a, b=1, *args, c, d=2, **kw):\n    pass\n"))
    assert {n: p.has_default for n, p in sig.params.items()} == {"a": False, "b": True, "c": False, "d": True}
    assert sig.var_kwargs


@pytest.mark.parametrize("decorator", ["@tool", "@tool()", "@promptflow.tool", "@core.tool(name='x')"])
def test_decorator_spellings(tmp_path: Path, decorator: str) -> None:
    assert read_tool(tool(tmp_path, f"{decorator}\ndef f(x):\n    pass\n")).name == "f"


def test_method_tool_skips_self(tmp_path: Path) -> None:
    sig = read_tool(tool(tmp_path, "class C:\n    @tool\n    def run(self, q: str):\n        pass\n"))
    assert list(sig.params) == ["q"]


def test_connection_annotations(tmp_path: Path) -> None:
    sig = read_tool(tool(tmp_path, "@tool\ndef f(a: CustomConnection, b: 'promptflow.connections.OpenAIConnection',"
                                   " c: Optional[AzureOpenAIConnection] = None, d: str = ''):\n    pass\n"))
    assert {n for n, p in sig.params.items() if p.connection} == {"a", "b", "c"}


def test_two_tools_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ToolFileError) as err:
        read_tool(tool(tmp_path, "@tool\ndef f():\n    pass\n\n@tool\ndef g():\n    pass\n"))
    assert err.value.rule == "tool-function" and err.value.line == 6
    assert "f (line 2), g (line 6)" in err.value.message


def test_syntax_error_line(tmp_path: Path) -> None:
    with pytest.raises(ToolFileError) as err:
        read_tool(tool(tmp_path, "@tool\ndef f(:\n    pass\n"))
    assert (err.value.rule, err.value.line) == ("tool-syntax", 2)
