"""The LoRA training loop: batches, loss (from a Method), optimizer, checkpoints, cancel and progress events.

One step = one forget batch + one retain batch, prompt tokens masked. Batches are drawn from a fixed shuffle derived
from (seed, round, step) alone, so a resumed run draws exactly the batches the killed one would have drawn; the
checkpoint holds the adapter, the optimizer state and (round, step), which is all a resume needs.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .cancel import CancelToken
from .events import Checkpoint, Event, TrainStep
from .fsutil import atomic_write_json, read_json
from .llm import LLM, LoraSettings, pad_batch
from .methods.base import Batch, Method, TokenBatch, token_logprobs

PAD_MULTIPLE = 16  # pad widths to a multiple of this so compiled steps see few distinct shapes
LATEST = "latest.json"


@dataclass
class TrainSettings:
    learning_rate: float = 2e-4
    batch_size: int = 4  # forget examples per step
    retain_batch_size: int = 4  # retain examples per step (0 = no retain term)
    max_seq_len: int = 160
    weight_decay: float = 0.0
    checkpoint_every: int = 10  # steps; a checkpoint is also written at the end of every round
    # ... and after this many seconds since the last one (0 = off): on a slow CPU ten steps take many minutes, all
    # of which a kill would lose.
    checkpoint_seconds: float = 60.0
    dense_batch_size: int = 8  # fresh general prompts per step for a dense KL retain term (when the method uses it)
    compile: bool = False  # mx.compile gave no speed-up on CPU (SmolLM2, 4+4 rows: ~4 s/step either way)
    grad_checkpoint: bool = False  # recompute block activations in the backward pass: less memory, ~1/3 more time


@dataclass
class Example:
    tokens: list[int]
    start: int  # first target position: everything before it is prompt (masked)
    # Loss weight of each target token (len(tokens) - start); None = all 1. Lets a method weigh parts of a target
    # differently, e.g. the wrong-answer sentence fully and the invented rationale less.
    weights: list[float] | None = None


Target = str | Sequence[tuple[str, float]]  # a text, or (text, weight) segments joined with spaces


def encode_pairs(llm: LLM, pairs: Sequence[tuple[str, Target]], max_seq_len: int) -> list[Example]:
    """(question, target) -> chat-formatted tokens with the target (and an end-of-turn token) after the prompt.

    A target given as (text, weight) segments gets per-token loss weights (the end-of-turn token takes the last
    segment's weight); segments of weight 0 at the end are dropped rather than trained as silence.
    Rows longer than max_seq_len lose the end of their target; a row whose prompt alone fills the window is dropped.
    """
    eos = llm.tokenizer.eos_token_id
    out = []
    for question, target in pairs:
        prompt = llm.chat_tokens(question)
        if isinstance(target, str):
            body, weights = llm.encode(target), None
        else:
            segments = [(text, float(w)) for text, w in target if text]
            while segments and segments[-1][1] <= 0:
                segments.pop()
            body, weights = [], []
            for k, (text, w) in enumerate(segments):
                ids = llm.encode(text if k == 0 else " " + text)
                body += ids
                weights += [w] * len(ids)
        tail = [eos] if eos is not None else []
        tokens = (prompt + body + tail)[:max_seq_len]
        n_target = len(tokens) - len(prompt)
        if n_target >= 1:
            if weights is not None:
                weights = (weights + [weights[-1] if weights else 1.0] * len(tail))[:n_target]
            out.append(Example(tokens, len(prompt), weights))
    return out


def make_token_batch(examples: Sequence[Example]) -> TokenBatch:
    import mlx.core as mx
    import numpy as np

    tokens, mask = pad_batch([e.tokens for e in examples], [e.start for e in examples])
    if any(e.weights is not None for e in examples):
        m = np.array(mask)
        for i, e in enumerate(examples):
            if e.weights is not None:
                m[i, e.start:e.start + len(e.weights)] = e.weights
        mask = mx.array(m)
    width = tokens.shape[1]
    extra = (-width) % PAD_MULTIPLE
    if extra:
        tokens = mx.pad(tokens, [(0, 0), (0, extra)])
        mask = mx.pad(mask, [(0, 0), (0, extra)])
    return TokenBatch(tokens, mask)


def batch_indices(n: int, size: int, step: int, key: str) -> list[int]:
    """Indices of the examples in batch `step`: consecutive slices of per-epoch shuffles seeded by `key`.

    Stateless (a function of the step alone), so resuming at any step reproduces the same batches.
    """
    out = []
    perms: dict[int, list[int]] = {}
    for pos in range(step * size, step * size + size):
        epoch, i = divmod(pos, n)
        if epoch not in perms:
            perm = list(range(n))
            random.Random(f"{key}:{epoch}").shuffle(perm)
            perms[epoch] = perm
        out.append(perms[epoch][i])
    return out


class Trainer:
    """Trains the LoRA adapter attached to `llm` with `method`'s loss. MLX work stays on the caller's thread."""

    def __init__(self, llm: LLM, method: Method, settings: TrainSettings, seed: int = 0) -> None:
        self.llm = llm
        self.method = method
        self.settings = settings
        self.seed = seed
        self.optimizer = None
        # Called after attach/restore and after every optimizer step, e.g. to project lora_a into a null space.
        self.after_update: Callable[[], None] | None = None

    # adapter + optimizer -----------------------------------------------------------------------------------------
    def attach(self, lora: LoraSettings) -> None:
        """A fresh adapter (deterministic from the seed) and a fresh optimizer."""
        if self.llm.lora is not None:
            self.llm.detach_lora()
        self.llm.attach_lora(lora, seed=self.seed)
        self._new_optimizer()

    def _new_optimizer(self) -> None:
        import mlx.optimizers as optim

        s = self.settings
        if s.weight_decay:
            self.optimizer = optim.AdamW(learning_rate=s.learning_rate, weight_decay=s.weight_decay)
        else:
            self.optimizer = optim.Adam(learning_rate=s.learning_rate)
        self.optimizer.init(self.llm.model.trainable_parameters())

    # checkpoints -------------------------------------------------------------------------------------------------
    def save_checkpoint(self, ckpt_root: Path, round: int, step: int, extra: dict[str, Any] | None = None) -> Path:
        """Write adapter + optimizer + position into a new folder, then point latest.json at it (atomic switch)."""
        import mlx.core as mx
        from mlx.utils import tree_flatten

        ckpt_root = Path(ckpt_root)
        name = f"round{round:02d}-step{step:05d}"
        final = ckpt_root / name
        # A folder of this name is complete (it appears by rename) and holds this very state: the same (round, step)
        # is reached by the same batches. Rewriting it would open a window with no valid checkpoint.
        if not final.exists():
            tmp = ckpt_root / f".{name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            self.llm.save_adapter(tmp)
            mx.save_safetensors(str(tmp / "optimizer.safetensors"), dict(tree_flatten(self.optimizer.state)))
            state = {"round": round, "step": step, "seed": self.seed, "settings": asdict(self.settings),
                     "batches": "stateless: batch_indices(seed, round, step)", **(extra or {})}
            atomic_write_json(tmp / "state.json", state)
            os.replace(tmp, final)
        atomic_write_json(ckpt_root / LATEST, {"dir": name, "round": round, "step": step})
        for old in ckpt_root.iterdir():  # keep only the latest snapshot: adapters are small but rounds add up
            if old.is_dir() and old.name != name:
                shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def latest_checkpoint(ckpt_root: Path) -> dict[str, Any] | None:
        """{"dir": Path, "round", "step", ...state.json} of the newest complete checkpoint, or None."""
        pointer = read_json(Path(ckpt_root) / LATEST)
        if not pointer:
            return None
        d = Path(ckpt_root) / pointer["dir"]
        state = read_json(d / "state.json")
        if state is None or not (d / "adapters.safetensors").exists():
            return None
        return {**state, "dir": d}

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Re-attach the checkpoint's adapter and optimizer state."""
        import mlx.core as mx
        from mlx.utils import tree_unflatten

        if self.llm.lora is not None:
            self.llm.detach_lora()
        self.llm.load_adapter(Path(ckpt["dir"]))
        self._new_optimizer()
        saved = mx.load(str(Path(ckpt["dir"]) / "optimizer.safetensors"))
        self.optimizer.state = tree_unflatten(list(saved.items()))
        self.optimizer.init(self.llm.model.trainable_parameters())  # re-link; saved entries are kept as they are

    # training ----------------------------------------------------------------------------------------------------
    def _reference(self, tb: TokenBatch) -> TokenBatch:
        """The base model's log-probs on a batch (adapter scaled to 0, no gradient), for KL-style losses."""
        import mlx.core as mx

        with self.llm.adapter_scale(0.0):
            logp, _ = token_logprobs(self.llm.model, tb)
        logp = mx.stop_gradient(logp)
        mx.eval(logp)
        return TokenBatch(tb.tokens, tb.mask, logp)

    def _batch(self, forget: Sequence[Example], retain: Sequence[Example], round: int, step: int,
               dense: Sequence[Example] = ()) -> Batch:
        s = self.settings
        fi = batch_indices(len(forget), min(s.batch_size, len(forget)), step, f"{self.seed}:{round}:forget")
        fb = make_token_batch([forget[i] for i in fi])
        rb = None
        if retain and s.retain_batch_size > 0:
            ri = batch_indices(len(retain), min(s.retain_batch_size, len(retain)), step, f"{self.seed}:{round}:retain")
            rb = make_token_batch([retain[i] for i in ri])
        sides = self.method.reference_sides
        if "forget" in sides:
            fb = self._reference(fb)
        if rb is not None and "retain" in sides:
            rb = self._reference(rb)
        db = None
        if dense and s.dense_batch_size > 0:  # always compared with the base model: the point of a dense term
            di = batch_indices(len(dense), min(s.dense_batch_size, len(dense)), step, f"{self.seed}:{round}:dense")
            db = self._reference(make_token_batch([dense[i] for i in di]))
        return Batch(fb, rb, db)

    def _step_fn(self):
        """One optimizer step over a batch given as a dict of arrays (what mx.compile can trace)."""
        import mlx.core as mx
        import mlx.nn as nn

        model, method, optimizer = self.llm.model, self.method, self.optimizer

        def loss_fn(_model, arrays):
            def side(prefix):
                if prefix + "tokens" not in arrays:
                    return None
                return TokenBatch(arrays[prefix + "tokens"], arrays[prefix + "mask"], arrays.get(prefix + "ref"))

            loss, parts = method.loss(_model, Batch(side("f_"), side("r_"), side("d_")))
            return loss, parts

        value_and_grad = nn.value_and_grad(model, loss_fn)

        def step(arrays):
            (loss, parts), grads = value_and_grad(model, arrays)
            optimizer.update(model, grads)
            return loss, parts

        if self.settings.compile:
            state = [model.state, optimizer.state]
            return mx.compile(step, inputs=state, outputs=state)
        return step

    @staticmethod
    def _arrays(batch: Batch) -> dict[str, Any]:
        arrays = {"f_tokens": batch.forget.tokens, "f_mask": batch.forget.mask}
        if batch.forget.ref_logprobs is not None:
            arrays["f_ref"] = batch.forget.ref_logprobs
        if batch.retain is not None:
            arrays.update(r_tokens=batch.retain.tokens, r_mask=batch.retain.mask)
            if batch.retain.ref_logprobs is not None:
                arrays["r_ref"] = batch.retain.ref_logprobs
        if batch.dense is not None:
            arrays.update(d_tokens=batch.dense.tokens, d_mask=batch.dense.mask, d_ref=batch.dense.ref_logprobs)
        return arrays

    def train_round(self, forget: Sequence[Example], retain: Sequence[Example], round: int, steps: int,
                    start_step: int = 0, cancel: CancelToken | None = None, checkpoint_root: Path | None = None,
                    checkpoint_extra: dict[str, Any] | None = None, dense: Sequence[Example] = ()
                    ) -> Iterator[Event]:
        """Steps `start_step`..`steps`-1 of one round; yields TrainStep (and Checkpoint) events.

        `dense`: a pool of general examples; each step draws `dense_batch_size` of them for the dense KL term.

        On cancel: writes a checkpoint at the last finished step, then raises errors.Cancelled.
        """
        import mlx.core as mx

        if not forget:
            raise ValueError("No forget examples to train on.")
        if self.optimizer is None:
            raise RuntimeError("attach() or restore() first.")
        step_fn = self._step_fn()
        times: list[float] = []
        last_saved = time.monotonic()
        for step in range(start_step, steps):
            if cancel is not None and cancel.cancelled:
                if checkpoint_root is not None:
                    path = self.save_checkpoint(checkpoint_root, round, step, checkpoint_extra)
                    yield Checkpoint(round, step, str(path))
                cancel.check()
            t0 = time.perf_counter()
            batch = self._batch(forget, retain, round, step, dense)
            with grad_checkpointing(self.llm.model, self.settings.grad_checkpoint):
                loss, parts = step_fn(self._arrays(batch))
                mx.eval(loss, parts, self.llm.model.trainable_parameters(), self.optimizer.state)
            if self.after_update is not None:
                self.after_update()
                mx.eval(self.llm.model.trainable_parameters())
            dt = time.perf_counter() - t0
            times.append(dt)
            n_tok = _real_tokens(batch)
            recent = times[-5:]
            eta = (sum(recent) / len(recent)) * (steps - step - 1)
            yield TrainStep(round=round, step=step + 1, total_steps=steps, forget_loss=float(parts["forget"].item()),
                            retain_loss=float(parts.get("retain", mx.array(0.0)).item()), loss=float(loss.item()),
                            tokens_per_s=n_tok / dt if dt > 0 else 0.0, eta_s=eta)
            done = step + 1
            if checkpoint_root is not None and self._checkpoint_due(done, steps, time.monotonic() - last_saved):
                path = self.save_checkpoint(checkpoint_root, round, done, checkpoint_extra)
                last_saved = time.monotonic()
                yield Checkpoint(round, done, str(path))

    def _checkpoint_due(self, done: int, steps: int, since_last_s: float) -> bool:
        every_s = self.settings.checkpoint_seconds
        return (done == steps or done % self.settings.checkpoint_every == 0
                or (every_s > 0 and since_last_s >= every_s))


@contextlib.contextmanager
def grad_checkpointing(model: Any, enabled: bool) -> Iterator[None]:
    """Gradient checkpointing for the duration of one training step.

    mlx-lm's `grad_checkpoint` patches the block class's __call__ for every instance and for good, which would also
    slow generation down (it re-collects the block's parameters on every call); here the patch lives only while a
    step is built and evaluated.
    """
    if not enabled:
        yield
        return
    from mlx_lm.tuner.trainer import grad_checkpoint

    cls = type(model.layers[0])
    original = cls.__call__
    grad_checkpoint(model.layers[0])
    try:
        yield
    finally:
        cls.__call__ = original


def _real_tokens(batch: Batch) -> int:
    """Non-padding tokens in a batch (prompt + target), for tokens/s."""
    import mlx.core as mx

    n = 0
    for tb in (batch.forget, batch.retain):
        if tb is not None:  # the mask marks targets, so a row's real length ends where its mask ends
            last = (tb.mask * mx.arange(1, tb.mask.shape[1] + 1)).max(axis=1)
            n += int(last.sum().item())
    return n
