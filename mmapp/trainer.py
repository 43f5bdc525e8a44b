"""Training runs: epochs, validation, early stopping, ``best``/``last`` checkpoints, resume, logs.

The task (``tasks/caption.py``, ``tasks/vqa.py``) owns data, model, loss and validation; this module
owns everything around them. Checkpoints are model checkpoints (loadable by the inference API) whose
``last`` copy also carries the optimizer, scheduler, RNG and loop state for ``--resume``.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mmapp.atomic import write_text
from mmapp.checkpoint import flatten_state, prefixed, read_checkpoint, unflatten_state
from mmapp.config import save_config, to_dict
from mmapp.distributed import DistInfo, EpochSampler, cleanup, device_for, setup
from mmapp.engine import NonFiniteLossError, Precision, make_scheduler, train_one_epoch
from mmapp.errors import CheckpointError
from mmapp.models.recurrent_decoder import RecurrentAttentionDecoder
from mmapp.plotting import plot_history
from mmapp.run_config import RunConfig
from mmapp.speed.fast_path import FastPath, wants_fast_path
from mmapp.speed.schedule import TensorSchedule
from mmapp.speed.teacher_forcing import use_training_path


class Task(Protocol):
    metric: str
    model: nn.Module

    # optional: begin_epoch(epoch), called before each epoch (the captioner switches to
    # self-critical training there)
    def train_set(self) -> Any: ...
    def collate(self, items: list) -> Any: ...
    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float], int]: ...
    # the fast path (train.cuda_graphs) also uses loss_terms(model, batch) (terms as tensors) and
    # fixed_batch(batch) -> (padded tensors, real item count)
    def validate(self, model: nn.Module, info: DistInfo) -> dict[str, float]: ...
    def save(self, path: Path, model: nn.Module, training: dict, extra_tensors: dict, extra_meta: dict) -> None: ...


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_pos": random.getstate()[2], "numpy": np.random.get_state()[1],
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].astype(np.uint32), state.get("numpy_pos", 0), 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Run:
    """One training run in ``cfg.out``; ``fit()`` trains (or resumes) it to the end."""

    def __init__(self, cfg: RunConfig, task_factory: Any, resume: bool = False, quiet: bool = False) -> None:
        self.cfg, self.resume, self.quiet = cfg, resume, quiet
        self.dir = Path(cfg.out)
        self.device = device_for(cfg.train.device, int(os.environ.get("LOCAL_RANK", "0")))
        self.info = setup(self.device)
        if cfg.train.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        seed_everything(cfg.train.seed)
        self.task: Task = task_factory(cfg, self.device, self.info)
        self.model = self.task.model.to(self.device)
        self.precision = Precision.resolve(cfg.train.amp, self.device)
        head = getattr(self.model, "head", self.model)
        if isinstance(head, RecurrentAttentionDecoder):
            use_training_path(head, "compile" if cfg.train.compile else "shrink")
        elif cfg.train.compile:
            raise ValueError(f"train.compile: {type(head).__name__} has nothing to compile "
                             "(only the recurrent caption decoders do)")
        self.fast: FastPath | None = None  # train.cuda_graphs, decided once
        if wants_fast_path(cfg.train, self.device, self.info.enabled, self.precision, self.model):
            self.fast = FastPath(self.model, self.task.loss_terms, self.task.fixed_batch, cfg.train, self.device,
                                 self.precision)
            self.optimizer = self.fast.optimizer
        else:
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = torch.optim.Adam(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
        self.steps_per_epoch = -(-len(EpochSampler(len(self.task.train_set()), 0, 0, self.info.rank,
                                                   self.info.world_size)) // cfg.train.batch_size)
        scheduled_epochs, tail_factor = cfg.train.epochs, None
        if 0 <= cfg.train.self_critical_after < cfg.train.epochs:  # the schedule spans the cross-entropy epochs
            scheduled_epochs, tail_factor = cfg.train.self_critical_after, cfg.train.scst_lr / cfg.train.lr
        schedule = TensorSchedule if self.fast else make_scheduler
        self.scheduler = schedule(self.optimizer, cfg.train.schedule, cfg.train.warmup_steps,
                                  self.steps_per_epoch * scheduled_epochs, tail_factor)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision.use_scaler else None
        self.train_model: nn.Module = self.model
        if self.info.enabled and cfg.train.self_critical_after >= 0:
            raise ValueError("train.self_critical_after: self-critical training runs in one process for now "
                             "(its sampling does not go through DistributedDataParallel's forward)")
        if self.info.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.epoch, self.step_in_epoch, self.global_step = 0, 0, 0
        self.best, self.bad_epochs, self.history = -math.inf, 0, []

    # ------------------------------------------------------------------ state
    def _loop_state(self) -> dict:
        return {"epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "global_step": self.global_step,
                "best": self.best, "bad_epochs": self.bad_epochs, "history": self.history}

    def _save(self, name: str, with_state: bool) -> None:
        if not self.info.is_main:
            return
        tensors: dict[str, torch.Tensor] = {}
        extra_meta: dict[str, Any] = {}
        if with_state:
            extra_meta["train_state"] = {
                "optimizer": flatten_state(self.optimizer.state_dict(), "optim", tensors),
                "scheduler": flatten_state(self.scheduler.state_dict(), "sched", tensors),
                "scaler": flatten_state(self.scaler.state_dict(), "scaler", tensors) if self.scaler else None,
                "rng": flatten_state(_rng_state(), "rng", tensors),
                "loop": self._loop_state(),
            }
        training = {"config": json.loads(json.dumps(_cfg_dict(self.cfg))), "epoch": self.epoch,
                    "global_step": self.global_step, "best_" + self.task.metric: self.best}
        self.task.save(self.dir / f"{name}.safetensors", self.model, training, tensors, extra_meta)

    def _load_last(self) -> None:
        path = self.dir / "last.safetensors"
        tensors, meta = read_checkpoint(path)
        state = meta.get("train_state")
        if state is None:
            raise CheckpointError(f"{path} has no training state to resume from")
        self.model.head.load_state_dict(prefixed(tensors, "model"), strict=True)
        if prefixed(tensors, "encoder"):
            self.model.encoder.load_state_dict(prefixed(tensors, "encoder"), strict=True)
        self.optimizer.load_state_dict(unflatten_state(state["optimizer"], tensors))
        if self.fast:
            self.fast.after_load()
        self.scheduler.load_state_dict(unflatten_state(state["scheduler"], tensors))
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(unflatten_state(state["scaler"], tensors))
        _set_rng_state(unflatten_state(state["rng"], tensors))
        loop = state["loop"]
        self.epoch, self.step_in_epoch, self.global_step = loop["epoch"], loop["step_in_epoch"], loop["global_step"]
        self.best, self.bad_epochs, self.history = loop["best"], loop["bad_epochs"], loop["history"]

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        cfg, tcfg = self.cfg, self.cfg.train
        if self.info.is_main:
            self.dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.dir / "config.yaml")
        if self.resume:
            self._load_last()
            self._log(f"resuming {self.dir} at epoch {self.epoch + 1}, step {self.step_in_epoch}")
        try:
            while self.epoch < tcfg.epochs and self.bad_epochs < tcfg.patience:
                self._train_epoch()
                if self.bad_epochs >= tcfg.patience:
                    self._log(f"early stopping: no better {self.task.metric} for {tcfg.patience} epochs")
        except NonFiniteLossError as e:
            raise NonFiniteLossError(f"epoch {self.epoch + 1}: {e}") from None
        finally:
            cleanup(self.info)
        return {"best": self.best, "metric": self.task.metric, "epochs": self.epoch, "history": self.history}

    def _train_epoch(self) -> None:
        tcfg = self.cfg.train
        begin_epoch = getattr(self.task, "begin_epoch", None)
        if begin_epoch is not None:
            begin_epoch(self.epoch)
        skip = self.step_in_epoch * tcfg.batch_size
        sampler = EpochSampler(len(self.task.train_set()), tcfg.seed, self.epoch, self.info.rank,
                               self.info.world_size, skip=skip)
        # The loader's own generator: starting an iterator otherwise draws its worker seed from the
        # global RNG, so a run resumed mid-epoch would get other dropout masks than the unbroken run.
        generator = torch.Generator().manual_seed(tcfg.seed * 100_003 + self.epoch)
        fast = self.fast if self.fast and not getattr(self.task, "self_critical", False) else None
        loader = DataLoader(self.task.train_set(), batch_size=tcfg.batch_size, sampler=sampler,
                            collate_fn=fast.collate(self.task.collate) if fast else self.task.collate,
                            num_workers=tcfg.num_workers, generator=generator,
                            pin_memory=bool(fast) and self.device.type == "cuda")
        bar = tqdm(total=len(loader), desc=f"epoch {self.epoch + 1}/{tcfg.epochs}", unit="batch",
                   disable=self.quiet or not self.info.is_main, file=sys.stderr, leave=False)
        start_step = self.step_in_epoch

        def on_step(step: int, _: dict) -> None:
            self.step_in_epoch, self.global_step = start_step + step, self.global_step + 1
            if tcfg.checkpoint_every and self.global_step % tcfg.checkpoint_every == 0:
                if fast:
                    fast.guard()  # never a checkpoint after a skipped non-finite step
                self._save("last", with_state=True)

        if fast:
            stats = fast.epoch(self.train_model, loader, self.scheduler, on_step, bar)
        else:
            stats = train_one_epoch(self.train_model, loader, self.task.loss, self.optimizer, self.scheduler,
                                    self.device, self.precision, tcfg.grad_clip, self.scaler, on_step, bar)
        bar.close()
        val = self.task.validate(self.model, self.info)
        self.epoch, self.step_in_epoch = self.epoch + 1, 0
        score = val.get(self.task.metric, -math.inf)
        improved = score > self.best
        if improved:
            self.best, self.bad_epochs = score, 0
        else:
            self.bad_epochs += 1
        self.history.append({"epoch": self.epoch, "train": stats, "val": val,
                             "lr": self.scheduler.get_last_lr()[0]})
        if improved:
            self._save("best", with_state=False)
        self._save("last", with_state=True)
        if self.info.is_main:
            write_text(self.dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))

            plot_history(self.history, self.task.metric, self.dir / "curves.png")
        shown = ", ".join(f"{k} {v:.4f}" for k, v in val.items() if isinstance(v, float))
        self._log(f"epoch {self.epoch}: loss {stats['loss']:.4f} ({stats['items_per_s']:.0f}/s); {shown}"
                  + ("  [best]" if improved else ""))

    def _log(self, message: str) -> None:
        if self.info.is_main and not self.quiet:
            print(message, file=sys.stderr, flush=True)


def _cfg_dict(cfg: RunConfig) -> dict:
    return to_dict(cfg)
