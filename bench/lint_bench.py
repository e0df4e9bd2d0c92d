#!/usr/bin/env python3
"""Benchmark ``llmops-ci lint`` against ``pf flow validate`` on generated prompt flow DAG flows.

    python bench/lint_bench.py [--flows 200] [--pf-sample 18] [--python PATH] [--seed 20240607] [--keep]

What it does:

1. Generates N flows (seeded, deterministic) in a temporary folder: python-only chains, LLM nodes with
   Jinja2 chat prompts (role markers, a for-loop over chat_history), variants, activate conditions,
   aggregation nodes, ``**kwargs`` tools and an additional_includes of a shared Python file. Every
   other flow is valid; the rest carry exactly one seeded defect each, cycling through DEFECTS.
2. Times ONE ``python -m llmops_ci lint <all flows> --format json`` process (best and median of 3).
3. Times ``pf flow validate --source <flow>`` on a sample of flows, one process per flow as users run
   it (on a scratch copy, since pf writes ``.promptflow/`` into the flow), and scales it to N flows.
4. Prints which defects each tool caught, and the headline numbers.
5. Deletes the temporary folder and makes sure no process it started is left running.

Standard library only. ``pf`` is looked up next to --python, then on PATH; without it the comparison
is skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import random
import re
import shutil
import signal
import statistics
import string
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _harness import find_pf, processes_mentioning

# -- defects ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Defect:
    key: str
    label: str
    rule: str  # the llmops-ci lint rule id expected to catch it
    needs: frozenset[str] = frozenset()  # flow features the defect is seeded into


DEFECTS = [
    Defect("node-ref", "unknown node reference", "node-ref-unknown", frozenset({"chain2"})),
    Defect("cycle", "node cycle", "node-cycle", frozenset({"chain2"})),
    Defect("prompt-var", "Jinja variable never passed", "prompt-var-unbound", frozenset({"llm"})),
    Defect("arg-unknown", "tool argument that does not exist", "tool-arg-unknown"),
    Defect("arg-missing", "required tool argument missing", "tool-arg-missing"),
    Defect("variant-default", "bad default_variant_id", "variant-default-unknown", frozenset({"llm", "variants"})),
    Defect("key-typo", "unknown key typo (activte/descripton)", "unknown-key"),
    Defect("output-ref", "output references a missing node", "output-ref-unknown"),
    Defect("agg-ref", "node references an aggregation node", "node-ref-aggregation", frozenset({"aggregation"})),
    Defect("llm-api", "LLM node with api: chat2", "llm-api-invalid", frozenset({"llm"})),
    Defect("prompt-missing", "missing prompt file", "tool-file-missing", frozenset({"llm"})),
    Defect("prompt-syntax", "Jinja syntax error", "prompt-syntax", frozenset({"llm"})),
    Defect("py-syntax", "Python syntax error", "tool-syntax"),
    Defect("secret", "literal sk-... API key", "secret-literal"),
    Defect("include-missing", "additional_includes path missing", "include-missing"),
    Defect("duplicate", "duplicate node name", "node-duplicate"),
]

# -- a tiny YAML writer (enough for flow.dag.yaml; strings that are not plain are JSON-quoted) -----------

_PLAIN = re.compile(r"^[A-Za-z_$][A-Za-z0-9_${}./\-]*( [A-Za-z0-9_${}./\-]+)*$")
_RESERVED = {"true", "false", "yes", "no", "on", "off", "null", "none", "~", "y", "n"}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text)


def to_yaml(value: Any, indent: int = 0) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{_scalar(k)}:")
                lines += to_yaml(v, indent + (2 if isinstance(v, dict) else 0))
            elif isinstance(v, (dict, list)):
                lines.append(f"{pad}{_scalar(k)}: {'{}' if isinstance(v, dict) else '[]'}")
            else:
                lines.append(f"{pad}{_scalar(k)}: {_scalar(v)}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, (dict, list)) and item:
                sub = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines += sub[1:]
            else:
                lines.append(f"{pad}- {_scalar(item)}")
    else:
        lines.append(pad + _scalar(value))
    return lines


# -- flow generation ----------------------------------------------------------------------------------------

CHAIN_NAMES = ["fetch_docs", "clean_text", "extract_keywords", "rerank", "format_context", "summarize_docs",
               "detect_language", "normalize_query", "split_chunks", "score_relevance"]
MAIN_PARAMS = ["text", "query", "content", "doc"]
OPTIONAL_PARAMS = {  # name: (default literal in Python, a value a node may pass, a typo of the name)
    "max_results": ("3", 5, "max_result"),
    "language": ('"en"', "de", "langauge"),
    "threshold": ("0.5", 0.7, "treshold"),
    "style": ('"plain"', "bullets", "styel"),
}
CONNECTIONS = ["open_ai_connection", "azure_open_ai", "aoai_gpt4o"]
DEPLOYMENTS = ["gpt-4o-mini", "gpt-35-turbo", "gpt-4o"]
SHARED_FILE = "shared_utils.py"
SHARED_TOOL = '''"""Helpers shared by several flows (pulled in with additional_includes)."""

import re

from promptflow.core import tool

_SPACE = re.compile(r"\\s+")


@tool
def normalize_question(question: str) -> str:
    """Collapse whitespace and strip the user's question."""
    return _SPACE.sub(" ", str(question or "")).strip()
'''


@dataclass
class PyTool:
    node: str
    file: str
    func: str
    main: str
    optional: str | None
    extra_required: list[str] = field(default_factory=list)
    kwargs: bool = False
    syntax_error: bool = False
    main_default: str | None = None
    extra_optional: list[tuple[str, str]] = field(default_factory=list)
    has_top_k: bool = False

    def source(self) -> str:
        params = [f"{self.main}: str" + (f" = {self.main_default}" if self.main_default else "")]
        if self.has_top_k:
            params.append("top_k: int")
        params += [f"{p}: str" for p in self.extra_required]
        params += [f"{p}: str = {d}" for p, d in self.extra_optional]
        if self.optional:
            default = OPTIONAL_PARAMS[self.optional][0]
            ann = {"max_results": "int", "threshold": "float"}.get(self.optional, "str")
            params.append(f"{self.optional}: {ann} = {default}")
        if self.kwargs:
            params.append("**kwargs")
        names = [p.split(":")[0] for p in params if not p.startswith("**")]
        colon = "" if self.syntax_error else ":"
        body = f"    parts = [str(v) for v in ({', '.join(names)},) if v not in (None, \"\")]\n"
        if self.kwargs:
            body += "    parts += [f\"{k}={v}\" for k, v in sorted(kwargs.items())]\n"
        body += "    return \" | \".join(parts)\n"
        return (f'"""Step \'{self.node}\' of the flow."""\n\nfrom promptflow.core import tool\n\n\n'
                f"@tool\ndef {self.func}({', '.join(params)}) -> str{colon}\n"
                f'    """{self.func.replace("_", " ").capitalize()}."""\n{body}')


@dataclass
class GenFlow:
    name: str
    defect: Defect | None
    features: set[str]
    dag: dict[str, Any]
    files: dict[str, str]
    note: str = ""


def _typo(word: str, rng: random.Random, avoid: set[str]) -> str:
    for _ in range(50):
        i = rng.randrange(1, len(word) - 1)
        if rng.random() < 0.5 and word[i] != word[i + 1] and word[i].isalpha() and word[i + 1].isalpha():
            cand = word[:i] + word[i + 1] + word[i] + word[i + 2:]
        else:
            cand = word[:i] + word[i + 1:]
        if cand != word and cand not in avoid:
            return cand
    return word + "x"


def _prompt(variant: int, chat: bool, product: bool, extra_var: str | None, syntax_error: str | None) -> str:
    intro = ("You are a helpful assistant. Answer only from the context below and say when it is not enough."
             if variant == 0 else
             "You answer support questions briefly and precisely, citing the context where you can.")
    lines = ["# system:", intro]
    if product:
        lines.append("You support customers of {{ product }}.")
    if extra_var:
        lines.append(f"Answer in a {{{{ {extra_var} }}}} tone.")
    lines += ["", "Context:", "{{ context }}", ""]
    if chat:
        lines += ["{% for item in chat_history %}", "# user:", "{{ item.inputs.question }}", "", "# assistant:",
                  "{{ item.outputs.answer }}", "", "{% endfor %}"]
    lines += ["# user:", "{{ question }}", ""]
    text = "\n".join(lines)
    if syntax_error == "endfor":
        text = text.replace("{% endfor %}\n", "")
    elif syntax_error == "brace":
        text = text.replace("{{ question }}", "{{ question }", 1)
    return text


def generate_flow(index: int, rng: random.Random, defect: Defect | None, occurrence: int) -> GenFlow:
    name = f"flow_{index:03d}"
    features: set[str] = set()
    if rng.random() < 0.6:
        features.add("llm")
    if "llm" in features and rng.random() < 0.5:
        features.add("chat")
    if "llm" in features and rng.random() < 0.4:
        features.add("variants")
    for feat, p in (("activate", 0.3), ("aggregation", 0.35), ("kwargs", 0.35), ("include", 0.35)):
        if rng.random() < p:
            features.add(feat)
    if defect is not None:
        features |= defect.needs
        if defect.key == "key-typo" and occurrence % 2 == 0:
            features.add("activate")
    chain_len = rng.randint(2 if (defect and "chain2" in defect.needs) else 1, 3)
    top_k = rng.random() < 0.4

    files: dict[str, str] = {}
    tools: dict[str, PyTool] = {}
    inputs: dict[str, Any] = {}
    q_spec: dict[str, Any] = {"type": "string"}
    if rng.random() < 0.5:
        q_spec["default"] = "How do I reset my password?"
    if "chat" in features:
        q_spec["is_chat_input"] = True
        inputs["chat_history"] = {"type": "list", "default": [], "is_chat_history": True}
    inputs["question"] = q_spec
    if top_k:
        inputs["top_k"] = {"type": "int", "default": 3}
    nodes: list[dict[str, Any]] = []
    dag: dict[str, Any] = {"$schema": "https://azuremlschemas.azureedge.net/promptflow/latest/Flow.schema.json"}
    if rng.random() < 0.5:
        dag["description"] = f"Generated benchmark flow {index}"

    def py_node(node: str, tool: PyTool, node_inputs: dict[str, Any]) -> dict[str, Any]:
        tools[node] = tool
        return {"name": node, "type": "python", "source": {"type": "code", "path": tool.file},
                "inputs": node_inputs}

    current = "${inputs.question}"
    if "include" in features:
        nodes.append({"name": "normalize_question", "type": "python",
                      "source": {"type": "code", "path": SHARED_FILE}, "inputs": {"question": current}})
        dag["additional_includes"] = [f"../../shared/{SHARED_FILE}"]
        current = "${normalize_question.output}"
    chain = rng.sample(CHAIN_NAMES, chain_len)
    for i, node in enumerate(chain):
        opt = rng.choice(list(OPTIONAL_PARAMS)) if rng.random() < 0.8 else None
        tool = PyTool(node, f"{node}.py", node, rng.choice(MAIN_PARAMS), opt, has_top_k=top_k and i == 0)
        node_inputs: dict[str, Any] = {tool.main: current}
        if tool.has_top_k:
            node_inputs["top_k"] = "${inputs.top_k}"
        if opt and rng.random() < 0.5:
            node_inputs[opt] = OPTIONAL_PARAMS[opt][1]
        nodes.append(py_node(node, tool, node_inputs))
        current = f"${{{node}.output}}"
    chain_last = current
    if "kwargs" in features:
        tool = PyTool("collect_context", "collect_context.py", "collect_context", "question", None, kwargs=True)
        nodes.append(py_node("collect_context", tool, {"question": "${inputs.question}", "retrieved": current,
                                                       "channel": rng.choice(["web", "email", "chat"])}))
        current = "${collect_context.output}"
    if "activate" in features:
        nodes.append(py_node("classify_intent", PyTool("classify_intent", "classify_intent.py", "classify_intent",
                                                       "question", None), {"question": "${inputs.question}"}))
        nodes.append(dict(py_node("search_branch", PyTool("search_branch", "search_branch.py", "search_branch",
                                                          "context", None), {"context": current}),
                          activate={"when": "${classify_intent.output}", "is": "search"}))
        nodes.append(dict(py_node("direct_branch", PyTool("direct_branch", "direct_branch.py", "direct_branch",
                                                          "question", None), {"question": "${inputs.question}"}),
                          activate={"when": "${classify_intent.output}", "is": "direct"}))
        nodes.append(py_node("merge_branches", PyTool("merge_branches", "merge_branches.py", "merge_branches",
                                                      "search_result", None, main_default="None",
                                                      extra_optional=[("direct_result", "None")]),
                             {"search_result": "${search_branch.output}", "direct_result": "${direct_branch.output}"}))
        current = "${merge_branches.output}"
    llm_bodies: list[dict[str, Any]] = []
    if "llm" in features:
        connection = rng.choice(CONNECTIONS)
        deployment = rng.choice(DEPLOYMENTS)
        product = rng.random() < 0.4

        def llm_body(prompt_file: str, temperature: float) -> dict[str, Any]:
            body_inputs: dict[str, Any] = {"deployment_name": deployment, "temperature": temperature,
                                           "max_tokens": rng.choice([256, 512, 800])}
            if "chat" in features:
                body_inputs["chat_history"] = "${inputs.chat_history}"
            body_inputs["question"] = "${inputs.question}"
            body_inputs["context"] = current
            if product:
                body_inputs["product"] = "Contoso Cloud"
            return {"type": "llm", "source": {"type": "code", "path": prompt_file}, "inputs": body_inputs,
                    "connection": connection, "api": "chat"}

        if "variants" in features:
            nodes.append({"name": "answer", "use_variants": True})
            bodies = {"variant_0": llm_body("answer.jinja2", 0.2), "variant_1": llm_body("answer_v1.jinja2", 0.8)}
            dag["node_variants"] = {"answer": {"default_variant_id": rng.choice(list(bodies)),
                                               "variants": {vid: {"node": b} for vid, b in bodies.items()}}}
            llm_bodies = list(bodies.values())
        else:
            body = {"name": "answer", **llm_body("answer.jinja2", 0.3)}
            nodes.append(body)
            llm_bodies = [body]
        for body in llm_bodies:
            files[body["source"]["path"]] = "pending"  # written below, once defects are known
        current = "${answer.output}"
    outputs: dict[str, Any] = {"answer": {"type": "string", "reference": current}}
    if "chat" in features:
        outputs["answer"]["is_chat_output"] = True
    if chain_last != current and rng.random() < 0.4:
        outputs["context"] = {"type": "string", "reference": chain_last}
    if "aggregation" in features:
        nodes.append({"name": "aggregate_metrics", "type": "python",
                      "source": {"type": "code", "path": "aggregate_metrics.py"},
                      "inputs": {"answers": current}, "aggregation": True})
        files["aggregate_metrics.py"] = (
            '"""Aggregation over all lines: logs the mean answer length."""\n\nfrom typing import List\n\n'
            "from promptflow.core import log_metric, tool\n\n\n@tool\n"
            "def aggregate_metrics(answers: List[str]) -> dict:\n"
            "    lengths = [len(str(a or \"\")) for a in answers]\n"
            "    mean = round(sum(lengths) / len(lengths), 2) if lengths else 0.0\n"
            "    log_metric(\"mean_answer_length\", mean)\n"
            "    return {\"mean_answer_length\": mean, \"lines\": len(lengths)}\n")

    # -- seed the defect ------------------------------------------------------------------------------
    extra_var = syntax = None
    missing_prompt = False
    note = ""
    node_names = {n["name"] for n in nodes}
    chain_nodes = [n for n in nodes if n["name"] in chain]
    key = defect.key if defect else None
    if key == "node-ref":
        target = chain_nodes[-1]
        tool = tools[target["name"]]
        tool.optional = tool.optional or "style"
        bad = _typo(chain[0], rng, node_names)
        target["inputs"][tool.optional] = f"${{{bad}.output}}"
        note = f"node '{target['name']}' reads ${{{bad}.output}}"
    elif key == "cycle":
        first = chain_nodes[0]
        tool = tools[first["name"]]
        tool.optional = tool.optional or "style"
        first["inputs"][tool.optional] = f"${{{chain[-1]}.output}}"
        note = f"'{chain[0]}' reads '{chain[-1]}', which reads it back"
    elif key == "prompt-var":
        extra_var = "tone"
        note = "answer.jinja2 uses {{ tone }}"
    elif key == "arg-unknown":
        node = rng.choice(chain_nodes)
        tool = tools[node["name"]]
        tool.optional = tool.optional or "max_results"
        node["inputs"].pop(tool.optional, None)
        bad = OPTIONAL_PARAMS[tool.optional][2]
        node["inputs"][bad] = OPTIONAL_PARAMS[tool.optional][1]
        note = f"node '{node['name']}' passes '{bad}' (tool has '{tool.optional}')"
    elif key == "arg-missing":
        node = rng.choice(chain_nodes)
        tools[node["name"]].extra_required.append("locale")
        note = f"{node['name']}() requires 'locale'"
    elif key == "variant-default":
        bad = "variant_2" if occurrence % 2 == 0 else "varaint_0"
        dag["node_variants"]["answer"]["default_variant_id"] = bad
        note = f"default_variant_id: {bad}"
    elif key == "key-typo":
        if "activate" in features:
            idx = next(i for i, n in enumerate(nodes) if n["name"] == "direct_branch")
            nodes[idx] = {("activte" if k == "activate" else k): v for k, v in nodes[idx].items()}
            note = "node 'direct_branch' has 'activte:'"
        else:
            dag.pop("description", None)
            dag["descripton"] = f"Generated benchmark flow {index}"
            note = "top-level 'descripton:'"
    elif key == "output-ref":
        bad = _typo(rng.choice(chain), rng, node_names)
        outputs["sources"] = {"type": "string", "reference": f"${{{bad}.output}}"}
        note = f"output 'sources' references ${{{bad}.output}}"
    elif key == "agg-ref":
        tool = PyTool("annotate", "annotate.py", "annotate", "text", "style")
        nodes.append(py_node("annotate", tool, {"text": "${inputs.question}", "style": "${aggregate_metrics.output}"}))
        outputs["annotated"] = {"type": "string", "reference": "${annotate.output}"}
        note = "line node 'annotate' reads ${aggregate_metrics.output}"
    elif key == "llm-api":
        llm_bodies[0]["api"] = "chat2"
        note = "api: chat2"
    elif key == "prompt-missing":
        missing_prompt = True
        note = f"{llm_bodies[0]['source']['path']} not written"
    elif key == "prompt-syntax":
        syntax = "endfor" if "chat" in features else "brace"
        note = "{% for %} without {% endfor %}" if syntax == "endfor" else "'{{ question }' (unclosed)"
    elif key == "py-syntax":
        node = rng.choice(chain_nodes)
        tools[node["name"]].syntax_error = True
        note = f"{node['name']}.py: def line without ':'"
    elif key == "secret":
        secret = "sk-" + "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(48))
        dag["environment_variables"] = {"OPENAI_API_KEY": secret}
        note = "environment_variables.OPENAI_API_KEY: sk-..."
    elif key == "include-missing":
        dag.setdefault("additional_includes", []).append("../../shared/prompt_helpers.py")
        note = "additional_includes: ../../shared/prompt_helpers.py (absent)"
    elif key == "duplicate":
        node = rng.choice(chain_nodes)
        idx = nodes.index(node)
        nodes.insert(idx + 1, copy.deepcopy(node))
        note = f"node '{node['name']}' twice"

    for tool in tools.values():
        if tool.file != SHARED_FILE:
            files[tool.file] = tool.source()
    for i, body in enumerate(llm_bodies):
        path = body["source"]["path"]
        if missing_prompt and i == 0:
            files.pop(path, None)
            continue
        first = i == 0
        files[path] = _prompt(i, "chat" in features, "product" in body["inputs"], extra_var if first else None,
                              syntax if first else None)

    dag["inputs"] = inputs
    dag["outputs"] = outputs
    dag["nodes"] = nodes
    if "node_variants" in dag:  # keep node_variants after nodes, as pf writes it
        dag["node_variants"] = dag.pop("node_variants")
    files["flow.dag.yaml"] = "\n".join(to_yaml(dag)) + "\n"
    if rng.random() < 0.3:
        files["requirements.txt"] = "promptflow\n"
        dag.setdefault("environment", {"python_requirements_txt": "requirements.txt"})
        files["flow.dag.yaml"] = "\n".join(to_yaml(dag)) + "\n"
    return GenFlow(name, defect, features, dag, files, note)


def generate(root: Path, count: int, seed: int) -> list[GenFlow]:
    rng = random.Random(seed)
    (root / "shared").mkdir(parents=True)
    (root / "shared" / SHARED_FILE).write_text(SHARED_TOOL, encoding="utf-8")
    flows: list[GenFlow] = []
    seen: dict[str, int] = {}
    for i in range(count):
        defect = None if i % 2 == 0 else DEFECTS[(i // 2) % len(DEFECTS)]
        occurrence = seen.get(defect.key, 0) if defect else 0
        if defect:
            seen[defect.key] = occurrence + 1
        flow = generate_flow(i, rng, defect, occurrence)
        folder = root / "flows" / flow.name
        folder.mkdir(parents=True)
        for rel, text in flow.files.items():
            (folder / rel).write_text(text, encoding="utf-8")
        flows.append(flow)
    return flows


# -- llmops-ci lint ----------------------------------------------------------------------------------------


def run_lint(python: str, root: Path, flows: list[GenFlow], runs: int) -> tuple[list[float], dict[str, list[dict]]]:
    times: list[float] = []
    output = ""
    for r in range(runs):
        state = root / f"state_{r}"
        cmd = [python, "-m", "llmops_ci", "lint", *[f"flows/{f.name}" for f in flows], "--format", "json",
               "--state-dir", str(state)]
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=root, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0, 1):
            sys.exit(f"llmops-ci lint failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        output = proc.stdout
    try:
        findings = json.loads(output)["findings"]
    except (ValueError, KeyError) as exc:
        sys.exit(f"llmops-ci lint printed no JSON report ({exc}):\n{output[:2000]}\n{proc.stderr[-2000:]}")
    by_flow: dict[str, list[dict]] = {f.name: [] for f in flows}
    flows_dir = (root / "flows").resolve()
    for item in findings:
        path = Path(item["path"])
        path = (root / path if not path.is_absolute() else path).resolve()
        try:
            owner = path.relative_to(flows_dir).parts[0]
        except (ValueError, IndexError):
            owner = "(outside any flow)"
        by_flow.setdefault(owner, []).append(item)
    return times, by_flow


# -- pf flow validate -----------------------------------------------------------------------------------------


def pick_sample(flows: list[GenFlow], k: int) -> list[GenFlow]:
    """Round-robin over [valid, each defect type], so K = len(DEFECTS) + 1 covers every category once."""
    groups: dict[str, list[GenFlow]] = {"valid": []}
    for d in DEFECTS:
        groups[d.key] = []
    for f in flows:
        groups[f.defect.key if f.defect else "valid"].append(f)
    picked: list[GenFlow] = []
    round_no = 0
    while len(picked) < k and any(len(g) > round_no for g in groups.values()):
        for g in groups.values():
            if len(picked) < k and len(g) > round_no:
                picked.append(g[round_no])
        round_no += 1
    return picked


def parse_pf_output(stdout: str) -> dict | None:
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", stdout):
        try:
            obj, _ = decoder.raw_decode(stdout, m.start())
        except ValueError:
            continue
        if isinstance(obj, dict) and "result" in obj:
            return obj
    return None


def _messages(report: dict, key: str) -> list[str]:
    return [f"{e.get('message', e)} ({e.get('path')})" if isinstance(e, dict) else str(e)
            for e in report.get(key) or []]


@dataclass
class PfResult:
    flow: GenFlow
    seconds: float
    returncode: int
    result: str
    errors: list[str]
    warnings: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        return self.returncode != 0 or self.result.lower() != "succeeded"


def run_pf(pf: str, root: Path, sample: list[GenFlow]) -> tuple[list[PfResult], list[str]]:
    home = root / "pf_home"
    home.mkdir()
    (home / "pf.yaml").write_text("telemetry:\n  enabled: false\ntrace:\n  destination: none\n", encoding="utf-8")
    env = dict(os.environ, PF_HOME_DIRECTORY=str(home), APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL="true",
               APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED="true", PF_DISABLE_TRACING="true",
               PYTHONIOENCODING="utf-8")
    scratch = root / "pf_scratch"
    shutil.copytree(root / "shared", scratch / "shared")
    results: list[PfResult] = []
    for flow in sample:
        copy_dir = scratch / "flows" / flow.name
        shutil.copytree(root / "flows" / flow.name, copy_dir)
        start = time.perf_counter()
        try:
            proc = subprocess.run([pf, "flow", "validate", "--source", str(copy_dir)], cwd=scratch, env=env,
                                  capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired as exc:  # subprocess.run has killed it
            proc = subprocess.CompletedProcess(exc.cmd, -9, "", "timed out after 300 s")
        seconds = time.perf_counter() - start
        report = parse_pf_output(proc.stdout)
        warnings: list[str] = []
        if report is None:  # e.g. "pf.flow.validate failed with UserErrorException: ..." and exit 1
            result = "no JSON report"
            errors = (proc.stdout.strip() or proc.stderr.strip()).splitlines()[-1:]
        else:
            result = str(report.get("result"))
            errors, warnings = _messages(report, "errors"), _messages(report, "warnings")
        results.append(PfResult(flow, seconds, proc.returncode, result, errors, warnings))
    left = processes_mentioning(f"PF_HOME_DIRECTORY={home}", env_entry=True)
    notes = []
    for pid, cmd in left:
        notes.append(f"pf left process {pid} running ({cmd[:120]}); terminated it")
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    if left:
        time.sleep(1.0)
        for pid, _ in processes_mentioning(f"PF_HOME_DIRECTORY={home}", env_entry=True):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    return results, notes


# -- report --------------------------------------------------------------------------------------------------


def _cell(caught: int, total: int) -> str:
    if total == 0:
        return "-"
    word = "yes" if caught == total else "no" if caught == 0 else "partly"
    return f"{word} ({caught}/{total})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=200, help="number of flows to generate (default 200)")
    parser.add_argument("--pf-sample", type=int, default=len(DEFECTS) + 2,
                        help="flows to run 'pf flow validate' on (default %(default)s: every defect type once "
                             "and two valid flows)")
    parser.add_argument("--python", default=sys.executable,
                        help="python with llmops_ci installed (default: this one); pf is looked up next to it")
    parser.add_argument("--seed", type=int, default=20240607, help="generator seed")
    parser.add_argument("--runs", type=int, default=3, help="llmops-ci lint timing runs (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (its path is printed)")
    args = parser.parse_args()
    if shutil.which(args.python) is None:
        parser.error(f"--python {args.python}: not found or not executable")

    root = Path(tempfile.mkdtemp(prefix="lint_bench_")).resolve()
    try:
        return bench(args, root)
    finally:
        if args.keep:
            print(f"\n(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)


def bench(args: argparse.Namespace, root: Path) -> int:
    n = args.flows
    t0 = time.perf_counter()
    flows = generate(root, n, args.seed)
    valid = [f for f in flows if f.defect is None]
    defective = [f for f in flows if f.defect is not None]
    feats: dict[str, int] = {}
    for f in flows:
        for feat in f.features - {"chain2"}:
            feats[feat] = feats.get(feat, 0) + 1
    print(f"Generated {n} flows in {time.perf_counter() - t0:.2f} s (seed {args.seed}): {len(valid)} valid, "
          f"{len(defective)} with one seeded defect each ({len(DEFECTS)} defect types).")
    print("  features: " + ", ".join(f"{k} {v}" for k, v in sorted(feats.items())))

    times, by_flow = run_lint(args.python, root, flows, args.runs)
    best, median = min(times), statistics.median(times)

    pf = find_pf(args.python)
    pf_results: list[PfResult] = []
    pf_notes: list[str] = []
    if pf is None:
        print(f"\npf not found next to {args.python} nor on PATH: the pf flow validate comparison was skipped.")
    elif args.pf_sample > 0:
        sample = pick_sample(flows, args.pf_sample)
        print(f"\nRunning '{pf} flow validate' on {len(sample)} flows, one process each ...")
        pf_results, pf_notes = run_pf(pf, root, sample)
        print(f"  {'flow':<9} {'defect':<18} {'exit':>4} {'seconds':>7}  result / first error")
        for r in pf_results:
            first = r.errors[0] if r.errors else ("warning: " + r.warnings[0] if r.warnings else "")
            first = re.sub(r"\s+", " ", first)
            print(f"  {r.flow.name:<9} {(r.flow.defect.key if r.flow.defect else 'valid'):<18} {r.returncode:>4} "
                  f"{r.seconds:>7.2f}  {r.result}" + (f": {first[:110]}" if first else ""))
    pf_by_flow = {r.flow.name: r for r in pf_results}

    # per defect type table
    print()
    header = f"{'defect':<40} {'expected rule':<24} {'flows':>5}  {'llmops-ci lint':<16} {'extra':>5}  pf flow validate"
    print(header)
    print("-" * len(header))
    lint_caught_total = 0
    missed: list[tuple[GenFlow, list[dict]]] = []
    noisy: list[tuple[GenFlow, list[dict]]] = []
    for d in DEFECTS:
        group = [f for f in defective if f.defect.key == d.key]
        caught = 0
        extra = 0
        for f in group:
            rules = [x["rule"] for x in by_flow.get(f.name, [])]
            if d.rule in rules:
                caught += 1
            else:
                missed.append((f, by_flow.get(f.name, [])))
            others = [x for x in by_flow.get(f.name, []) if x["rule"] != d.rule]
            if others:
                extra += 1
                noisy.append((f, others))
        lint_caught_total += caught
        sampled = [pf_by_flow[f.name] for f in group if f.name in pf_by_flow]
        pf_cell = _cell(sum(r.rejected for r in sampled), len(sampled)) if sampled else "not sampled"
        warned = sum(1 for r in sampled if not r.rejected and r.warnings)
        if warned:
            pf_cell += f", {warned} warned (exit 0)"
        print(f"{d.label:<40} {d.rule:<24} {len(group):>5}  {_cell(caught, len(group)):<16} {extra:>5}  {pf_cell}")
    false_pos = [(f, by_flow[f.name]) for f in valid if by_flow.get(f.name)]
    sampled_valid = [pf_by_flow[f.name] for f in valid if f.name in pf_by_flow]
    pf_fp = sum(r.rejected for r in sampled_valid)
    print(f"{'valid flows (any finding = false positive)':<40} {'-':<24} {len(valid):>5}  "
          f"{str(len(false_pos)) + ' false pos.':<16} {'':>5}  "
          + (f"{pf_fp} false pos. ({len(sampled_valid)} sampled)" if sampled_valid else "not sampled"))
    outside = by_flow.get("(outside any flow)", [])
    if outside:
        print(f"findings outside any flow folder: {len(outside)}")
    print("('extra' = defective flows with findings other than the expected rule)")

    sections = [("llmops-ci lint MISSED", missed), ("llmops-ci lint FALSE POSITIVES on valid flows", false_pos),
                ("extra findings on defective flows", noisy)]
    for title, items in sections:
        if items:
            print(f"\n{title}:")
            for f, found in items[:12]:
                what = f.defect.key if f.defect else "valid"
                print(f"  {f.name} ({what}: {f.note}):")
                for x in found[:5]:
                    print(f"    {x['severity']} {x['rule']} {x['path']}:{x['line']} {x['message'][:150]}")
            if len(items) > 12:
                print(f"  ... and {len(items) - 12} more")

    # headlines
    per_flow_ms = best / n * 1000
    print()
    print(f"llmops-ci lint: {n} flows in {best:.3f} s (best of {len(times)}; median {median:.3f} s) -> "
          f"{per_flow_ms:.1f} ms/flow; goal < 1 s: {'PASS' if best < 1.0 else 'FAIL'}")
    if pf_results:
        mean = statistics.mean(r.seconds for r in pf_results)
        estimate = mean * n
        print(f"pf flow validate: {len(pf_results)} flows measured, {mean:.2f} s/flow -> ~{estimate:.0f} s for "
              f"{n} flows ({estimate / best:.0f}x slower)")
        pf_def = [r for r in pf_results if r.flow.defect is not None]
        pf_line = f"pf flow validate {sum(r.rejected for r in pf_def)}/{len(pf_def)} sampled"
    else:
        print("pf flow validate: skipped (pf not found)" if pf is None else "pf flow validate: not run (--pf-sample 0)")
        pf_line = "pf flow validate skipped"
    print(f"defects caught: llmops-ci lint {lint_caught_total}/{len(defective)}, {pf_line}")
    for line in pf_notes:
        print(line)
    if pf_results and not pf_notes:
        print("(no pf process left running)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
