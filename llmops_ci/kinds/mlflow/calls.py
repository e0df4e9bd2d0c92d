"""The calls through which an MLflow agent's code reaches Databricks resources: callee -> resource and argument,
and the URL and SQL shapes that name one (read by ``mlflow_scan``)."""

from __future__ import annotations

import re

OPENAI_CALLS = ("chat", "responses", "embeddings", "completions")
DATABRICKS_URL = re.compile(r"/serving-endpoints|\.databricks\.com|\.azuredatabricks\.net|\.gcp\.databricks\.com")
_SQL_NAME = r"(?:`[^`]+`|[A-Za-z0-9_]+)"
SQL_TABLE = re.compile(rf"\b(?:from|join|into|update|table)\s+({_SQL_NAME}(?:\.{_SQL_NAME}){{2}})", re.IGNORECASE)
WAREHOUSE_PATH = re.compile(r"/warehouses/([A-Za-z0-9]+)")
MCP_PATH = re.compile(r"/api/2\.0/mcp/(functions|vector-search|genie)/([^?#\s]+)")

# callee (last name) -> [(resource type, keyword names, positional index or None)]
CALLS: dict[str, list[tuple[str, tuple[str, ...], int | None]]] = {
    "ChatDatabricks": [("serving_endpoint", ("endpoint", "model"), None)],
    "DatabricksEmbeddings": [("serving_endpoint", ("endpoint",), None)],
    # databricks-ai-bridge adds embedding_endpoint to the tool's resources: serving needs it declared too
    "VectorSearchRetrieverTool": [("vector_search_index", ("index_name",), None),
                                  ("serving_endpoint", ("embedding_endpoint",), None)],
    "DatabricksVectorSearch": [("vector_search_index", ("index_name",), 0)],
    "get_index": [("vector_search_index", ("index_name",), 1)],
    "query_index": [("vector_search_index", ("index_name",), 0)],
    "UCFunctionToolkit": [("function", ("function_names",), None)],
    "execute_function": [("function", ("function_name",), 0)],
    "GenieAgent": [("genie_space", ("genie_space_id",), 0)],
    "Genie": [("genie_space", ("space_id",), 0)],
    "start_conversation": [("genie_space", ("space_id",), 0)],
    "start_conversation_and_wait": [("genie_space", ("space_id",), 0)],
    "create_message": [("genie_space", ("space_id",), 0)],
    "http_request": [("uc_connection", ("conn",), 0)],
    # databricks-sdk: w.database.get_database_instance(name) / generate_database_credential(instance_names=[...])
    "get_database_instance": [("lakebase", ("name",), 0)],
    "generate_database_credential": [("lakebase", ("instance_names",), None)],
}
# a Databricks app's URL: https://<app name>-<workspace id>.<cloud>.databricksapps.com (an MCP server among them)
APP_URL = re.compile(r"https://([a-z0-9][a-z0-9-]*?)-(\d{10,})\.[a-z0-9.-]*databricksapps\.com")
SQL_CALLS = {"execute_statement": ("statement", 0), "sql": ("sqlQuery", 0), "execute": ("operation", 0)}
