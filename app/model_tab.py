"""Model screen: pick the bundled model or a local folder; show what is loaded."""

from __future__ import annotations

from types import SimpleNamespace

import gradio as gr
import pandas as pd

from app.common import HEAVY, gradio_progress, handles_errors
from app.state import ModelRegistry, UserState
from tacq.errors import TacqError


def summary_table(registry: ModelRegistry, user: UserState) -> pd.DataFrame:
    info = registry.get(user.model_key).summary()
    return pd.DataFrame({"property": list(info), "value": [str(v) for v in info.values()]})


def caches_text() -> str:
    """The caches' size, read cheaply from the folders; clearing is the CLI's, since the
    caches are shared by every user of this machine."""
    from tacq.cache_admin import usage_line

    try:
        return f"Caches: {usage_line()}; clear with `python -m tacq cache --clear`"
    except (TacqError, OSError) as e:
        return f"Caches: {e}"


def build() -> SimpleNamespace:
    gr.Markdown(
        "Pick the bundled **SmolLM2-135M-Instruct** or type the path of a local "
        "Hugging Face folder (Llama / Qwen / Mistral style, safetensors weights only; "
        "not a folder inside the app's workspace, where uploads are kept)."
    )
    with gr.Row():
        source = gr.Textbox(
            label="Model",
            value="default",
            scale=4,
            info="'default' = bundled SmolLM2-135M-Instruct, or a folder path",
            elem_id="model-source",
        )
        load = gr.Button("Load model", variant="primary", scale=1)
    status = gr.Markdown(elem_id="model-status")
    info = gr.Dataframe(label="Loaded model", interactive=False, elem_id="model-info")
    caches = gr.Markdown(caches_text, elem_id="model-caches")  # a function: read on page load
    return SimpleNamespace(source=source, load=load, status=status, info=info, caches=caches)


def wire(tab: SimpleNamespace, user_state: gr.State, registry: ModelRegistry) -> None:
    @handles_errors
    def on_load(user: UserState, source: str, progress=gr.Progress()):
        stop = user.jobs.start("model")
        source = source.strip() if isinstance(source, str) and source.strip() else "default"
        lm = registry.get(source, gradio_progress(progress, stop))
        user.set_model(source, lm)
        msg = f"Loaded **{lm.name}** from `{lm.source}`."
        if user.task:
            msg += " Collect gradients again for this model."
        return msg, summary_table(registry, user), caches_text()

    tab.load.click(
        on_load,
        [user_state, tab.source],
        [tab.status, tab.info, tab.caches],
        concurrency_id=HEAVY,
        concurrency_limit=1,
        show_progress_on=[tab.status],
    )
