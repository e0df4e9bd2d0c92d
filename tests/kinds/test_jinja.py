from __future__ import annotations

import pytest

from llmops_ci.kinds.jinja import TemplateSyntax, template_vars


def test_loop_set_and_globals_are_not_inputs() -> None:
    src = ("{% set greeting = 'hi' %}{{ greeting }}\n"
           "{% for m in chat_history %}{{ m.inputs.question }}{{ loop.index }}{% endfor %}\n"
           "{% for i in range(n) %}{{ i }}{% endfor %}{{ dict(a=1) }}\n"
           "{% macro row(x) %}{{ x }}{% endmacro %}{{ row(question) }}\n")
    assert template_vars(src).used == {"chat_history": 2, "n": 3, "question": 4}


def test_first_use_line() -> None:
    assert template_vars("a\n\n{{ x }}\n{{ x }}{{ y | default('') }}\n").used == {"x": 3, "y": 4}


def test_syntax_error() -> None:
    with pytest.raises(TemplateSyntax) as err:
        template_vars("ok\n{% if x %}\nno end\n")
    assert err.value.line == 3
