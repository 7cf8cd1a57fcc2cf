"""Framework callbacks that publish jouled markers: PyTorch Lightning and Hugging Face ``transformers``.

Neither framework is a dependency: each class is built on first access (module ``__getattr__``), so
importing this module imports neither framework; ``from jouled.trainer.callbacks import
JouledLightningCallback`` raises ImportError naming the package when ``lightning``/``pytorch_lightning``
(resp. ``transformers`` for ``JouledHFCallback``) cannot be imported.

Both mark, on the global-rank-0 process only (one set of markers per run, not per DDP worker):
run start/end, epoch start/end, phase ``train`` inside each epoch and phase ``eval`` around validation.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from jouled.trainer.markers import DEFAULT_URL, MarkerClient, RunHandle


def default_run_id(prefix: str = "run") -> str:
    """A unique, sortable run id: ``<prefix>-YYYYmmddTHHMMSS-<6 hex>``."""
    return f"{prefix}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:6]}"


class _Marking:
    """The framework-independent part: one run, the open epoch, the open phase."""

    def __init__(
        self,
        client: MarkerClient | None,
        url: str,
        run_id: str | None,
        arch: str | None,
        gpus: Sequence[str] | None,
        attrs: dict[str, Any] | None,
        flush_timeout_s: float,
    ) -> None:
        self._own_client = client is None
        self._client = client
        self.url = url
        self.run_id = run_id
        self.arch = arch
        self.gpus = list(gpus or [])
        self.attrs = attrs
        self.flush_timeout_s = flush_timeout_s
        self.run: RunHandle | None = None
        self.epoch: int | None = None
        self.phase: str | None = None

    @property
    def client(self) -> MarkerClient:
        if self._client is None:
            self._client = MarkerClient(self.url)
        return self._client

    def start_run(self, prefix: str) -> None:
        if self.run is not None:
            return
        self.run_id = self.run_id or default_run_id(prefix)
        self.run = self.client.run(self.run_id, arch=self.arch, gpus=self.gpus, attrs=self.attrs).start()

    def start_epoch(self, n: int) -> None:
        if self.run is None:
            return
        if self.epoch is not None:
            self.end_epoch()
        self.epoch = n
        self.run.start_epoch(n)

    def start_phase(self, name: str) -> None:
        if self.run is None or self.epoch is None:
            return
        if self.phase is not None:
            self.end_phase()
        self.phase = name
        self.run.start_phase(name, epoch=self.epoch)

    def end_phase(self, attrs: dict[str, Any] | None = None) -> None:
        if self.run is None or self.phase is None or self.epoch is None:
            return
        self.run.end_phase(self.phase, epoch=self.epoch, attrs=attrs)
        self.phase = None

    def end_epoch(self, attrs: dict[str, Any] | None = None) -> None:
        if self.run is None or self.epoch is None:
            return
        self.end_phase()
        self.run.end_epoch(self.epoch, attrs=attrs)
        self.epoch = None

    def end_run(self, attrs: dict[str, Any] | None = None) -> None:
        if self.run is None:
            return
        self.end_epoch(attrs if attrs and attrs.get("status") == "error" else None)
        self.run.end(attrs)
        self.run = None
        # the end of training is the one place where waiting for delivery is fine
        if self._own_client:
            self.client.close(self.flush_timeout_s)
            self._client = None
        else:
            self.client.flush(self.flush_timeout_s)


def _scalar_metrics(metrics: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in dict(metrics or {}).items():
        try:
            out[str(k)] = float(v)
        except (TypeError, ValueError):
            continue
    return out


_import_errors: dict[str, str] = {}


def _lightning_base() -> Any:
    try:  # lightning ≥ 2 first, then the older package name
        from lightning.pytorch.callbacks import Callback

        return Callback
    except Exception as e:  # not only ImportError: a broken install (mismatched torchvision) raises RuntimeError
        _import_errors["JouledLightningCallback"] = f"{type(e).__name__}: {e}"
    try:
        from pytorch_lightning.callbacks import Callback as OldCallback

        return OldCallback
    except Exception:
        return None


def _make_lightning_callback() -> Any:
    base = _lightning_base()
    if base is None:
        return None

    class JouledLightningCallback(base):  # type: ignore[valid-type,misc]
        """Lightning callback: ``Trainer(callbacks=[JouledLightningCallback(run_id="r1", gpus=["gpu0"])])``.

        Pass ``client=`` to share a MarkerClient (it is flushed, not closed, at the end); otherwise one is
        made for ``url`` and closed when training ends. The sanity-check validation is not marked.
        """

        def __init__(
            self,
            run_id: str | None = None,
            *,
            client: MarkerClient | None = None,
            url: str = DEFAULT_URL,
            arch: str | None = None,
            gpus: Sequence[str] | None = None,
            attrs: dict[str, Any] | None = None,
            flush_timeout_s: float = 10.0,
        ) -> None:
            super().__init__()
            self.m = _Marking(client, url, run_id, arch, gpus, attrs, flush_timeout_s)

        @property
        def run_id(self) -> str | None:
            return self.m.run_id

        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero:
                self.m.start_run(type(pl_module).__name__)

        def on_train_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero:
                self.m.start_epoch(int(trainer.current_epoch))
                self.m.start_phase("train")

        def on_validation_epoch_start(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero and not trainer.sanity_checking:
                self.m.start_phase("eval")

        def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero and not trainer.sanity_checking and self.m.phase == "eval":
                self.m.end_phase()
                if self.m.epoch is not None:
                    # validation can run mid-epoch (val_check_interval < 1): training resumes after it
                    self.m.start_phase("train")

        def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero:
                self.m.end_epoch(_scalar_metrics(trainer.callback_metrics) or None)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            if trainer.is_global_zero:
                self.m.end_run()

        def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
            if trainer.is_global_zero:
                self.m.end_run({"status": "error", "error": type(exception).__name__})

    JouledLightningCallback.__qualname__ = "JouledLightningCallback"  # pickles by name via __getattr__
    return JouledLightningCallback


def _make_hf_callback() -> Any:
    try:
        from transformers import TrainerCallback as base
    except Exception as e:
        _import_errors["JouledHFCallback"] = f"{type(e).__name__}: {e}"
        return None

    class JouledHFCallback(base):  # type: ignore[valid-type,misc]
        """``transformers.Trainer(callbacks=[JouledHFCallback(run_id="r1")])``.

        HF has no "evaluation begins" hook: the ``eval`` phase starts at the first prediction step of an
        evaluation and ends at ``on_evaluate``; with ``eval_strategy="epoch"`` it follows the epoch's end,
        so it is marked with that epoch's number but outside the epoch window.
        """

        def __init__(
            self,
            run_id: str | None = None,
            *,
            client: MarkerClient | None = None,
            url: str = DEFAULT_URL,
            arch: str | None = None,
            gpus: Sequence[str] | None = None,
            attrs: dict[str, Any] | None = None,
            flush_timeout_s: float = 10.0,
        ) -> None:
            self.m = _Marking(client, url, run_id, arch, gpus, attrs, flush_timeout_s)
            self._epochs_started = 0
            self._last_epoch: int | None = None
            self._eval_open = False
            self._eval_epoch = 0

        @property
        def run_id(self) -> str | None:
            return self.m.run_id

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.m.start_run("hf")

        def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                n = self._epochs_started
                self._epochs_started += 1
                self._last_epoch = n
                self.m.start_epoch(n)
                self.m.start_phase("train")

        def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.m.end_epoch()

        def on_prediction_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            run = self.m.run
            if state.is_world_process_zero and run is not None and not self._eval_open:
                self._eval_open = True
                epoch = self.m.epoch if self.m.epoch is not None else (self._last_epoch or 0)
                if self.m.epoch is not None:
                    self.m.end_phase()  # evaluation inside an epoch interrupts training
                run.start_phase("eval", epoch=epoch)
                self._eval_epoch = epoch

        def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None, **kwargs: Any) -> None:
            run = self.m.run
            if not state.is_world_process_zero or run is None:
                return
            if not self._eval_open:  # an evaluation without prediction steps (empty set): mark it now
                epoch = self.m.epoch if self.m.epoch is not None else (self._last_epoch or 0)
                run.start_phase("eval", epoch=epoch)
                self._eval_epoch = epoch
            run.end_phase("eval", epoch=self._eval_epoch, attrs=_scalar_metrics(metrics) or None)
            self._eval_open = False
            if self.m.epoch is not None:
                self.m.start_phase("train")

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                self.m.end_run()

    JouledHFCallback.__qualname__ = "JouledHFCallback"
    return JouledHFCallback


_MISSING = {
    "JouledLightningCallback": "PyTorch Lightning: pip install lightning",
    "JouledHFCallback": "Hugging Face transformers: pip install transformers",
}
_FACTORIES = {"JouledLightningCallback": _make_lightning_callback, "JouledHFCallback": _make_hf_callback}
_cache: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    """Build a callback class on first use, so importing this module imports no framework."""
    if name in _FACTORIES:
        if name not in _cache:
            _cache[name] = _FACTORIES[name]()
        cls = _cache[name]
        if cls is None:
            why = _import_errors.get(name)
            raise ImportError(f"{name} needs {_MISSING[name]}" + (f" (import failed: {why})" if why else ""))
        return cls
    raise AttributeError(name)


def lightning_available() -> bool:
    """Whether PyTorch Lightning imports here (it is not a dependency of jouled)."""
    try:
        __getattr__("JouledLightningCallback")
    except ImportError:
        return False
    return True


def hf_available() -> bool:
    """Whether transformers imports here (it is not a dependency of jouled)."""
    try:
        __getattr__("JouledHFCallback")
    except ImportError:
        return False
    return True
