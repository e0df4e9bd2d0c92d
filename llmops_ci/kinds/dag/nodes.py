"""The checks of one node body of a DAG flow (an LLM, prompt, Python or package tool node, or one of its variants):
``NodeChecks``, the half of the DAG checker that reads each node's own files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_ci.core.schema import as_dict, closest
from llmops_ci.core.yamldoc import Key, YamlDoc, display_path
from llmops_ci.kinds.base import ConnectionUse, FlowInfo
from llmops_ci.kinds.dag.python_tool import ToolFileError, module_installed, read_tool
from llmops_ci.kinds.dag.schema import (
    LLM_OVERRIDES,
    LLM_PARAMS,
    LLM_PROVIDERS,
    MODEL_OVERRIDES,
    NODE_TYPES,
    RETURN_TYPES,
    parse_ref,
)
from llmops_ci.kinds.jinja import TemplateSyntax, template_vars


@dataclass
class Body:
    """One executable definition of a node: the node itself, or one of its variants."""

    node: str
    data: dict[str, Any]
    key: Key
    variant: str | None = None



class NodeChecks:
    folder: Path
    info: FlowInfo
    doc: YamlDoc | None
    returns: dict[str, str]

    def add(self, rule: str, key: Key, message: str, *, at_key: bool = False) -> None:
        raise NotImplementedError

    def add_at(self, rule: str, path: Path, line: int | None, col: int | None, message: str) -> None:
        raise NotImplementedError

    def resolve(self, rel: str) -> Path | None:
        raise NotImplementedError

    def _body(self, body: Body) -> None:
        data, key = body.data, body.key
        label = f"node '{body.node}'" + (f" (variant {body.variant})" if body.variant else "")
        ntype = data.get("type")
        source = data["source"] if isinstance(data.get("source"), dict) else None
        if "type" not in data:
            self.add("missing-key", key, f"{label} has no 'type'; use one of: " + ", ".join(NODE_TYPES),
                     at_key=True)
        elif isinstance(ntype, str) and ntype not in NODE_TYPES:
            best = closest(ntype, NODE_TYPES)
            self.add("node-type-unknown", (*key, "type"), f"{label} has unknown type '{ntype}'; "
                     + (f"did you mean '{best}'?" if best else "use one of: " + ", ".join(NODE_TYPES)))
        if "source" not in data:
            self.add("missing-key", key, f"{label} has no 'source'; e.g. source: {{type: code, path: tool.py}}",
                     at_key=True)
        inputs = as_dict(data.get("inputs"))
        if ntype == "llm":
            self._llm(body, label, inputs)
            self.info.override_keys[body.node] = LLM_OVERRIDES
        elif ntype != "python" or (source is not None and source.get("type") != "code"):
            self.info.override_keys[body.node] = None
        if source is None:
            return
        stype, spath = source.get("type"), source.get("path")
        if stype in ("package", "package_with_prompt"):
            self._package(body, label, source.get("tool") or data.get("tool"))
        if ntype == "python" and stype == "code":
            self._python(body, label, inputs, spath)
        elif ntype in ("llm", "prompt", "custom_llm") and stype in ("code", "package_with_prompt"):
            self._template(body, label, inputs, spath, warn_unused=stype == "code", llm=ntype != "prompt")

    def _llm(self, body: Body, label: str, inputs: dict[str, Any]) -> None:
        data, key = body.data, body.key
        conn = data.get("connection")
        if not conn:
            # whether that is an error depends on the config (a `connections:` override can give one): lint decides
            line, col = self.doc.key_pos(*key) if self.doc else (None, None)
            self.info.connections.append(ConnectionUse(body.node, None, "connection", self.doc.display if self.doc
                                                       else "", line, col, frozenset(map(str, inputs))))
        provider = data.get("provider")
        if isinstance(provider, str) and provider not in LLM_PROVIDERS:
            best = closest(provider, LLM_PROVIDERS)
            self.add("llm-provider-unknown", (*key, "provider"), f"{label} has provider '{provider}', which prompt "
                     "flow does not know; " + (f"did you mean '{best}'?" if best else "use one of: "
                                               + ", ".join(LLM_PROVIDERS)))
        api = data.get("api")
        if api not in ("chat", "completion"):
            self.add("llm-api-invalid", (*key, "api") if "api" in data else key,
                     f"{label} has api '{api}'; an LLM node's api must be 'chat' or 'completion'",
                     at_key="api" not in data)
        if isinstance(conn, str) and conn:
            line, col = self.doc.pos(*key, "connection") if self.doc else (None, None)
            self.info.connections.append(ConnectionUse(body.node, conn, "connection", self.doc.display if self.doc
                                                       else "", line, col, frozenset(map(str, inputs))))

    def _package(self, body: Body, label: str, tool: Any) -> None:
        if not isinstance(tool, str) or not tool:
            self.add("missing-key", (*body.key, "source"), f"{label} uses a package tool but names none; add "
                     "source.tool (e.g. promptflow.tools.embedding.embedding)")
            return
        if not module_installed(tool):
            top = tool.split(".")[0]
            self.add("package-tool-unchecked", (*body.key, "source", "tool"), f"{label} uses package tool '{tool}', "
                     f"which is not installed here, so its inputs were not checked; install the package that "
                     f"provides '{top}' to check them")

    def _python(self, body: Body, label: str, inputs: dict[str, Any], spath: Any) -> None:
        key = (*body.key, "source", "path")
        if not isinstance(spath, str) or not spath:
            self.add("missing-key", (*body.key, "source"), f"{label} has no source.path (the .py file of its tool)")
            return
        file = self.resolve(spath)
        if file is None or not file.is_file():
            self.add("tool-file-missing", key, f"{label} runs '{spath}', which does not exist in "
                     f"{display_path(self.folder)} (nor in additional_includes)")
            return
        try:
            sig = read_tool(file)
        except ToolFileError as exc:
            self.add_at(exc.rule, file, exc.line, exc.column, f"{label}: {exc.message}")
            return
        if sig.returns in RETURN_TYPES and body.variant is None:
            self.returns[body.node] = RETURN_TYPES[sig.returns]
        for arg in inputs:
            if arg not in sig.params and not sig.var_kwargs:
                best = closest(str(arg), sig.params)
                self.add("tool-arg-unknown", (*body.key, "inputs", arg), f"{label} passes '{arg}' but "
                         f"{sig.name}() in {file.name} has no such parameter"
                         + (f"; did you mean '{best}'?" if best else ""), at_key=True)
        for param in sig.params.values():
            if not param.has_default and param.name not in inputs:
                self.add("tool-arg-missing", (*body.key, "inputs") if inputs else body.key,
                         f"{label} does not pass '{param.name}', which {sig.name}() in {file.name} "
                         f"(line {param.line}) requires; add it under the node's inputs", at_key=not inputs)
        allowed = self.info.override_keys.get(body.node, MODEL_OVERRIDES)
        if allowed is not None:
            conn_args = frozenset(p.name for p in sig.params.values() if p.connection)
            self.info.override_keys[body.node] = allowed | conn_args
        for arg, value in inputs.items():
            used = sig.params.get(arg)
            if used is not None and used.connection and isinstance(value, str) and parse_ref(value) is None:
                line, col = self.doc.pos(*body.key, "inputs", arg) if self.doc else (None, None)
                self.info.connections.append(ConnectionUse(body.node, value, arg, self.doc.display if self.doc
                                                           else "", line, col, llm=False))

    def _template(self, body: Body, label: str, inputs: dict[str, Any], spath: Any, *, warn_unused: bool,
                  llm: bool) -> None:
        key = (*body.key, "source", "path")
        if not isinstance(spath, str) or not spath:
            self.add("missing-key", (*body.key, "source"), f"{label} has no source.path (its Jinja2 template)")
            return
        file = self.resolve(spath)
        if file is None or not file.is_file():
            self.add("tool-file-missing", key, f"{label} uses template '{spath}', which does not exist in "
                     f"{display_path(self.folder)}")
            return
        try:
            text = file.read_text(encoding="utf-8")
            used = template_vars(text).used
        except TemplateSyntax as exc:
            self.add_at("prompt-syntax", file, exc.line, None, f"{label}: Jinja2 syntax error: {exc.message}")
            return
        except (OSError, UnicodeDecodeError) as exc:
            self.add("tool-file-missing", key, f"{label}: cannot read '{spath}': {exc}")
            return
        if llm and "prompt" in inputs:
            return  # prompt flow sends the `prompt` input instead of rendering the template
        for var, line in sorted(used.items(), key=lambda kv: kv[1]):
            if var not in inputs:
                self.add_at("prompt-var-unbound", file, line, None, f"{label}: template uses '{{{{ {var} }}}}' but "
                            f"the node does not pass '{var}', so it would render empty; add '{var}: ...' to the "
                            "node's inputs")
        if warn_unused:
            for arg in inputs:
                if arg not in used and not (llm and arg in LLM_PARAMS):
                    self.add("prompt-input-unused", (*body.key, "inputs", arg), f"{label} passes '{arg}' but "
                             f"{file.name} never uses it", at_key=True)

