"""A support agent as MLflow models-from-code: a ResponsesAgent that answers with a Databricks-served LLM.

Its client comes from the workspace (``WorkspaceClient().serving_endpoints.get_open_ai_client()``), so on
Databricks model serving it authenticates with the resources declared in llmops.yaml (automatic
authentication passthrough). llmops-ci lint checks that every endpoint used here is declared there.
"""

import mlflow
from databricks.sdk import WorkspaceClient
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

LLM_ENDPOINT = "databricks-meta-llama-3-3-70b-instruct"
SYSTEM_PROMPT = (
    "You are the support assistant of an online shop. Answer in two sentences at most. "
    "When the customer asks for a refund, say that a human will confirm it within one business day."
)


class SupportAgent(ResponsesAgent):
    def __init__(self, llm_endpoint: str):
        self.llm_endpoint = llm_endpoint
        self._client = None

    def client(self):
        # built on first use: serving injects the workspace credentials before the first request
        if self._client is None:
            self._client = WorkspaceClient().serving_endpoints.get_open_ai_client()
        return self._client

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}]
        for item in request.input:
            data = item.model_dump()
            messages.append({"role": data.get("role", "user"), "content": data.get("content")})
        reply = self.client().chat.completions.create(model=self.llm_endpoint, messages=messages, temperature=0)
        usage = reply.usage
        return ResponsesAgentResponse(
            output=[self.create_text_output_item(reply.choices[0].message.content, reply.id)],
            usage={"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
                   "total_tokens": usage.total_tokens, "input_tokens_details": {"cached_tokens": 0},
                   "output_tokens_details": {"reasoning_tokens": 0}},
            custom_outputs=request.custom_inputs,
        )


AGENT = SupportAgent(llm_endpoint=LLM_ENDPOINT)
mlflow.models.set_model(AGENT)
