"""The web-classification DAG as an Agent Framework workflow: one executor per DAG node, edges as the DAG's
data flow (the shape microsoft/promptflow's promptflow-to-maf conversion produces: a create_workflow() factory).

    prepare (the DAG's inputs and clean_text)  ->  classify (classify_with_llm: an agent)  ->  to_dict (convert_to_dict)

The workflow's input is the page URL; its output is {"category": ..., "evidence": ...}.
"""

from __future__ import annotations

import json

from agent_framework import Agent, WorkflowBuilder, WorkflowContext, executor
from agent_framework.openai import OpenAIChatCompletionClient
from typing_extensions import Never

INSTRUCTIONS = """\
Your task is to classify a given url into one of the following categories:
Movie, App, Academic, Channel, Profile, PDF or None based on the url.
The selection range of the value of "category" must be within "Movie", "App", "Academic", "Channel", "Profile", "PDF" and "None".
The selection range of the value of "evidence" must be within "Url", "Text content", and "Both".
Answer with the JSON object only."""


def make_agent() -> Agent:
    # OPENAI_BASE_URL and OPENAI_API_KEY come from the environment (llmops-ci points the URL at its LLM proxy)
    client = OpenAIChatCompletionClient(model="gpt-4o-mini")
    return client.as_agent(name="classify_with_llm", instructions=INSTRUCTIONS,
                           default_options={"temperature": 0, "max_tokens": 128})


def create_workflow():
    agent = make_agent()

    @executor(id="prepare")
    async def prepare(url: str, ctx: WorkflowContext[str]) -> None:
        await ctx.send_message(f"URL: {url.strip()}\nOUTPUT:")

    @executor(id="classify")
    async def classify(prompt: str, ctx: WorkflowContext[str]) -> None:
        response = await agent.run(prompt)
        await ctx.send_message(response.text)

    @executor(id="to_dict")
    async def to_dict(answer: str, ctx: WorkflowContext[Never, dict]) -> None:
        try:
            value = json.loads(answer)
        except ValueError:
            value = {"category": "None", "evidence": "None"}
        await ctx.yield_output({"category": value.get("category"), "evidence": value.get("evidence")})

    return WorkflowBuilder(start_executor=prepare).add_edge(prepare, classify).add_edge(classify, to_dict).build()
