"""Real agent frameworks against a live server of the default model: a LangGraph agent
through langchain-openai, and an OpenAI Agents SDK agent, each calling a function tool
and answering with its result; the program is tracked in the process table."""

import asyncio
import json
from typing import Annotated, TypedDict

import pytest
from langchain_core.messages import AnyMessage, HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages
from langgraph.prebuilt import ToolNode

pytestmark = pytest.mark.slow
QUESTION = "What is 2 + 3? Use the add tool."


class State(TypedDict):
    messages: Annotated[list[AnyMessage], add_messages]


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.fixture(scope="module")
def server(default_model_server):
    return default_model_server


def program(server, program_id: str):
    return server.frontend.table.get(program_id)


@pytest.mark.parametrize("streaming", [False, True])
def test_langgraph_agent_calls_the_tool_and_answers(server, streaming: bool) -> None:
    program_id = f"langgraph-{streaming}"
    model = ChatOpenAI(
        base_url=server.base_url,
        api_key="none",
        model=server.frontend.model_name,
        temperature=0,
        max_tokens=48,
        streaming=streaming,
        max_retries=0,
        default_headers={"X-Autellix-Program": program_id},
    )
    add_tool = tool(add)
    first = model.bind_tools([add_tool], tool_choice="required")  # a small model must call
    then = model.bind_tools([add_tool])  # auto: the model may answer

    def agent(state: State) -> dict:
        used = any(m.type == "tool" for m in state["messages"])
        return {"messages": [(then if used else first).invoke(state["messages"])]}

    def route(state: State) -> str:
        return "tools" if state["messages"][-1].tool_calls else END

    graph = StateGraph(State)
    graph.add_node("agent", agent)
    graph.add_node("tools", ToolNode([add_tool]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", route, {"tools": "tools", END: END})
    graph.add_edge("tools", "agent")
    messages = graph.compile().invoke(
        {"messages": [HumanMessage(QUESTION)]}, {"recursion_limit": 8}
    )["messages"]

    calls = [c for m in messages if m.type == "ai" for c in m.tool_calls]
    assert calls and all(c["name"] == "add" for c in calls)
    assert all(isinstance(c["args"]["a"], int) and isinstance(c["args"]["b"], int) for c in calls)
    results = [m for m in messages if m.type == "tool"]
    assert [r.content for r in results] == [str(add(**c["args"])) for c in calls]
    assert all(r.status == "success" for r in results)
    assert messages[-1].type == "ai" and not messages[-1].tool_calls
    model_turns = sum(m.type == "ai" for m in messages)
    assert program(server, program_id).completed_calls == model_turns >= 2


@pytest.mark.parametrize("streamed", [False, True])
def test_openai_agents_sdk_agent_calls_the_tool_and_answers(server, streamed: bool) -> None:
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    program_id = f"agents-sdk-{streamed}"

    async def run():
        client = AsyncOpenAI(
            base_url=server.base_url,
            api_key="none",
            max_retries=0,
            default_headers={"X-Autellix-Program": program_id},
        )
        agent = Agent(
            name="calculator",
            instructions="You are a calculator. Use the add tool, then give the result.",
            tools=[function_tool(add)],
            model=OpenAIChatCompletionsModel(server.frontend.model_name, openai_client=client),
            # the SDK drops tool_choice after the first tool call (reset_tool_choice)
            model_settings=ModelSettings(tool_choice="required", temperature=0, max_tokens=48),
        )
        async with client:
            if not streamed:
                return await Runner.run(agent, QUESTION, max_turns=4)
            result = Runner.run_streamed(agent, QUESTION, max_turns=4)
            async for _ in result.stream_events():
                pass
            return result

    result = asyncio.run(run())
    calls = [i for i in result.new_items if i.type == "tool_call_item"]
    outputs = [i.output for i in result.new_items if i.type == "tool_call_output_item"]
    assert calls and all(c.raw_item.name == "add" for c in calls)
    expected = [add(**json.loads(c.raw_item.arguments)) for c in calls]
    assert outputs == expected
    assert isinstance(result.final_output, str) and result.final_output
    assert program(server, program_id).completed_calls == len(result.raw_responses) >= 2
