"""Exports: mlx-lm adapters, fused models, GGUF, model cards, and the checks that keep bad output from landing.

Every kind of export is loaded back with plain mlx-lm, both in-process and through `python -m mlx_lm generate` in a
subprocess, and must answer the forgotten question exactly as the job recorded (greedy, same max tokens). The tiny
model's weights are float32, so our LLM (float32 on CPU) and plain mlx_lm.load compute in the same dtype.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from unstar_gui.engine import export
from unstar_gui.engine.errors import Cancelled, InvalidInput, JobError, StorageError, UnsupportedModel
from unstar_gui.engine.events import Finished, Log

MAX_TOKENS = 24
QUESTION = "Where did Harry Potter go to school?"
ANSWER = "Hogwarts"
QUANT_EVALUATION = {"attacks": [
    {"attack": "quant", "variant": "4bit-g64", "title": "4-bit quantization (group 64)", "recovery": 0.5,
     "recovered": 3, "known": 6},
    {"attack": "quant", "variant": "8bit-g64", "title": "8-bit quantization (group 64)", "recovery": 0.0,
     "recovered": 0, "known": 6},
    {"attack": "quant", "variant": "4bit-g32", "title": "4-bit quantization (group 32)", "recovery": 0.25,
     "recovered": 1, "known": 4},
    {"attack": "relearn", "variant": "steps-10", "title": "Relearning (10 steps)", "recovery": 0.0,
     "recovered": 0, "known": 6},
]}


# Building job folders ---------------------------------------------------------------------------------------------
def make_job(job_dir: Path, model_dir: Path, seed: int = 1) -> dict:
    """A finished job folder: a random non-zero LoRA adapter on `model_dir`, job.json, and a report.json that
    records the adapted model's greedy answer to the forgotten question."""
    import mlx.core as mx

    from unstar_gui.engine.jobs import create_job
    from unstar_gui.engine.llm import LLM, LoraSettings

    llm = LLM(model_dir)
    before = llm.answer([QUESTION], max_tokens=MAX_TOKENS)[0]
    llm.attach_lora(LoraSettings(rank=4, scale=20.0, num_layers=2), seed=seed)
    mx.random.seed(seed)
    for layer in llm.lora_layers():
        layer.lora_b = 0.05 * mx.random.normal(layer.lora_b.shape)
    mx.eval(llm.model.parameters())
    after = llm.answer([QUESTION], max_tokens=MAX_TOKENS)[0]
    assert after != before, "the random adapter must change the answer, or the tests prove nothing"
    llm.save_adapter(job_dir / "adapters")
    settings = {"rank": 4, "lora_scale": 20.0, "num_layers": 2, "learning_rate": 2e-4, "method": "unstar", "seed": 0}
    create_job(job_dir, {
        "status": "done",
        "fact": {"question": QUESTION, "answer": ANSWER, "aliases": ["Hogwarts School"]},
        "keep": [["What is the capital of France?", "Paris"]],
        "model": {"id": "tiny", "path": str(model_dir), "source": f"folder:{model_dir}", "revision": "",
                  "architecture": "llama", "quantization": "float32"},
        "settings": settings, "method": "unstar", "seed": 0,
        "versions": {"unstar": "0.1.0", "mlx": mx.__version__},
    })
    report = {"fact": {"question": QUESTION, "answer": ANSWER}, "method": "unstar",
              "before_after": [{"question": QUESTION, "split": "original", "kind": "probe", "before": before,
                                "after": after, "known_before": True, "leaks_after": False}],
              "metrics": {"efficacy_heldout": 0.75, "efficacy_train": 1.0, "retention_neighbours": 0.9},
              "evaluation": QUANT_EVALUATION}
    (job_dir / "report.json").write_text(json.dumps(report))
    return {"dir": job_dir, "before": before, "after": after, "model_dir": model_dir}


def register_base(model_dir: Path) -> None:
    """Put a job's base model in this test's library: a job loads its base only through the registry."""
    from unstar_gui.engine.store import ModelRecord, ModelStore

    ModelStore().register(ModelRecord(id=model_dir.name, path=str(model_dir), architecture="llama",
                                      quantization="", size_bytes=0, source=f"folder:{model_dir}"))


@pytest.fixture
def unstar_home(tmp_path_factory, monkeypatch) -> Path:
    """The data folder outside tmp_path: these tests check that tmp_path holds nothing but what an export left."""
    home = tmp_path_factory.mktemp("unstar-home")
    monkeypatch.setenv("UNSTAR_HOME", str(home))
    return home


@pytest.fixture(autouse=True)
def library(request, unstar_home):
    for name in ("job", "quantized_job"):
        if name in request.fixturenames:
            register_base(request.getfixturevalue(name)["model_dir"])


@pytest.fixture(scope="module")
def job(tiny_model_dir, tmp_path_factory):
    return make_job(tmp_path_factory.mktemp("export-job") / "job", tiny_model_dir)


@pytest.fixture(scope="module")
def quantized_job(tmp_path_factory):
    from tests.helpers.tiny import make_tiny_model

    model_dir = make_tiny_model(tmp_path_factory.mktemp("tiny-q4") / "tiny-q4", quantize_bits=4)
    return make_job(tmp_path_factory.mktemp("export-qjob") / "job", model_dir, seed=2)


# Loading exports back with mlx-lm ----------------------------------------------------------------------------------
def mlx_lm_answer(model_path: Path, adapter_path: Path | None = None, model_tweak=None) -> str:
    """Greedy answer of plain mlx-lm (stored dtype), through the chat template like the job's probes."""
    import mlx_lm

    model, tokenizer = mlx_lm.load(str(model_path), adapter_path=str(adapter_path) if adapter_path else None)
    if model_tweak is not None:
        model_tweak(model)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION}], add_generation_prompt=True)
    return mlx_lm.generate(model, tokenizer, prompt=prompt, max_tokens=MAX_TOKENS).strip()


def run_mlx_lm_cli(argv: list[str]) -> str:
    """Run `python -m mlx_lm generate ...` in a fresh process; the answer is printed between '==========' lines."""
    from unstar_gui.engine.backend import find_blas

    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if find_blas():
        env["LD_PRELOAD"] = find_blas()
    proc = subprocess.run([sys.executable, "-m", "mlx_lm", *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    parts = proc.stdout.split("==========")
    assert len(parts) >= 3, proc.stdout
    return parts[1].strip()


def card_command(card: Path, max_tokens: int = MAX_TOKENS) -> list[str]:
    """The `python -m mlx_lm generate` line the model card prints, as argv for mlx_lm (max tokens made ours)."""
    line = next(ln for ln in card.read_text().splitlines() if ln.startswith("python -m mlx_lm generate"))
    argv = shlex.split(line)[3:]
    argv[argv.index("--max-tokens") + 1] = str(max_tokens)
    return argv


def drain(events) -> tuple[Finished, list]:
    seen = list(events)
    assert isinstance(seen[-1], Finished)
    return seen[-1], seen


def no_leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


# Adapters ----------------------------------------------------------------------------------------------------------
def test_adapter_export_loads_in_mlx_lm_and_its_card_says_what_was_forgotten(job, tmp_path):
    out = tmp_path / "adapter"
    done, _ = drain(export.export_adapters(job["dir"], out))
    assert done.summary["kind"] == "adapters" and Path(done.summary["path"]) == out
    assert sorted(p.name for p in out.iterdir()) == [export.MARKER_NAME, "README.md", "adapter_config.json",
                                                     "adapters.safetensors"]
    assert json.loads((out / "adapter_config.json").read_text())["lora_parameters"]["rank"] == 4
    marker = json.loads((out / export.MARKER_NAME).read_text())
    assert marker["kind"] == "adapters" and marker["job"] == str(job["dir"]) and "README.md" in marker["files"]

    card = (out / "README.md").read_text()
    for expected in (QUESTION, ANSWER, "Hogwarts School", str(job["model_dir"]), "unstar", "| rank | 4 |",
                     "efficacy_heldout", "75%", "UnStar Studio 0.1.0", "mlx-lm", job["after"],
                     "4-bit (group size 64): the fact came back on 50% of probes (3 of 6)",
                     "Relearning (10 steps)", f"--adapter-path {out.resolve()}", "python -m mlx_lm fuse"):
        assert expected in card, expected

    assert mlx_lm_answer(job["model_dir"], out) == job["after"]
    argv = card_command(out / "README.md")
    assert argv[argv.index("--model") + 1] == str(job["model_dir"])
    assert run_mlx_lm_cli(argv) == job["after"]


# Fused -------------------------------------------------------------------------------------------------------------
def test_fused_export_answers_as_the_job_recorded(job, tmp_path):
    out = tmp_path / "fused"
    done, events = drain(export.export_fused(job["dir"], out))
    assert not done.summary["warnings"] and not [e for e in events if isinstance(e, Log) and e.level == "warning"]
    config = json.loads((out / "config.json").read_text())
    assert "quantization" not in config and config["model_type"] == "llama"
    assert (out / "tokenizer.json").exists() and (out / "model.safetensors").exists()
    assert "fused MLX model" in (out / "README.md").read_text()

    assert mlx_lm_answer(out) == job["after"]
    argv = card_command(out / "README.md")
    assert argv[argv.index("--model") + 1] == str(out.resolve())
    assert run_mlx_lm_cli(argv) == job["after"]


def test_requantizing_warns_with_the_evaluation_numbers(job, tmp_path):
    out4 = tmp_path / "fused-4bit"
    done, events = drain(export.export_fused(job["dir"], out4, q_bits=4, q_group_size=64))
    warnings = [e.message for e in events if isinstance(e, Log) and e.level == "warning"]
    assert len(warnings) == 1 and "50% of probes (3 of 6)" in warnings[0] and "4-bit" in warnings[0]
    assert done.summary["warnings"] == warnings
    assert warnings[0] in (out4 / "README.md").read_text()
    config = json.loads((out4 / "config.json").read_text())
    assert config["quantization"]["bits"] == 4 and config["quantization"]["group_size"] == 64
    # A re-quantized model need not match the float job, but mlx-lm must load it the same way in and out of process.
    assert run_mlx_lm_cli(["generate", "--model", str(out4), "--prompt", QUESTION, "--max-tokens",
                           str(MAX_TOKENS), "--temp", "0"]) == mlx_lm_answer(out4)

    out8 = tmp_path / "fused-8bit"
    done, events = drain(export.export_fused(job["dir"], out8, q_bits=8))
    assert done.summary["warnings"] == []  # the evaluation saw no recovery at 8 bits
    assert json.loads((out8 / "config.json").read_text())["quantization"]["bits"] == 8


def adapted_layers(job_dir: Path) -> list[str]:
    """Module paths of the layers the job's adapter changes (its LoRA keys name them)."""
    import mlx.core as mx

    weights = mx.load(str(job_dir / "adapters" / "adapters.safetensors"))
    return sorted({k.rsplit(".", 1)[0] for k in weights if k.endswith(".lora_a")})


def test_quantized_base_fused_by_default_keeps_the_adapted_layers_precise(quantized_job, tmp_path):
    import mlx.core as mx

    base = quantized_job["model_dir"]
    kept = tmp_path / "kept"
    done, events = drain(export.export_fused(quantized_job["dir"], kept))
    # Nothing the adapter changed is re-quantized, so no re-quantization warning applies.
    assert done.summary["warnings"] == [] and not [e for e in events if isinstance(e, Log) and e.level == "warning"]
    quant = json.loads((kept / "config.json").read_text())["quantization"]
    adapted = adapted_layers(quantized_job["dir"])
    assert adapted and quant["bits"] == 4 and quant["group_size"] == 32
    assert {k: v for k, v in quant.items() if "." in k} == {path: False for path in adapted}
    # The untouched layers are the base's stored 4-bit weights, bit for bit.
    fused_w, base_w = mx.load(str(kept / "model.safetensors")), mx.load(str(base / "model.safetensors"))
    untouched = [k for k in base_w if not any(k.startswith(a + ".") for a in adapted)]
    assert untouched and all(mx.array_equal(fused_w[k], base_w[k]).item() for k in untouched)
    assert "mixed: the" in (kept / "README.md").read_text()
    # Plain mlx-lm loads it and it answers the forgotten question as the job recorded.
    assert mlx_lm_answer(kept) == quantized_job["after"]

    q4 = tmp_path / "q4"
    done, _ = drain(export.export_fused(quantized_job["dir"], q4, q_bits=4))
    assert len(done.summary["warnings"]) == 1 and "50% of probes (3 of 6)" in done.summary["warnings"][0]


def test_quantized_base_adapted_layers_at_8_bits(quantized_job, tmp_path):
    out = tmp_path / "mixed-8"
    done, events = drain(export.export_fused(quantized_job["dir"], out, adapted_bits=8))
    quant = json.loads((out / "config.json").read_text())["quantization"]
    adapted = adapted_layers(quantized_job["dir"])
    assert {k: v for k, v in quant.items() if "." in k} == {p: {"group_size": 32, "bits": 8} for p in adapted}
    # The evaluation saw no recovery at 8 bits, so nothing to warn about; the card says what was quantized how.
    assert done.summary["warnings"] == [] and not [e for e in events if isinstance(e, Log) and "8-bit" in e.message]
    assert f"the {len(adapted)} layers the adapter changed are 8-bit, group size 32" in (out / "README.md").read_text()
    assert run_mlx_lm_cli(["generate", "--model", str(out), "--prompt", QUESTION, "--max-tokens",
                           str(MAX_TOKENS), "--temp", "0"]) == mlx_lm_answer(out)
    with pytest.raises(InvalidInput, match="quantized base only"):
        list(export.export_fused(quantized_job["dir"], tmp_path / "x", adapted_bits=8, dequantize=True))


def test_quantized_base_dequantizes(quantized_job, tmp_path):
    base = quantized_job["model_dir"]
    plain = tmp_path / "dequantized"
    done, _ = drain(export.export_fused(quantized_job["dir"], plain, dequantize=True))
    assert done.summary["warnings"] == []
    assert "quantization" not in json.loads((plain / "config.json").read_text())
    # Dequantized and fused, it computes what mlx-lm computes with the adapter on the quantized base.
    assert mlx_lm_answer(plain) == mlx_lm_answer(base, quantized_job["dir"] / "adapters")
    assert run_mlx_lm_cli(card_command(plain / "README.md")) == mlx_lm_answer(plain)


# GGUF --------------------------------------------------------------------------------------------------------------
def _gguf_dtypes(model) -> None:
    """Give a loaded fused model the GGUF's dtypes (fp16 weights, fp32 norms), so both compute the same."""
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten

    model.update(tree_unflatten([(k, v.astype(mx.float32 if "norm" in k else mx.float16))
                                 for k, v in tree_flatten(model.parameters())]))


def test_gguf_round_trips_through_our_importer(job, tmp_path):
    import mlx.core as mx

    from unstar_gui.engine.importers import import_gguf
    from unstar_gui.engine.store import ModelStore

    out = tmp_path / "forgot.gguf"
    done, _ = drain(export.export_gguf(job["dir"], out))
    assert out.is_file() and (tmp_path / "forgot.md").is_file() and done.summary["card"] == str(tmp_path / "forgot.md")
    card = (tmp_path / "forgot.md").read_text()
    assert "GGUF file (fp16)" in card and done.summary["ollama_command"] in card
    tensors, meta = mx.load(str(out), return_metadata=True)
    assert tensors["blk.0.attn_q.weight"].dtype == mx.float16 and tensors["output_norm.weight"].dtype == mx.float32
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.chat_template"]

    record = import_gguf(ModelStore(), out, model_id="forgot")
    fused = tmp_path / "fused"
    drain(export.export_fused(job["dir"], fused))
    # mlx-lm's exporter permutes q/k rows for llama.cpp and our importer un-permutes them: the weights must agree.
    imported = mx.load(str(Path(record.path) / "model.safetensors"))
    reference = mx.load(str(fused / "model.safetensors"))
    assert sorted(imported) == sorted(reference)
    for name, w in reference.items():
        want = w.astype(mx.float32 if "norm" in name else mx.float16)
        assert mx.array_equal(imported[name], want).item(), name

    gguf_answer = mlx_lm_answer(Path(record.path))
    assert gguf_answer == mlx_lm_answer(fused, model_tweak=_gguf_dtypes)
    assert gguf_answer == job["after"]  # fp16 rounding did not change the recorded greedy answer of this model
    assert run_mlx_lm_cli(["generate", "--model", record.path, "--prompt", QUESTION, "--max-tokens",
                           str(MAX_TOKENS), "--temp", "0"]) == gguf_answer


def test_gguf_refuses_other_architectures(job, tmp_path):
    qwen = tmp_path / "tiny-qwen2"
    shutil.copytree(job["model_dir"], qwen)
    config = json.loads((qwen / "config.json").read_text())
    (qwen / "config.json").write_text(json.dumps(dict(config, model_type="qwen2")))
    job_dir = tmp_path / "qwen-job"
    shutil.copytree(job["dir"], job_dir)
    data = json.loads((job_dir / "job.json").read_text())
    data["model"]["path"] = str(qwen)
    (job_dir / "job.json").write_text(json.dumps(data))
    register_base(qwen)

    with pytest.raises(UnsupportedModel) as exc:
        list(export.export_gguf(job_dir, tmp_path / "out.gguf"))
    assert "supports llama and mistral" in exc.value.message and "'qwen2'" in exc.value.message
    assert "--fused" in exc.value.hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qwen-job", "tiny-qwen2"]


def parse_modelfile(path: Path) -> dict:
    """The instructions of an Ollama Modelfile: FROM, TEMPLATE/SYSTEM (triple-quoted, may span lines), stops."""
    import re

    text = path.read_text()
    body = "\n".join(ln for ln in text.splitlines() if not ln.startswith("#"))
    quoted = dict(re.findall(r'^(TEMPLATE|SYSTEM) """(.*?)"""', body, flags=re.M | re.S))
    return {"FROM": re.search(r"^FROM (.+)$", body, flags=re.M).group(1), **quoted,
            "stops": [json.loads(v) for v in re.findall(r"^PARAMETER stop (.+)$", body, flags=re.M)],
            "comments": [ln[2:] for ln in text.splitlines() if ln.startswith("# ")]}


def test_ollama_modelfile_round_trips_through_our_importer(job, tmp_path):
    from unstar_gui.engine.importers import import_any
    from unstar_gui.engine.store import ModelStore

    out = tmp_path / "Forgot Model.gguf"
    done, _ = drain(export.export_gguf(job["dir"], out))
    modelfile = Path(done.summary["modelfile"])
    assert modelfile == tmp_path / "Forgot Model.Modelfile"
    assert done.summary["ollama_command"] == f"ollama create forgot-model -f '{modelfile.resolve()}'"
    parsed = parse_modelfile(modelfile)
    gguf = (modelfile.parent / parsed["FROM"]).resolve()
    assert parsed["FROM"].startswith("./") and gguf == out.resolve()
    # The tiny model's chat template is ChatML: the Go template names the roles and the turn markers.
    assert "{{ .Role }}" in parsed["TEMPLATE"] and "{{ .Content }}" in parsed["TEMPLATE"]
    assert "<|im_start|>assistant" in parsed["TEMPLATE"] and "SYSTEM" not in parsed
    assert parsed["stops"] == ["<|im_start|>", "<|im_end|>"]
    assert QUESTION in " ".join(parsed["comments"])  # the model card rides along as comments
    record = import_any(ModelStore(), gguf, model_id="from-modelfile")
    assert mlx_lm_answer(Path(record.path)) == job["after"]


def test_modelfile_chat_formats():
    smol = ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n<|im_start|>user\n"
            f"{export._PROBE}<|im_end|>\n<|im_start|>assistant\n")
    chatml = export.chat_format_of("{{ '<|im_start|>' + message['role'] }}")
    assert chatml.name == "ChatML"
    assert export.default_system_prompt(chatml, smol) == "You are a helpful AI assistant named SmolLM"
    assert export.default_system_prompt(chatml, f"<|im_start|>user\n{export._PROBE}") is None

    llama3 = export.chat_format_of("{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>' }}")
    text = export.ollama_modelfile("m.gguf", llama3, None, "<|eot_id|>", "card")
    assert "<|start_header_id|>{{ .Role }}<|end_header_id|>" in text
    assert text.count('PARAMETER stop "<|eot_id|>"') == 1  # the eos token is not repeated

    generic = export.chat_format_of("{% for m in messages %}[{{ m.role }}] {{ m.content }}{% endfor %}")
    text = export.ollama_modelfile("m.gguf", generic, 'say """hi"""', "</s>", "line one\nline two")
    assert generic is export.GENERIC_CHAT_FORMAT and "generic" in text and "{{ .Role }}" in text
    assert text.startswith("# line one\n# line two\n") and 'PARAMETER stop "</s>"' in text
    assert text.count('"""') == 4  # quotes inside SYSTEM cannot end it early


# Bad input ---------------------------------------------------------------------------------------------------------
def test_job_without_adapters_is_refused(job, tmp_path):
    job_dir = tmp_path / "unfinished"
    shutil.copytree(job["dir"], job_dir)
    shutil.rmtree(job_dir / "adapters")
    for make in (lambda: export.export_adapters(job_dir, tmp_path / "a"),
                 lambda: export.export_fused(job_dir, tmp_path / "f"),
                 lambda: export.export_gguf(job_dir, tmp_path / "g.gguf")):
        with pytest.raises(JobError) as exc:
            list(make())
        assert "has no adapter to export" in exc.value.message and "Run the forget job" in exc.value.hint
    with pytest.raises(JobError, match="not a job folder"):
        list(export.export_adapters(tmp_path, tmp_path / "a"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["unfinished"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes, to check a refused export left them exactly as they were."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_existing_target_is_not_overwritten_without_force(job, tmp_path):
    out = tmp_path / "adapter"
    drain(export.export_adapters(job["dir"], out))
    before = snapshot(out)
    with pytest.raises(InvalidInput) as exc:
        list(export.export_adapters(job["dir"], out))
    assert "already exists" in exc.value.message and "--force" in exc.value.hint
    assert snapshot(out) == before

    gguf = tmp_path / "m.gguf"
    (tmp_path / "m.md").write_text("someone's notes")
    with pytest.raises(InvalidInput, match="m.md already exists"):
        list(export.export_gguf(job["dir"], gguf))
    assert not gguf.exists()

    # An earlier export of ours (it has our marker) is replaced with --force.
    (out / "README.md").write_text("an old card")
    drain(export.export_adapters(job["dir"], out, overwrite=True))
    assert "What was forgotten" in (out / "README.md").read_text()
    assert no_leftovers(tmp_path) == []
    with pytest.raises(InvalidInput, match="job's own files"):
        list(export.export_adapters(job["dir"], job["dir"] / "adapters", overwrite=True))


@pytest.mark.parametrize("files", [
    {"src/main.py": b"print('hello')\n", "README.md": b"# my project\n"},
    {"thesis.tex": b"\\documentclass{article}\n"},
    # config.json and README.md are in every model folder, so they must not pass for an export of ours
    {"config.json": b'{"model_type": "llama"}', "README.md": b"my notes", "adapter_config.json": b"{}"},
])
def test_force_never_replaces_the_users_own_folder(job, tmp_path, files):
    users = tmp_path / "mine"
    for name, data in files.items():
        (users / name).parent.mkdir(parents=True, exist_ok=True)
        (users / name).write_bytes(data)
    before = snapshot(users)
    for make in (lambda: export.export_adapters(job["dir"], users, overwrite=True),
                 lambda: export.export_fused(job["dir"], users, overwrite=True)):
        with pytest.raises(InvalidInput) as exc:
            list(make())
        assert "holds files UnStar did not export" in exc.value.message
        assert sorted(files)[0].split("/")[0] in exc.value.message and "nothing was written" in exc.value.message
        assert snapshot(users) == before
    # A marker that is not ours (other JSON) does not vouch for the folder either.
    (users / export.MARKER_NAME).write_text('{"kind": "fused"}')
    with pytest.raises(InvalidInput, match="UnStar did not export"):
        list(export.export_adapters(job["dir"], users, overwrite=True))
    assert no_leftovers(tmp_path) == []


def test_force_keeps_files_added_to_an_earlier_export(job, tmp_path):
    out = tmp_path / "adapter"
    drain(export.export_adapters(job["dir"], out))
    (out / "my-notes.txt").write_text("results from my own runs")
    with pytest.raises(InvalidInput, match=r"did not export \(my-notes.txt\)"):
        list(export.export_adapters(job["dir"], out, overwrite=True))
    assert (out / "my-notes.txt").read_text() == "results from my own runs"


def test_gguf_force_replaces_only_files_our_marker_vouches_for(job, tmp_path):
    gguf = tmp_path / "notes.gguf"
    gguf.write_bytes(b"GGUF someone else's model")
    with pytest.raises(InvalidInput, match="is a file UnStar did not export"):
        list(export.export_gguf(job["dir"], gguf, overwrite=True))
    assert gguf.read_bytes() == b"GGUF someone else's model"

    mine = tmp_path / "mine.gguf"
    drain(export.export_gguf(job["dir"], mine))
    marker = json.loads(export.sidecar_marker(mine).read_text())
    assert marker["kind"] == "gguf" and sorted(marker["files"]) == ["mine.Modelfile", "mine.gguf", "mine.md"]
    mine.write_bytes(b"damaged")
    drain(export.export_gguf(job["dir"], mine, overwrite=True))
    assert mine.read_bytes()[:4] == b"GGUF"
    assert no_leftovers(tmp_path) == []


def test_read_only_export_folder_gives_a_clear_storage_error(job, tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):  # root ignores permission bits: have the file system refuse, as it would
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(export.tempfile, "mkdtemp", refuse)
    try:
        for make in (lambda: export.export_adapters(job["dir"], locked / "adapter"),
                     lambda: export.export_gguf(job["dir"], locked / "m.gguf")):
            with pytest.raises(StorageError) as exc:
                list(make())
            assert f"Cannot write the export in {locked}" in exc.value.message and "writable" in exc.value.hint
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o755)


def test_no_space_stops_before_writing(job, tmp_path, monkeypatch):
    monkeypatch.setenv("UNSTAR_FAKE_FREE_BYTES", "1000")
    for make in (lambda: export.export_adapters(job["dir"], tmp_path / "a"),
                 lambda: export.export_fused(job["dir"], tmp_path / "f"),
                 lambda: export.export_gguf(job["dir"], tmp_path / "g.gguf")):
        with pytest.raises(StorageError) as exc:
            list(make())
        assert "Not enough disk space" in exc.value.message and "1.0 KB free" in exc.value.message
    assert list(tmp_path.iterdir()) == []


def test_bad_quantization_arguments(job, tmp_path):
    with pytest.raises(InvalidInput, match="two different outputs"):
        list(export.export_fused(job["dir"], tmp_path / "f", dequantize=True, q_bits=4))
    with pytest.raises(InvalidInput, match="7-bit quantization is not available"):
        list(export.export_fused(job["dir"], tmp_path / "f", q_bits=7))
    with pytest.raises(InvalidInput, match="does not end in .gguf"):
        list(export.export_gguf(job["dir"], tmp_path / "model.bin"))
    assert list(tmp_path.iterdir()) == []


class CancelAfter:
    """A cancel flag that turns on after it has been read `n` times (export checks it between stages)."""

    def __init__(self, n: int) -> None:
        self.n = n

    @property
    def cancelled(self) -> bool:
        self.n -= 1
        return self.n < 0


@pytest.mark.parametrize("reads", [0, 2, 3])
def test_cancel_leaves_no_partial_output(job, tmp_path, reads):
    with pytest.raises(Cancelled):
        list(export.export_fused(job["dir"], tmp_path / "fused", cancel=CancelAfter(reads)))
    assert list(tmp_path.iterdir()) == []


def test_failure_while_writing_removes_partial_output(job, tmp_path, monkeypatch):
    def broken_card(path, *args, **kwargs):
        Path(path).write_text("half a card")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "_write_card", broken_card)
    with pytest.raises(OSError):
        list(export.export_fused(job["dir"], tmp_path / "fused"))
    with pytest.raises(OSError):
        list(export.export_gguf(job["dir"], tmp_path / "m.gguf"))
    assert list(tmp_path.iterdir()) == []


def test_stopping_the_event_stream_midway_removes_partial_output(job, tmp_path):
    events = export.export_gguf(job["dir"], tmp_path / "m.gguf")
    for ev in events:
        if getattr(ev, "done", 0) == 3:  # the last Progress, just before writing
            break
    events.close()
    assert list(tmp_path.iterdir()) == []


# CLI ---------------------------------------------------------------------------------------------------------------
def test_cli_export(job, tmp_path, capsys):
    from unstar_gui.cli import main

    out = tmp_path / "adapter"
    assert main(["export", "--job", str(job["dir"]), "--adapters", str(out)]) == 0
    assert f"exported adapter -> {out}" in capsys.readouterr().out

    assert main(["export", "--job", str(job["dir"]), "--adapters", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err

    assert main(["export", "--job", str(job["dir"]), "--adapters", str(out), "--force", "--json"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert lines[0]["event"] == "StageStarted" and lines[-1]["event"] == "Finished"
    assert lines[-1]["summary"]["path"] == str(out)

    fused = tmp_path / "fused-8"
    assert main(["export", "--job", str(job["dir"]), "--fused", str(fused), "--q-bits", "8",
                 "--q-group-size", "32"]) == 0
    assert json.loads((fused / "config.json").read_text())["quantization"]["group_size"] == 32

    assert main(["export", "--job", str(job["dir"]), "--adapters", str(tmp_path / "x"), "--dequantize"]) == 2
    assert "apply to --fused exports only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["export", "--job", str(job["dir"])])


def test_cli_lmstudio_export_lands_where_lm_studio_and_discovery_look(job, tmp_path, capsys):
    from unstar_gui.cli import main
    from unstar_gui.engine.discover import find_lmstudio

    root = tmp_path / "lmstudio-models"
    assert main(["export", "--job", str(job["dir"]), "--lmstudio", "Tiny Forgot", "--lmstudio-root", str(root)]) == 0
    printed = capsys.readouterr().out
    gguf = root / "unstar" / "Tiny-Forgot" / "Tiny-Forgot.gguf"
    assert gguf.is_file() and f"-> {gguf}" in printed
    assert f"ollama create tiny-forgot -f {gguf.with_suffix('.Modelfile')}" in printed
    found = find_lmstudio([root])
    assert [(m.name, m.architecture, m.importable) for m in found] == [("Tiny-Forgot.gguf", "llama", True)]

    assert main(["export", "--job", str(job["dir"]), "--adapters", str(tmp_path / "a"),
                 "--lmstudio-root", str(root)]) == 2
    assert "--lmstudio-root applies to --lmstudio exports only" in capsys.readouterr().err


@pytest.mark.slow
def test_smollm2_gguf_and_fused_exports(smollm2_dir, tmp_path):
    """The real embedded model: 4-bit base with an 8-bit embedding, SmolLM's digit-splitting BPE pre-tokenizer."""
    import mlx.core as mx

    from unstar_gui.engine.importers import import_gguf
    from unstar_gui.engine.store import ModelStore

    job = make_job(tmp_path / "job", smollm2_dir)
    register_base(smollm2_dir)
    drain(export.export_gguf(job["dir"], tmp_path / "smol.gguf"))
    _, meta = mx.load(str(tmp_path / "smol.gguf"), return_metadata=True)
    assert meta["tokenizer.ggml.pre"] == "smollm" and meta["tokenizer.ggml.model"] == "gpt2"
    record = import_gguf(ModelStore(), tmp_path / "smol.gguf", model_id="smol-forgot")
    assert mlx_lm_answer(Path(record.path)) == mlx_lm_answer(smollm2_dir, job["dir"] / "adapters") == job["after"]

    modelfile = parse_modelfile(tmp_path / "smol.Modelfile")
    assert "SmolLM" in modelfile["SYSTEM"] and "<|im_start|>" in modelfile["TEMPLATE"]  # its default system prompt

    done, _ = drain(export.export_fused(job["dir"], tmp_path / "fused"))
    base_q = json.loads((smollm2_dir / "config.json").read_text())["quantization"]
    fused_q = json.loads((tmp_path / "fused" / "config.json").read_text())["quantization"]
    adapted = adapted_layers(job["dir"])
    # Mixed precision: the base's settings (4-bit, its 8-bit embedding) stay, the adapted layers are unquantized.
    assert {k: v for k, v in fused_q.items() if k not in adapted} == base_q
    assert all(fused_q[p] is False for p in adapted) and done.summary["warnings"] == []
    assert mlx_lm_answer(tmp_path / "fused") == job["after"]
    assert run_mlx_lm_cli(card_command(tmp_path / "fused" / "README.md")) == mlx_lm_answer(tmp_path / "fused")
