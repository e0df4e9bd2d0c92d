"""Flex flows (``flow.flex.yaml``: a Python function or class as the entry), checked with ``ast`` only.

What prompt flow checks when it loads one (promptflow-devkit ``FlexFlowSchema`` and
``merge_flow_signature``) is checked here without importing anything: unknown keys, the entry's
module and callable, that declared ``inputs:``/``init:`` name exactly the callable's parameters, the
types it accepts, and the files the flow needs. ``.prompty`` files beside the entry are linted too:
the code loads them (usually passing its own model configuration).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from llmops_ci.core.errors import Problem, UsageError
from llmops_ci.core.safe_copy import copy_file, copy_tree, require_inside
from llmops_ci.core.schema import (
    BOOL,
    STR,
    STR_MAP,
    AnyValue,
    ListOf,
    MapOf,
    OneOf,
    Scalar,
    Struct,
    as_dict,
    as_list,
    closest,
)
from llmops_ci.core.yamldoc import Key, YamlDoc, display_path
from llmops_ci.diagnostics.findings import ERROR, Rule, finding, from_problem, rule_table
from llmops_ci.kinds.base import ConnectionUse, Dependency, FlowInfo, FlowInput, Snapshot, open_definition
from llmops_ci.kinds.prompty.checker import PromptyChecker, prompty_files
from llmops_ci.kinds.pyentry import Entry, EntryError, EntryParam, Signature, read_entry

FLEX_FILES = ("flow.flex.yaml", "flow.flex.yml")
VALUE_TYPES = ("string", "int", "double", "bool", "list", "object")  # FlexFlowInputSchema's ALLOWED_TYPES
CONNECTION_TYPES = tuple(f"{t}Connection" for t in (
    "AzureOpenAI", "OpenAI", "Qdrant", "CognitiveSearch", "Serp", "AzureContentSafety", "AzureAIServices",
    "FormRecognizer", "Weaviate", "Serverless", "Custom"))
# promptflow.core._model_configuration: field -> required
MODEL_CONFIGS: dict[str, dict[str, bool]] = {
    "AzureOpenAIModelConfiguration": {"azure_deployment": True, "azure_endpoint": False, "api_version": False,
                                      "api_key": False, "connection": False},
    "OpenAIModelConfiguration": {"model": True, "base_url": False, "api_key": False, "organization": False,
                                 "connection": False},
}
INIT_TYPES = (*VALUE_TYPES, *CONNECTION_TYPES, *MODEL_CONFIGS)
_OWN_ENDPOINT = ("azure_endpoint", "api_version", "api_key", "base_url", "organization")


def model_config_problems(annotation: str, param: str, value: dict[str, Any]) -> list[tuple[tuple[str, ...], str, str]]:
    """(key below the value, rule, message) for a model configuration given as a mapping, checked against its
    class in promptflow.core._model_configuration: a missing required field fails the whole run when prompt flow
    builds the class ("missing 1 required positional argument")."""
    fields = MODEL_CONFIGS[annotation]
    out: list[tuple[tuple[str, ...], str, str]] = []
    for name in value:
        if name not in fields:
            best = closest(str(name), fields)
            out.append(((str(name),), "flex-model-config", f"{annotation} has no field '{name}'"
                        + (f"; did you mean '{best}'?" if best else "; it has: " + ", ".join(fields))))
    for name, required in fields.items():
        if required and not value.get(name):
            out.append(((), "llm-model-missing" if name in ("model", "azure_deployment") else "flex-model-config",
                        f"{annotation} for '{param}' needs '{name}': prompt flow cannot build it without (the whole "
                        f"run fails: missing 1 required positional argument: '{name}')"))
    own = [k for k, v in value.items() if v and k in _OWN_ENDPOINT]
    if value.get("connection") and own:
        out.append(((own[0],), "flex-model-config", f"{annotation} sets both 'connection' and '{own[0]}'; prompt "
                    "flow refuses that: keep one"))
    return out

FLEX_RULES = rule_table(
    Rule("flex-entry-invalid", ERROR, "'entry' is not written module:function or module:Class"),
    Rule("flex-entry-missing", ERROR, "the entry's module file, or the function or class in it, does not exist"),
    Rule("flex-entry-syntax", ERROR, "the entry's module does not parse"),
    Rule("flex-call-missing", ERROR, "a class entry without __call__ (prompt flow calls the instance once per line)"),
    Rule("flex-class-init", ERROR, "a class entry that defines no __init__ (nor a base class in its module): prompt "
                                   "flow 1.18 cannot read its signature and fails with GenerateFlowMetaJsonError"),
    Rule("flex-type-unsupported", ERROR, "an entry parameter or result type prompt flow 1.18 refuses (\"a complex "
                                         "python type\": list[str], X | None, Any, -> dict, a quoted annotation, or "
                                         "any annotation under 'from __future__ import annotations')"),
    Rule("flex-input-mismatch", ERROR, "declared 'inputs:' that differ from the entry's parameters (unknown or "
                                       "missing)"),
    Rule("flex-output-mismatch", ERROR, "declared 'outputs:' that differ from the fields of the entry's return type"),
    Rule("flex-init-mismatch", ERROR, "'init:' (or sample.init) names a parameter __init__ does not have, or leaves "
                                      "out one it requires; or init for a function entry"),
    Rule("flex-init-type", ERROR, "an 'init:' type prompt flow cannot build (not a value, connection or model "
                                  "configuration type)"),
    Rule("flex-model-config", ERROR, "a model configuration value (`init:` in llmops.yaml, sample.init) with an "
                                     "unknown or missing field, or both a connection and its own endpoint or key"),
    Rule("flex-include-missing", ERROR, "an additional_includes path of a flex flow does not exist"),
    Rule("flex-env-ref", ERROR, "an environment_variables value prompt flow passes on literally (${env:...}, or a "
                                "reference that is not the whole value; it resolves only ${<connection>.<key>})"),
)

_IO = {"type": STR, "description": STR, "default": AnyValue(), "is_chat_input": BOOL, "is_chat_history": BOOL}
FLEX = Struct(
    {
        "$schema": STR, "entry": STR, "code": STR, "description": STR, "display_name": STR, "tags": STR_MAP,
        "type": Scalar((str,), choices=("standard", "evaluation", "chat")),
        "language": Scalar((str,), choices=("python", "csharp")),
        "inputs": MapOf(Struct(_IO, required=("type",), what="in a flex flow input")),
        "outputs": MapOf(Struct({"type": STR, "reference": STR, "description": STR, "is_chat_output": BOOL},
                                required=("type",), what="in a flex flow output")),
        "init": MapOf(Struct(_IO, required=("type",), what="in a flex flow init parameter")),
        "sample": OneOf((Struct({"inputs": AnyValue(), "init": AnyValue()}, what="in sample"), STR),
                        "a mapping with inputs and init, or ${file:sample.json}"),
        "additional_includes": ListOf(STR),
        "environment": Struct({"python_requirements_txt": STR, "image": STR}, what="in environment"),
        "environment_variables": OneOf((STR_MAP, STR), "a mapping of names to values, or ${file:.env}"),
    },
    required=("entry",),
    what="in flow.flex.yaml",
)
_ENTRY = re.compile(r"^([A-Za-z_][\w]*(?:\.[A-Za-z_][\w]*)*):([A-Za-z_]\w*)$")
_CONN_REF = re.compile(r"^\$\{([A-Za-z_][\w-]*)\.([\w]+)\}$")
_ENV_WHOLE = re.compile(r"^\$\{env:[A-Za-z_][A-Za-z0-9_]*\}$")


def flex_rules() -> list[Rule]:
    return list(FLEX_RULES.values())


class FlexFlowKind:
    name = "flex"
    folder_files = FLEX_FILES  # given as a flow's path, one of these stands for its folder

    def matches(self, path: Path) -> bool:
        if path.is_file():  # pf flow test --flow x.flex.yaml takes any name ending so
            return path.name.endswith((".flex.yaml", ".flex.yml"))
        return any((path / f).is_file() for f in FLEX_FILES)

    def inspect(self, path: Path) -> FlowInfo:
        definition = path if path.is_file() else next((path / f for f in FLEX_FILES if (path / f).is_file()),
                                                       path / FLEX_FILES[0])
        return _FlexChecker(definition).run()

    def rules(self) -> list[Rule]:
        return flex_rules()

    def snapshot(self, info: FlowInfo, dest: Path, *, variant: str | None = None,
                 overrides: dict[str, dict[str, Any]] | None = None) -> Snapshot:
        """The folder copied to ``dest`` with additional includes and an outside requirements file merged in."""
        if variant is not None:
            raise UsageError(f"{display_path(info.definition)}: a flex flow has no variants; remove 'variant:'")
        if overrides:
            raise UsageError(f"{display_path(info.definition)}: 'connections:' overrides are for DAG nodes; a flex "
                             "flow gets its connections through its init (model configuration) values")
        if dest.exists():
            shutil.rmtree(dest)
        ignore = shutil.ignore_patterns(".git", "__pycache__", ".venv", ".llmops")
        copy_tree(info.folder, dest, ignore=ignore)
        entry = dest / info.definition.name
        try:
            data = yaml.safe_load(info.definition.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise UsageError(f"{display_path(info.definition)}: cannot read: {exc}; run lint") from None
        if not isinstance(data, dict):
            raise UsageError(f"{display_path(info.definition)}: not a mapping; run lint")
        changed = False
        for inc in as_list(data.pop("additional_includes", None)):
            changed = True
            src = Path(os.path.normpath(info.folder / str(inc)))
            require_inside(src, "additional include", info.folder)
            if src.is_dir():
                copy_tree(src, dest / src.name, ignore=ignore, dirs_exist_ok=True)
            elif src.is_file():
                copy_file(src, dest / src.name)
        env = as_dict(data.get("environment"))
        req = env.get("python_requirements_txt")
        if isinstance(req, str) and not (dest / req).is_file():
            src = Path(os.path.normpath(info.folder / req))
            require_inside(src, "python_requirements_txt", info.folder)
            if src.is_file():
                copy_file(src, dest / src.name)
                env["python_requirements_txt"] = src.name
                changed = True
        if changed:
            entry.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        return Snapshot(dest, entry)


class _FlexChecker:
    def __init__(self, definition: Path) -> None:
        self.definition = definition
        self.folder = definition.parent
        self.info = FlowInfo("flex", self.folder, definition, defaults_shadow_columns=True, missing_value="nan",
                             connections_by_name=True)
        self.doc: YamlDoc | None = None

    def add(self, rule: str, key: Key, message: str, *, at_key: bool = False) -> None:
        assert self.doc is not None
        line, col = self.doc.key_pos(*key) if at_key else self.doc.pos(*key)
        self.info.findings.append(finding(rule, self.doc.display, line, col, message))

    def run(self) -> FlowInfo:
        self.doc = open_definition(self.info, self.definition, "with at least 'entry: module:function'")
        if self.doc is None:
            return self.info
        doc = self.doc
        data = doc.data
        problems: list[Problem] = []
        FLEX.check(doc, data, (), problems)
        self.info.findings += [from_problem(p) for p in problems]
        self._types(data)
        entry = self._entry(data)
        if entry is not None and entry.kind == "class" and entry.init is not None and not entry.init.var_kwargs:
            self.info.init_params = {p.name: not p.has_default for p in entry.init.params.values()}
            self.info.init_types = {p.name: p.annotation for p in entry.init.params.values() if p.annotation}
        self._interface(data, entry)
        self._sample(data, entry)
        self._environment(data)
        self._files(data)
        self._prompty_files()
        return self.info

    def _types(self, data: dict[str, Any]) -> None:
        for section, allowed, rule in (("inputs", VALUE_TYPES, "input-type"), ("outputs", VALUE_TYPES, "input-type"),
                                       ("init", INIT_TYPES, "flex-init-type")):
            for name, spec in as_dict(data.get(section)).items():
                itype = as_dict(spec).get("type")
                if isinstance(itype, str) and itype not in allowed:
                    best = closest(itype, allowed)
                    self.add(rule, (section, name, "type"), f"{section[:-1] if section != 'init' else 'init'} "
                             f"'{name}' has type '{itype}', which prompt flow does not accept here; "
                             + (f"did you mean '{best}'?" if best else "use one of: " + ", ".join(allowed)))

    def _entry(self, data: dict[str, Any]) -> Entry | None:
        raw = data.get("entry")
        if not isinstance(raw, str):
            return None
        if data.get("language", "python") != "python":
            return None
        m = _ENTRY.match(raw.strip())
        if m is None:
            self.add("flex-entry-invalid", ("entry",), f"entry '{raw}' must be module:function or module:Class "
                     "(e.g. entry: flow:ChatFlow for class ChatFlow in flow.py)")
            return None
        code = self.folder / str(data["code"]) if isinstance(data.get("code"), str) else self.folder
        try:
            entry = read_entry(code, m.group(1), m.group(2))
        except EntryError as exc:
            if exc.file is None or exc.line is None:
                self.add(exc.rule, ("entry",), f"entry '{raw}': {exc.message}")
            else:
                self.info.findings.append(finding(exc.rule, display_path(exc.file), exc.line, exc.column,
                                                  f"entry '{raw}': {exc.message}"))
            return None
        if entry.kind == "class" and entry.has_call is False:
            self.info.findings.append(finding("flex-call-missing", display_path(entry.file), entry.line, None,
                                              f"class {m.group(2)} is the flow's entry but has no __call__; prompt "
                                              "flow creates it once (with init) and calls it for every line: add "
                                              "def __call__(self, ...)"))
        shown = display_path(entry.file)
        if entry.future_annotations is not None:
            self.info.findings.append(finding("flex-type-unsupported", shown, entry.future_annotations, None,
                                              "'from __future__ import annotations' turns the entry's annotations "
                                              "into strings, and prompt flow then refuses every annotated parameter "
                                              "(\"a complex python type\"); remove the import from this module"))
        for sig in (entry.call, entry.init):
            for line, why in sig.refused if sig else ():
                self.info.findings.append(finding("flex-type-unsupported", shown, line, None, why))
        if entry.kind == "class" and entry.own_init is False:
            self.info.findings.append(finding("flex-class-init", display_path(entry.file), entry.line, None,
                                              f"class {m.group(2)} defines no __init__; prompt flow cannot read the "
                                              "signature of object.__init__ ('wrapper_descriptor' object has no "
                                              "attribute '__module__'): add def __init__(self) -> None: pass"))
        return entry

    def _interface(self, data: dict[str, Any], entry: Entry | None) -> None:
        declared_in = as_dict(data.get("inputs"))
        call = entry.call if entry else None
        if call is not None:
            for param in call.params.values():
                spec = as_dict(declared_in.get(param.name))
                self.info.inputs[param.name] = FlowInput(param.name, str(spec.get("type") or param.value_type),
                                                         param.has_default or "default" in spec)
            if "inputs" in data and not call.var_kwargs:
                self._match("inputs", declared_in, call, "flex-input-mismatch", "the entry's parameters")
        else:
            for name, spec in declared_in.items():
                spec = as_dict(spec)
                self.info.inputs[str(name)] = FlowInput(str(name), str(spec.get("type", "string")), "default" in spec)
        for name, spec in declared_in.items():
            if as_dict(spec).get("is_chat_input") is True:
                self.info.chat_input = str(name)
            if as_dict(spec).get("is_chat_history") is True:
                self.info.chat_history = str(name)
        declared_out = as_dict(data.get("outputs"))
        visible = entry.outputs if entry else None
        if declared_out:
            self.info.outputs = {str(k) for k in declared_out}
            if visible is not None and set(declared_out) != visible:
                extra = sorted(set(map(str, declared_out)) - visible)
                missing = sorted(visible - set(map(str, declared_out)))
                key = ("outputs", extra[0]) if extra else ("outputs",)
                self.add("flex-output-mismatch", key, "outputs must match what the entry returns ("
                         + ", ".join(sorted(visible)) + ")" + (f"; not returned: {', '.join(extra)}" if extra else "")
                         + (f"; not declared: {', '.join(missing)}" if missing else ""), at_key=True)
            for name, spec in declared_out.items():
                if as_dict(spec).get("is_chat_output") is True:
                    self.info.chat_output = str(name)
        elif visible is not None:
            self.info.outputs = set(visible)
        else:
            self.info.outputs_open = True  # e.g. -> dict, or no annotation: the keys are known at run time
        if "init" in data:
            if entry is not None and entry.kind == "function":
                self.add("flex-init-mismatch", ("init",), "the entry is a function, which takes no init; remove "
                         "'init:' or make the entry a class whose __init__ takes these", at_key=True)
            elif entry is not None and entry.init is not None:
                self._match("init", as_dict(data.get("init")), entry.init, "flex-init-mismatch", "__init__'s "
                            "parameters")

    def _match(self, section: str, declared: dict[str, Any], sig: Signature, rule: str, what: str) -> None:
        """prompt flow refuses declared ports that are not exactly the code's (merge_flow_signature)."""
        for name in declared:
            if name not in sig.params:
                best = closest(str(name), sig.params)
                self.add(rule, (section, name), f"{section} declares '{name}', which is not among {what} "
                         f"({sig.name}, line {sig.line})" + (f"; did you mean '{best}'?" if best else ""), at_key=True)
        missing = [p for p in sig.params.values() if p.name not in declared]
        if missing:
            self.add(rule, (section,), f"{section} leaves out {', '.join(repr(p.name) for p in missing)} of {what} "
                     f"({sig.name}, line {sig.line}); prompt flow needs them all declared (or drop '{section}:' "
                     "and let it read them from the code)", at_key=True)

    def _sample(self, data: dict[str, Any], entry: Entry | None) -> None:
        sample = data.get("sample")
        if not isinstance(sample, dict):
            return
        init = sample.get("init")
        if isinstance(init, dict) and entry is not None:
            if entry.kind == "function":
                self.add("flex-init-mismatch", ("sample", "init"), "sample.init is given but the entry is a function, "
                         "which takes no init", at_key=True)
            elif entry.init is not None:
                for name, value in init.items():
                    param = entry.init.params.get(str(name))
                    if param is None and not entry.init.var_kwargs:
                        best = closest(str(name), entry.init.params)
                        self.add("flex-init-mismatch", ("sample", "init", name), f"sample.init gives '{name}', which "
                                 "__init__ does not take" + (f"; did you mean '{best}'?" if best else ""), at_key=True)
                    elif param is not None:
                        self._init_value(param, value, ("sample", "init", name))
                for param in entry.init.params.values():
                    if not param.has_default and param.name not in init:
                        self.add("flex-init-mismatch", ("sample", "init"), f"sample.init leaves out '{param.name}', "
                                 f"which __init__ requires (line {param.line})", at_key=True)
        inputs = sample.get("inputs")
        call = entry.call if entry else None
        if isinstance(inputs, dict) and call is not None and not call.var_kwargs:
            for name in inputs:
                if name not in call.params:
                    best = closest(str(name), call.params)
                    self.add("flex-input-mismatch", ("sample", "inputs", name), f"sample.inputs gives '{name}', "
                             f"which {call.name}() does not take" + (f"; did you mean '{best}'?" if best else ""),
                             at_key=True)

    def _init_value(self, param: EntryParam, value: Any, key: Key) -> None:
        annotation = param.annotation or ""
        if annotation in CONNECTION_TYPES and isinstance(value, str):
            self._connection(param.name, value, key, "connection")
            return
        if annotation not in MODEL_CONFIGS or not isinstance(value, dict):
            return
        for sub, rule, message in model_config_problems(annotation, param.name, value):
            self.add(rule, (*key, *sub), message, at_key=True)
        if isinstance(value.get("connection"), str):
            self._connection(param.name, value["connection"], (*key, "connection"), "connection")

    def _connection(self, node: str, name: str, key: Key, field_name: str) -> None:
        assert self.doc is not None
        if "${" in name:
            return
        line, col = self.doc.pos(*key)
        self.info.connections.append(ConnectionUse(node, name, field_name, self.doc.display, line, col, llm=False))

    def _environment(self, data: dict[str, Any]) -> None:
        env = data.get("environment_variables")
        for name, value in as_dict(env).items():
            if value is None:
                continue
            text = str(value)
            self.info.environment_variables[str(name)] = text
            if "${" not in text:
                continue
            ref = _CONN_REF.match(text.strip())
            if ref:
                self._connection("environment_variables", ref.group(1), ("environment_variables", name),
                                 ref.group(2))
            elif _ENV_WHOLE.match(text.strip()):
                self.add("flex-env-ref", ("environment_variables", name), f"'{text}' reaches the flow as these very "
                         "characters: prompt flow resolves only ${<connection>.<key>} in a flow file's "
                         f"environment_variables; set {name} under the flow's environment_variables in llmops.yaml, "
                         "where ${env:...} is expanded")
            else:
                self.add("flex-env-ref", ("environment_variables", name), f"'{text}' is not resolved: prompt flow "
                         "replaces only a whole value written ${<connection>.<key>}")

    def _files(self, data: dict[str, Any]) -> None:
        for i, inc in enumerate(as_list(data.get("additional_includes"))):
            if not isinstance(inc, str):
                continue
            path = Path(os.path.normpath(self.folder / inc))
            if not path.exists():
                self.add("flex-include-missing", ("additional_includes", i), f"additional include '{inc}' does not "
                         f"exist (relative to {display_path(self.folder)})")
            else:
                self.info.dependencies.append(Dependency(Path(os.path.abspath(path)), "additional include"))
        req = as_dict(data.get("environment")).get("python_requirements_txt")
        if isinstance(req, str):
            path = Path(os.path.normpath(self.folder / req))
            if not path.is_file():
                self.add("requirements-missing", ("environment", "python_requirements_txt"),
                         f"python_requirements_txt '{req}' does not exist in {display_path(self.folder)}")
            elif not path.is_relative_to(Path(os.path.normpath(self.folder))):
                self.info.dependencies.append(Dependency(Path(os.path.abspath(path)), "python_requirements_txt"))
        code = data.get("code")
        if isinstance(code, str):
            path = Path(os.path.normpath(self.folder / code))
            if not path.is_dir():
                self.add("flex-entry-missing", ("code",), f"code folder '{code}' does not exist")
            elif not path.is_relative_to(Path(os.path.normpath(self.folder))):
                self.info.dependencies.append(Dependency(Path(os.path.abspath(path)), "code"))

    def _prompty_files(self) -> None:
        for path in prompty_files(self.folder):
            sub = PromptyChecker(path, embedded=True).run()
            self.info.findings += sub.findings
            self.info.connections += sub.connections
            self.info.dependencies += sub.dependencies
