"""Agent sources for the MLflow tests: real ResponsesAgent / ChatAgent code calling an OpenAI-compatible server."""

RESPONSES_AGENT = '''\
import os
import mlflow
from openai import OpenAI
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

MODEL = "support-llm"


class SupportAgent(ResponsesAgent):
    def __init__(self):
        self.client = None

    def _client(self):
        # built on first use: the scoring server and log_model set the environment before predicting
        if self.client is None:
            self.client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"],
                                 max_retries=0)
        return self.client

    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        messages = [{"role": "system", "content": "You answer support questions."}]
        for item in request.input:
            data = item.model_dump()
            messages.append({"role": data.get("role", "user"), "content": data.get("content")})
        reply = self._client().chat.completions.create(model=MODEL, messages=messages)
        usage = reply.usage
        return ResponsesAgentResponse(
            output=[self.create_text_output_item(reply.choices[0].message.content, reply.id)],
            usage={"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens,
                   "total_tokens": usage.total_tokens, "input_tokens_details": {"cached_tokens": 0},
                   "output_tokens_details": {"reasoning_tokens": 0}},
            custom_outputs=request.custom_inputs)


mlflow.models.set_model(SupportAgent())
'''

CHAT_AGENT = '''\
import os
import uuid
import mlflow
from openai import OpenAI
from mlflow.pyfunc import ChatAgent
from mlflow.types.agent import ChatAgentMessage, ChatAgentResponse


class EchoChat(ChatAgent):
    def predict(self, messages, context=None, custom_inputs=None):
        client = OpenAI(base_url=os.environ["OPENAI_BASE_URL"], api_key="k", max_retries=0)
        reply = client.chat.completions.create(model="chat-llm",
                                               messages=[{"role": m.role, "content": m.content} for m in messages])
        return ChatAgentResponse(messages=[ChatAgentMessage(role="assistant", content=reply.choices[0].message.content,
                                                            id=str(uuid.uuid4()))])


mlflow.models.set_model(EchoChat())
'''

DATABRICKS_AGENT = '''\
import mlflow
from databricks.sdk import WorkspaceClient
from mlflow.pyfunc import ResponsesAgent
from mlflow.types.responses import ResponsesAgentRequest, ResponsesAgentResponse

LLM_ENDPOINT = "databricks-meta-llama-3-3-70b-instruct"


class DatabricksAgent(ResponsesAgent):
    def predict(self, request: ResponsesAgentRequest) -> ResponsesAgentResponse:
        client = WorkspaceClient().serving_endpoints.get_open_ai_client()
        messages = [{"role": i.model_dump()["role"], "content": i.model_dump()["content"]} for i in request.input]
        reply = client.chat.completions.create(model=LLM_ENDPOINT, messages=messages)
        return ResponsesAgentResponse(output=[self.create_text_output_item(reply.choices[0].message.content,
                                                                           reply.id)])


mlflow.models.set_model(DatabricksAgent())
'''
