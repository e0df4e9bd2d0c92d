"""The static check of one ``.prompty`` file in either format (``PromptyChecker``), and its rules."""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path
from typing import Any

from llmops_ci.core.errors import ConfigError, Problem
from llmops_ci.core.schema import Struct, as_dict, closest
from llmops_ci.core.yamldoc import Key, YamlDoc, display_path
from llmops_ci.diagnostics import secrets
from llmops_ci.diagnostics.findings import ERROR, WARNING, Rule, finding, from_problem, rule_table
from llmops_ci.kinds.base import ConnectionUse, Dependency, FlowInfo, FlowInput
from llmops_ci.kinds.jinja import TemplateSyntax, template_vars
from llmops_ci.kinds.prompty.format import (
    ENV_WHOLE,
    FILE_WHOLE,
    OPENAI_PARAMS,
    PF_CONFIG_KEYS,
    PF_CONFIG_TYPES,
    PF_MODEL_KEY,
    PF_SCHEMA,
    PROMPTFLOW,
    PROMPTY2,
    REF_START,
    RENAMED,
    V2_CONNECTIONS,
    V2_KIND,
    V2_KINDS,
    V2_MODEL,
    V2_PARAM,
    V2_PROPERTY_FIELDS,
    V2_PROVIDERS,
    V2_SCHEMA,
    VALUE_TYPES,
    Parsed,
    detect_format,
    split_front_matter,
)

PROMPTY_RULES = rule_table(
    Rule("prompty-front-matter", ERROR, "a .prompty file without a YAML front matter between '---' lines"),
    Rule("prompty-old-key", ERROR, "a file meant for the prompty 2.x package (it uses 2.x keys) with a key of prompt "
                                   "flow's format; the message names the 2.x key that replaced it"),
    Rule("prompty-body-separator", ERROR, "a '---' line in the body of a prompt flow prompty: prompt flow reads the "
                                          "front matter up to the last one"),
    Rule("prompty-connection-conflict", ERROR, "a model configuration with both 'connection' and its own endpoint, key "
                                               "or version (prompt flow refuses it)"),
    Rule("prompty-param-unknown", ERROR, "a model parameter the OpenAI client does not take (with the closest one)"),
    Rule("prompty-input-unused", WARNING, "a declared prompty input that the template never uses"),
    Rule("prompty-file-missing", ERROR, "a ${file:...} reference to a file that does not exist"),
    Rule("prompty-env-ref", ERROR, "an ${env:...} reference the format would not resolve (not the whole value, or a "
                                   "default prompt flow does not support)"),
    Rule("prompty-kind-unknown", WARNING, "a 2.x input kind or provider the prompty package does not know"),
)





def prompty_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.prompty") if p.is_file())


def beside_flex_code(folder: Path) -> bool:
    """A flex flow's definition is in ``folder``: its .prompty files are loaded by that flow's code."""
    return any(p.is_file() for pattern in ("*.flex.yaml", "*.flex.yml") for p in folder.glob(pattern))


def code_passes_configuration(folder: Path, name: str) -> bool:
    """Whether Python in ``folder`` loads the prompty ``name`` (or one it cannot tell) with ``model=...``:
    ``Prompty.load(source=..., model={"configuration": ...})`` replaces the file's configuration."""
    for py in sorted(folder.glob("*.py")):
        try:
            tree = ast.parse(py.read_text(encoding="utf-8"))
        except (SyntaxError, ValueError, OSError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and any(k.arg == "model" for k in node.keywords)):
                continue
            named = {c.value.rsplit("/", 1)[-1] for c in ast.walk(node)
                     if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.endswith(".prompty")}
            if not named or name in named:
                return True
    return False



class PromptyChecker:
    """``embedded``: the file is loaded by a flex flow's code, which may pass the model configuration itself."""

    def __init__(self, path: Path, *, embedded: bool = False) -> None:
        self.path = path
        self.embedded = embedded or beside_flex_code(path.parent)
        self.configured_by_code = self.embedded and code_passes_configuration(path.parent, path.name)
        self.info = FlowInfo("prompty", path.parent, path, engine="prompty", defaults_shadow_columns=True,
                             connections_by_name=True)
        self.doc: YamlDoc | None = None
        self.format = PROMPTFLOW
        self.node = path.stem
        self.input_keys: dict[str, Key] = {}

    def add(self, rule: str, key: Key, message: str, *, at_key: bool = False) -> None:
        assert self.doc is not None
        line, col = self.doc.key_pos(*key) if at_key else self.doc.pos(*key)
        self.info.findings.append(finding(rule, self.doc.display, line, col, message))

    def run(self) -> FlowInfo:
        shown = display_path(self.path)
        try:
            text = self.path.read_text(encoding="utf-8-sig")
            parsed = split_front_matter(self.path, text)
        except ConfigError as exc:
            self.info.findings += [from_problem(p) for p in exc.problems]
            self.info.loaded = False
            return self.info
        except (OSError, UnicodeDecodeError) as exc:
            self.info.findings.append(finding("path-missing", shown, None, None, f"cannot read: {exc}"))
            self.info.loaded = False
            return self.info
        doc = self.doc = parsed.doc
        assert doc is not None
        self.info.findings += [from_problem(p) for p in doc.duplicates]
        self.info.findings += secrets.scan(doc)
        data = doc.data if doc.data is not None else {}
        if not isinstance(data, dict):
            self.add("wrong-type", (), "the front matter must be a mapping (name, model, inputs, ...)")
            self.info.loaded = False
            return self.info
        self.format, v2_keys, pf_keys = detect_format(data)
        self.info.engine = "prompty" if self.format == PROMPTY2 else "promptflow"
        # prompt flow serves only its own prompty format; it reads data with pandas (NaN for a missing value)
        self.info.served_by = None if self.format == PROMPTY2 else "promptflow"
        self.info.missing_value = "absent" if self.format == PROMPTY2 else "nan"
        problems: list[Problem] = []
        if self.format == PROMPTY2:
            self._old_keys(data, v2_keys, pf_keys)
            V2_SCHEMA.check(doc, {k: v for k, v in data.items() if (k,) not in pf_keys}, (), problems)
            self.info.findings += [from_problem(p) for p in problems]
            declared = self._v2(data, pf_keys)
        else:
            sep = re.search(r"-{3,}\n", parsed.body)
            if sep is not None:
                line = parsed.body_line + parsed.body[:sep.start()].count("\n")
                self.info.findings.append(finding("prompty-body-separator", shown, line, None, "prompt flow "
                                                  "reads the front matter up to the last line ending in '---', "
                                                  "so the template above this line would be read as YAML; use "
                                                  "'***' or '___' for a rule in the template"))
            PF_SCHEMA.check(doc, data, (), problems)
            self.info.findings += [from_problem(p) for p in problems]
            declared = self._promptflow(data)
        self._references(data, ())
        self._template(parsed, declared)
        return self.info

    # -- formats -------------------------------------------------------------------------------------
    def _old_keys(self, data: dict[str, Any], v2_keys: list[Key], pf_keys: list[Key]) -> None:
        why = "'" + ".".join(map(str, v2_keys[0])) + "'"
        for key in pf_keys:
            dotted = ".".join(map(str, key))
            if key[0] in ("inputs", "outputs"):
                section = data[key[0]]
                spec = section[key[1]] if isinstance(section, list) else as_dict(section).get(key[1])
                old = as_dict(spec).get("type")
                new = f"kind: {V2_KIND.get(str(old), 'string')}"
                instead = f"'{new}' ({', '.join(V2_KINDS[:7])}); 2.x refuses an input without 'kind'"
            else:
                instead = RENAMED[key]
            self.add("prompty-old-key", key, f"'{dotted}' is prompt flow's prompty format, but this file is "
                     f"written for the prompty 2.x package (it uses {why}); 2.x has {instead}", at_key=True)
        params = as_dict(as_dict(data.get("model")).get("parameters"))
        for name in params:
            if name in V2_PARAM:
                self.add("prompty-old-key", ("model", "parameters", name), f"'{name}' is 'options.{V2_PARAM[name]}'"
                         " in the prompty 2.x format", at_key=True)

    def _promptflow(self, data: dict[str, Any]) -> set[str] | None:
        model = as_dict(data.get("model"))
        config = model.get("configuration")
        if self.configured_by_code:
            pass  # the flow's code passes its own configuration, which replaces this one
        elif isinstance(config, dict):
            self._pf_configuration(config)
        elif isinstance(config, str) and FILE_WHOLE.match(config.strip()):
            pass  # checked by _references
        elif config is not None:
            self.add("wrong-type", ("model", "configuration"), "model.configuration must be a mapping (type, "
                     "azure_deployment or model, and connection or endpoint settings)")
        elif not self.embedded:
            self.add("missing-key", ("model",) if "model" in data else (), "no model.configuration: prompt flow "
                     "cannot tell which endpoint to call; add configuration: {type: azure_openai, connection: "
                     "<name>, azure_deployment: <deployment>}", at_key=True)
        params = model.get("parameters")
        if "model" in data and params is None:
            self.add("missing-key", ("model",), "model has no 'parameters'; prompt flow requires it (it fails with "
                     "\"missing 1 required positional argument: 'parameters'\"): add parameters: {max_tokens: 256} "
                     "or parameters: {}", at_key=True)
        elif params is not None and not isinstance(params, dict):
            self.add("wrong-type", ("model", "parameters"), "model.parameters must be a mapping of request settings")
        for name in as_dict(params):
            if name not in OPENAI_PARAMS:
                best = closest(str(name), OPENAI_PARAMS)
                self.add("prompty-param-unknown", ("model", "parameters", name), f"model parameter '{name}' is not "
                         "an argument of the OpenAI API, so the request would fail"
                         + (f"; did you mean '{best}'?" if best else ""), at_key=True)
        inputs = as_dict(data.get("inputs"))
        for name, spec in inputs.items():
            spec = as_dict(spec)
            itype = spec.get("type")
            if isinstance(itype, str) and itype not in VALUE_TYPES:
                best = closest(itype, VALUE_TYPES)
                self.add("input-type", ("inputs", name, "type"), f"input '{name}' has unknown type '{itype}'; "
                         + (f"did you mean '{best}'?" if best else "use one of: " + ", ".join(VALUE_TYPES)))
            self.info.inputs[str(name)] = FlowInput(str(name), str(itype or "string"),
                                                         spec.get("default") is not None)
            self.input_keys[str(name)] = ("inputs", name)
            if spec.get("is_chat_input") is True:
                self.info.chat_input = str(name)
            if spec.get("is_chat_history") is True:
                self.info.chat_history = str(name)
        outputs = as_dict(data.get("outputs"))
        self.info.outputs = {str(k) for k in outputs} or {"output"}
        for name, spec in outputs.items():
            if as_dict(spec).get("is_chat_output") is True:
                self.info.chat_output = str(name)
        if inputs:
            return set(self.info.inputs)
        # prompt flow takes the signature from `sample` when no inputs are declared, and passes nothing else
        sample = self._sample(data.get("sample"))
        if sample is not None:
            for name, value in sample.items():
                self.info.inputs[str(name)] = FlowInput(str(name), _value_type(value), False)
            return set(self.info.inputs)
        return set()

    def _sample(self, sample: Any) -> dict[str, Any] | None:
        if isinstance(sample, dict):
            return sample
        m = FILE_WHOLE.match(sample) if isinstance(sample, str) else None
        if m is None:
            return None
        file = self.path.parent / m.group(1).strip()
        try:
            loaded = json.loads(file.read_text(encoding="utf-8")) if file.suffix == ".json" else None
        except (OSError, UnicodeDecodeError, ValueError):
            return None  # a missing file is reported by _references
        return loaded if isinstance(loaded, dict) else None

    def _pf_configuration(self, config: dict[str, Any]) -> None:
        key = ("model", "configuration")
        raw_type = config.get("type")
        ctype = PF_CONFIG_TYPES.get(str(raw_type)) if raw_type is not None else None
        connection = config.get("connection")
        if raw_type is None and not connection and not self.embedded:
            self.add("missing-key", key, "model.configuration has no 'type' and no 'connection'; add type: "
                     "azure_openai or type: openai", at_key=True)
        elif raw_type is not None and ctype is None and not connection:
            best = closest(str(raw_type), PF_CONFIG_TYPES)
            self.add("wrong-type", (*key, "type"), f"configuration type '{raw_type}' is not one prompt flow knows; "
                     + (f"did you mean '{best}'?" if best else "use azure_openai or openai"))
        allowed = PF_CONFIG_KEYS.get(ctype or "", tuple(sorted({k for ks in PF_CONFIG_KEYS.values() for k in ks})))
        for name in config:
            if name not in allowed:
                best = closest(str(name), allowed)
                self.add("unknown-key", (*key, name), f"unknown key '{name}' in a {ctype or 'model'} configuration; "
                         + (f"did you mean '{best}'?" if best else "valid keys: " + ", ".join(allowed)), at_key=True)
        own = [k for k, v in config.items() if v and k not in ("type", "connection", "model", "azure_deployment")]
        if connection and own:
            self.add("prompty-connection-conflict", (*key, own[0]), f"configuration sets both 'connection' and "
                     f"'{own[0]}'; prompt flow refuses that: keep the connection (declared in llmops.yaml) or the "
                     "endpoint settings, not both", at_key=True)
        if isinstance(connection, str) and connection:
            self._connection(connection, (*key, "connection"))
        needed = PF_MODEL_KEY.get(ctype or "")
        if needed and not config.get(needed) and not self.embedded:
            self.add("llm-model-missing", key, f"the {ctype} configuration sets no '{needed}', so the request goes "
                     f"out without a model; add '{needed}: ...'", at_key=True)

    def _v2(self, data: dict[str, Any], pf_keys: list[Key]) -> set[str] | None:
        assert self.doc is not None
        model = data.get("model")
        if isinstance(model, dict):
            problems: list[Problem] = []
            V2_MODEL.check(self.doc, {k: v for k, v in model.items() if ("model", k) not in pf_keys}, ("model",),
                            problems)
            self.info.findings += [from_problem(p) for p in problems]
            provider = model.get("provider")
            if isinstance(provider, str) and provider not in V2_PROVIDERS:
                best = closest(provider, V2_PROVIDERS)
                self.add("prompty-kind-unknown", ("model", "provider"), f"provider '{provider}' is not one the "
                         "prompty package ships (" + ", ".join(V2_PROVIDERS) + ")"
                         + (f"; did you mean '{best}'?" if best else ""))
            if not model.get("id") and not self.embedded:
                self.add("llm-model-missing", ("model",), "model has no 'id', so the request goes out without a "
                         "model; add id: <model or deployment name>", at_key=True)
            conn = model.get("connection")
            if conn is not None:
                self._v2_connection(conn)
        elif isinstance(model, str) or (model is None and self.embedded):
            pass
        elif model is None:
            self.add("missing-key", (), "no 'model': add model: {id: ..., provider: openai, connection: ...}",
                     at_key=True)
        else:
            self.add("wrong-type", ("model",), "model must be a model id or a mapping (id, provider, connection)")
        inputs = self._v2_props(data.get("inputs"), "inputs", pf_keys)
        for prop in inputs:
            name = str(prop.get("name"))
            has_default = prop.get("default") is not None
            self.info.inputs[name] = FlowInput(name, str(prop.get("kind", "string")), has_default)
            if prop.get("kind") == "thread":
                self.info.chat_history = self.info.chat_history or name
        outputs = self._v2_props(data.get("outputs"), "outputs", pf_keys)
        self.info.outputs = {str(p.get("name")) for p in outputs} or {"output"}
        # 2.x passes every given input to the template when none are declared
        return set(self.info.inputs) if inputs else None

    def _v2_props(self, value: Any, section: str, pf_keys: list[Key]) -> list[dict[str, Any]]:
        assert self.doc is not None
        if value is None:
            return []
        items: list[tuple[Key, dict[str, Any]]] = []
        if isinstance(value, list):
            items = [((section, i), v) for i, v in enumerate(value) if isinstance(v, dict)]
            for i, v in enumerate(value):
                if not isinstance(v, dict):
                    self.add("wrong-type", (section, i), f"each of {section} must be a mapping (name, kind, ...)")
        elif isinstance(value, dict):
            for name, v in value.items():
                if isinstance(v, dict):
                    items.append(((section, name), {"name": name, **v}))
                elif isinstance(v, list):
                    self.add("wrong-type", (section, name), f"{section}.{name} must be a mapping or an example value")
                else:
                    items.append(((section, name), {"name": name, "kind": "string", "example": v}))
        else:
            self.add("wrong-type", (section,), f"{section} must be a list of {{name, kind}} (or a mapping by name)")
            return []
        out = []
        for key, prop in items:
            fields = {k: v for k, v in prop.items() if (*key, k) not in pf_keys}
            problems: list[Problem] = []
            required = ("kind",) if (*key, "type") not in pf_keys else ()
            Struct(V2_PROPERTY_FIELDS, required=("name", *required), what=f"in {section}").check(
                self.doc, fields, key, problems)
            self.info.findings += [from_problem(p) for p in problems]
            kind = prop.get("kind")
            if isinstance(kind, str) and kind not in V2_KINDS:
                best = closest(kind, V2_KINDS)
                self.add("prompty-kind-unknown", (*key, "kind"), f"kind '{kind}' is not one the prompty package knows"
                         + (f"; did you mean '{best}'?" if best else "; use one of: " + ", ".join(V2_KINDS)))
            if isinstance(prop.get("name"), str):
                out.append(prop)
                if section == "inputs":
                    self.input_keys[prop["name"]] = key
        return out

    def _v2_connection(self, conn: Any) -> None:
        assert self.doc is not None
        key = ("model", "connection")
        if isinstance(conn, str) and conn.startswith("${"):
            return
        if not isinstance(conn, dict):
            self.add("wrong-type", key, "model.connection must be a mapping with a 'kind' (key, reference, ...)")
            return
        kind = conn.get("kind")
        spec = V2_CONNECTIONS.get(str(kind))
        if spec is None:
            best = closest(str(kind), V2_CONNECTIONS) if kind is not None else None
            self.add("missing-key" if kind is None else "wrong-type", (*key, "kind") if kind else key,
                     (f"connection kind '{kind}' is unknown" if kind else "model.connection has no 'kind'")
                     + (f"; did you mean '{best}'?" if best else "; use one of: " + ", ".join(V2_CONNECTIONS)),
                     at_key=kind is None)
            return
        problems: list[Problem] = []
        spec.check(self.doc, conn, key, problems)
        self.info.findings += [from_problem(p) for p in problems]
        if kind == "reference" and isinstance(conn.get("name"), str):
            self._connection(conn["name"], (*key, "name"))

    def _connection(self, name: str, key: Key) -> None:
        assert self.doc is not None
        if "${" in name:
            return
        line, col = self.doc.pos(*key)
        self.info.connections.append(ConnectionUse(self.node, name, "connection", self.doc.display, line, col,
                                                   llm=False))

    # -- references and template ------------------------------------------------------------------------
    def _references(self, value: Any, key: Key) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                self._references(v, (*key, k))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                self._references(v, (*key, i))
        elif isinstance(value, str) and REF_START.search(value):
            self._reference(value.strip(), key)

    def _reference(self, value: str, key: Key) -> None:
        m = FILE_WHOLE.match(value)
        if m:
            rel = m.group(1).strip()
            file = self.path.parent / rel
            if not file.is_file():
                self.add("prompty-file-missing", key, f"'{value}': {rel} does not exist next to {self.path.name}")
            elif not file.resolve().is_relative_to(self.path.parent.resolve()):
                self.info.dependencies.append(Dependency(Path(os.path.abspath(file)), "prompty file reference"))
            return
        env = ENV_WHOLE.match(value)
        if env is None:
            whole = "prompt flow" if self.format == PROMPTFLOW else "prompty 2.x"
            self.add("prompty-env-ref", key, f"'{value}' is not resolved: {whole} replaces only a whole value "
                     "written ${env:NAME} (NAME of letters, digits and '_'); build the value in code or put the "
                     "whole value in the variable")
        elif env.group(2) and self.format == PROMPTFLOW:
            self.add("prompty-env-ref", key, f"'{value}': prompt flow has no ${{env:NAME:default}}; it would look "
                     f"up a variable literally named '{env.group(1)}{env.group(2)}'; write ${{env:{env.group(1)}}}")

    def _template(self, parsed: Parsed, declared: set[str] | None) -> None:
        shown = display_path(self.path)
        template = as_dict(self.doc.data if self.doc else None).get("template")
        fmt = as_dict(template).get("format")
        kind = fmt if isinstance(fmt, str) else as_dict(fmt).get("kind")
        if self.format == PROMPTY2 and kind == "mustache":
            used = _mustache_vars(parsed.body)
        else:
            try:
                used = {k: v - 1 for k, v in template_vars(parsed.body).used.items()}
            except TemplateSyntax as exc:
                line = parsed.body_line + (exc.line or 1) - 1
                self.info.findings.append(finding("prompt-syntax", shown, line, None,
                                                  f"Jinja2 syntax error: {exc.message}"))
                return
        if declared is None:  # 2.x without declared inputs: whatever the caller passes
            for var in used:
                self.info.inputs.setdefault(var, FlowInput(var, "string", False))
            return
        for var, offset in sorted(used.items(), key=lambda kv: kv[1]):
            if var not in declared:
                best = closest(var, declared)
                where = "under 'inputs:'" if self.input_keys else "under 'inputs:' (or in 'sample:')"
                self.info.findings.append(finding(
                    "prompt-var-unbound", shown, parsed.body_line + offset, None,
                    f"the template uses '{{{{ {var} }}}}' but '{var}' is not an input, so it would render empty; "
                    + (f"did you mean '{best}'? " if best else "") + f"declare it {where}"))
        for name in declared:
            if name not in used and name in self.input_keys:
                self.add("prompty-input-unused", self.input_keys[name], f"input '{name}' is never used by the "
                         "template; remove it or use it", at_key=True)


def _value_type(value: Any) -> str:
    for py, name in ((bool, "bool"), (int, "int"), (float, "double"), (str, "string"), (list, "list")):
        if isinstance(value, py):
            return name
    return "object"


def _mustache_vars(body: str) -> dict[str, int]:
    """Top-level names a mustache template reads (inside a section, names belong to its items), with their
    0-based line."""
    used: dict[str, int] = {}
    depth = 0
    for m in re.finditer(r"\{\{([{#^/&]?)\s*([A-Za-z_][\w.]*)\s*\}?\}\}", body):
        sigil, name = m.group(1), m.group(2).split(".")[0]
        if sigil == "/":
            depth = max(0, depth - 1)
            continue
        if depth == 0:
            used.setdefault(name, body[:m.start()].count("\n"))
        if sigil in ("#", "^"):
            depth += 1
    return used
