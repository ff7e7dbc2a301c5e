"""Assemble the tabs into one Blocks app and restore each browser's saved examples."""

from __future__ import annotations

import threading
from pathlib import Path

import gradio as gr

from app import (
    chat_tab,
    circuit_tab,
    data_tab,
    demo_tab,
    eval_tab,
    fit_panel,
    howto_tab,
    model_tab,
    quantize_tab,
)
from app.common import handles_errors, variant_choices
from app.identity import browser_secret
from app.state import ModelRegistry, start_idle_sweeper, user_for

INTRO = """# TaCQ Studio
Find the weights your task depends on (its **circuit**), keep them in 16 bits and quantize
the rest to 2/3/4 bits. **1** pick examples and collect gradients → **2** see the circuit and
drag the ratio → **3** quantize → **4** chat and evaluate side by side."""


def build_app(registry: ModelRegistry, workspace: Path) -> gr.Blocks:
    with gr.Blocks(title="TaCQ Studio") as demo:
        gr.Markdown(INTRO)
        user_state = gr.State(None)
        browser_id = gr.BrowserState(
            None, storage_key="tacq-studio-user", secret=browser_secret(workspace)
        )
        with gr.Tabs(elem_id="tabs"):
            with gr.Tab("Model", id="model"):
                mt = model_tab.build()
            with gr.Tab("One-click demo", id="demo"):
                dmt = demo_tab.build()
            with gr.Tab("Examples & gradients", id="data"):
                dt = data_tab.build()
            with gr.Tab("Circuit", id="circuit"):
                ct = circuit_tab.build()
            with gr.Tab("Quantize", id="quantize"):
                qt = quantize_tab.build()
                ft = fit_panel.build()
            with gr.Tab("Chat", id="chat") as chat_page:
                cht = chat_tab.build()
            with gr.Tab("Evaluate & export", id="evaluate"):
                et = eval_tab.build()
            with gr.Tab("How it works", id="how"):
                ht = howto_tab.build()

        model_tab.wire(mt, user_state, registry)
        data_tab.wire(dt, user_state, registry)
        redraw_circuit = circuit_tab.wire(ct, user_state, registry)
        variant_lists = [qt.victim, et.which, *cht.pickers[1:]]  # chat's columns last
        quantize_tab.wire(qt, user_state, ct.ratio, registry, variant_lists, redraw_circuit)
        fit_panel.wire(
            ft, user_state, [qt.table, *variant_lists], quantize_tab.variants_frame,
            len(variant_lists),
        )  # fmt: skip
        chat_tab.wire(cht, user_state, registry, chat_page)
        eval_tab.wire(et, user_state, registry, [ct.metric, ct.bits, ct.ratio], [cht.eval_table])
        demo_tab.wire(
            dmt,
            user_state,
            registry,
            cht,
            variant_lists,
            [cht.eval_table, et.table],
            qt.table,
        )
        howto_tab.wire(ht, demo)

        @handles_errors
        def on_page_load(saved_id: str | None):
            user, who = user_for(saved_id, workspace)
            lm = registry.get(user.model_key)
            task = user.task or user.load_examples()  # another tab's live examples first
            table, style, status = gr.update(), gr.update(), ""
            if task is not None:
                user.set_task(lm, task)
                table, style = data_tab.task_frame(task), task.style
                status = "Restored your saved examples. " + data_tab.task_summary(user)
            names = user.restore_variants(lm)
            if names:
                status += f" Restored your variants: {', '.join(names)}."
            lists = variant_choices(names, len(variant_lists))
            return (
                user,
                who.token if who.issued else gr.skip(),  # an id goes only where it was made
                model_tab.summary_table(registry, user),
                table,
                style,
                status,
                quantize_tab.variants_frame(user),
                *lists,
            )

        demo.load(
            on_page_load,
            browser_id,
            [
                user_state,
                browser_id,
                mt.info,
                dt.table,
                dt.style,
                dt.status,
                qt.table,
                *variant_lists,
            ],
        )
    return demo


def launch(
    model: str = "default",
    host: str = "127.0.0.1",
    port: int = 7860,
    workspace: Path | None = None,
    allowed_hosts: list[str] | None = None,
    auth: list[tuple[str, str]] | None = None,
    models_root: Path | None = None,
    compiled_decoding: bool = True,
) -> None:
    """Load the model first (so the page opens ready), then serve locally; no share link.

    Only requests naming this server (Host) and coming from its own page (Origin) are
    answered (app/guard.py), and the guard wraps everything, Gradio's CORS included.
    Binding beyond loopback needs `allowed_hosts` (the names clients use to reach it),
    `auth` (user, password) pairs and `models_root`: anyone who can reach the port could
    otherwise run jobs, read every browser's workspace and load any folder as a model.
    compiled_decoding: packed variants decode one token at a time through a compiled
    kernel (tacq.formats.packed); each new variant warms it up in the background.
    """
    from functools import partial

    from starlette.middleware import Middleware

    from app.guard import LOOPBACK_HOSTS, Allowed, HostOriginGuard, is_loopback, outermost
    from app.workspace import UploadLeftovers, start_sweeper
    from tacq.cache import tacq_home
    from tacq.errors import TacqError
    from tacq.formats.packed import use_compiled_decoding
    from tacq.progress import tqdm_progress

    use_compiled_decoding(compiled_decoding)
    if not is_loopback(host) and (not allowed_hosts or not auth or models_root is None):
        raise TacqError(
            f"Serving on {host} opens the app to the network: give --allow-host with the "
            "name(s) clients will use, --auth-file with user:password lines and "
            "--models-root with the folder whose models may be loaded."
        )
    # Gradio checks the server started through localhost or the bound address: both allowed
    bound = [] if host in ("0.0.0.0", "::") else [f"[{host}]" if ":" in host else host]
    names = list(LOOPBACK_HOSTS) + bound + list(allowed_hosts or [])
    guard = partial(HostOriginGuard, allowed=Allowed.for_server(names, port))

    workspace = workspace or tacq_home() / "workspace"
    registry = ModelRegistry(models_root=models_root, workspace=workspace)
    off_main_thread(registry.preload_default, model, tqdm_progress("loading model"))
    start_sweeper(workspace)
    start_idle_sweeper()
    demo = build_app(registry, workspace)
    demo.queue(default_concurrency_limit=4)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        max_file_size="20mb",
        show_error=False,
        footer_links=[],
        run_history=False,  # would copy every input and output into the browser's storage
        prevent_thread_lock=True,
        css=circuit_tab.CSS,
        js=circuit_tab.CLICK_JS,  # a click on a heatmap cell opens that module's explanation
        app_kwargs={"middleware": [Middleware(UploadLeftovers)], "lifespan": outermost(guard)},
        auth=auth,
    )
    if not isinstance(demo.app.middleware_stack, HostOriginGuard):  # fail closed
        demo.close()
        raise TacqError("Internal error: the request guard is not in front of the app.")
    add_health_route(demo.app)
    demo.block_thread()


def off_main_thread(fn, *args) -> None:
    """Run fn(*args) in a thread that ends with it, and re-raise what it raised.

    Why: torch's OpenMP (libgomp) keeps a pool of worker threads per thread that ran a
    parallel op, for as long as that thread lives. A pool left on the main thread by the
    start-up model load made every job thread's GPTQ 1.4x slower (bench/omp_wait.py), and
    the browser auto-fit test took 256 s instead of 185 s."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            fn(*args)
        except BaseException as e:  # re-raised on the caller's thread
            failed.append(e)

    t = threading.Thread(target=run, name="tacq-startup")
    t.start()
    t.join()
    if failed:
        raise failed[0]


def add_health_route(app) -> None:
    """GET /healthz: a constant answer that needs no app state, to check the server is
    responsive while the CPU is busy with a job."""
    from fastapi.responses import JSONResponse

    app.add_api_route("/healthz", lambda: JSONResponse({"status": "ok"}), methods=["GET"])
