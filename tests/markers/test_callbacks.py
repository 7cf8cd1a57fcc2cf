"""Framework callbacks publish the right marker sequence to a real Mosquitto (skipped where a framework is absent)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import jouled.trainer.callbacks as cb
from jouled.markers import parse_marker
from jouled.model import Marker
from jouled.trainer.markers import MarkerClient
from tests.brokers import BrokerHandle, Subscriber


def received(sub: Subscriber, n: int) -> list[Marker]:
    now = time.time_ns()
    return [parse_marker(p, topic_host=None, now_ns=now, max_skew_s=60) for p in sub.wait_for(n)]


def shape(ms: list[Marker]) -> list[tuple[object, ...]]:
    return [(m.scope, m.event, m.epoch, m.phase) for m in ms]


def lightning_or_skip() -> Any:
    try:
        return cb.JouledLightningCallback
    except ImportError as e:
        pytest.skip(f"PyTorch Lightning does not import here: {e.__cause__ or e}")


def hf_or_skip() -> Any:
    try:
        return cb.JouledHFCallback
    except ImportError as e:
        pytest.skip(f"transformers does not import here: {e}")


def test_missing_framework_error_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(cb._cache, "JouledLightningCallback", None)
    with pytest.raises(ImportError, match="pip install lightning"):
        cb.JouledLightningCallback  # noqa: B018
    with pytest.raises(AttributeError):
        cb.NoSuchCallback  # noqa: B018


def test_lightning_callback_marks_a_real_fit(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    callback_cls = lightning_or_skip()
    import lightning as L
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    class Tiny(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def validation_step(self, batch: Any, idx: int) -> Any:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.layer(x), y)
            self.log("val_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    data = TensorDataset(torch.randn(16, 4), torch.randn(16, 1))
    sub = Subscriber(mosquitto.port)
    client = MarkerClient(mosquitto.url, host="h1", spool_path=tmp_path)
    try:
        callback = callback_cls("lit-1", client=client, arch="linear", gpus=[])
        trainer = L.Trainer(
            max_epochs=2, callbacks=[callback], accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=1, default_root_dir=tmp_path,
        )
        trainer.fit(Tiny(), DataLoader(data, batch_size=8), DataLoader(data, batch_size=8))
        got = received(sub, 14)
    finally:
        client.close(5)
        sub.close()
    expected: list[tuple[object, ...]] = [("run", "start", None, None)]
    for n in range(2):
        expected += [("epoch", "start", n, None), ("phase", "start", n, "train"), ("phase", "end", n, "train"),
                     ("phase", "start", n, "eval"), ("phase", "end", n, "eval"), ("phase", "start", n, "train"),
                     ("phase", "end", n, "train"), ("epoch", "end", n, None)]
    expected += [("run", "end", None, None)]
    assert shape(got) == expected
    assert {m.run for m in got} == {"lit-1"} and got[0].arch == "linear"
    assert "val_loss" in got[-2].attrs  # epoch end carries the logged metrics


def test_hf_callback_marks_the_trainer_hook_sequence(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    callback_cls = hf_or_skip()
    from transformers import TrainerControl, TrainerState

    # TrainingArguments is left out: building it imports torchvision, which some installs break; the
    # callback never reads it
    args = None
    state, control = TrainerState(), TrainerControl()
    sub = Subscriber(mosquitto.port)
    client = MarkerClient(mosquitto.url, host="h1", spool_path=tmp_path)
    try:
        callback = callback_cls("hf-1", client=client, gpus=["gpu0"])
        # the order transformers.Trainer calls hooks in with eval_strategy="epoch"
        callback.on_train_begin(args, state, control)
        for n in range(2):
            state.epoch = float(n)
            callback.on_epoch_begin(args, state, control)
            callback.on_epoch_end(args, state, control)
            for _ in range(3):
                callback.on_prediction_step(args, state, control)
            callback.on_evaluate(args, state, control, metrics={"eval_loss": 0.5 - n / 10, "epoch": n + 1.0})
        callback.on_train_end(args, state, control)
        got = received(sub, 14)
    finally:
        client.close(5)
        sub.close()
    expected: list[tuple[object, ...]] = [("run", "start", None, None)]
    for n in range(2):
        expected += [("epoch", "start", n, None), ("phase", "start", n, "train"), ("phase", "end", n, "train"),
                     ("epoch", "end", n, None), ("phase", "start", n, "eval"), ("phase", "end", n, "eval")]
    expected += [("run", "end", None, None)]
    assert shape(got) == expected
    assert got[6].attrs == {"eval_loss": 0.5, "epoch": 1.0}
    assert all(m.gpus == ("gpu0",) and m.run == "hf-1" for m in got)


def test_hf_callback_only_marks_on_the_main_process(mosquitto: BrokerHandle, tmp_path: Path) -> None:
    callback_cls = hf_or_skip()
    from transformers import TrainerControl, TrainerState

    args = None
    state = TrainerState(is_world_process_zero=False)
    client = MarkerClient(mosquitto.url, host="h1", spool_path=tmp_path)
    try:
        callback = callback_cls("hf-2", client=client)
        callback.on_train_begin(args, state, TrainerControl())
        callback.on_epoch_begin(args, state, TrainerControl())
        callback.on_train_end(args, state, TrainerControl())
        assert client.stats().enqueued == 0
    finally:
        client.close(5)
