"""The declarative Agent Framework formats as data, for lint (no import of the framework).

Taken from ``agent-framework-declarative`` 1.4.0: the constructor arguments of its model classes
(``_models.py``: ``PromptAgent``, ``Model``, ``ModelOptions``, the ``Connection`` and ``Tool`` subclasses,
``PropertySchema``), its provider table (``_loader.PROVIDER_TYPE_OBJECT_MAPPING``), and the workflow
builder's action table (``_workflows/_declarative_builder.py``: ``ALL_ACTION_EXECUTORS``, the control-flow
kinds it handles itself, ``ACTION_REQUIRED_FIELDS`` and ``ACTION_ALTERNATE_FIELDS``).
"""

from __future__ import annotations

AGENT_KINDS = ("Prompt", "Agent")
WORKFLOW_KIND = "Workflow"

PROMPT_AGENT = frozenset({"kind", "name", "displayName", "description", "metadata", "inputSchema", "outputSchema",
                          "model", "tools", "template", "instructions", "additionalInstructions"})
MODEL = frozenset({"id", "provider", "apiType", "connection", "options"})
MODEL_OPTIONS = frozenset({"frequencyPenalty", "maxOutputTokens", "presencePenalty", "seed", "temperature", "topK",
                           "topP", "stopSequences", "allowMultipleToolCalls", "additionalProperties",
                           # read by the chat clients from options (samples use them)
                           "chatToolMode", "apiVersion"})
_CONNECTION = {"kind", "authenticationMode", "usageDescription"}
CONNECTIONS: dict[str, frozenset[str]] = {
    "reference": frozenset(_CONNECTION | {"name", "target"}),
    "remote": frozenset(_CONNECTION | {"name", "endpoint"}),
    "key": frozenset(_CONNECTION | {"endpoint", "apiKey", "key"}),
    "apikey": frozenset(_CONNECTION | {"endpoint", "apiKey", "key"}),
    "anonymous": frozenset(_CONNECTION | {"endpoint"}),
}
_TOOL = {"name", "kind", "description", "bindings"}
TOOLS: dict[str, frozenset[str]] = {
    "function": frozenset(_TOOL | {"parameters", "strict"}),
    "custom": frozenset(_TOOL | {"connection", "options"}),
    "web_search": frozenset(_TOOL | {"connection", "options"}),
    "file_search": frozenset(_TOOL | {"connection", "vectorStoreIds", "maximumResultCount", "ranker",
                                      "scoreThreshold", "filters"}),
    "mcp": frozenset(_TOOL | {"connection", "serverName", "serverDescription", "approvalMode", "allowedTools",
                              "url"}),
    "openapi": frozenset(_TOOL | {"connection", "specification"}),
    "code_interpreter": frozenset(_TOOL | {"fileIds"}),
}
PROPERTY_SCHEMA = frozenset({"examples", "strict", "properties", "type", "kind", "name", "description"})
PROPERTY = frozenset({"name", "kind", "type", "description", "required", "default", "example", "enum", "items",
                      "properties"})
# provider, or provider.apiType, as the loader looks it up
PROVIDERS = frozenset({"AzureOpenAI", "AzureOpenAI.Chat", "AzureOpenAI.Responses", "Foundry", "Foundry.Chat",
                       "OpenAI", "OpenAI.Chat", "OpenAI.Responses", "Anthropic.Chat"})
PROXY_PROVIDERS = frozenset({"OpenAI", "AzureOpenAI"})  # speak the OpenAI HTTP API: calls can be recorded

EXECUTOR_ACTIONS = frozenset({
    "CancelAllDialogs", "CancelDialog", "ClearAllVariables", "CreateConversation", "EditTable", "EndConversation",
    "EndDialog", "EndWorkflow", "HttpRequestAction", "InvokeAzureAgent", "InvokeFunctionTool", "InvokeMcpTool",
    "ParseValue", "Question", "RequestExternalInput", "ResetVariable", "SendActivity", "SetMultipleVariables",
    "SetTextVariable", "SetValue", "SetVariable", "RequestHumanInput", "WaitForHumanInput"})
CONTROL_ACTIONS = frozenset({"If", "ConditionGroup", "Foreach", "GotoAction", "BreakLoop", "ContinueLoop"})
ACTIONS = EXECUTOR_ACTIONS | CONTROL_ACTIONS
ACTION_REQUIRED: dict[str, tuple[str, ...]] = {
    "SetValue": ("path",), "SetVariable": ("variable",), "SendActivity": ("activity",),
    "InvokeAzureAgent": ("agent",), "GotoAction": ("actionId",), "Foreach": ("source", "actions"),
    "If": ("condition",), "ConditionGroup": ("conditions",), "Question": ("question", "variable"),
    "RequestExternalInput": ("prompt", "variable"), "RequestHumanInput": ("variable",),
    "WaitForHumanInput": ("variable",), "InvokeFunctionTool": ("functionName",), "HttpRequestAction": ("url",),
    "InvokeMcpTool": ("serverUrl", "toolName"),
}
ACTION_ALTERNATES: dict[str, tuple[str, ...]] = {"SetValue.path": ("variable",), "GotoAction.actionId": ("target",)}
TRIGGERS = frozenset({"OnConversationStart"})
WORKFLOW = frozenset({"kind", "id", "name", "description", "trigger", "actions", "maxTurns", "inputs", "outputs",
                      "metadata", "beginDialog"})
# nested action lists, by the key that holds them
NESTED_ACTIONS = ("actions", "then", "elseActions", "else")
