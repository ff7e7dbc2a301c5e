"""Chat screen: one prompt, replies of the original model and two variants side by side."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.common import handles_errors
from app.state import ModelRegistry, UserState
from tacq.evaluate import stream_side_by_side
from tacq.tables import RESULT_COLUMNS

FP = "original (full precision)"
COLUMNS = 3


def build() -> SimpleNamespace:
    with gr.Row():
        pickers, bots = [], []
        for i in range(COLUMNS):
            with gr.Column():
                pickers.append(
                    gr.Dropdown(
                        [FP] if i == 0 else [],
                        value=FP if i == 0 else None,
                        label="Model" if i == 0 else f"Variant {i}",
                        interactive=i > 0,
                    )
                )
                bots.append(gr.Chatbot(height=380, elem_id=f"chat-{i}", label=None))
    with gr.Row():
        prompt = gr.Textbox(
            placeholder="Ask all models at once…", scale=5, show_label=False, elem_id="chat-prompt"
        )
        send = gr.Button("Send", variant="primary", scale=1)
    with gr.Row():
        temperature = gr.Slider(0, 1.5, value=0, step=0.05, label="Temperature (0 = greedy)")
        max_tokens = gr.Slider(8, 512, value=96, step=8, label="Max new tokens")
        stop = gr.Button("Stop")
        clear = gr.Button("Clear")
    eval_table = gr.Dataframe(
        pd.DataFrame(columns=RESULT_COLUMNS),
        label="Held-out results (from Evaluate or the demo)",
        interactive=False,
        elem_id="chat-eval",
    )
    return SimpleNamespace(
        eval_table=eval_table,
        pickers=pickers,
        bots=bots,
        prompt=prompt,
        send=send,
        temperature=temperature,
        max_tokens=max_tokens,
        stop=stop,
        clear=clear,
    )


def wire(tab: SimpleNamespace, user_state: gr.State, registry: ModelRegistry) -> None:
    @handles_errors
    def on_send(user: UserState, prompt: str, temperature: float, max_tokens: int, *rest):
        picks, histories = rest[:COLUMNS], [list(h or []) for h in rest[COLUMNS:]]
        if not (prompt or "").strip():
            raise gr.Error("Type a message first.")
        lm = registry.get(user.model_key)
        active = [
            i for i, name in enumerate(picks) if name == FP or (name and name in user.variants)
        ]
        models = [lm.model if picks[i] == FP else user.variants[picks[i]].model for i in active]
        for i in active:
            histories[i] = histories[i] + [{"role": "user", "content": prompt}]
        convs = [
            [{"role": m["role"], "content": _text(m["content"])} for m in histories[i]]
            for i in active
        ]
        stop = user.jobs.start("chat")
        one_line = user.task is not None and user.task.style == "completion"
        for replies in stream_side_by_side(
            models,
            lm.tokenizer,
            convs,
            int(max_tokens),
            float(temperature),
            stop=stop,
            one_line=one_line,  # a completion task's answer is one line
        ):
            out = [list(h) for h in histories]
            for i, text in zip(active, replies):
                out[i].append({"role": "assistant", "content": text})
            yield "", *out

    @handles_errors
    def on_stop(user: UserState):
        user.jobs.cancel("chat")

    gr.on(
        [tab.send.click, tab.prompt.submit],
        on_send,
        [user_state, tab.prompt, tab.temperature, tab.max_tokens, *tab.pickers, *tab.bots],
        [tab.prompt, *tab.bots],
        concurrency_id="chat",
        concurrency_limit=2,
    )
    tab.stop.click(on_stop, user_state, None, concurrency_limit=None)
    tab.clear.click(lambda: [[] for _ in range(COLUMNS)], None, tab.bots)


def _text(content) -> str:
    """Chatbot content back as plain text (Gradio may hand back a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)
