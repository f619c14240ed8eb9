"""How much memory a forget job needs, before it starts, and the batch size / sequence length that fit.

A job's memory peaks in one of three phases, each on top of the model weights:
- training: the LoRA adapter, its gradients and Adam's two moments, plus the activations the backward pass keeps.
  Only the adapted (last `num_layers`) blocks keep activations; the vocabulary-wide logits of the loss cost a few
  copies of batch x length x vocabulary floats on top. Gradient checkpointing keeps one input per adapted block
  and recomputes the rest (one block's activations at a time), for about a third more compute.
- generation: the key/value cache and the prompt's logits of a batched `LLM.answer` call;
- evaluation: the re-quantization attack holds a dense, fused copy of every weight matrix while it runs.
The per-token constants below were fitted to `mx.get_peak_memory()` on SmolLM2-135M (float32, CPU, LoRA on 8 and
16 blocks, 64 and 160 tokens, batched generation of 16 prompts); `bench/perf.py` re-checks the estimate against the
measured peak every run (tiny model, SmolLM2 training with and without checkpointing, generation).
On CPU the weights are dequantized to float32 (see backend.py); on Metal they stay quantized and compute in float16.
Totals count MLX's own allocations (what `mx.get_peak_memory()` sees) plus a fixed runtime overhead (Python,
the tokenizer, the sentence-embedding model used by the judge).
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .fsutil import human_bytes

GIB = 1024 ** 3
RUNTIME_OVERHEAD = 600 * 1024 ** 2  # Python + tokenizers + torch/MiniLM for the judge (ru_maxrss - MLX peak, measured)
LOGIT_COPIES = 3.4  # vocabulary-wide float32 arrays alive at the loss's peak (logits, logsumexp temporaries, grads)
KL_EXTRA_COPIES = 2.0  # a KL retain term keeps the base model's log-probs and their softmax as well
GENERATION_BATCH = 16  # LLM.generate_tokens' default batch
PROMPT_TOKENS = 384  # the few-shot generation prompts are long
ANSWER_TOKENS = 64
PREFILL_BATCH = 8  # mlx-lm's BatchGenerator prefills this many prompts at once
SEQ_STEP = 16  # sequence lengths are chosen in multiples of the trainer's padding width

# The published config.json numbers of the catalog's models (models/catalog.json), so a model can be sized before
# it is downloaded; installed models are sized from their own config.json instead. mlx-community 4-bit downloads
# use group 64; the embedded SmolLM2 (Q4_1 GGUF) group 32.
_CONFIG_FIELDS = ("hidden_size", "num_hidden_layers", "intermediate_size", "num_attention_heads",
                  "num_key_value_heads", "vocab_size", "tie_word_embeddings", "group_size")
_CATALOG_SHAPES = {
    "mistral-7b-instruct-v0.3-4bit": (4096, 32, 14336, 32, 8, 32768, False, 64),
    "mistral-7b-instruct-v0.2-4bit": (4096, 32, 14336, 32, 8, 32000, False, 64),
    "llama-3.2-3b-instruct-4bit": (3072, 28, 8192, 24, 8, 128256, True, 64),
    "qwen2.5-3b-instruct-4bit": (2048, 36, 11008, 16, 2, 151936, True, 64),
    "qwen2.5-1.5b-instruct-4bit": (1536, 28, 8960, 12, 2, 151936, True, 64),
    "smollm2-135m-instruct": (576, 30, 1536, 9, 3, 49152, True, 32),
}
REFERENCE_CONFIGS: dict[str, dict[str, Any]] = {
    key: {**dict(zip(_CONFIG_FIELDS[:-1], shape[:-1])), "quantization": {"bits": 4, "group_size": shape[-1]}}
    for key, shape in _CATALOG_SHAPES.items()}


# the model's shape ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelShape:
    """The numbers of a decoder-only transformer (llama / mistral / qwen2 layout) that memory depends on."""

    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_embeddings: bool = True
    bits: int | None = None  # quantized weights (None = float)
    group_size: int = 64
    disk_bytes: int = 0  # the weight files' size when known (exact weight memory on Metal)

    @classmethod
    def from_config(cls, config: dict[str, Any], disk_bytes: int = 0) -> "ModelShape":
        c = {**config, **(config.get("text_config") or {})}  # multimodal configs nest the language model
        try:
            hidden = int(c["hidden_size"])
            heads = int(c["num_attention_heads"])
            shape = cls(hidden_size=hidden, num_layers=int(c["num_hidden_layers"]),
                        intermediate_size=int(c["intermediate_size"]), num_heads=heads,
                        num_kv_heads=int(c.get("num_key_value_heads") or heads),
                        head_dim=int(c.get("head_dim") or hidden // heads),
                        vocab_size=int(c.get("vocab_size") or 32000),
                        tie_embeddings=bool(c.get("tie_word_embeddings", False)), disk_bytes=int(disk_bytes))
        except (KeyError, TypeError, ValueError) as exc:
            from .errors import UnsupportedModel

            raise UnsupportedModel(f"Can't size this model: its config has no usable '{exc}' entry.",
                                   "Memory estimates need a llama-style config.json (hidden_size, layers, heads).")
        q = c.get("quantization") or c.get("quantization_config") or {}
        if isinstance(q, dict) and q.get("bits"):
            shape = replace(shape, bits=int(q["bits"]), group_size=int(q.get("group_size", 64)))
        return shape

    def block_linears(self) -> list[tuple[int, int]]:
        """(in, out) of each linear layer in one block: q, k, v, o, gate, up, down (LoRA wraps all by default)."""
        d, q, kv, i = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim, \
            self.intermediate_size
        return [(d, q), (d, kv), (d, kv), (q, d), (d, i), (d, i), (i, d)]

    @property
    def n_params(self) -> int:
        block = sum(a * b for a, b in self.block_linears()) + 2 * self.hidden_size
        embeddings = self.vocab_size * self.hidden_size * (1 if self.tie_embeddings else 2)
        return self.num_layers * block + embeddings + self.hidden_size

    def weight_bytes(self, device: str) -> int:
        if device == "cpu":  # dequantized to float32 at load
            return self.n_params * 4
        if self.disk_bytes:
            return self.disk_bytes
        if self.bits:  # packed weights + a float16 scale and bias per group
            return int(self.n_params * (self.bits + 32 / self.group_size) / 8)
        return self.n_params * 2


# settings -------------------------------------------------------------------------------------------------------------
@dataclass
class MemorySettings:
    """The job settings memory depends on (read from ForgetSettings, TrainSettings or a dict by `from_settings`)."""

    rank: int = 8
    num_layers: int = 16  # adapted blocks, counted from the last; -1 = all
    batch_size: int = 4
    retain_batch_size: int = 4
    max_seq_len: int = 160
    grad_checkpoint: bool = False
    retain_loss: str = "ce"
    generation_batch: int = GENERATION_BATCH
    prompt_tokens: int = PROMPT_TOKENS
    answer_tokens: int = ANSWER_TOKENS

    @classmethod
    def from_settings(cls, settings: Any = None, **overrides: Any) -> "MemorySettings":
        if settings is None:
            values: dict[str, Any] = {}
        elif isinstance(settings, MemorySettings):
            values = asdict(settings)
        elif isinstance(settings, dict):
            values = dict(settings)
        else:
            values = {k: getattr(settings, k) for k in cls.__dataclass_fields__ if hasattr(settings, k)}
        values.update(overrides)
        return cls(**{k: v for k, v in values.items() if k in cls.__dataclass_fields__})


@dataclass
class MemoryEstimate:
    weights_bytes: int
    lora_bytes: int  # adapter weights
    optimizer_bytes: int  # gradients + Adam's two moments of the adapter
    activations_bytes: int  # training activations kept for the backward pass (incl. the loss's logits)
    total_bytes: int  # the job's peak: weights + the largest phase + runtime overhead
    fits: bool
    available_bytes: int
    advice: str
    device: str = "cpu"
    generation_bytes: int = 0  # KV cache + prompt logits of a batched generation call
    evaluation_bytes: int = 0  # the dense copy the re-quantization attack holds
    overhead_bytes: int = RUNTIME_OVERHEAD
    peak_phase: str = "training"
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def mlx_bytes(self) -> int:
        """The part MLX allocates (comparable to mx.get_peak_memory())."""
        return self.total_bytes - self.overhead_bytes

    def to_dict(self) -> dict[str, Any]:
        return dict(asdict(self), mlx_bytes=self.mlx_bytes)

    def summary(self) -> str:
        """One line for a status bar or a log: 'Needs about 1.6 GB of 17.2 GB available (training peak).'"""
        return (f"Needs about {human_bytes(self.total_bytes)} of {human_bytes(self.available_bytes)} available "
                f"({self.peak_phase} peak).")


# the estimate ---------------------------------------------------------------------------------------------------------
def model_shape(model: Any) -> ModelShape:
    """A ModelShape from a config dict, a ModelRecord / CatalogEntry / LLM, a model folder, or a catalog id."""
    if isinstance(model, ModelShape):
        return model
    if isinstance(model, dict):
        return ModelShape.from_config(model)
    config = getattr(model, "config", None)
    if isinstance(config, dict) and hasattr(model, "path"):  # a loaded LLM
        return ModelShape.from_config(config, _weights_on_disk(Path(model.path)))
    path = getattr(model, "installed_path", "") or getattr(model, "path", "") or (
        model if isinstance(model, (str, Path)) and Path(model).is_dir() else "")
    if path and (Path(path) / "config.json").exists():
        config = json.loads((Path(path) / "config.json").read_text())
        return ModelShape.from_config(config, _weights_on_disk(Path(path)))
    key = getattr(model, "id", None) or (model if isinstance(model, str) else None)
    if key in REFERENCE_CONFIGS:
        return ModelShape.from_config(REFERENCE_CONFIGS[key])
    from .errors import ModelNotFound

    raise ModelNotFound(f"Can't size '{key or model}': no config.json and not a catalog model.",
                        "Install the model first, or give its config.json.")


def _weights_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def _adapted_layers(shape: ModelShape, num_layers: int) -> int:
    return shape.num_layers if num_layers < 0 or num_layers > shape.num_layers else num_layers


def _layer_floats_per_token(shape: ModelShape, seq: int, rank: int) -> float:
    """Activations one adapted block keeps per token for its backward pass (fitted on SmolLM2, float32)."""
    d, q, kv = shape.hidden_size, shape.num_heads * shape.head_dim, shape.num_kv_heads * shape.head_dim
    attention_scores = shape.num_heads * seq  # the CPU attention materialises (heads x seq) scores per token
    return 5 * d + 2 * q + 2 * kv + 4 * shape.intermediate_size + attention_scores + 7 * rank


def training_activation_bytes(shape: ModelShape, s: MemorySettings, device: str) -> int:
    rows = s.batch_size + (s.retain_batch_size if s.retain_batch_size > 0 else 0)
    tokens = rows * s.max_seq_len
    act_bytes = 4 if device == "cpu" else 2
    layers = _adapted_layers(shape, s.num_layers)
    per_layer = _layer_floats_per_token(shape, s.max_seq_len, s.rank) * act_bytes
    if s.grad_checkpoint:  # each adapted block keeps its input; one block is recomputed at a time
        blocks = tokens * (layers * shape.hidden_size * act_bytes + per_layer)
    else:
        blocks = tokens * layers * per_layer
    copies = LOGIT_COPIES + (KL_EXTRA_COPIES * s.retain_batch_size / max(rows, 1) if s.retain_loss == "kl" else 0)
    logits = tokens * shape.vocab_size * 4 * copies  # the loss works in float32 on every device
    return int(blocks + logits)


def lora_param_count(shape: ModelShape, s: MemorySettings) -> int:
    per_block = sum(s.rank * (a + b) for a, b in shape.block_linears())
    return per_block * _adapted_layers(shape, s.num_layers)


def generation_bytes(shape: ModelShape, s: MemorySettings, device: str) -> int:
    """Key/value caches of a generation batch (mlx-lm grows them in steps of 256 tokens; merging freshly prefilled
    rows into the running batch holds two copies for a moment) plus the prefill's activations for one prompt chunk
    (mlx-lm prefills 8 prompts at a time; their logits are never materialised)."""
    act_bytes = 4 if device == "cpu" else 2
    length = -(-(s.prompt_tokens + s.answer_tokens) // 256) * 256
    kv_cache = 2 * shape.num_layers * shape.num_kv_heads * shape.head_dim * length * act_bytes
    prefill_rows = min(s.generation_batch, PREFILL_BATCH)
    prefill = prefill_rows * s.prompt_tokens * (shape.num_heads * s.prompt_tokens + 3 * shape.intermediate_size
                                                 + 6 * shape.hidden_size) * act_bytes
    return int(2 * s.generation_batch * kv_cache + prefill)  # x2: merging the prefilled rows into the batch copies


def evaluation_bytes(shape: ModelShape, device: str) -> int:
    """The re-quantization attack fuses and round-trips every weight matrix into a dense copy (compute dtype)."""
    return shape.n_params * (4 if device == "cpu" else 2)


def estimate_memory(model: Any, settings: Any = None, device: str | None = None,
                    available_bytes: int | None = None, include_evaluation: bool = True) -> MemoryEstimate:
    """The memory a forget job with `settings` needs on `device` ("cpu" | "gpu"; None = this machine's).

    `model`: a config dict, ModelRecord, CatalogEntry, loaded LLM, model folder or catalog id. `available_bytes`:
    None = what this machine has free now (`available_memory`). `include_evaluation`: count the re-quantization
    attack's dense weight copy (False when the job's evaluation skips that attack).
    """
    shape = model_shape(model)
    s = MemorySettings.from_settings(settings)
    device = device or _this_device()
    available = int(available_bytes if available_bytes is not None else available_memory(device))
    weights = shape.weight_bytes(device)
    lora_params = lora_param_count(shape, s)
    lora = lora_params * 4  # LoRA matrices are float32 on every device
    optimizer = lora_params * 4 * 3  # gradients + Adam's first and second moments
    activations = training_activation_bytes(shape, s, device)
    gen = generation_bytes(shape, s, device)
    evaluation = evaluation_bytes(shape, device) if include_evaluation else 0
    phases = {"training": lora + optimizer + activations, "generation": lora + gen, "evaluation": lora + evaluation}
    peak_phase = max(phases, key=phases.get)
    total = weights + phases[peak_phase] + RUNTIME_OVERHEAD
    est = MemoryEstimate(weights_bytes=weights, lora_bytes=lora, optimizer_bytes=optimizer,
                         activations_bytes=activations, total_bytes=int(total), fits=total <= available,
                         available_bytes=available, advice="", device=device, generation_bytes=gen,
                         evaluation_bytes=evaluation, peak_phase=peak_phase, settings=asdict(s))
    est.advice = _advice(est, shape, s)
    return est


def _advice(est: MemoryEstimate, shape: ModelShape, s: MemorySettings) -> str:
    if est.fits:
        return est.summary()
    need, have = human_bytes(est.total_bytes), human_bytes(est.available_bytes)
    if est.weights_bytes + RUNTIME_OVERHEAD > est.available_bytes:
        return (f"The model alone needs {human_bytes(est.weights_bytes)} and {have} is available: pick a smaller "
                f"model{' or a 4-bit one on a Mac' if est.device == 'cpu' else ''}, or close other apps.")
    if est.peak_phase == "evaluation":
        return (f"Needs about {need} but {have} is available: the re-quantization attack holds a dense copy of the "
                f"weights ({human_bytes(est.evaluation_bytes)}). Skip that attack, or pick a smaller model.")
    if est.peak_phase == "generation":
        return (f"Needs about {need} but {have} is available while generating: lower the generation batch, or "
                f"pick a smaller model.")
    return (f"Needs about {need} but {have} is available: turn on gradient checkpointing, lower the batch size "
            f"({s.batch_size}) or the sequence length ({s.max_seq_len}), or close other apps.")


# available memory -----------------------------------------------------------------------------------------------------
def _this_device() -> str:
    from .backend import detect

    return detect().device


def mac_working_set(total_bytes: int) -> int:
    """What Metal lets one process keep resident on a Mac with `total_bytes` of unified memory: macOS's recommended
    working set is about two thirds of RAM up to 36 GB (5.3 GB on an 8 GB Mac, 10.7 GB on 16 GB), three quarters
    above."""
    return int(total_bytes * (2 / 3 if total_bytes <= 36 * GIB else 3 / 4))


def available_memory(device: str | None = None) -> int:
    """Bytes a job can use now: Metal's recommended working set on a Mac, MemAvailable on Linux."""
    device = device or _this_device()
    if device == "gpu":
        try:
            import mlx.core as mx

            info = mx.metal.device_info()
            return int(info.get("max_recommended_working_set_size") or mac_working_set(int(info["memory_size"])))
        except Exception:
            return mac_working_set(_physical_memory())
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        m = re.search(r"^MemAvailable:\s+(\d+) kB", meminfo.read_text(), re.M)
        if m:
            return int(m.group(1)) * 1024
    return int(_physical_memory() * 0.6)  # macOS CPU path / other systems: leave room for everything else


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * GIB


def measured_peak() -> dict[str, int]:
    """This process's peaks so far: MLX's allocations and the resident set (for comparing with an estimate)."""
    import resource

    import mlx.core as mx

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"mlx_peak_bytes": int(mx.get_peak_memory()),
            "max_rss_bytes": int(rss if sys.platform == "darwin" else rss * 1024)}


# choosing what fits ---------------------------------------------------------------------------------------------------
@dataclass
class MemoryChoice:
    batch_size: int
    retain_batch_size: int
    max_seq_len: int
    grad_checkpoint: bool
    generation_batch: int  # prompts per generation call (LLM.answer's batch_size)
    estimate: MemoryEstimate
    changed: list[str]  # what had to change, for people ("gradient checkpointing on", "batch 4 -> 2")

    @property
    def fits(self) -> bool:
        return self.estimate.fits

    def apply(self, settings: Any) -> Any:
        """A copy of a settings dataclass (ForgetSettings / TrainSettings) with the chosen values."""
        values = {k: getattr(self, k) for k in ("batch_size", "retain_batch_size", "max_seq_len", "grad_checkpoint")
                  if hasattr(settings, k)}
        return replace(settings, **values)


def _candidates(s: MemorySettings, min_seq: int):
    """Settings to try, most faithful first: checkpointing changes only speed, a smaller batch changes the
    optimisation, a shorter window cuts long targets."""
    yield s
    if not s.grad_checkpoint:
        yield replace(s, grad_checkpoint=True)
    b, rb = s.batch_size, s.retain_batch_size
    while b > 1 or rb > 1:
        b, rb = max(1, b // 2), max(1, rb // 2) if rb > 0 else 0
        yield replace(s, batch_size=b, retain_batch_size=rb, grad_checkpoint=True)
    seq = s.max_seq_len
    while seq > min_seq:
        seq = max(min_seq, (seq // 2) // SEQ_STEP * SEQ_STEP)
        yield replace(s, batch_size=b, retain_batch_size=rb, max_seq_len=seq, grad_checkpoint=True)
    gen = s.generation_batch
    while gen > 1:  # last: fewer prompts per generation call only slows sample generation down
        gen = max(1, gen // 2)
        yield replace(s, batch_size=b, retain_batch_size=rb, max_seq_len=seq, grad_checkpoint=True,
                      generation_batch=gen)


def choose_batch_and_seq(available_bytes: int | None, model: Any, settings: Any = None, device: str | None = None,
                         min_seq: int = 64, include_evaluation: bool = True) -> MemoryChoice:
    """The largest batch and sequence length (gradient checkpointing first, then smaller batches, shorter windows and
    last smaller generation batches) whose estimate fits `available_bytes` (None = this machine's free memory).
    When nothing fits, the smallest candidate comes back with fits=False."""
    s0 = MemorySettings.from_settings(settings)
    device = device or _this_device()
    available = available_bytes if available_bytes is not None else available_memory(device)
    last = None
    for s in _candidates(s0, min(min_seq, s0.max_seq_len)):
        est = estimate_memory(model, s, device, available, include_evaluation)
        last = (s, est)
        if est.fits:
            break
    s, est = last
    changed = []
    if s.grad_checkpoint and not s0.grad_checkpoint:
        changed.append("gradient checkpointing on")
    if (s.batch_size, s.retain_batch_size) != (s0.batch_size, s0.retain_batch_size):
        changed.append(f"batch {s0.batch_size}+{s0.retain_batch_size} -> {s.batch_size}+{s.retain_batch_size}")
    if s.max_seq_len != s0.max_seq_len:
        changed.append(f"sequence length {s0.max_seq_len} -> {s.max_seq_len}")
    if s.generation_batch != s0.generation_batch:
        changed.append(f"generation batch {s0.generation_batch} -> {s.generation_batch}")
    if changed and est.fits:
        est.advice = f"{est.summary()} Changed to fit: {', '.join(changed)}."
    return MemoryChoice(s.batch_size, s.retain_batch_size, s.max_seq_len, s.grad_checkpoint, s.generation_batch, est,
                        changed)
