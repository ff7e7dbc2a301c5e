"""Who holds what: a shared read-only model registry and one UserState per browser session.

A user's examples are saved in the workspace under a random id that the browser keeps
(gr.BrowserState), so a page reload finds them again and two users never share them.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from app.identity import SIGNED_MARK, Identity, identify
from tacq.cache import write_text_atomic
from tacq.data.reading import ParseResult
from tacq.data.tasks import SPLITS, Example, TaskSet
from tacq.errors import TacqError
from tacq.formats.packed import warm_up
from tacq.memory import check_room, megabytes_setting, model_bytes
from tacq.model_files import check_model_path, check_outside
from tacq.models import DEFAULT_MODEL, LoadedModel, load_model
from tacq.progress import Progress
from tacq.quant.variant import Variant, load_variant, saved_base_model
from tacq.study.workflow import Study

log = logging.getLogger(__name__)

VARIANT_BUDGET_FACTOR = 2.0  # a user's variants may hold twice the original model's bytes
IDLE_S = 30 * 60  # a user with no request for this long is released from memory
SWEEP_IDLE_EVERY_S = 60
RELEASED = (
    "This session was idle for 30 minutes and its examples and variants were released "
    "from memory; reload the page to get your saved examples and variants back."
)


class ModelRegistry:
    """Loaded models by resolved source, shared by all users (read-only).

    The registry lock only guards the dict: a load runs under a lock of its own path, so a
    slow or hung load (a large model, a stalled mount) never delays another user's page
    load or a load of another path, and two spellings of one folder load it once.
    """

    def __init__(
        self, keep: int = 2, models_root: Path | None = None, *, workspace: Path | None = None
    ) -> None:
        self.models_root = models_root.resolve() if models_root else None
        self.workspace = workspace  # uploads land here: never a model folder
        self._models: dict[str, LoadedModel] = {}
        self._loading: dict[str, threading.Lock] = {}  # one lock per key being loaded
        self._lock = threading.Lock()
        self._keep = keep

    def key(self, source: str) -> str:
        """'default' or the resolved folder (no file is opened); with a models root, only
        folders under it (so the field cannot be used to probe the rest of the disk)."""
        check_model_path(source or "")
        source = (source or "").strip()
        if source in ("", "default", DEFAULT_MODEL):
            return "default"
        path = Path(source).expanduser().resolve()
        if self.models_root is not None and not path.is_relative_to(self.models_root):
            raise TacqError(f"Only model folders under {self.models_root} can be loaded here.")
        if self.workspace is not None:
            check_outside(path, self.workspace)
        return str(path)

    def preload_default(self, source: str, progress: Progress | None = None) -> None:
        """Load the model the app starts with; it is what 'default' means from then on."""
        lm = load_model(source or "default", progress=progress)
        with self._lock:
            self._models["default"] = lm

    def get(self, source: str, progress: Progress | None = None) -> LoadedModel:
        key = self.key(source)
        with self._lock:
            if key in self._models:
                return self._models[key]
            path_lock = self._loading.setdefault(key, threading.Lock())
        with path_lock:
            with self._lock:
                if key in self._models:  # loaded by whoever held the path lock before us
                    return self._models[key]
            try:
                lm = load_model(key, progress=progress)  # raises before anything changes
            except BaseException:
                self._drop_lock(key, path_lock)
                raise
            with self._lock:
                if len(self._models) >= self._keep:
                    self._models.pop(next(k for k in self._models if k != "default"), None)
                self._models[key] = lm
                self._loading.pop(key, None)
            return lm

    def _drop_lock(self, key: str, path_lock: threading.Lock) -> None:
        """Forget a failed key's lock (one per failed path would pile up forever); a lock
        already replaced by a newer caller's stays."""
        with self._lock:
            if self._loading.get(key) is path_lock:
                del self._loading[key]


class Jobs:
    """One stop token per job of a session, so a Cancel stops only the job it belongs to.

    Starting a job of a kind ("quantize", "chat", ...) gives it a fresh token: a Cancel
    pressed for an earlier job of that kind, or for a job of another kind, never reaches it.
    """

    def __init__(self) -> None:
        self._stops: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self, kind: str) -> threading.Event:
        stop = threading.Event()
        with self._lock:
            self._stops[kind] = stop
        return stop

    def cancel(self, kind: str) -> bool:
        """Stop the running (or last) job of `kind`; False when none was started."""
        with self._lock:
            stop = self._stops.get(kind)
        if stop is not None:
            stop.set()
        return stop is not None


@dataclass(eq=False)
class UserState:
    """Everything one user id holds in memory, shared by all its sessions (tabs, API
    clients: user_for), so its memory budget is one budget. Released after IDLE_S."""

    user_id: str
    workspace: Path
    model_key: str = "default"
    task: TaskSet | None = None
    study: Study | None = None
    variants: dict[str, Variant] = field(default_factory=dict)
    jobs: Jobs = field(default_factory=Jobs)
    fp_eval: tuple | None = None  # ((task digest, limit), EvalResult, log-probs) of the fp model
    pending_upload: ParseResult | None = None  # good rows (and splits) of an upload with bad rows
    last_eval: list | None = None  # EvalResults of the last evaluation (fp first), for reports
    released: bool = False  # swept after IDLE_S: its pages must reload (RELEASED)
    last_active: float = field(default_factory=time.monotonic)
    _running: int = field(default=0, init=False)  # requests in progress: never swept then
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def folder(self) -> Path:
        return self.workspace / "users" / self.user_id

    # ------------------------------------------------------------ activity
    def enter(self) -> None:
        """A request of this user starts (app.common.handles_errors): it is activity, and
        no sweep releases the user until it ends; a released user is told to reload."""
        with self._lock:
            if self.released:
                raise TacqError(RELEASED)
            self._running += 1
            self.last_active = time.monotonic()

    def leave(self) -> None:
        with self._lock:
            self._running -= 1
            self.last_active = time.monotonic()

    def touch(self) -> bool:
        """Mark activity (a page load); False when the user was released already."""
        with self._lock:
            self.last_active = time.monotonic()
            return not self.released

    def release_if_idle(self, idle_s: float, now: float) -> bool:
        """Drop what this user holds in memory (study, variants, examples, results) when
        no request ran for idle_s; saved examples and variants stay on disk."""
        with self._lock:
            if self.released or self._running or now - self.last_active < idle_s:
                return False
            self.released = True
            self.study, self.task, self.fp_eval = None, None, None
            self.last_eval, self.pending_upload = None, None
            self.variants.clear()
            return True

    def own_folder(self) -> Path:
        """The user's folder, created with the mark that it belongs to a signed id (so an
        old-style unsigned id can never claim it through the one-time migration)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / SIGNED_MARK).touch()
        return self.folder

    def set_task(self, lm: LoadedModel, task: TaskSet) -> None:
        """New examples: a new study (gradients come from the disk cache when known).

        The examples already held for this model (another tab's page load) keep their
        study, results and variants' comparisons, and are not saved again."""
        if self.study is not None and self.study.lm is lm and self.task == task:
            return
        self.task = task
        self.study = Study(lm, task)
        self.fp_eval = None
        self.last_eval = None
        self.save_examples()

    def set_model(self, key: str, lm: LoadedModel) -> None:
        self.model_key = key
        self.variants.clear()
        self.fp_eval = None
        self.study = Study(lm, self.task) if self.task else None

    def add_variant(self, v: Variant, lm: LoadedModel | None = None) -> None:
        """Keep a variant; with `lm`, also save it packed so a restart finds it again."""
        self.variants[v.name] = v
        threading.Thread(target=warm_up, args=(v.model,), daemon=True).start()
        if lm is not None:
            from tacq.formats.export import save_packed

            self.own_folder()
            save_packed(self._variant_dir(v.name), lm, v)  # atomic: a temp folder, renamed

    def delete_variant(self, name: str) -> None:
        self.variants.pop(name, None)
        shutil.rmtree(self._variant_dir(name), ignore_errors=True)

    def restore_variants(self, lm: LoadedModel) -> list[str]:
        """Saved variants of this base model, loaded back; returns the names of all variants
        held (those another session of this user holds already are not loaded twice).

        A damaged folder is skipped (logged), never fatal: the rest still load.
        """

        root = self.folder / "variants"
        held = {self._variant_dir(n) for n in self.variants}
        for folder in sorted(root.iterdir()) if root.is_dir() else []:
            if not folder.is_dir() or folder.name.startswith(".") or folder in held:
                continue
            try:
                if saved_base_model(folder) != lm.fingerprint:
                    continue  # made from another model
                v = load_variant(folder, lm.model)
            except (TacqError, OSError, ValueError, KeyError) as e:
                log.warning("Skipping saved variant %s: %s", folder, e)
                continue
            if self.held_bytes() + v.resident_bytes > variant_budget(lm):
                log.warning("Not restoring %s: over the memory budget for variants", folder)
                break
            self.variants[v.name] = v
            threading.Thread(target=warm_up, args=(v.model,), daemon=True).start()
        return list(self.variants)

    def _variant_dir(self, name: str) -> Path:
        return self.folder / "variants" / safe_name(name)

    def held_bytes(self) -> int:
        """Memory this user's variants hold beyond the shared original model (one user id:
        all its sessions share this state)."""
        return sum(v.resident_bytes for v in self.variants.values())

    def check_room(self, lm: LoadedModel, need: int, what: str = "this variant") -> None:
        """Raise TacqError unless `need` more bytes fit this user's budget for variants and
        the machine's free memory."""
        held, budget = self.held_bytes(), variant_budget(lm)
        if held + need > budget:
            raise TacqError(
                f"Your variants hold {held / 2**20:,.0f} MB of the {budget / 2**20:,.0f} MB "
                f"memory budget for variants and {what} needs about {need / 2**20:,.0f} MB "
                "more; delete a variant first."
            )
        check_room(need, what, held)

    # ------------------------------------------------------------ persistence
    def save_examples(self) -> None:
        if self.task is None:
            return
        rows = [
            {"prompt": e.prompt, "answer": e.answer, "split": split}
            for split in SPLITS
            for e in self.task.split(split)
        ]
        blob = {"name": self.task.name, "style": self.task.style, "rows": rows}
        self.own_folder()
        write_text_atomic(self.folder / "examples.json", json.dumps(blob))

    def load_examples(self) -> TaskSet | None:
        path = self.folder / "examples.json"
        if not path.is_file():
            return None
        try:
            blob = json.loads(path.read_text())
            rows = blob["rows"]
            part = {
                k: tuple(Example(r["prompt"], r["answer"]) for r in rows if r["split"] == k)
                for k in SPLITS
            }
            name, style = blob["name"], blob["style"]
            return TaskSet(name, part["calib"], part["heldout"], style, name, dev=part["dev"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged save is ignored, never fatal


def variant_budget(lm: LoadedModel) -> int:
    """Bytes one user's variants may hold: TACQ_VARIANT_BUDGET_MB, else twice the model."""
    setting = megabytes_setting("TACQ_VARIANT_BUDGET_MB")
    if setting is not None:
        return setting
    return int(VARIANT_BUDGET_FACTOR * model_bytes(lm.model))


def safe_name(name: str, limit: int = 80) -> str:
    """One path component made of [A-Za-z0-9._-], never '.', '..' or hidden."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:limit].lstrip(".") or "unnamed"


_LIVE: dict[tuple[str, str], UserState] = {}  # (workspace, uid) -> its one UserState
_LIVE_LOCK = threading.Lock()


def user_for(browser_value: object, workspace: Path) -> tuple[UserState, Identity]:
    """The UserState for a browser's saved token (a new user when it is not one of ours).

    Every session of one user id (tabs, API clients) gets the same UserState while it is
    held, so the user's memory budget and variants are counted once; one released for
    idleness (sweep_idle) is replaced by a fresh one that restores from disk.
    """
    who = identify(browser_value, workspace)
    key = (str(workspace.resolve()), who.uid)
    with _LIVE_LOCK:
        user = _LIVE.get(key)
        if user is None or not user.touch():
            user = _LIVE[key] = UserState(who.uid, workspace)
    return user, who


def sweep_idle(idle_s: float = IDLE_S, workspace: Path | None = None) -> int:
    """Release users (of one workspace, or all) with no request for idle_s seconds and no
    running job; -> how many. Their next page load makes a fresh UserState."""
    now, released = time.monotonic(), 0
    root = str(workspace.resolve()) if workspace is not None else None
    with _LIVE_LOCK:
        for key, user in list(_LIVE.items()):
            if (root is None or key[0] == root) and user.release_if_idle(idle_s, now):
                del _LIVE[key]
                released += 1
    if released:
        log.info("Released %d idle user(s) from memory.", released)
    return released


def start_idle_sweeper(
    idle_s: float = IDLE_S, every_s: float = SWEEP_IDLE_EVERY_S
) -> threading.Thread:
    """sweep_idle every `every_s` seconds on a daemon thread (started once, by launch)."""

    def loop() -> None:
        while True:
            time.sleep(every_s)
            try:
                sweep_idle(idle_s)
            except Exception:  # noqa: BLE001 - the sweeper must outlive one bad sweep
                log.exception("idle sweep failed")

    t = threading.Thread(target=loop, name="tacq-idle-sweeper", daemon=True)
    t.start()
    return t
