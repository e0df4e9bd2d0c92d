from __future__ import annotations

from pathlib import Path

import yaml

from llmops_ci.kinds import KINDS


def test_copy_merges_includes_and_applies_overrides(tmp_path: Path) -> None:
    flow = tmp_path / "proj" / "flows" / "f"
    (tmp_path / "proj" / "shared" / "lib").mkdir(parents=True)
    (tmp_path / "proj" / "shared" / "lib" / "helper.py").write_text("X = 1\n")
    (tmp_path / "proj" / "shared" / "one.py").write_text("Y = 2\n")
    flow.mkdir(parents=True)
    (flow / "flow.dag.yaml").write_text(yaml.safe_dump({
        "additional_includes": ["../../shared/lib", "../../shared/one.py"],
        "nodes": [{"name": "a", "type": "llm", "connection": "c1", "inputs": {"deployment_name": "d"}},
                  {"name": "v", "use_variants": True}],
        "node_variants": {"v": {"default_variant_id": "x", "variants": {"x": {"node": {
            "type": "llm", "connection": "c1", "inputs": {}}}}}},
    }))
    (flow / "__pycache__").mkdir()
    dag = KINDS["dag"]
    snap = dag.snapshot(dag.inspect(flow), tmp_path / "home" / "work" / "run1",
                        overrides={"a": {"connection": "c2", "model": "m"}, "v": {"connection": "c3"}})
    copy = snap.folder
    assert snap.entry == copy / "flow.dag.yaml"
    assert (copy / "lib" / "helper.py").read_text() == "X = 1\n"
    assert (copy / "one.py").is_file() and not (copy / "__pycache__").exists()
    dag_doc = yaml.safe_load((copy / "flow.dag.yaml").read_text())
    assert "additional_includes" not in dag_doc
    assert dag_doc["nodes"][0] == {"name": "a", "type": "llm", "connection": "c2",
                                   "inputs": {"deployment_name": "d", "model": "m"}}
    assert dag_doc["node_variants"]["v"]["variants"]["x"]["node"]["connection"] == "c3"
    assert yaml.safe_load((flow / "flow.dag.yaml").read_text())["nodes"][0]["connection"] == "c1"


def test_dependencies_and_chat_interface(tmp_path: Path) -> None:
    flow = tmp_path / "flows" / "chat"
    flow.mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    (flow / "flow.dag.yaml").write_text(yaml.safe_dump({
        "additional_includes": ["../../shared"],
        "environment": {"python_requirements_txt": "shared/requirements.txt"},
        "environment_variables": {"MODE": "x"},
        "inputs": {"question": {"type": "string", "is_chat_input": True},
                   "chat_history": {"type": "list", "is_chat_history": True}},
        "outputs": {"answer": {"type": "string", "reference": "${inputs.question}", "is_chat_output": True}},
        "nodes": [],
    }))
    info = KINDS["dag"].inspect(flow)
    assert (info.chat_input, info.chat_history, info.chat_output) == ("question", "chat_history", "answer")
    assert info.environment_variables == {"MODE": "x"}
    deps = {(d.path, d.label) for d in info.dependencies}
    assert (tmp_path / "shared", "additional include") in deps
    # prompt flow also finds the requirements file through the folder include of the same name
    assert (tmp_path / "shared" / "requirements.txt", "python_requirements_txt") in deps
