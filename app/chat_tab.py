"""Chat screen: one prompt, replies of the original model and two variants side by side."""

from __future__ import annotations

import math
from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.chat_stream import check_chat_size, stream_side_by_side
from app.common import handles_errors, whole
from app.state import ModelRegistry, UserState
from tacq.errors import TacqError
from tacq.study.tables import RESULT_COLUMNS

FP = "original (full precision)"
COLUMNS = 3
STYLES = [("chat template", "chat"), ("raw completion", "completion")]


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
        style = gr.Radio(
            STYLES,
            value="chat",
            label="Prompt style",
            info="Raw completion sends your message as it is and answers one line, as "
            "evaluation and the demo's gallery do for a completion task.",
            elem_id="chat-style",
        )
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
        style=style,
        stop=stop,
        clear=clear,
    )


def send_handler(registry: ModelRegistry):
    """The Send handler: sizes are checked before a model is asked for or anything is
    tokenized, so an oversized post is refused at once instead of holding a chat slot."""

    @handles_errors
    def on_send(user: UserState, prompt: str, temperature: float, max_tokens: int, *rest):
        """rest: the column pickers, the columns' histories, then the prompt style (last,
        so API clients written before it still post the same positions)."""
        picks = rest[:COLUMNS]
        histories = [list(h or []) for h in rest[COLUMNS : 2 * COLUMNS]]
        style = rest[2 * COLUMNS] if len(rest) > 2 * COLUMNS else "chat"
        if not (prompt or "").strip():
            raise gr.Error("Type a message first.")
        if temperature is None or not math.isfinite(temperature):
            raise TacqError("Temperature must be a number.")
        max_tokens = whole(max_tokens, "Max new tokens", 1)
        new = {"role": "user", "content": prompt}
        convs = [[_message(m) for m in h] + [new] for h in histories]
        for conv in convs:
            check_chat_size(conv)
        lm = registry.get(user.model_key)
        active = [
            i for i, name in enumerate(picks) if name == FP or (name and name in user.variants)
        ]
        models = [lm.model if picks[i] == FP else user.variants[picks[i]].model for i in active]
        for i in active:
            histories[i] = histories[i] + [new]
        stop = user.jobs.start("chat")
        for replies in stream_side_by_side(
            models,
            lm.tokenizer,
            [convs[i] for i in active],
            int(max_tokens),
            float(temperature),
            stop=stop,
            style=style,
        ):
            out = [list(h) for h in histories]
            for i, text in zip(active, replies):
                out[i].append({"role": "assistant", "content": text})
            yield "", *out

    return on_send


def wire(tab: SimpleNamespace, user_state: gr.State, registry: ModelRegistry, page=None) -> None:
    """page: the Chat tab; opening it sets Prompt style to the loaded task's style when
    the task changed since it was last set (a choice made for the same task is kept)."""

    @handles_errors
    def on_stop(user: UserState):
        user.jobs.cancel("chat")

    gr.on(
        [tab.send.click, tab.prompt.submit],
        send_handler(registry),
        [
            user_state,
            tab.prompt,
            tab.temperature,
            tab.max_tokens,
            *tab.pickers,
            *tab.bots,
            tab.style,
        ],
        [tab.prompt, *tab.bots],
        concurrency_id="chat",
        concurrency_limit=2,
    )
    tab.stop.click(on_stop, user_state, None, concurrency_limit=None)
    tab.clear.click(lambda: [[] for _ in range(COLUMNS)], None, tab.bots)
    if page is not None:
        synced = gr.State(None)  # which task the style was last set for, on this page

        def on_open(user: UserState | None, last: tuple | None):
            task = user.task if user is not None else None
            key = None if task is None else (task.name, task.style, id(task))
            if key is None or key == last:
                return gr.update(), last
            return task.style, key

        page.select(on_open, [user_state, synced], [tab.style, synced], concurrency_limit=None)


def _message(m) -> dict:
    """A posted history message as role and plain text."""
    if not isinstance(m, dict) or "role" not in m or "content" not in m:
        raise TacqError("Each chat message needs a role and a content; clear the chat.")
    return {"role": m["role"], "content": _text(m["content"])}


def _text(content) -> str:
    """Chatbot content back as plain text (Gradio may hand back a list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in content)
    if isinstance(content, dict):
        return str(content.get("text", ""))
    return str(content)
