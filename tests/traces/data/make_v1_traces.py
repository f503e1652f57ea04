"""How tests/traces/data/v1_traces.jsonl and v1_replay.json were made: the version-1 writer.

Run from the root of a checkout of commit f199a0e (the last one writing trace schema 1), with
``python tests/traces/data/make_v1_traces.py``: a scripted run of the real agent through the real
``JsonlTraceSink``, four traces (prompts that extend each other, one that does not, one turn).
Then, at the same commit, the replay of that file was saved to ``v1_replay.json``:
``[[dataclasses.asdict(sample) for sample in trajectory.samples] for trajectory in
load_replay(path).trajectories()]``. The files are kept as written; this script is not run by
the tests (today's code writes schema 2).
"""

import sys
from pathlib import Path

sys.path.insert(0, "tests/graph")
from conftest import KeywordRetriever, ScriptedClient

from safe_context_agent import AgentConfig, SafeContextAgent
from safe_context_agent.client._chat import _finish_reply, new_call_id
from safe_context_agent.traces import JsonlTraceSink

CALL = "consult_safety_rules"


def scripted(content, calls, prompt_ids, completion_ids):
    server_calls = [
        {"id": new_call_id(), "type": "function", "function": {"name": n, "arguments": a}}
        for n, a in calls
    ]
    return _finish_reply(
        content=content,
        server_calls=server_calls,
        finish_reason="tool_calls" if calls else "stop",
        prompt_ids=prompt_ids,
        completion_ids=completion_ids,
        logprobs=[-0.1 * (i + 1) for i in range(len(completion_ids))],
        usage={"prompt_tokens": len(prompt_ids), "completion_tokens": len(completion_ids)},
        latency_s=0.01,
    )


prompt = list(range(1000, 1040))
call = list(range(2000, 2012))
tool = list(range(3000, 3030))
call2 = list(range(2100, 2110))
tool2 = list(range(3100, 3125))
answer = list(range(4000, 4020))
runs = [
    # consult once, then answer: the second prompt extends the first prompt + completion
    [
        scripted(None, [(CALL, '{"query": "lock picking"}')], prompt, call),
        scripted("Lock picking is a legal hobby.", [], prompt + call + tool, answer),
    ],
    # consult twice: three turns, each extending the last
    [
        scripted(None, [(CALL, '{"query": "battery disposal"}')], prompt, call),
        scripted(None, [(CALL, '{"query": "lithium fire"}')], prompt + call + tool, call2),
        scripted(
            "Take them to a recycling point.", [], prompt + call + tool + call2 + tool2, answer
        ),
    ],
    # a renderer that does not extend: the template re-renders the assistant turn (one id differs)
    [
        scripted(None, [(CALL, '{"query": "kill a process"}')], prompt, call),
        scripted("Use kill PID.", [], [*prompt, call[0] + 1, *call[1:], *tool], answer),
    ],
    # direct answer: one turn
    [scripted("Paris.", [], prompt, answer[:5])],
]
out = Path("tests/traces/data/v1_traces.jsonl")
out.unlink(missing_ok=True)
sink = JsonlTraceSink(out)
for number, replies in enumerate(runs):
    agent = SafeContextAgent(
        AgentConfig(base_url="http://scripted/v1"),
        sink=sink,
        client=ScriptedClient(replies),
        retriever=KeywordRetriever(),
    )
    agent.invoke(
        f"question {number}",
        run={"group_id": "v1-fixture", "sample_index": number, "metadata": {"label": "safe"}},
    )
sink.close()
print(out, out.stat().st_size)
