"""One loaded model: chat prompts, batched generation, answer log-probabilities, LoRA adapters on and off.

MLX streams belong to the thread that created them, so an LLM is used only on the thread that loaded it (the CLI's
main thread, or the GUI's one long-lived worker thread); calls from elsewhere fail loudly instead of crashing.
"""

from __future__ import annotations

import contextlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generator, Iterator, Sequence, TypeVar

from .backend import Backend, detect
from .errors import Cancelled, ImportFailed, InvalidInput, ModelNotFound
from .events import AnswerPiece

T = TypeVar("T")

DEFAULT_MAX_TOKENS = 64
MLP_KEYS = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass
class LoraSettings:
    rank: int = 8
    scale: float = 20.0
    dropout: float = 0.0
    num_layers: int = 16  # the last N transformer blocks get adapters; -1 = all
    keys: tuple[str, ...] | None = None  # None = mlx-lm's default (attention q/v + more by architecture)
    # Train only blocks [lo, hi) (e.g. the fact-lookup MLPs causal tracing found). mlx-lm can only wrap "the last N
    # blocks", so the adapter covers blocks lo..end and the blocks from hi up stay frozen with lora_b = 0: plain
    # mlx-lm loads it (num_layers = blocks - lo) and those blocks add exactly nothing.
    window: tuple[int, int] | None = None

    def to_adapter_config(self) -> dict[str, Any]:
        params: dict[str, Any] = {"rank": self.rank, "scale": self.scale, "dropout": self.dropout}
        if self.keys:
            params["keys"] = list(self.keys)
        config: dict[str, Any] = {"fine_tune_type": "lora", "num_layers": self.num_layers, "lora_parameters": params}
        if self.window is not None:
            config["trained_blocks"] = list(self.window)  # ours, for resuming; mlx-lm ignores unknown keys
        return config

    @classmethod
    def from_adapter_config(cls, cfg: dict[str, Any]) -> "LoraSettings":
        lp = cfg.get("lora_parameters") or {}
        window = cfg.get("trained_blocks")
        ok_window = (isinstance(window, list) and len(window) == 2 and all(isinstance(x, int) for x in window)
                     and 0 <= window[0] < window[1])
        return cls(rank=int(lp.get("rank", 8)), scale=float(lp.get("scale", 20.0)),
                   dropout=float(lp.get("dropout", 0.0)), num_layers=int(cfg.get("num_layers", 16)),
                   keys=tuple(str(k) for k in lp["keys"]) if lp.get("keys") else None,
                   window=(window[0], window[1]) if ok_window else None)

    @classmethod
    def for_window(cls, lo: int, hi: int, total_blocks: int, rank: int = 8, scale: float = 20.0,
                   keys: tuple[str, ...] | None = MLP_KEYS) -> "LoraSettings":
        """An adapter trained on blocks [lo, hi) of a model with `total_blocks` blocks."""
        lo, hi = max(0, min(lo, total_blocks - 1)), max(1, min(hi, total_blocks))
        return cls(rank=rank, scale=scale, num_layers=total_blocks - lo, keys=keys, window=(lo, max(hi, lo + 1)))


@dataclass
class ChatOptions:
    """How a chat answer is sampled. Temperature 0 is greedy (the same answer every time, best for comparing);
    a repetition penalty above 1 keeps small models from looping on one phrase."""

    max_tokens: int = 256
    temperature: float = 0.0
    repetition_penalty: float = 1.1


class LLM:
    def __init__(self, path: str | Path, backend: Backend | None = None, model_id: str = "") -> None:
        import mlx.core as mx

        self.path = Path(path)
        self.model_id = model_id or self.path.name
        if not (self.path / "config.json").exists():
            raise ModelNotFound(f"No model at {self.path} (config.json missing).",
                                "Re-import the model, or pick another one (`unstar models list`).")
        self.backend = backend or detect()
        self._thread = threading.get_ident()
        self.model, self.tokenizer = load_model_files(self.path)
        self.config: dict[str, Any] = json.loads((self.path / "config.json").read_text())
        self.base_quantization = self.config.get("quantization")
        if self.backend.dequantize:
            from mlx_lm.utils import dequantize_model

            # CPU: quantized matmul is single-threaded and skips BLAS; float32 is ~20x faster there.
            self.model = dequantize_model(self.model)
            self.model.set_dtype(mx.float32)
        mx.eval(self.model.parameters())
        self.model.eval()
        self.lora: LoraSettings | None = None
        # The running job's cancel flag (see `cancellable`): batch generation checks it after every token, so a stop
        # lands within a token instead of after a whole batch of answers (~1 min on a slow CPU).
        self.cancel: Any = None
        eos = set(self.tokenizer.eos_token_ids)
        self.eos_ids = eos

    # thread ownership --------------------------------------------------------------------------------------------
    def _check_thread(self) -> None:
        if threading.get_ident() != self._thread:
            raise RuntimeError("This model was loaded on another thread; MLX work must stay on the loading thread.")

    # prompts -----------------------------------------------------------------------------------------------------
    def chat_tokens(self, question: str, system: str | None = None,
                    history: Sequence[tuple[str, str]] = (), answer_prefix: str = "") -> list[int]:
        messages: list[dict[str, str]] = []
        if system:
            messages.append({"role": "system", "content": system})
        for q, a in history:
            messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        messages.append({"role": "user", "content": question})
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict):
                ids = ids["input_ids"]
            ids = list(ids)
        else:  # base models without a template: a plain Q/A frame
            text = "".join(f"Question: {q}\nAnswer: {a}\n" for q, a in history) + f"Question: {question}\nAnswer:"
            ids = self.tokenizer.encode(text)
        if answer_prefix:
            ids += self.tokenizer.encode(answer_prefix, add_special_tokens=False)
        return ids

    def encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False))

    # generation --------------------------------------------------------------------------------------------------
    def generate_tokens(self, prompts: Sequence[list[int]], max_tokens: int = DEFAULT_MAX_TOKENS,
                        temperature: float = 0.0, seed: int | None = None, batch_size: int = 16) -> list[str]:
        import mlx.core as mx
        from mlx_lm.generate import batch_generate
        from mlx_lm.sample_utils import make_sampler

        self._check_thread()
        if not prompts:
            return []
        if seed is not None:
            mx.random.seed(seed)
        sampler = make_sampler(temp=temperature) if temperature > 0 else None
        out: list[str] = []
        for i in range(0, len(prompts), batch_size):
            chunk = [list(p) for p in prompts[i:i + batch_size]]
            kwargs: dict[str, Any] = {"max_tokens": max_tokens}
            if sampler is not None:
                kwargs["sampler"] = sampler
            if self.cancel is None:
                texts = batch_generate(self.model, self.tokenizer, chunk, **kwargs).texts
            else:
                texts = self._generate_cancellable(chunk, max_tokens, sampler)
            out.extend(t.strip() for t in texts)
        return out

    def _generate_cancellable(self, prompts: list[list[int]], max_tokens: int, sampler: Any) -> list[str]:
        """mlx-lm's batch_generate loop, checking `self.cancel` after every generated token."""
        from mlx_lm.generate import BatchGenerator

        gen = BatchGenerator(self.model, stop_tokens=[[t] for t in self.tokenizer.eos_token_ids],
                             **({"sampler": sampler} if sampler is not None else {}))
        try:
            uids = gen.insert(prompts, [max_tokens] * len(prompts))
            tokens: dict[int, list[int]] = {uid: [] for uid in uids}
            while responses := gen.next_generated():
                _check_cancel(self.cancel)
                for r in responses:
                    if r.finish_reason != "stop":
                        tokens[r.uid].append(r.token)
        finally:
            gen.close()
        return [self.tokenizer.decode(tokens[uid]) for uid in uids]

    def answer(self, questions: Sequence[str], max_tokens: int = DEFAULT_MAX_TOKENS, system: str | None = None,
               temperature: float = 0.0, seed: int | None = None, batch_size: int = 16) -> list[str]:
        """The model's answers to plain questions, through its chat template (greedy by default)."""
        for q in questions:
            if not q or not q.strip():
                raise InvalidInput("A question is empty.", "Type a question before asking the model.")
        prompts = [self.chat_tokens(q, system=system) for q in questions]
        return self.generate_tokens(prompts, max_tokens, temperature, seed, batch_size)

    def stream(self, question: str, history: Sequence[tuple[str, str]] = (), options: ChatOptions | None = None,
               cancel: Any = None, system: str | None = None) -> Iterator[str]:
        """Answer `question` after the earlier turns `history` ((question, answer) pairs, through the chat
        template), yielding the text piece by piece as the tokens come. `cancel` (anything with `.cancelled`) is
        checked before every piece, so a stop lands within a token; the generator then just ends."""
        from mlx_lm.generate import stream_generate
        from mlx_lm.sample_utils import make_logits_processors, make_sampler

        self._check_thread()
        if not question or not question.strip():
            raise InvalidInput("The question is empty.", "Type a question before asking the model.")
        options = options or ChatOptions()
        prompt = self.chat_tokens(question, system=system, history=history)
        penalty = options.repetition_penalty if options.repetition_penalty != 1.0 else None
        responses = stream_generate(self.model, self.tokenizer, prompt, max_tokens=max(1, options.max_tokens),
                                    sampler=make_sampler(temp=max(0.0, options.temperature)),
                                    logits_processors=make_logits_processors(repetition_penalty=penalty))
        try:
            for response in responses:
                if cancel is not None and cancel.cancelled:
                    return
                if response.text:
                    yield response.text
        finally:
            responses.close()  # stop mlx-lm's generator now, not when it is garbage-collected

    def complete(self, texts: Sequence[str], max_tokens: int = DEFAULT_MAX_TOKENS, temperature: float = 0.0,
                 seed: int | None = None) -> list[str]:
        """Raw continuation, no chat template (fill-in-the-blank style probes)."""
        return self.generate_tokens([self.encode(t) or [0] for t in texts], max_tokens, temperature, seed)

    # scoring -----------------------------------------------------------------------------------------------------
    def answer_logprobs(self, pairs: Sequence[tuple[str, str]], batch_size: int = 8,
                        system: str | None = None) -> list[float]:
        """Mean per-token log-probability of each answer given its question (chat template, teacher forced)."""
        import mlx.core as mx

        self._check_thread()
        results: list[float] = []
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            seqs, starts = [], []
            for q, a in chunk:
                prompt = self.chat_tokens(q, system=system)
                ans = self.encode(a)
                seqs.append(prompt + ans)
                starts.append(len(prompt))
            tokens, mask = pad_batch(seqs, starts)
            logits = self.model(tokens[:, :-1]).astype(mx.float32)
            logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
            tgt = tokens[:, 1:]
            tok_lp = mx.take_along_axis(logp, tgt[..., None], axis=-1).squeeze(-1)
            m = mask[:, 1:]
            mean = (tok_lp * m).sum(axis=1) / mx.maximum(m.sum(axis=1), 1)
            results.extend(float(x) for x in mean.tolist())
        return results

    def perplexity(self, text: str) -> float:
        import math

        import mlx.core as mx

        self._check_thread()
        ids = self.encode(text)[:512]
        tokens = mx.array([ids])
        logits = self.model(tokens[:, :-1]).astype(mx.float32)
        logp = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        lp = mx.take_along_axis(logp, tokens[:, 1:, None], axis=-1).mean()
        return float(math.exp(-lp.item()))

    # adapters ----------------------------------------------------------------------------------------------------
    def attach_lora(self, settings: LoraSettings, seed: int = 0) -> None:
        """Wrap the last `num_layers` blocks' linear layers with fresh LoRA layers (lora_b = 0: output unchanged)."""
        import mlx.core as mx
        from mlx_lm.tuner.utils import linear_to_lora_layers

        self._check_thread()
        if self.lora is not None:
            raise RuntimeError("A LoRA adapter is already attached; detach it first.")
        mx.random.seed(seed)
        self.model.freeze()
        cfg = settings.to_adapter_config()
        linear_to_lora_layers(self.model, self._num_layers(settings.num_layers), cfg["lora_parameters"])
        if settings.window is not None:
            lo, hi = settings.window
            for block in self.model.layers[hi:]:
                block.freeze()  # above the window: wrapped for mlx-lm's layout, never trained (lora_b stays 0)
        self.lora = settings

    def _num_layers(self, n: int) -> int:
        total = len(self.model.layers)
        return total if n < 0 or n > total else n

    def load_adapter(self, adapter_dir: Path) -> LoraSettings:
        import mlx.core as mx

        adapter_dir = Path(adapter_dir)
        cfg_path = adapter_dir / "adapter_config.json"
        if not cfg_path.exists():
            raise ModelNotFound(f"No adapter at {adapter_dir} (adapter_config.json missing).",
                                "Pick the adapters folder of a finished job.")
        cfg = json.loads(cfg_path.read_text())
        settings = LoraSettings.from_adapter_config(cfg)
        if self.lora is None:
            self.attach_lora(settings)
        weights = mx.load(str(adapter_dir / "adapters.safetensors"))
        self.model.load_weights(list(weights.items()), strict=False)
        mx.eval(self.model.parameters())
        return settings

    def lora_layers(self) -> list[Any]:
        from mlx_lm.tuner.lora import LoRALinear

        return [m for _, m in self.model.named_modules() if isinstance(m, LoRALinear)]

    def trainable_parameters(self) -> dict[str, Any]:
        from mlx.utils import tree_flatten

        return dict(tree_flatten(self.model.trainable_parameters()))

    def adapter_parameters(self) -> dict[str, Any]:
        """Every LoRA matrix, trained or frozen (blocks above a training window keep lora_b = 0)."""
        from mlx.utils import tree_flatten

        return {k: v for k, v in tree_flatten(self.model.parameters()) if k.endswith((".lora_a", ".lora_b"))}

    def save_adapter(self, adapter_dir: Path) -> None:
        """Write adapters.safetensors + adapter_config.json in the layout `mlx_lm.load(adapter_path=...)` reads."""
        import mlx.core as mx

        from .fsutil import atomic_write_json

        if self.lora is None:
            raise RuntimeError("No adapter attached.")
        adapter_dir = Path(adapter_dir)
        adapter_dir.mkdir(parents=True, exist_ok=True)
        tmp = adapter_dir / ".adapters.safetensors.tmp.safetensors"
        mx.save_safetensors(str(tmp), self.adapter_parameters())
        tmp.replace(adapter_dir / "adapters.safetensors")
        atomic_write_json(adapter_dir / "adapter_config.json", self.lora.to_adapter_config())

    def reset_lora(self, seed: int = 0) -> None:
        """Give every LoRA layer fresh weights (lora_b = 0), keeping the wrapping in place."""
        import math

        import mlx.core as mx

        mx.random.seed(seed)
        for layer in self.lora_layers():
            in_dims = layer.lora_a.shape[0]
            s = 1 / math.sqrt(in_dims)
            layer.lora_a = mx.random.uniform(low=-s, high=s, shape=layer.lora_a.shape)
            layer.lora_b = mx.zeros(layer.lora_b.shape)
        mx.eval(self.model.parameters())

    @contextlib.contextmanager
    def adapter_scale(self, factor: float) -> Iterator[None]:
        """Temporarily multiply every LoRA scale: 0 gives the base model exactly, -1 negates the adapter."""
        layers = self.lora_layers()
        saved = [layer.scale for layer in layers]
        try:
            for layer, s in zip(layers, saved):
                layer.scale = s * factor
            yield
        finally:
            for layer, s in zip(layers, saved):
                layer.scale = s

    def scale_adapter(self, factor: float) -> None:
        """Multiply the adapter's strength for good (LoRA scale), so a saved adapter_config.json carries it."""
        from dataclasses import replace

        if self.lora is None:
            raise RuntimeError("No adapter attached.")
        for layer in self.lora_layers():
            layer.scale = layer.scale * factor
        self.lora = replace(self.lora, scale=self.lora.scale * factor)

    def base_model(self) -> contextlib.AbstractContextManager[None]:
        """`with llm.base_model(): ...` answers as the model before unlearning."""
        return self.adapter_scale(0.0)

    def detach_lora(self) -> None:
        """Replace LoRA layers by their base linear layers (the adapter is dropped)."""
        from mlx.utils import tree_unflatten
        from mlx_lm.tuner.lora import LoRALinear

        swaps = [(name, m.linear) for name, m in self.model.named_modules() if isinstance(m, LoRALinear)]
        if swaps:
            self.model.update_modules(tree_unflatten(swaps))
        self.lora = None


def stream_sides(llm: LLM, question: str, histories: dict[str, Sequence[tuple[str, str]]],
                 options: ChatOptions | None = None, cancel: Any = None) -> Iterator[AnswerPiece]:
    """One question to each side in `histories`, in order: "base" answers with the adapter switched off, "adapted"
    with it on. Each side continues its own conversation, so neither model sees the other's answers."""
    for side, history in histories.items():
        with llm.base_model() if side == "base" else contextlib.nullcontext():
            for text in llm.stream(question, history, options, cancel):
                yield AnswerPiece(side, text)
        if cancel is not None and cancel.cancelled:
            return  # a stopped side is not "done": the GUI marks it stopped
        yield AnswerPiece(side, "", done=True)


def _check_cancel(cancel: Any) -> None:
    if not getattr(cancel, "cancelled", False):
        return
    if hasattr(cancel, "check"):
        cancel.check()  # a job's CancelToken: Cancelled, or Interrupted for a signal
    raise Cancelled("Cancelled by the user.", "")


def cancellable(llm: LLM, cancel: Any, steps: Generator[Any, Any, T]) -> Generator[Any, Any, T]:
    """Run the job `steps` with `cancel` checked inside the model's generation loops too (not only between
    batches); the model is shared between tasks, so the flag is taken off again when the job ends."""
    llm.cancel = cancel
    try:
        return (yield from steps)
    finally:
        llm.cancel = None


def pad_batch(seqs: Sequence[list[int]], starts: Sequence[int], pad_id: int = 0):
    """Right-pad token lists; mask is 1 on positions at or after each `start` (the scored part) and before the end."""
    import mlx.core as mx
    import numpy as np

    width = max(len(s) for s in seqs)
    tokens = np.full((len(seqs), width), pad_id, dtype=np.int32)
    mask = np.zeros((len(seqs), width), dtype=np.float32)
    for i, (s, st) in enumerate(zip(seqs, starts)):
        tokens[i, : len(s)] = s
        mask[i, st: len(s)] = 1.0
    return mx.array(tokens), mx.array(mask)


_LOADED: dict[str, LLM] = {}


# mlx_lm.load's own default for the tokenizer is trust_remote_code=True: a model folder's auto_map would run the
# folder's Python. A model folder is untrusted input, so every load goes through here.
SAFE_TOKENIZER_CONFIG = {"trust_remote_code": False}


def load_model_files(path: str | Path, **kwargs: Any) -> Any:
    """mlx_lm.load with remote code refused; returns what mlx_lm.load returns."""
    import mlx_lm

    return mlx_lm.load(str(path), tokenizer_config=dict(SAFE_TOKENIZER_CONFIG), trust_remote_code=False, **kwargs)


def check_generates(path: str | Path, name: str = "") -> None:
    """Load a model folder and compute one next token: a model is registered only when this passes."""
    import mlx.core as mx

    name = name or Path(path).name
    try:
        model, tokenizer = load_model_files(path)
        ids = tokenizer.encode("Hello")
        if not ids:
            raise ValueError("its tokenizer turns text into no tokens")
        logits = model(mx.array([list(ids)]))[0, -1]
        mx.eval(logits)
        if not bool(mx.all(mx.isfinite(logits)).item()):
            raise ValueError("it computes non-finite numbers")
        tokenizer.decode([int(mx.argmax(logits).item())])
    except Exception as exc:  # mlx, transformers and tokenizers raise many types for a broken folder
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ImportFailed(f"{name} does not load as a working model ({detail}); it was not added.",
                           "The files are incomplete or damaged: download or convert the model again.") from exc


def load_llm(path: str | Path, model_id: str = "") -> LLM:
    """Load a model, or reuse it when the same thread loaded it before (loading once per job and per worker)."""
    key = f"{threading.get_ident()}:{Path(path).resolve()}"
    llm = _LOADED.get(key)
    if llm is None:
        llm = LLM(path, model_id=model_id)
        _LOADED[key] = llm
    return llm
