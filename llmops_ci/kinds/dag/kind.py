"""DAG flows (``flow.dag.yaml``): schema, graph, tools, prompts, variants and files, checked statically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from llmops_ci.core.errors import Problem
from llmops_ci.core.schema import as_dict, as_list, closest
from llmops_ci.core.yamldoc import Key, YamlDoc, display_path
from llmops_ci.diagnostics.findings import Rule, finding, from_problem
from llmops_ci.kinds.base import FlowInfo, FlowInput, Snapshot, open_definition
from llmops_ci.kinds.dag.files import copy_flow, dependencies
from llmops_ci.kinds.dag.nodes import Body, NodeChecks
from llmops_ci.kinds.dag.schema import (
    DAG,
    DAG_FILES,
    RULES,
    VALUE_TYPES,
    Ref,
    parse_ref,
)


def _definition(path: Path) -> Path:
    if path.is_file():
        return path
    return next((path / f for f in DAG_FILES if (path / f).is_file()), path / DAG_FILES[0])


class DagFlowKind:
    name = "dag"
    folder_files = DAG_FILES  # given as a flow's path, one of these stands for its folder

    def matches(self, path: Path) -> bool:
        if path.is_file():
            return path.name in DAG_FILES
        return any((path / f).is_file() for f in DAG_FILES)

    def inspect(self, path: Path) -> FlowInfo:
        return _DagChecker(_definition(path)).run()

    def snapshot(self, info: FlowInfo, dest: Path, *, variant: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        copy_flow(info.folder, dest, overrides, variant, info.definition.name)
        return Snapshot(dest, dest / info.definition.name)

    def rules(self) -> list[Rule]:
        return list(RULES.values())


class _DagChecker(NodeChecks):
    def __init__(self, definition: Path) -> None:
        self.definition = definition
        self.folder = definition.parent
        self.info = FlowInfo("dag", self.folder, definition, defaults_shadow_columns=True, missing_value="typed")
        self.doc: YamlDoc | None = None
        self.returns: dict[str, str] = {}  # node -> the value type its Python tool's return annotation gives

    # -- helpers -------------------------------------------------------------------------------
    def add(self, rule: str, key: Key, message: str, *, at_key: bool = False) -> None:
        assert self.doc is not None
        line, col = self.doc.key_pos(*key) if at_key else self.doc.pos(*key)
        self.info.findings.append(finding(rule, self.doc.display, line, col, message))

    def add_at(self, rule: str, path: Path, line: int | None, col: int | None, message: str) -> None:
        self.info.findings.append(finding(rule, display_path(path), line, col, message))

    def resolve(self, rel: str) -> Path | None:
        """A file of the flow, also looking through additional_includes as prompt flow does."""
        try:
            return self._resolve(rel)
        except (OSError, ValueError):  # a name too long for the file system, a NUL byte: no such file
            return None

    def _resolve(self, rel: str) -> Path | None:
        direct = self.folder / rel
        if direct.exists():
            return direct
        includes = as_list(as_dict(self.doc.data if self.doc else None).get("additional_includes"))
        rel_path = Path(rel)
        for inc in includes:
            if not isinstance(inc, str):
                continue
            src = (self.folder / inc)
            if src.is_file() and src.name == rel_path.as_posix():
                return src
            if src.is_dir() and rel_path.parts and rel_path.parts[0] == src.name:
                candidate = src.parent / rel_path
                if candidate.exists():
                    return candidate
        return None

    # -- main ------------------------------------------------------------------------------------
    def run(self) -> FlowInfo:
        self.doc = open_definition(self.info, self.definition, "with inputs, outputs and nodes")
        if self.doc is None:
            return self.info
        doc = self.doc
        problems: list[Problem] = []
        DAG.check(doc, doc.data, (), problems)
        self.info.findings += [from_problem(p) for p in problems]
        data = doc.data
        inputs = as_dict(data.get("inputs"))
        outputs = as_dict(data.get("outputs"))
        nodes = [n for n in as_list(data.get("nodes")) if isinstance(n, dict)]
        self._inputs(inputs)
        self.info.outputs = {str(k) for k in outputs}
        bodies, node_keys = self._nodes(data, nodes)
        aggregation = {n["name"] for n in nodes if n.get("aggregation") is True and isinstance(n.get("name"), str)}
        used_inputs, used_nodes = self._references(bodies, node_keys, aggregation)
        self._outputs(outputs, node_keys, aggregation, used_inputs, used_nodes)
        self._cycles(bodies, node_keys)
        for name in inputs:
            if name not in used_inputs:
                self.add("input-unused", ("inputs", name), f"flow input '{name}' is not used by any node or "
                         "output; remove it or reference it with ${inputs." + str(name) + "}", at_key=True)
        for name, key in node_keys.items():
            if name not in used_nodes and name not in aggregation:
                self.add("node-unused", (*key, "name"), f"nothing uses the output of node '{name}'; reference it "
                         "from a node or a flow output, or remove it")
        for body in bodies:
            self._body(body)
        self._files(data)
        self._interface(inputs, outputs, data)
        self._output_types(outputs)
        return self.info

    def _output_types(self, outputs: dict[str, Any]) -> None:
        for name, spec in outputs.items():
            spec = as_dict(spec)
            ref = parse_ref(spec.get("reference"))
            field_ref = isinstance(spec.get("reference"), str) and spec["reference"].count(".") > 1
            known = self.returns.get(ref.name) if ref and ref.kind == "node" and not field_ref else None
            declared = spec.get("type") if isinstance(spec.get("type"), str) else None
            chosen = known or (self.info.inputs[ref.name].type if ref and ref.kind == "input"
                               and ref.name in self.info.inputs else None) or declared
            if chosen:
                self.info.output_types[str(name)] = chosen

    def _interface(self, inputs: dict[str, Any], outputs: dict[str, Any], data: dict[str, Any]) -> None:
        """Chat inputs/outputs, the flow's own environment variables and the files outside its folder."""
        self.info.chat_input = next((str(k) for k, v in inputs.items() if as_dict(v).get("is_chat_input")), None)
        # prompt flow takes an input named chat_history as the history unless it is marked otherwise
        self.info.chat_history = next((str(k) for k, v in inputs.items() if as_dict(v).get("is_chat_history")), None)
        if self.info.chat_history is None and "chat_history" in inputs \
                and as_dict(inputs["chat_history"]).get("is_chat_history") is not False:
            self.info.chat_history = "chat_history"
        self.info.chat_output = next((str(k) for k, v in outputs.items() if as_dict(v).get("is_chat_output")),
                                     None)
        env = data.get("environment_variables")
        if isinstance(env, dict):
            self.info.environment_variables = {str(k): str(v) for k, v in env.items()}
        self.info.dependencies = dependencies(self.folder, data, self.doc)

    def _inputs(self, inputs: dict[str, Any]) -> None:
        for name, spec in inputs.items():
            spec = spec if isinstance(spec, dict) else {}
            itype = spec.get("type")
            if isinstance(itype, str) and itype not in VALUE_TYPES:
                best = closest(itype, VALUE_TYPES)
                self.add("input-type", ("inputs", name, "type"), f"flow input '{name}' has unknown type '{itype}'; "
                         + (f"did you mean '{best}'?" if best else "use one of: " + ", ".join(VALUE_TYPES)))
            self.info.inputs[str(name)] = FlowInput(str(name), str(itype), spec.get("default") is not None)

    def _nodes(self, data: dict[str, Any], nodes: list[dict[str, Any]]) -> tuple[list[Body], dict[str, Key]]:
        raw_nodes = as_list(data.get("nodes"))
        variants = as_dict(data.get("node_variants"))
        node_keys: dict[str, Key] = {}
        bodies: list[Body] = []
        for i, node in enumerate(raw_nodes):
            if not isinstance(node, dict) or not isinstance(node.get("name"), str):
                continue
            name = node["name"]
            key: Key = ("nodes", i)
            if name in node_keys:
                first = self.doc.pos(*node_keys[name], "name")[0] if self.doc else None
                self.add("node-duplicate", (*key, "name"), f"node name '{name}' is already used on line {first}; "
                         "node names must be unique")
                continue
            node_keys[name] = key
            self.info.nodes.add(name)
            if node.get("use_variants") is True:
                spec = variants.get(name)
                if not isinstance(spec, dict):
                    self.add("variant-mismatch", (*key, "use_variants"), f"node '{name}' has use_variants: true but "
                             f"node_variants has no entry '{name}'; add one or remove use_variants")
                    continue
                vmap = as_dict(spec.get("variants"))
                self.info.variants[name] = {str(v) for v in vmap}
                default = spec.get("default_variant_id")
                if isinstance(default, str) and default not in vmap:
                    best = closest(default, [str(v) for v in vmap])
                    self.add("variant-default-unknown", ("node_variants", name, "default_variant_id"),
                             f"default_variant_id '{default}' is not among the variants of '{name}' ("
                             + ", ".join(map(str, vmap)) + ")" + (f"; did you mean '{best}'?" if best else ""))
                for vid, variant in vmap.items():
                    vnode = variant.get("node") if isinstance(variant, dict) else None
                    if isinstance(vnode, dict):
                        bodies.append(Body(name, vnode, ("node_variants", name, "variants", vid, "node"), str(vid)))
            else:
                bodies.append(Body(name, node, key))
        for name in variants:
            node_key = node_keys.get(name)
            if node_key is None:
                best = closest(str(name), node_keys)
                self.add("variant-mismatch", ("node_variants", name), f"node_variants has '{name}' but no node has "
                         "that name" + (f"; did you mean '{best}'?" if best else ""), at_key=True)
            elif not any(n.get("name") == name and n.get("use_variants") is True for n in nodes):
                self.add("variant-mismatch", (*node_key, "name"), f"node '{name}' has variants in node_variants "
                         "but not 'use_variants: true'; add it so the variants are used")
        return bodies, node_keys

    def _check_ref(self, ref: Ref, key: Key, owner: str, node_keys: dict[str, Key], rule: str) -> bool:
        if ref.kind == "input":
            if ref.name not in self.info.inputs:
                best = closest(ref.name, self.info.inputs)
                self.add(rule, key, f"{owner} references flow input '{ref.name}', which does not exist"
                         + (f"; did you mean '{best}'?" if best else "; declare it under 'inputs:'"))
                return False
            return True
        if ref.name not in node_keys:
            best = closest(ref.name, node_keys)
            self.add(rule, key, f"{owner} references node '{ref.name}', which does not exist"
                     + (f"; did you mean '{best}'?" if best else ""))
            return False
        if ref.section != "output":
            self.add(rule, key, f"{owner} references '{ref.name}.{ref.section}'; a node's result is "
                     f"${{{ref.name}.output}}")
            return False
        return True

    def _references(self, bodies: list[Body], node_keys: dict[str, Key],
                    aggregation: set[str]) -> tuple[set[str], set[str]]:
        used_inputs: set[str] = set()
        used_nodes: set[str] = set()
        for body in bodies:
            owner = f"node '{body.node}'" + (f" (variant {body.variant})" if body.variant else "")
            refs: list[tuple[Ref, Key]] = []
            for arg, value in as_dict(body.data.get("inputs")).items():
                ref = parse_ref(value)
                if ref:
                    refs.append((ref, (*body.key, "inputs", arg)))
            activate = body.data.get("activate")
            if isinstance(activate, dict):
                ref = parse_ref(activate.get("when"))
                if ref:
                    refs.append((ref, (*body.key, "activate", "when")))
            is_agg = body.data.get("aggregation") is True or body.node in aggregation
            for ref, key in refs:
                if not self._check_ref(ref, key, owner, node_keys, "node-ref-unknown"):
                    continue
                if ref.kind == "input":
                    used_inputs.add(ref.name)
                    continue
                used_nodes.add(ref.name)
                if is_agg and key[-2:] == ("activate", "when") and ref.name not in aggregation:
                    self.add("activate-ref-line-node", key, f"{owner} is an aggregation node, so its activate.when "
                             f"cannot reference '{ref.name}', which runs per line (prompt flow rejects the flow); "
                             "reference a flow input or another aggregation node")
                if ref.name in aggregation and not is_agg:
                    self.add("node-ref-aggregation", key, f"{owner} references aggregation node '{ref.name}', "
                             "which only runs after all lines; only other aggregation nodes may use it")
        return used_inputs, used_nodes

    def _outputs(self, outputs: dict[str, Any], node_keys: dict[str, Key], aggregation: set[str],
                 used_inputs: set[str], used_nodes: set[str]) -> None:
        for name, spec in outputs.items():
            spec = spec if isinstance(spec, dict) else {}
            otype = spec.get("type")
            if isinstance(otype, str) and otype not in VALUE_TYPES:
                self.add("input-type", ("outputs", name, "type"), f"flow output '{name}' has unknown type '{otype}'")
            if "reference" not in spec:
                self.add("missing-key", ("outputs", name), f"flow output '{name}' has no 'reference'; write "
                         "reference: ${<node>.output}", at_key=True)
                continue
            ref = parse_ref(spec["reference"])
            key = ("outputs", name, "reference")
            if ref is None:
                self.add("output-ref-unknown", key, f"flow output '{name}' must reference ${{<node>.output}} or "
                         "${inputs.<name>}")
                continue
            if not self._check_ref(ref, key, f"flow output '{name}'", node_keys, "output-ref-unknown"):
                continue
            (used_inputs if ref.kind == "input" else used_nodes).add(ref.name)
            if ref.kind == "node" and ref.name in aggregation:
                self.add("output-ref-aggregation", key, f"flow output '{name}' references aggregation node "
                         f"'{ref.name}'; aggregation results are metrics (log_metric), not outputs")

    def _cycles(self, bodies: list[Body], node_keys: dict[str, Key]) -> None:
        edges: dict[str, set[str]] = {n: set() for n in node_keys}
        for body in bodies:
            values = list(as_dict(body.data.get("inputs")).values())
            if isinstance(body.data.get("activate"), dict):
                values.append(body.data["activate"].get("when"))
            for value in values:
                ref = parse_ref(value)
                if ref and ref.kind == "node" and ref.name in node_keys and body.node in edges:
                    edges[body.node].add(ref.name)
        seen: set[frozenset[str]] = set()
        state: dict[str, int] = {}
        stack: list[str] = []

        def visit(start: str) -> None:
            # iterative DFS; state 1 = on stack, 2 = done
            work: list[tuple[str, list[str]]] = [(start, sorted(edges[start]))]
            state[start] = 1
            stack.append(start)
            while work:
                node, pending = work[-1]
                if not pending:
                    work.pop()
                    stack.pop()
                    state[node] = 2
                    continue
                nxt = pending.pop(0)
                if state.get(nxt) == 1:
                    cycle = stack[stack.index(nxt):]
                    if frozenset(cycle) not in seen:
                        seen.add(frozenset(cycle))
                        first = min(cycle, key=lambda n: node_keys[n][1])
                        i = cycle.index(first)
                        ordered = cycle[i:] + cycle[:i]
                        # edges point from a node to what it reads, so data flows the other way
                        shown = " -> ".join(reversed([*ordered, first]))
                        self.add("node-cycle", (*node_keys[first], "name"), f"nodes form a cycle: {shown}; "
                                 "a node cannot depend on its own output")
                elif state.get(nxt) is None:
                    state[nxt] = 1
                    stack.append(nxt)
                    work.append((nxt, sorted(edges[nxt])))

        for name in node_keys:
            if name not in state:
                visit(name)

    # -- node bodies ---------------------------------------------------------------------------------
    def _files(self, data: dict[str, Any]) -> None:
        for i, inc in enumerate(as_list(data.get("additional_includes"))):
            if isinstance(inc, str) and not _exists(self.folder / inc):
                self.add("include-missing", ("additional_includes", i), f"additional include '{inc}' does not exist "
                         f"(relative to {display_path(self.folder)})")
        env = data.get("environment")
        req = env.get("python_requirements_txt") if isinstance(env, dict) else None
        if isinstance(req, str) and self.resolve(req) is None:
            self.add("requirements-missing", ("environment", "python_requirements_txt"),
                     f"python_requirements_txt '{req}' does not exist in {display_path(self.folder)}")


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False
