"""Static checks of MLflow agents: interface, set_model and every Databricks resource the code uses."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from llmops_ci.config import read_config
from llmops_ci.diagnostics.findings import Finding
from llmops_ci.kinds.base import FlowInfo
from llmops_ci.kinds.mlflow.kind import MlflowAgentKind, inspect_agent
from llmops_ci.kinds.mlflow.spec import MlflowAgentSpec

HEADER = """\
import os
import mlflow
from mlflow.pyfunc import ResponsesAgent
"""
FOOTER = """
class Agent(ResponsesAgent):
    def predict(self, request):
        return None


mlflow.models.set_model(Agent())
"""

REQUIREMENTS = ["mlflow==3.17.2", "openai", "databricks-langchain", "databricks-sdk", "unitycatalog-ai", "langgraph"]
Inspect = Callable[..., tuple[FlowInfo, list[Finding]]]


@pytest.fixture
def inspect(tmp_path: Path) -> Inspect:
    """Write llmops.yaml with an mlflow_agent block and agents/a/agent.py, inspect it; returns (info, findings)."""

    def make(code: str, resources: dict | None = None, *, interface: str = "responses", block: dict | None = None,
             files: dict[str, str] | None = None, raw: bool = False) -> tuple[FlowInfo, list[Finding]]:
        agent = {"code": "agent.py", "interface": interface, "pip_requirements": REQUIREMENTS}
        if resources is not None:
            agent["resources"] = resources
        agent.update(block or {})
        config = {"version": 1, "flows": {"a": {"path": "agents/a", "mlflow_agent": agent}}}
        (tmp_path / "llmops.yaml").write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        folder = tmp_path / "agents" / "a"
        folder.mkdir(parents=True, exist_ok=True)
        text = textwrap.dedent(code) if raw else HEADER + textwrap.dedent(code) + FOOTER
        (folder / "agent.py").write_text(text, encoding="utf-8")
        for name, content in (files or {}).items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(textwrap.dedent(content), encoding="utf-8")
        loaded, problems = read_config(tmp_path / "llmops.yaml", None)
        assert loaded is not None
        spec = loaded.flows["a"].block(MlflowAgentSpec)
        assert spec is not None, problems
        info = inspect_agent(folder, spec, spec.origin)
        from llmops_ci.diagnostics.findings import from_problem

        return info, [from_problem(p) for p in problems] + info.findings

    return make


def rules(findings: list[Finding]) -> list[str]:
    return sorted(f.rule for f in findings)


def only(findings: list[Finding], rule: str) -> Finding:
    found = [f for f in findings if f.rule == rule]
    assert len(found) == 1, findings
    return found[0]


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


# --- serving endpoints ------------------------------------------------------------------------------

def test_chat_databricks_endpoint_undeclared_is_an_error_at_the_code_line(inspect: Inspect, tmp_path: Path) -> None:
    _, findings = inspect("""
        from databricks_langchain import ChatDatabricks
        FAMILY = "databricks-meta-llama"
        LLM = ChatDatabricks(endpoint=f"{FAMILY}-3-3-70b-instruct", temperature=0)
        """, {"serving_endpoint": ["databricks-meta-llama-3-1-8b-instruct"]})
    hit = only(findings, "resource-undeclared")
    assert hit.severity == "error"
    assert hit.line == line_of(tmp_path / "agents/a/agent.py", "ChatDatabricks(endpoint")
    assert "'databricks-meta-llama-3-3-70b-instruct'" in hit.message
    assert "did you mean 'databricks-meta-llama-3-1-8b-instruct'" in hit.message
    assert only(findings, "resource-unused").severity == "warning"


def test_openai_client_not_on_databricks_is_no_resource(inspect: Inspect) -> None:
    # near miss: model= on a plain OpenAI client names an OpenAI model, not a serving endpoint
    _, findings = inspect("""
        from openai import OpenAI
        client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"])
        def answer(q):
            return client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": q}])
        """, {})
    assert rules(findings) == []


def test_openai_base_url_on_serving_endpoints_is_databricks(inspect: Inspect) -> None:
    _, findings = inspect("""
        from openai import OpenAI
        client = OpenAI(api_key=os.environ["DATABRICKS_TOKEN"],
                        base_url=os.environ["DATABRICKS_HOST"] + "/serving-endpoints")
        def answer(q):
            return client.responses.create(model="my-llm", input=q)
        """, {"serving_endpoint": ["other-llm"]})
    assert "'my-llm'" in only(findings, "resource-undeclared").message


def test_embeddings_endpoint(inspect: Inspect) -> None:
    code = """
        from databricks_langchain import DatabricksEmbeddings
        EMB = DatabricksEmbeddings(endpoint="databricks-gte-large-en")
        """
    assert rules(inspect(code, {"serving_endpoint": ["databricks-gte-large-en"]})[1]) == []
    assert rules(inspect(code, {})[1]) == ["resource-undeclared"]


# --- vector search indexes ---------------------------------------------------------------------------

def test_vector_search_index_concatenated_name_and_typo(inspect: Inspect) -> None:
    _, findings = inspect("""
        from databricks_langchain import VectorSearchRetrieverTool
        CATALOG, SCHEMA = "main", "docs"
        CAT = "main"
        TOOL = VectorSearchRetrieverTool(index_name=CAT + ".docs." + "docs_index", num_results=3)
        """, {"vector_search_index": ["main.docs.docs_idx"]})
    assert "did you mean 'main.docs.docs_idx'" in only(findings, "resource-undeclared").message


def test_vector_search_index_case_and_backquotes_match(inspect: Inspect) -> None:
    # near miss: Unity Catalog names ignore case and backquotes
    _, findings = inspect("""
        from databricks_langchain import DatabricksVectorSearch
        STORE = DatabricksVectorSearch(index_name="`Main`.docs.Docs_Index")
        """, {"vector_search_index": ["main.docs.docs_index"]})
    assert rules(findings) == []


def test_index_name_must_have_three_parts(inspect: Inspect) -> None:
    _, findings = inspect("""
        from databricks_langchain import VectorSearchRetrieverTool
        TOOL = VectorSearchRetrieverTool(index_name="docs.docs_index")
        """, {"vector_search_index": ["docs.docs_index"]})
    assert rules(findings) == ["resource-name-invalid", "resource-name-invalid", "resource-unused"]
    assert all("catalog.schema.index" in f.message for f in findings if f.rule == "resource-name-invalid")


# --- Unity Catalog functions ---------------------------------------------------------------------------

def test_uc_function_list_one_undeclared(inspect: Inspect, tmp_path: Path) -> None:
    _, findings = inspect("""
        from unitycatalog.ai.langchain.toolkit import UCFunctionToolkit
        TOOLS = [
            "main.tools.lookup_customer",
            "main.tools.refund",
        ]
        toolkit = UCFunctionToolkit(function_names=TOOLS)
        """, {"function": ["main.tools.lookup_customer"]})
    hit = only(findings, "resource-undeclared")
    assert "'main.tools.refund'" in hit.message
    assert hit.line == line_of(tmp_path / "agents/a/agent.py", "UCFunctionToolkit(")


def test_uc_function_wildcard_is_a_warning(inspect: Inspect) -> None:
    # near miss: a wildcard cannot be expanded statically, so it warns instead of failing
    _, findings = inspect("""
        from unitycatalog.ai.langchain.toolkit import UCFunctionToolkit
        toolkit = UCFunctionToolkit(function_names=["main.tools.*"])
        """, {"function": ["main.tools.lookup_customer"]})
    assert rules(findings) == ["resource-wildcard"]
    assert "(it lists 1)" in findings[0].message


def test_declared_wildcard_warns(inspect: Inspect) -> None:
    _, findings = inspect("""
        from unitycatalog.ai.core.databricks import DatabricksFunctionClient
        client = DatabricksFunctionClient()
        client.execute_function("main.tools.lookup_customer", parameters={})
        """, {"function": ["main.tools.*"]})
    assert rules(findings) == ["resource-wildcard"]


# --- Genie spaces ---------------------------------------------------------------------------------------

SPACE = "01ef1234567890abcdef1234567890ab"


def test_genie_space_undeclared(inspect: Inspect) -> None:
    _, findings = inspect(f"""
        from databricks_langchain.genie import GenieAgent
        GENIE = GenieAgent(genie_space_id="{SPACE}", genie_agent_name="sales")
        """, {"genie_space": ["0" * 32]})
    assert rules(findings) == ["resource-undeclared", "resource-unused"]


def test_genie_space_from_env_is_unresolved(inspect: Inspect) -> None:
    # near miss: an environment variable cannot be checked, so it warns and keeps the declared one
    _, findings = inspect("""
        from databricks.sdk import WorkspaceClient
        w = WorkspaceClient()
        def ask(q):
            return w.genie.start_conversation_and_wait(space_id=os.getenv("GENIE_SPACE"), content=q)
        """, {"genie_space": [SPACE]})
    hit = only(findings, "resource-unresolved")
    assert "environment variable GENIE_SPACE" in hit.message
    assert rules(findings) == ["resource-unresolved"]


# --- SQL warehouses and tables ------------------------------------------------------------------------

def test_statement_on_warehouse_reads_an_undeclared_table(inspect: Inspect) -> None:
    _, findings = inspect("""
        from databricks.sdk import WorkspaceClient
        WAREHOUSE = "abcdef0123456789"
        TABLE = "main.sales.orders"
        def orders(customer):
            w = WorkspaceClient()
            return w.statement_execution.execute_statement(
                warehouse_id=WAREHOUSE, statement=f"SELECT * FROM {TABLE} o JOIN main.sales.customers c ON 1=1")
        """, {"sql_warehouse": ["abcdef0123456789"], "table": ["main.sales.orders"]})
    assert "'main.sales.customers'" in only(findings, "resource-undeclared").message


def test_warehouse_in_http_path_and_two_part_table_names(inspect: Inspect) -> None:
    # near miss: a two-part name in SQL is not a Unity Catalog table lint can name
    _, findings = inspect("""
        from databricks import sql
        def rows():
            with sql.connect(server_hostname="h", http_path="/sql/1.0/warehouses/abcdef0123456789") as c:
                c.cursor().execute("SELECT * FROM sales.orders")
        """, {"sql_warehouse": ["abcdef0123456789"]})
    assert rules(findings) == []


def test_undeclared_warehouse(inspect: Inspect) -> None:
    _, findings = inspect("""
        from databricks.sdk import WorkspaceClient
        WorkspaceClient().statement_execution.execute_statement(warehouse_id="0123456789abcdef", statement="SELECT 1")
        """, {"sql_warehouse": ["abcdef0123456789"]})
    assert "'0123456789abcdef'" in only(findings, "resource-undeclared").message


def test_spark_table(inspect: Inspect) -> None:
    _, findings = inspect("""
        def load(spark):
            return spark.read.table("main.sales.orders")
        """, {})
    assert rules(findings) == ["resource-undeclared"]


# --- Unity Catalog connections -------------------------------------------------------------------------

def test_uc_connection_http_request(inspect: Inspect) -> None:
    code = """
        from databricks.sdk import WorkspaceClient
        from databricks.sdk.service.serving import ExternalFunctionRequestHttpMethod
        def post(text):
            WorkspaceClient().serving_endpoints.http_request(
                conn="slack_conn", method=ExternalFunctionRequestHttpMethod.POST, path="/chat.postMessage")
        """
    assert rules(inspect(code, {"uc_connection": ["slack-conn"]})[1]) == ["resource-undeclared", "resource-unused"]
    assert rules(inspect(code, {"uc_connection": ["slack_conn"]})[1]) == []


# --- config shape --------------------------------------------------------------------------------------

def test_resources_and_auth_policy_are_exclusive(inspect: Inspect) -> None:
    _, findings = inspect("X = 1\n", {"serving_endpoint": ["a"]},
                          block={"auth_policy": {"api_scopes": ["serving.serving-endpoints"]}})
    assert any(f.rule == "wrong-type" and "either 'resources' or 'auth_policy'" in f.message for f in findings)


def test_on_behalf_of_user_needs_api_scopes(inspect: Inspect) -> None:
    code = """
        from databricks_langchain import ChatDatabricks
        LLM = ChatDatabricks(endpoint="llm")
        """
    _, findings = inspect(code, {"serving_endpoint": [{"name": "llm", "on_behalf_of_user": True}]})
    assert "serving.serving-endpoints" in only(findings, "resource-scope-missing").message
    _, findings = inspect(code, None, block={"auth_policy": {
        "system_resources": {"serving_endpoint": [{"name": "llm", "on_behalf_of_user": True}]},
        "api_scopes": ["serving.serving-endpoints"]}})
    assert rules(findings) == []


def test_user_scopes_cover_undeclared_uses(inspect: Inspect) -> None:
    _, findings = inspect("""
        from databricks_langchain import VectorSearchRetrieverTool
        TOOL = VectorSearchRetrieverTool(index_name="main.docs.idx")
        """, None, block={"auth_policy": {"api_scopes": ["vectorsearch.vector-search-indexes"]}})
    assert rules(findings) == []


def test_no_pip_requirements_and_unlisted_import(inspect: Inspect) -> None:
    _, findings = inspect("import openai\n", {}, block={"pip_requirements": ["mlflow==3.17.2"]})
    assert "add openai" in only(findings, "agent-requirements-missing").message
    _, findings = inspect("X = 1\n", {}, block={"pip_requirements": []})
    assert rules(findings) == ["agent-requirements-missing"]


# --- set_model and the interface ------------------------------------------------------------------------

def test_set_model_missing(inspect: Inspect) -> None:
    _, findings = inspect("import mlflow\nX = 1\n", {}, raw=True)
    assert rules(findings) == ["agent-set-model-missing"]


def test_interface_mismatch(inspect: Inspect) -> None:
    code = """
        import mlflow
        from mlflow.pyfunc import ChatAgent

        class Base(ChatAgent):
            pass

        class Mine(Base):
            def predict(self, messages, context=None, custom_inputs=None):
                return None

        AGENT = Mine()
        mlflow.models.set_model(AGENT)
        """
    hit = only(inspect(code, {}, raw=True)[1], "agent-interface-mismatch")
    assert "set 'interface: chat'" in hit.message
    assert rules(inspect(code, {}, raw=True, interface="chat")[1]) == []


def test_set_model_of_something_else_is_unchecked(inspect: Inspect) -> None:
    _, findings = inspect("import mlflow\nfrom x import build\nmlflow.models.set_model(build())\n", {}, raw=True,
                          files={"x.py": "def build():\n    return None\n"})
    assert rules(findings) == ["agent-interface-unchecked"]


def test_code_missing_and_syntax_error(inspect: Inspect, tmp_path: Path) -> None:
    info, findings = inspect("def broken(:\n", {}, raw=True)
    assert rules(findings) == ["agent-syntax"] and not info.loaded
    info, findings = inspect("X = 1\n", {}, block={"code": "nope.py"})
    hit = only(findings, "agent-code-missing")
    assert hit.path.endswith("llmops.yaml") and hit.line is not None


# --- whole agents ------------------------------------------------------------------------------------

LANGGRAPH_CHAT_AGENT = """\
from typing import Any, Generator, Optional
import mlflow
from databricks_langchain import ChatDatabricks, VectorSearchRetrieverTool
from databricks_langchain.uc_ai import UCFunctionToolkit
from langgraph.prebuilt import create_react_agent
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse

config = mlflow.models.ModelConfig(development_config="config.yml")
LLM_ENDPOINT_NAME = config.get("llm_endpoint")
llm = ChatDatabricks(endpoint=LLM_ENDPOINT_NAME)
tools = []
uc_tool_names = ["main.tools.lookup_customer", "main.tools.python_exec"]
tools.extend(UCFunctionToolkit(function_names=uc_tool_names).tools)
tools.append(VectorSearchRetrieverTool(index_name=f"{config.get('catalog')}.docs.docs_index",
                                       tool_name="search_docs"))


class LangGraphChatAgent(ChatAgent):
    def __init__(self, agent):
        self.agent = agent

    def predict(self, messages: list[ChatAgentMessage], context=None,
                custom_inputs: Optional[dict[str, Any]] = None) -> ChatAgentResponse:
        request = {"messages": self._convert_messages_to_dict(messages)}
        out = []
        for event in self.agent.stream(request, stream_mode="updates"):
            for node_data in event.values():
                out.extend(ChatAgentMessage(**msg) for msg in node_data.get("messages", []))
        return ChatAgentResponse(messages=out)


mlflow.langchain.autolog()
agent = create_react_agent(llm, tools, prompt="You are a support agent.")
AGENT = LangGraphChatAgent(agent)
mlflow.models.set_model(AGENT)
"""


def test_langgraph_react_agent_in_a_chat_agent(inspect: Inspect, tmp_path: Path) -> None:
    files = {"config.yml": "llm_endpoint: databricks-meta-llama-3-3-70b-instruct\ncatalog: main\n"}
    resources = {"serving_endpoint": ["databricks-meta-llama-3-3-70b-instruct"],
                 "function": ["main.tools.lookup_customer", "main.tools.python_exec"],
                 "vector_search_index": ["main.docs.docs_index"]}
    info, findings = inspect(LANGGRAPH_CHAT_AGENT, resources, interface="chat", files=files, raw=True,
                             block={"pip_requirements": ["mlflow==3.17.2", "databricks-langchain", "langgraph"]})
    assert rules(findings) == []
    assert set(info.inputs) == {"messages", "context", "custom_inputs"} and info.outputs >= {"messages"}
    del resources["function"][1]
    _, findings = inspect(LANGGRAPH_CHAT_AGENT, resources, interface="chat", files=files, raw=True)
    hit = only(findings, "resource-undeclared")
    assert "'main.tools.python_exec'" in hit.message
    assert hit.line == line_of(tmp_path / "agents/a/agent.py", "UCFunctionToolkit(function_names=uc")
    # the wrong interface is caught too
    assert "agent-interface-mismatch" in rules(inspect(LANGGRAPH_CHAT_AGENT, resources, files=files, raw=True)[1])


RESPONSES_AGENT = """\
import json
from typing import Generator
import mlflow
from databricks.sdk import WorkspaceClient
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

LLM_ENDPOINT_NAME = "databricks-claude-3-7-sonnet"
SYSTEM_PROMPT = "You are helpful."


class ToolCallingAgent(ResponsesAgent):
    def __init__(self, llm_endpoint: str, tools: list):
        self.llm_endpoint = llm_endpoint
        self.workspace_client = WorkspaceClient()
        self.model_serving_client = self.workspace_client.serving_endpoints.get_open_ai_client()
        self.tools = tools

    def call_llm(self, messages):
        return self.model_serving_client.chat.completions.create(
            model=self.llm_endpoint,
            messages=messages,
        )

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        response = self.call_llm([{"role": "system", "content": SYSTEM_PROMPT}])
        return ResponsesAgentResponse(output=[], custom_outputs=request.custom_inputs)


AGENT = ToolCallingAgent(llm_endpoint=LLM_ENDPOINT_NAME, tools=[])
mlflow.models.set_model(AGENT)
"""


def test_responses_agent_with_a_databricks_openai_client(inspect: Inspect, tmp_path: Path) -> None:
    block = {"pip_requirements": ["mlflow==3.17.2", "databricks-sdk", "openai"]}
    info, findings = inspect(RESPONSES_AGENT, {"serving_endpoint": ["databricks-claude-3-7-sonnet"]}, raw=True,
                             block=block)
    assert rules(findings) == []
    assert set(info.inputs) >= {"input", "custom_inputs"} and "output" in info.outputs
    _, findings = inspect(RESPONSES_AGENT, {"serving_endpoint": ["databricks-claude-sonnet-4"]}, raw=True,
                          block=block)
    hit = only(findings, "resource-undeclared")
    assert "'databricks-claude-3-7-sonnet'" in hit.message
    assert hit.line == line_of(tmp_path / "agents/a/agent.py", "model=self.llm_endpoint")
    # built twice with different endpoints: no single name, so a warning instead of a guess
    twice = RESPONSES_AGENT.replace("AGENT = ToolCallingAgent(", "OTHER = ToolCallingAgent(llm_endpoint='x', tools=[])"
                                    "\nAGENT = ToolCallingAgent(")
    _, findings = inspect(twice, {"serving_endpoint": ["databricks-claude-3-7-sonnet"]}, raw=True, block=block)
    assert "given different values" in only(findings, "resource-unresolved").message


def test_parameter_nobody_passes_is_unresolved(inspect: Inspect) -> None:
    _, findings = inspect("""
        from databricks_langchain import ChatDatabricks
        def make(endpoint):
            return ChatDatabricks(endpoint=endpoint)
        """, {"serving_endpoint": ["x"]})
    assert "argument 'endpoint' of make" in only(findings, "resource-unresolved").message


# --- a logged MLmodel --------------------------------------------------------------------------------

def test_logged_mlmodel_resources_differ(inspect: Inspect) -> None:
    mlmodel = {"flavors": {"python_function": {}}, "resources": {"api_version": "1", "databricks": {
        "serving_endpoint": [{"name": "llm"}], "table": [{"name": "main.sales.orders"}]}}}
    code = """
        from databricks_langchain import ChatDatabricks
        LLM = ChatDatabricks(endpoint="llm")
        """
    _, findings = inspect(code, {"serving_endpoint": ["llm"]}, files={"model/MLmodel": yaml.safe_dump(mlmodel)})
    hit = only(findings, "mlmodel-resources-differ")
    assert "table main.sales.orders" in hit.message and hit.path.endswith("MLmodel") and hit.line
    del mlmodel["resources"]["databricks"]["table"]
    _, findings = inspect(code, {"serving_endpoint": ["llm"]}, files={"model/MLmodel": yaml.safe_dump(mlmodel)})
    assert rules(findings) == []


# --- the kind ----------------------------------------------------------------------------------------

def test_kind_is_declared_by_config_and_snapshots_the_folder(inspect: Inspect, tmp_path: Path) -> None:
    info, _ = inspect("X = 1\n", {})
    kind = MlflowAgentKind()
    assert not kind.matches(tmp_path / "agents/a")
    (tmp_path / "agents/a/__pycache__").mkdir()
    snap = kind.snapshot(info, tmp_path / "snap")
    assert snap.entry == tmp_path / "snap/agent.py" and snap.entry.is_file()
    assert not (tmp_path / "snap/__pycache__").exists()
    assert {r.id for r in kind.rules()} >= {"resource-undeclared", "mlmodel-resources-differ"}


def test_lint_never_imports_mlflow(tmp_path: Path) -> None:
    (tmp_path / "agent.py").write_text(RESPONSES_AGENT, encoding="utf-8")
    script = f"""
import sys, json
from pathlib import Path
from llmops_ci.kinds.mlflow.spec import AgentResource, MlflowAgentSpec
from llmops_ci.kinds.mlflow.kind import inspect_agent
spec = MlflowAgentSpec(Path({str(tmp_path / 'agent.py')!r}), "responses",
                       (AgentResource("serving_endpoint", "databricks-claude-3-7-sonnet"),), ("mlflow", "openai"))
info = inspect_agent(Path({str(tmp_path)!r}), spec, None)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("mlflow", "promptflow", "azure", "openai", "databricks"))
print(json.dumps({{"findings": [f.rule for f in info.findings], "heavy": heavy}}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).parents[2])
    result = json.loads(out.stdout)
    assert result == {"findings": ["agent-requirements-missing"], "heavy": []}


def test_lazy_client_behind_a_method_and_vector_search_rest(inspect: Inspect) -> None:
    code = """
        import mlflow
        from mlflow.pyfunc import ResponsesAgent
        from databricks.sdk import WorkspaceClient
        INDEX = "main.docs.docs_index"

        class Agent(ResponsesAgent):
            def __init__(self):
                self._client = None
                self.w = WorkspaceClient()

            def client(self):
                if self._client is None:
                    self._client = self.w.serving_endpoints.get_open_ai_client()
                return self._client

            def predict(self, request):
                hits = self.w.vector_search_indexes.query_index(index_name=INDEX, columns=["text"], query_text="q")
                return self.client().chat.completions.create(model="llm", messages=[])

        mlflow.models.set_model(Agent())
        """
    _, findings = inspect(code, {"serving_endpoint": ["llm"], "vector_search_index": ["main.docs.docs_index"]},
                          raw=True)
    assert rules(findings) == []
    _, findings = inspect(code, {"serving_endpoint": ["llm"]}, raw=True)
    assert "'main.docs.docs_index'" in only(findings, "resource-undeclared").message


def test_config_block_shape(tmp_path: Path) -> None:
    (tmp_path / "llmops.yaml").write_text(
        "version: 1\nflows:\n  a:\n    path: a\n    variant: ${x.y}\n"
        "    mlflow_agent:\n      code: agent.py\n      interface: agents\n"
        "      resources: {serving_endpoints: [x], table: [{name: main.a.b, obo: true}]}\n")
    config, problems = read_config(tmp_path / "llmops.yaml", None)
    messages = [(p.line, p.message) for p in problems]
    assert any("'interface' is 'agents'; it must be one of: responses, chat" in m for _, m in messages), messages
    assert any("unknown key 'serving_endpoints'" in m and "did you mean 'serving_endpoint'" in m
               for _, m in messages), messages
    assert any("either 'variant' or 'mlflow_agent'" in m for _, m in messages), messages
    assert any(line == 9 and "a name, or {name: ..., on_behalf_of_user: true}" in m for line, m in messages)
    assert config is not None and config.flows["a"].block(MlflowAgentSpec) is None  # not built from a broken block


def test_literal_credentials_in_the_code(inspect: Inspect) -> None:
    token = "dapi" + "0123456789abcdef" * 2
    _, findings = inspect(f"""
        from openai import OpenAI
        DATABRICKS_TOKEN = "{token}"
        client = OpenAI(api_key="not-a-real-key-but-long-enough", base_url="http://x")
        label = OpenAI(api_key=os.environ["OPENAI_API_KEY"], base_url="http://x")
        """, {})
    hits = [f for f in findings if f.rule == "secret-literal"]
    assert [("Databricks personal access token" in f.message, f.severity) for f in hits] == [
        (True, "error"), (False, "error")]
    assert all(token not in f.message for f in hits)


# --- round 3: the embedding endpoint, apps, Lakebase, UC model services ---------------------------------------

def test_retriever_tool_embedding_endpoint_must_be_declared(inspect: Inspect, tmp_path: Path) -> None:
    code = """
        from databricks_langchain import VectorSearchRetrieverTool
        TOOL = VectorSearchRetrieverTool(index_name="main.docs.docs_index",
                                         embedding_endpoint="databricks-gte-large-en")
        """
    _, findings = inspect(code, {"vector_search_index": ["main.docs.docs_index"]})
    found = only(findings, "resource-undeclared")
    assert "serving endpoint 'databricks-gte-large-en'" in found.message
    assert found.line == line_of(tmp_path / "agents/a/agent.py", "embedding_endpoint=")
    assert rules(inspect(code, {"vector_search_index": ["main.docs.docs_index"],
                                "serving_endpoint": ["databricks-gte-large-en"]})[1]) == []


def test_app_lakebase_and_uc_model_service_can_be_declared_and_are_checked(inspect: Inspect) -> None:
    code = """
        from databricks.sdk import WorkspaceClient
        from databricks_mcp import DatabricksMCPClient
        w = WorkspaceClient()
        MCP = DatabricksMCPClient(server_url="https://mcp-tools-1234567890123456.aws.databricksapps.com/mcp",
                                  workspace_client=w)
        INSTANCE = w.database.get_database_instance(name="orders-db")
        CRED = w.database.generate_database_credential(instance_names=["orders-db"])
        APP = w.apps.get(name="mcp-tools")
        """
    declared = {"app": ["mcp-tools"], "lakebase": ["orders-db"], "uc_model_service": ["main.models.ranker"]}
    block = {"pip_requirements": [*REQUIREMENTS, "databricks-mcp"]}
    _, findings = inspect(code, declared, block=block)
    assert rules(findings) == ["resource-unused"]  # the UC model service is declared but not seen in the code
    _, findings = inspect(code, {}, block=block)
    messages = [f.message for f in findings if f.rule == "resource-undeclared"]
    assert any("Databricks app 'mcp-tools'" in m for m in messages)
    assert sum("Lakebase database instance 'orders-db'" in m for m in messages) == 2


def test_new_resource_types_reach_mlflow_with_their_classes(tmp_path: Path) -> None:
    from llmops_ci.kinds.mlflow.kind import resources_for_mlflow

    (tmp_path / "a").mkdir()
    (tmp_path / "llmops.yaml").write_text(yaml.safe_dump({"version": 1, "flows": {"a": {"path": "a", "mlflow_agent": {
        "code": "agent.py", "interface": "responses",
        "resources": {"app": ["mcp-tools"], "lakebase": ["orders-db"], "uc_model_service": ["svc"]}}}}}))
    config, problems = read_config(tmp_path / "llmops.yaml", None)
    assert config is not None and not problems
    spec = config.flows["a"].block(MlflowAgentSpec)
    assert spec is not None
    assert resources_for_mlflow(spec) == [("DatabricksApp", "app_name", "mcp-tools", False),
                                          ("DatabricksLakebase", "database_instance_name", "orders-db", False),
                                          ("DatabricksUCModelService", "model_service_name", "svc", False)]
    mlflow_resources = pytest.importorskip("mlflow.models.resources")
    for cls, arg, name, _ in resources_for_mlflow(spec):  # the classes and arguments exist in MLflow 3.17.2
        assert getattr(mlflow_resources, cls)(**{arg: name}).to_dict()
