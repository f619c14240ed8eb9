"""A forget job end to end: probe -> anti-samples + retain set -> rounds of (train -> re-probe -> harder samples).

Everything a job makes lands in its folder (see jobs.py) as it is made, and the trainer checkpoints every few steps,
so `resume_forget` picks a killed job up where it stopped: samples are reused, the adapter and optimizer come back
from the last checkpoint, and the round/step counters continue. The model is loaded once per job.

Stages and their events: load -> probe (the original question first, so a fact the model doesn't know fails in
seconds) -> paraphrases -> wrong_answers -> antisamples -> retain -> train (TrainStep, Checkpoint) -> reprobe
(ProbeResult) -> [regenerate -> train -> reprobe]... -> report -> Finished.
"""

from __future__ import annotations

import random
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .embedded import resolve_model
from .errors import Cancelled, Interrupted, InvalidInput, JobError, ModelNotFound, UnstarError
from .events import Checkpoint, Event, Finished, Log, ProbeResult, SamplesReady, StageStarted, TrainStep
from .jobs import Job, base_model_dir, create_job, new_job_dir, open_job, process_alive, this_process
from .records import JobRecord, Report, RetainKind, RoundSummary
from .asking import ask
from .judge import Judge, is_trivia, known_retain, probe_leaks
from .llm import LLM, load_llm
from .general_set import GeneralSplit
from .locality import Placement, above_traced, choose_placement, dense_pool, encode_dense, trivia_rows
from .methods import MethodContext, get_method
from .retain import NEIGHBOUR_KINDS
from .quality import answer_problem, gibberish_problem, verdict
from .store import ModelStore
from .subject_edit import EditSettings, clear_unused, edit_round, strengthen_edit
from .cancel import CancelToken
from .settings import PRESETS, ForgetSettings
from .settings import check as check_settings
from .trainer import Trainer, encode_pairs

JOB_VERSION = 1

__all__ = ["CancelToken", "ForgetSettings", "PRESETS", "ForgetRequest", "parse_keep", "prepare", "probe_leaks",
           "heldout_split", "create_forget_job", "generate_samples", "save_antisample_edits", "train_rounds", "run_job",
           "run_forget", "resume_forget"]


@dataclass
class ForgetRequest:
    question: str
    answer: str
    aliases: list[str] = field(default_factory=list)
    keep: list[tuple[str, str]] = field(default_factory=list)
    model: str | None = None  # a model id or a registered model's folder; None = the default model
    settings: ForgetSettings = field(default_factory=ForgetSettings)
    out_dir: Path | None = None
    force: bool = False  # unlearn even when the base model doesn't seem to know the fact


def parse_keep(text: str) -> tuple[str, str]:
    """'Who wrote Hamlet? => Shakespeare' -> (question, answer)."""
    if "=>" not in text:
        raise InvalidInput(f"Can't read the fact to keep '{text}'.", 'Write it as "question => answer".')
    q, a = (part.strip() for part in text.split("=>", 1))
    if not q or not a:
        raise InvalidInput(f"The fact to keep '{text}' has an empty side.", 'Write it as "question => answer".')
    return q, a


def prepare(request: ForgetRequest) -> dict[str, Any]:
    """Validate a request without touching the model; returns the job.json fields it would start with."""
    question = (request.question or "").strip()
    answer = (request.answer or "").strip()
    if not question:
        raise InvalidInput("The question is empty.",
                           'Type the question whose answer the model should forget, e.g. "Where did Harry Potter '
                           'go to school?".')
    if not answer:
        raise InvalidInput("The answer is empty.", 'Type the answer the model should forget, e.g. "Hogwarts".')
    aliases = [a.strip() for a in request.aliases if a and a.strip() and a.strip() != answer]
    keep = [(q.strip(), a.strip()) for q, a in request.keep]
    for q, a in keep:
        if not q or not a:
            raise InvalidInput("A fact to keep has an empty question or answer.", 'Write it as "question => answer".')
    check_settings(request.settings)
    record = resolve_model(ModelStore(), request.model)  # ModelNotFound lists the installed models
    if not (Path(record.path) / "config.json").exists():
        raise ModelNotFound(f"The files of model '{record.id}' are missing ({record.path}).",
                            "Re-import the model (`unstar models import`) or remove it (`unstar models remove`).")
    return {
        "fact": {"question": question, "answer": answer, "aliases": aliases},
        "keep": [list(k) for k in keep],
        "model": {"id": record.id, "path": str(Path(record.path).resolve()), "source": record.source,
                  "revision": record.revision, "architecture": record.architecture,
                  "quantization": record.quantization},
        "settings": asdict(request.settings),
        "method": request.settings.method,
        "seed": request.settings.seed,
        "force": bool(request.force),
    }


def _versions() -> dict[str, str]:
    import mlx.core as mx
    import mlx_lm

    from .. import __version__

    return {"unstar": __version__, "mlx": mx.__version__, "mlx_lm": mlx_lm.__version__}


def _check_job_folder(directory: Path) -> None:
    """A job folder is new or empty: a job's files never mix with the user's, and deleting the job never takes
    anything else with it."""
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        if (directory / "job.json").exists():
            raise JobError(f"{directory} already holds a job.", "Use --resume to continue it, or pick another --out.")
        raise InvalidInput(f"{directory} is not an empty folder; a job needs a folder of its own.",
                           "Pick a new or empty folder for --out (or leave it out to use the data folder's jobs/).")


def create_forget_job(request: ForgetRequest) -> Job:
    data = prepare(request)
    store = ModelStore()
    store.check_writable()  # before any model is loaded: a read-only data folder fails in a second, not minutes
    directory = Path(request.out_dir) if request.out_dir else new_job_dir(store, data["fact"]["question"])
    _check_job_folder(directory)
    data.update(version=JOB_VERSION, status="created", versions=_versions(), stage="created", round=0, step=0,
                error=None, rounds=[], timing={})
    return create_job(directory, data)


# small helpers -------------------------------------------------------------------------------------------------------
def _fact(data: dict[str, Any]):
    from .antisamples import Fact

    f = data["fact"]
    return Fact(question=f["question"], answer=f["answer"], aliases=list(f.get("aliases", [])))


def _settings(data: dict[str, Any]) -> ForgetSettings:
    return ForgetSettings.from_dict(data.get("settings", {}))


def _share(flags: Sequence[bool], empty: float = 1.0) -> float:
    return sum(flags) / len(flags) if flags else empty


def _retain_weight(s: ForgetSettings, rounds: Sequence[RoundSummary]) -> float:
    """The retain weight doubles after every round whose retention did not hold."""
    return s.retain_weight * 2 ** sum(1 for r in rounds if not r.retention_holds)


# stage 1-2: probes, anti-samples, retain set -------------------------------------------------------------------------
def generate_samples(job: Job, llm: LLM, cancel: CancelToken | None = None) -> Iterator[Event]:
    """Probe the base model and write probes.jsonl, antisamples.jsonl and retain.jsonl (skipped when done before)."""
    from .antisamples import Paraphrase, build_antisamples, paraphrase_questions, wrong_answers
    from .retain import build_retain_set, trim_answer

    cancel = cancel or CancelToken()
    data = job.read()
    if data.get("samples_ready"):
        yield Log("Reusing the probes, anti-samples and retain set made before.")
        return
    if getattr(llm, "lora", None) is not None:
        # The samples describe the base model: with an adapter left on by earlier work in this process (a library
        # caller, a benchmark running several facts) every "base" answer and "known" flag would be the unlearned
        # model's. The job attaches its own adapter when it trains.
        llm.detach_lora()
    t0 = time.perf_counter()
    s = _settings(data)
    fact = _fact(data)
    judge = fact.judge()

    job.set_stage("probe")
    yield StageStarted("probe", "Asking the base model the question")
    original_answer = llm.answer([fact.question], max_tokens=s.probe_max_tokens)[0]
    original_known = probe_leaks("original", original_answer, judge)
    if not original_known:
        shown = original_answer if len(original_answer) <= 200 else original_answer[:200] + "..."
        if not data.get("force"):
            raise InvalidInput(
                f"The model doesn't seem to know this fact: asked \"{fact.question}\", it answered \"{shown}\", "
                f"which doesn't mention \"{fact.answer}\".",
                "Add an alias for the way the model names the answer (--alias), rephrase the question, "
                "or pass --force to unlearn anyway.")
        yield Log(f"The base model answered \"{shown}\" without the answer; going on as asked (force).",
                  "warning")

    yield StageStarted("paraphrases", f"Writing {s.n_paraphrases} paraphrases of the question")
    paraphrases = yield from paraphrase_questions(llm, fact, judge, s.n_paraphrases, s.seed, cancel=cancel)
    cancel.check()
    yield SamplesReady("paraphrases", len(paraphrases))

    answers = yield from ask(llm, [p.text for p in paraphrases], stage="probe", check=cancel.check,
                             max_tokens=s.probe_max_tokens)
    heldout = heldout_split([p.style for p in paraphrases], s.heldout_share, s.seed)
    n_heldout = len(heldout)
    probes = [{"question": fact.question, "style": "original", "split": "original", "base_answer": original_answer,
               "known": original_known, "quality": verdict()}]  # the fact's own question is always kept
    judge.verdicts(answers)  # one batched embedding pass: the per-probe verdicts below are served from its cache
    # Gibberish marks a bad paraphrase only when the base model reads the fact's own question: a model that answers
    # nothing at all (a fact forced past the knowledge check, a tiny test model) can't tell a bad paraphrase apart.
    gate = not gibberish_problem(original_answer)
    for i, (p, a) in enumerate(zip(paraphrases, answers)):
        known = probe_leaks(p.style, a, judge, p.text)
        probes.append({"question": p.text, "style": p.style, "split": "heldout" if i in heldout else "train",
                       "base_answer": a, "known": known, "quality": _probe_quality(a, known, gate)})
    job.write_probes(probes)
    dropped = [_dropped_row("probes", p["style"], p["question"], p["base_answer"], p["quality"]["reason"])
               for p in probes if not p.get("quality", {"kept": True})["kept"]]
    known = sum(p["known"] for p in probes)
    yield SamplesReady("probes", len(probes))
    yield Log(f"The base model gives the answer on {known} of {len(probes)} probes "
              f"({n_heldout} paraphrases held out for evaluation).")

    yield StageStarted("wrong_answers", f"Finding {s.n_wrong_answers} wrong answers")
    wrongs = yield from wrong_answers(llm, fact, judge, s.n_wrong_answers, s.seed, cancel=cancel)
    cancel.check()
    yield SamplesReady("wrong_answers", len(wrongs))

    yield StageStarted("rationales", "Writing misleading rationales")
    # A paraphrase the base model answered with gibberish is no question it reads: it is not trained on either.
    train_paras = [Paraphrase(fact.question, _train_style("original"), {"source": "user"})] + [
        p for i, p in enumerate(paraphrases) if i not in heldout and probes[i + 1]["quality"]["kept"]]
    anti = yield from build_antisamples(llm, fact, train_paras, wrongs, judge, s.seed, round=0, cancel=cancel)
    cancel.check()
    job.write_antisamples([dict(asdict(a), round=0, id=i) for i, a in enumerate(anti)])
    yield SamplesReady("antisamples", len(anti))

    yield StageStarted("retain", "Collecting facts to keep")
    subject = fact.shape().subject
    # The trained general items stay the bundled TOFU ones: with the trivia training pool in their place the
    # SmolLM2 integration test lost "Where did Hermione Granger go to school?" through plain mlx-lm. The trivia
    # training pool feeds the dense KL term and the null-space corpus; its other splits measure (below).
    dropped_items: list[Any] = []
    items = yield from build_retain_set(llm, fact, judge, keep=[tuple(k) for k in data.get("keep", [])],
                                        n_neighbours=s.n_neighbours, n_general=s.n_general, seed=s.seed,
                                        cancel=cancel, dropped=dropped_items)
    cancel.check()
    dropped += [_dropped_row("retain", it.kind, it.question, it.target, it.quality["reason"]) for it in dropped_items]
    rows = [asdict(it) for it in items]
    # Neighbour and general targets are the base model's own answers already; keep-facts carry the user's answer,
    # so ask the base model those: whether it knew them, and if it did, its own wording becomes the target.
    keep_rows = [i for i, r in enumerate(rows) if r["kind"] == "keep"]
    asked = yield from ask(llm, [rows[i]["question"] for i in keep_rows], stage="retain", check=cancel.check,
                           max_tokens=s.probe_max_tokens)
    base_answers = {i: a for i, a in zip(keep_rows, asked)}
    for i, a in base_answers.items():
        trimmed = trim_answer(a)
        # the base model's wording replaces the person's answer only when it is usable (quality.answer_problem)
        if trimmed and known_retain(rows[i], a) and not answer_problem(rows[i]["question"], trimmed):
            rows[i]["target"] = trimmed
    for i, r in enumerate(rows):
        r["base_answer"] = base_answers.get(i, r["target"])
        r["known"] = known_retain(r, r["base_answer"])
        r["split"] = "train"
    yield StageStarted("general", "Asking the general questions that measure what else the model knows")
    checks = _general_checks(judge, subject, s.n_general_eval, [k[0] for k in data.get("keep", [])])
    said = yield from ask(llm, [c["question"] for c in checks], stage="general", check=cancel.check,
                          max_tokens=s.general_max_tokens)
    for c, a in zip(checks, said):
        c["base_answer"] = a
        c["known"] = known_retain(c, a)
    rows += [c for c in checks if c["known"]]
    job.write_retain(rows)
    yield SamplesReady("retain", len(rows))
    if dropped:
        yield Log(f"Quality gates left out {len(dropped)} items: "
                  + "; ".join(f"\"{d['question']}\" ({d['reason']})" for d in dropped[:5])
                  + (" ..." if len(dropped) > 5 else ""))
    job.add_timing("samples", time.perf_counter() - t0)
    job.mark_samples_ready(dropped)


def _probe_quality(answer: str, known: bool, gate: bool = True) -> dict[str, Any]:
    """A probe the base model answered with gibberish measures nothing (quality.gibberish_problem); one whose
    answer gives the fact away is known, whatever follows, and stays. `gate` False: the base model answers the
    fact's own question with gibberish too, so gibberish says nothing about this paraphrase."""
    return verdict("" if known or not gate else gibberish_problem(answer))


def _dropped_row(part: str, kind: str, question: str, answer: str, reason: str) -> dict[str, Any]:
    """One entry of job.json's "dropped" list: what the quality gates left out of `part` and why (the wizard's
    tables and the model card read it)."""
    return {"set": part, "kind": kind, "question": question, "answer": answer, "reason": reason}


def save_antisample_edits(job: Job, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Write a reviewed samples table to antisamples.jsonl: rows whose wrong answer was edited get an answer
    sentence and a rationale for the new answer (antisamples.apply_edits); returns the rows written."""
    from .antisamples import apply_edits

    fixed = apply_edits(job.read_rows("antisamples.jsonl"), rows, _fact(job.read()))
    job.write_antisamples(fixed)
    return fixed


# Split names of general rows in retain.jsonl: "train" is trained on; "validation" steers the stop rule;
# "heldout" (the evaluation split) is only reported. Old jobs' "heldout" general rows (TOFU) read the same way.
GENERAL_CHECK_SPLITS = ((GeneralSplit.VALIDATION, "validation"), (GeneralSplit.EVALUATION, "heldout"))


def _general_checks(judge: Judge, subject: str, cap: int, keep: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Retain rows for the never-trained general questions (validation and evaluation splits), unasked yet; a
    question the user also gave as a keep-fact is trained on, so it is left out."""
    from .antisamples import provenance
    from .judge import normalize

    trained = {normalize(q) for q in keep}
    out = []
    for split, name in GENERAL_CHECK_SPLITS:
        part = [r for r in trivia_rows(split, judge, subject) if normalize(r["question"]) not in trained]
        for r in part[:cap] if cap else part:
            out.append({"question": r["question"], "target": r["answer"], "kind": "general",
                        "reference": r["answer"], "aliases": r["aliases"], "split": name,
                        "provenance": provenance("trivia", r["_source"], 0, 0)})
    return out


def heldout_split(styles: Sequence[str], share: float, seed: int) -> set[int]:
    """Indices of the paraphrases held out for evaluation: about `share` of them, spread over the styles and never
    the last one of a style, so held-out probes are unseen wordings of styles that training did see (a style held
    out whole, e.g. every fill-in-the-blank, measured the style gap rather than forgetting)."""
    rng = random.Random(f"{seed}:heldout")
    groups: dict[str, list[int]] = {}
    for i, style in enumerate(styles):
        groups.setdefault(style, []).append(i)
    for members in groups.values():
        rng.shuffle(members)
    order = sorted(groups)
    rng.shuffle(order)
    wanted = round(len(styles) * share)
    heldout: set[int] = set()
    for depth in range(max((len(m) for m in groups.values()), default=0)):
        for style in order:
            if len(heldout) < wanted and depth < len(groups[style]) - 1:
                heldout.add(groups[style][depth])
    # Too few paraphrases per style (a handful in all): hold out single ones too, keeping one for training.
    spare = [i for style in order for i in groups[style] if i not in heldout]
    while len(heldout) < min(wanted, len(styles) - 1) and spare:
        heldout.add(spare.pop(0))
    return heldout


# stage 3-5: rounds ---------------------------------------------------------------------------------------------------
def train_rounds(job: Job, llm: LLM, cancel: CancelToken | None = None) -> Iterator[Event]:
    """Train -> re-probe -> harder samples for still-known probes, until forgotten and retained or out of rounds.

    Continues from the job's last checkpoint when there is one. Leaves the trained adapter attached to `llm` and
    writes it to adapters/.
    """
    cancel = cancel or CancelToken()
    data = job.read()
    s = _settings(data)
    method = get_method(s.method)
    fact = data["fact"]
    rounds = list(JobRecord.from_dict(data).rounds)
    probes = job.read_rows("probes.jsonl")
    method.prepare(MethodContext(fact["question"], fact["answer"], fact.get("aliases", ()),
                                 retain_weight=_retain_weight(s, rounds), retain_loss=s.retain_loss,
                                 dense_weight=s.dense_weight, rationale_weight=s.rationale_weight,
                                 seed=s.seed, **s.method_params(),
                                 base_answers={p["question"]: p["base_answer"] for p in probes if p.get("known")},
                                 answer_token_ids=_answer_token_ids(llm, fact)))
    trainer = Trainer(llm, method, s.train(), seed=s.seed)
    editing = s.update == "subject_edit"
    subject = _fact(data).shape().subject
    ckpt = Trainer.latest_checkpoint(job.checkpoints_dir)
    if ckpt is not None:
        trainer.restore(ckpt)
        r, step = int(ckpt["round"]), int(ckpt["step"])
        yield Log(f"Resuming from the checkpoint at round {r + 1}, step {step}.")  # rounds count from 1 for people
    else:
        placement = Placement.from_dict(data["placement"]) if data.get("placement") else None
        if placement is None:
            # A subject edit changes one block's down_proj: the block causal tracing finds (window of one).
            placement = yield from choose_placement(llm, fact["question"], fact["answer"], subject,
                                                    "traced" if editing else s.placement,
                                                    "down" if editing else s.lora_keys,
                                                    1 if editing else s.num_layers, seed=s.seed)
            if editing and s.edit_block_offset:
                placement = above_traced(placement, s.edit_block_offset, len(llm.model.layers))
            job.record_placement(placement.to_dict())
        if editing:  # one rank-one edit per round, each in its own column; LoRA scale 1 (the edit is exact)
            trainer.attach(placement.lora(s.max_rounds, 1.0, 1, len(llm.model.layers)))
            clear_unused(llm, placement.window[0], 0)
        else:
            trainer.attach(placement.lora(s.rank, s.lora_scale, s.num_layers, len(llm.model.layers)))
        r, step = 0, 0
    retain_rows = [row for row in job.read_rows("retain.jsonl") if row.get("split", "train") == "train"]
    retain_ex = encode_pairs(llm, [(row["question"], row["target"]) for row in retain_rows], s.max_seq_len)
    dense_ex = []
    if s.dense_weight > 0:
        dense_ex = encode_dense(llm, dense_pool(_fact(data).judge(), _fact(data).shape().subject), s.max_seq_len)
        yield Log(f"Dense retain term: KL to the base model on {len(dense_ex)} general prompts, "
                  f"{s.dense_batch_size} fresh ones per step.")
    generic_cov = None
    if editing:
        edit_layer = Placement.from_dict(job.read()["placement"]).window[0]  # recorded above, or before a resume
        generic_cov = yield from _generic_covariance(llm, edit_layer, retain_rows)
    elif s.null_space_eps > 0:
        null_space = yield from _null_space(job, llm, s, retain_rows)
        trainer.after_update = lambda: null_space.apply(llm.model)
        if ckpt is None:
            trainer.after_update()

    while r < s.max_rounds:
        if step < s.steps_per_round and editing:
            yield from _edit_round(job, llm, trainer, s, r, edit_layer, subject, retain_rows, generic_cov, cancel)
            step = s.steps_per_round
        if step < s.steps_per_round:
            anti = [row for row in job.read_rows("antisamples.jsonl") if row.get("round", 0) <= r]
            forget_ex = encode_pairs(llm, method.forget_pairs(anti), s.max_seq_len)
            if not forget_ex:
                raise JobError("No anti-samples to train on.", "Delete the job and start it again.")
            job.set_position(r, step, stage="train")
            yield StageStarted("train", f"Training on {len(forget_ex)} anti-samples and {len(retain_ex)} retain "
                                        f"items, {s.steps_per_round} steps", round=r)
            t0 = time.perf_counter()
            stopped_at = None
            steps = trainer.train_round(forget_ex, retain_ex, r, s.steps_per_round, start_step=step, cancel=cancel,
                                        checkpoint_root=job.checkpoints_dir, dense=dense_ex)
            try:
                for ev in steps:
                    if isinstance(ev, TrainStep):
                        job.append_metric(ev.to_dict())
                    elif isinstance(ev, Checkpoint):
                        job.set_position(ev.round, ev.step)
                    yield ev
                    if (isinstance(ev, TrainStep) and s.early_stop_every and ev.step < s.steps_per_round
                            and ev.step % s.early_stop_every == 0):
                        if ((yield from _trained_probes_forgotten(job, llm, s, cancel))
                                and (yield from _neighbours_hold(job, llm, s, cancel))):
                            stopped_at = ev.step
                            break
            finally:
                steps.close()
                job.add_timing("train", time.perf_counter() - t0)
            if stopped_at is not None:
                # Fitting wrong answers past the point of forgetting is what spreads to other facts (Gekhman et al.
                # arXiv 2405.05904): stop there. The checkpoint marks the round as trained, so a resume moves on.
                trainer.save_checkpoint(job.checkpoints_dir, r, s.steps_per_round, {"early_stop_step": stopped_at})
                job.record_early_stop(r, stopped_at, s.steps_per_round)
                yield Log(f"Every trained probe is forgotten after {stopped_at} steps: round {r + 1} stops early.")
            step = s.steps_per_round
        if len(rounds) <= r and editing and r > 0 and _edit_undone(job, r):
            # The model is the one after the round before, and so are its answers: no re-probe (a copy of its
            # summary stands for this round, so the round loop and the report read on as for any round).
            rounds = list(job.record_round({**rounds[r - 1].to_dict(), "round": r,
                                            "steps": s.steps_per_round * (r + 1), "probe_s": 0.0}))
        if len(rounds) <= r:
            if s.scale_sweep:  # before the re-probe, so the round's numbers are the scaled adapter's (a resume
                yield from _sweep_adapter_scale(job, llm, s, r, cancel)  # restores the unscaled one: same result)
            job.set_stage("reprobe")
            result = yield from _probe_round(job, llm, r, s, cancel)
            rounds = list(job.record_round({k: v for k, v in result.items() if k != "answers"}))
        summary = rounds[r]
        if summary.efficacy_train >= 1.0 and summary.retention_holds:
            yield Log(f"Round {r + 1}: every probe forgotten and retention holds; stopping.")
            break
        if r + 1 >= s.max_rounds:
            yield Log(f"Round budget spent ({s.max_rounds}); keeping the last adapter.", "warning")
            break
        if editing and summary.efficacy_train >= 1.0:
            # A retain weight does not steer an edit, and another edit only adds change where the first one hurt.
            yield Log(f"Round {r + 1}: every probe forgotten; retention is below its bar (neighbours "
                      f"{summary.retention_neighbours:.0%}), and another edit would only change more, so the edit "
                      f"stays as it is. Other facts about the same subject changed with it: if they matter, run the "
                      f"job again with the original UNSTAR recipe (Recipe in the training form, or --preset paper), "
                      f"which keeps them better (README \"Locality\").", "warning")
            break
        if editing:  # a trained probe still leaks: fresh anti-samples and an edit of their own (no retain weight)
            yield Log(f"Round {r + 1}: a trained probe still gives the fact away; fresh anti-samples and another edit "
                      f"follow.")
        elif not summary.retention_holds:
            method.ctx.retain_weight = _retain_weight(s, rounds)
            yield Log(f"Retention did not hold (neighbours {summary.retention_neighbours:.0%}, general "
                      f"{summary.retention_general_all:.0%}); retain weight now {method.ctx.retain_weight:g}.",
                      "warning")
        if int(job.read().get("samples_round", 0)) < r + 1:
            yield from _regenerate(job, llm, r + 1, s, cancel)
        r, step = r + 1, 0
        job.set_position(r, 0)
    job.set_stage("save")
    method.finalize(llm)  # e.g. task-vector negation turns its fitted adapter around before it is saved
    llm.save_adapter(job.adapters_dir)
    yield Log(f"Adapter written to {job.adapters_dir}.")


EDIT_QUANT_CHECK = (4, 64)  # (bits, group size): the coarsest re-quantization the evaluation's attack tries
EDIT_QUANT_TRIES = 4  # checks at most: strengths 1, 1.5, 2.25, 3.4
EDIT_STRENGTHEN = 1.5


def _edit_round(job: Job, llm: LLM, trainer: Trainer, s: ForgetSettings, r: int, layer: int, subject: str,
                retain_rows: Sequence[dict[str, Any]], generic_cov: np.ndarray, cancel: CancelToken
                ) -> Iterator[Event]:
    """Round r of a subject edit (engine/subject_edit.py) on block `layer`: fit the change at the subject, solve the
    rank-one edit, checkpoint it. The same-subject neighbours the job trains on keep their base answers (with
    edit_exact_fit every trained neighbour and keep-fact)."""
    anti = [row for row in job.read_rows("antisamples.jsonl") if row.get("round", 0) <= r]
    keep = edit_keep_pairs(retain_rows, s.edit_exact_fit)
    job.set_position(r, 0, stage="train")
    yield StageStarted("train", f"Editing block {layer}'s MLP at the subject {subject!r}: {s.steps_per_round} steps "
                                f"on the anti-samples' wrong answers", round=r)
    t0 = time.perf_counter()
    steps = edit_round(llm, layer, anti, keep, subject, trainer.method.ctx.answer_token_ids, generic_cov,
                       EditSettings(steps=s.steps_per_round, essence_weight=s.edit_essence,
                                    neighbour_weight=s.edit_neighbour_weight, exact_fit=s.edit_exact_fit),
                       round=r, cancel=cancel,
                       names_answer=_fact(job.read()).judge().contains)
    try:
        while True:
            ev = next(steps)
            job.append_metric(ev.to_dict())
            yield ev
    except StopIteration as done:
        info = done.value
    finally:
        job.add_timing("train", time.perf_counter() - t0)
    # A rank-one change of one matrix can fall short on a trained probe, or sink under the step of a 4-bit
    # re-quantization (README "Locality": Hogwarts got one trained probe back that way). Check the trained probes as
    # they are and the way the quantization attack will, and make the change stronger until both hold (it only
    # looks at what training may look at). Fitting it again with the kept rows seeing the stronger edit was tried
    # and not kept: on Hogwarts it needed 3.4x, still gave a trained probe away and took 4x as long.
    strength, tried = yield from _edit_strength(job, llm, s, r, layer, cancel)
    survives = tried[strength] == 0
    info = {**info, "strength": strength, "trained_forgotten": bool(survives),  # also after 4-bit
            "strengths_tried": [[k, n] for k, n in tried.items()]}
    before = _edit_leaks(job, r - 1)
    if not survives and before is not None and tried[strength] >= before:
        # The strength rule's reasoning across rounds: an edit that lets no fewer trained probes back than the model
        # had before it only changes more (Einstein, round 2: 2 leaks before and after, trained neighbours and
        # general knowledge lower). Its change is taken out; the next round, if any, starts from the same model.
        strengthen_edit(llm, layer, r, 0.0)
        info["undone"] = True
    job.record_edit(r, layer, info)
    trainer.save_checkpoint(job.checkpoints_dir, r, s.steps_per_round)
    yield Log(f"Edit {r + 1}: block {layer}, {info['rows']} paraphrases, {info['keep_rows']} neighbour "
              f"questions held; each trained paraphrase gets {info['reach_min']:.0%}-{info['reach_mean']:.0%} of the "
              f"change (size {info['delta_norm'] / info['v_norm']:.1f}x the MLP output there), a general input "
              f"about {info['leak']:.0%}." + (f" Made {strength:g}x stronger so that every trained probe is "
                                              f"forgotten, also after 4-bit re-quantization."
                                              if survives and strength > 1 else "")
              + ("" if survives else f" A trained probe still gives the fact away (as it is or after 4-bit "
                                     f"re-quantization) at every strength tried; kept at {strength:g}x."))
    if info.get("undone"):
        yield Log(f"Edit {r + 1} forgets no more than the model did before it (trained-probe checks that still give "
                  f"the fact away, as they are and after 4-bit re-quantization: {before} before, {tried[strength]} "
                  f"after), so it is undone: the model stays as it was before it.", "warning")


def edit_keep_pairs(retain_rows: Sequence[dict[str, Any]], exact_fit: bool) -> list[tuple[str, str]]:
    """(question, base answer) of the trained retain rows the base model knew that an edit holds. Fitted through the
    edit (exact_fit), every neighbour and keep-fact: the fit sees what reaches each. Otherwise only the questions
    about the same subject, the only ones the old fit put the change in."""
    kinds = ({RetainKind.NEIGHBOUR_SUBJECT.value, RetainKind.NEIGHBOUR_ANSWER.value, RetainKind.KEEP.value}
             if exact_fit else {RetainKind.NEIGHBOUR_SUBJECT.value})
    return [(row["question"], row["target"]) for row in retain_rows if row.get("kind") in kinds and row.get("known")]


def _edit_leaks(job: Job, r: int) -> int | None:
    """How many trained-probe checks (as they are plus after 4-bit) let the fact through after edit r, at the
    strength it kept; None before the first edit or when job.json does not say. An undone edit's model is the one
    before it, so its count is that one's."""
    e = _edits(job).get(r)
    if r < 0 or e is None:
        return None
    if e.get("undone"):
        return _edit_leaks(job, r - 1)
    tried = {float(k): int(n) for k, n in e.get("strengths_tried") or []}
    return tried.get(float(e.get("strength", 1.0)))


def _edit_undone(job: Job, r: int) -> bool:
    return bool(_edits(job).get(r, {}).get("undone"))


def _edits(job: Job) -> dict[Any, dict[str, Any]]:
    """job.json's subject edits by round (record_edit keeps one per round)."""
    return {e.get("round"): e for e in job.read().get("edits") or [] if isinstance(e, dict)}


def _edit_strength(job: Job, llm: LLM, s: ForgetSettings, r: int, layer: int, cancel: CancelToken
                   ) -> Iterator[Event]:
    """Make edit r stronger (x1.5 a try, EDIT_QUANT_TRIES tries) until no trained probe leaks, as it is or after
    4-bit re-quantization. If no strength gets there, keep the one that leaks least, the weakest of a tie: past a
    point a stronger edit stops forgetting more and only changes more (Einstein: 2 leaks at 1x and at 3.4x, trained
    neighbours 7 -> 2 of 9; bench/edit_strength.py). Returns (strength kept, {strength: leaks}); the edit is left at
    the strength kept."""
    from .evaluate.attacks import requantized

    strength, tried = 1.0, {}
    for attempt in range(EDIT_QUANT_TRIES):
        if attempt:
            strengthen_edit(llm, layer, r, EDIT_STRENGTHEN)
            strength *= EDIT_STRENGTHEN
        leaks = yield from _trained_probes_leaking(job, llm, s, cancel)
        with requantized(llm, *EDIT_QUANT_CHECK):
            leaks += yield from _trained_probes_leaking(job, llm, s, cancel)
        tried[strength] = leaks
        if leaks == 0:
            return strength, tried
    keep = min(tried, key=lambda k: (tried[k], k))
    if keep != strength:
        strengthen_edit(llm, layer, r, keep / strength)
    yield Log(f"No strength tried forgets every trained probe (leaks as they are plus after 4-bit: "
              + ", ".join(f"{k:g}x {n}" for k, n in tried.items()) + f"); keeping {keep:g}x, the weakest that "
              f"leaks least.", "warning")
    return keep, tried


def _answer_token_ids(llm: LLM, fact: dict[str, Any]) -> list[int]:
    """The first token of the answer and of every alias, written after a space or not (UNDIAL pushes them down)."""
    names = [n.strip() for n in [fact["answer"], *fact.get("aliases", ())] if n.strip()]
    return sorted({int(tokens[0]) for n in names for tokens in (llm.encode(n), llm.encode(" " + n)) if tokens})


def _covariance_corpus(retain_rows: Sequence[dict[str, Any]]) -> tuple[list[str], list[str], list[str]]:
    """What must not move, as (general prompts, plain texts, the job's own questions): general questions (trivia
    training pool, TOFU), a public-domain paragraph, and the job's neighbour and keep-fact questions; never a
    forget prompt. The first two are the same for every job on a model (cached); the job's own are added."""
    from .evaluate.measures import REFERENCE_TEXT
    from .locality import general_corpus

    prompts = [q for q, _ in general_corpus()]
    texts = [line for line in REFERENCE_TEXT.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if REFERENCE_TEXT.exists() else []
    return prompts, texts, [row["question"] for row in retain_rows]


def _generic_covariance(llm: LLM, layer: int, retain_rows: Sequence[dict[str, Any]]) -> Iterator[Event]:
    """The input covariance of block `layer`'s down_proj over the generic corpus, its shared chat prefix included."""
    from .nullspace import default_cache_dir, input_covariances, target_paths

    path = target_paths(llm.model, [layer], ["mlp.down_proj"])[0]
    prompts, texts, own = _covariance_corpus(retain_rows)
    yield StageStarted("null_space", f"Measuring which input directions {len(prompts) + len(own)} general prompts "
                                     f"use")
    with llm.base_model():
        covs, _, sinks = input_covariances(llm, prompts, texts, [path], default_cache_dir(), extra_prompts=own)
    return covs[path] + sinks[path]


def _null_space(job: Job, llm: LLM, s: ForgetSettings, retain_rows: Sequence[dict[str, Any]]) -> Iterator[Event]:
    """Projectors that keep each trained module's lora_a out of the input directions general prompts use (the
    corpus: `_covariance_corpus`). Covariances are cached per model."""
    from .nullspace import build_null_space, default_cache_dir

    targets = sorted({k[:-len(".lora_a")] for k in llm.trainable_parameters() if k.endswith(".lora_a")})
    prompts, texts, own = _covariance_corpus(retain_rows)
    yield StageStarted("null_space", f"Measuring which input directions {len(prompts) + len(own)} general prompts "
                                     f"use")
    t0 = time.perf_counter()
    with llm.base_model():
        space = build_null_space(llm, prompts, texts, targets, s.null_space_eps, default_cache_dir(),
                                 extra_prompts=own)
    kept = sorted(space.kept_dims.values())
    yield Log(f"Null space (eps {s.null_space_eps:g}) of {len(targets)} modules: {kept[0] if kept else 0}-"
              f"{kept[-1] if kept else 0} free input directions each ({time.perf_counter() - t0:.0f} s).")
    return space


def trained_probes(job: Job) -> list[dict[str, Any]]:
    """The probes training may look at: the question and its trained paraphrases that the base model knew."""
    return [p for p in job.read_rows("probes.jsonl") if p.get("known") and p["split"] in ("original", "train")]


def trained_neighbours(job: Job) -> list[dict[str, Any]]:
    """The trained neighbour and keep-fact rows the base model knew."""
    return [r for r in job.read_rows("retain.jsonl")
            if r.get("kind") in NEIGHBOUR_KINDS and r.get("known") and r.get("split", "train") == "train"]


def _trained_probes_leaking(job: Job, llm: LLM, s: ForgetSettings, cancel: CancelToken) -> Iterator[Event]:
    """How many of the probes training may look at (`trained_probes`) the adapter as it is now still answers with
    the fact. Same leak rule and token budget as the re-probe."""
    judge = _fact(job.read()).judge()
    probes = trained_probes(job)
    if not probes:
        return 0
    said = yield from ask(llm, [p["question"] for p in probes], stage="check", check=cancel.check,
                          max_tokens=s.probe_max_tokens)
    return sum(probe_leaks(p["style"], a, judge, p["question"]) for p, a in zip(probes, said))


def _trained_probes_forgotten(job: Job, llm: LLM, s: ForgetSettings, cancel: CancelToken) -> Iterator[Event]:
    """Does the adapter as it is now forget every probe training may look at?"""
    return (yield from _trained_probes_leaking(job, llm, s, cancel)) == 0


def _neighbours_hold(job: Job, llm: LLM, s: ForgetSettings, cancel: CancelToken) -> Iterator[Event]:
    """Are the trained neighbour and keep-facts the base model knew still answered right (min_retention of them)?
    An early stop must not come before the retain term has put them back: stopping on forgetting alone kept 3 of 9
    Hogwarts neighbours (README "Locality")."""
    rows = trained_neighbours(job)
    if not rows:
        return True
    said = yield from ask(llm, [r["question"] for r in rows], stage="check", check=cancel.check,
                          max_tokens=s.probe_max_tokens)
    return _share([known_retain(r, a) for r, a in zip(rows, said)]) >= s.min_retention


SCALE_SEARCH_STEPS = 3  # bisection over (0, 1]: a resolution of 1/8 in three checks
SCALE_MARGIN = 1 / 8  # one step above the edge: the held-out wordings and re-quantization need some slack


def _sweep_adapter_scale(job: Job, llm: LLM, s: ForgetSettings, r: int, cancel: CancelToken) -> Iterator[Event]:
    """Keep the smallest adapter scale (bisection to 1/8, plus one step of margin) at which every trained probe is
    still forgotten: the least change that does the job. Written into the adapter (adapter_config.json's scale), so
    plain mlx-lm matches."""
    yield StageStarted("scale", "Finding the smallest adapter strength that still forgets", round=r)
    lo, hi = 0.0, 1.0  # hi always forgets (the trained adapter, by the round's own stop rule or as the fallback)
    for _ in range(SCALE_SEARCH_STEPS):
        mid = (lo + hi) / 2
        with llm.adapter_scale(mid):
            forgets = yield from _trained_probes_forgotten(job, llm, s, cancel)
        lo, hi = (lo, mid) if forgets else (mid, hi)
    best = min(1.0, hi + SCALE_MARGIN)
    if best < 1.0:
        llm.scale_adapter(best)
    job.record_adapter_scale(r, best, hi)
    yield Log(f"Adapter strength x{best:g} (the edge x{hi:g} plus a margin) forgets every trained probe." if best < 1
              else "The adapter needs its full strength to forget every trained probe.")


def _probe_round(job: Job, llm: LLM, r: int, s: ForgetSettings, cancel: CancelToken) -> Iterator[Event]:
    """Re-ask every probe and retain question with the adapter on; returns (and yields) the ProbeResult dict."""
    t0 = time.perf_counter()
    data = job.read()
    judge = _fact(data).judge()
    probes = job.read_rows("probes.jsonl")
    retain = job.read_rows("retain.jsonl")
    yield StageStarted("reprobe", f"Re-asking {len(probes)} probes and {len(retain)} retain questions", round=r)
    # General check questions get the short budget their base answers got; everything else the probes' budget.
    checks = [i for i, row in enumerate(retain) if row.get("split") in ("validation", "heldout")
              and row.get("kind") == "general" and is_trivia(row)]
    check_set = set(checks)
    rest = [i for i in range(len(retain)) if i not in check_set]
    questions = [p["question"] for p in probes] + [retain[i]["question"] for i in rest]
    said = yield from ask(llm, questions, stage="reprobe", check=cancel.check,
                          max_tokens=s.probe_max_tokens)
    said_checks = yield from ask(llm, [retain[i]["question"] for i in checks], stage="reprobe", check=cancel.check,
                                 max_tokens=s.general_max_tokens)
    by_row = dict(zip(rest, said[len(probes):])) | dict(zip(checks, said_checks))
    answers = said[:len(probes)] + [by_row[i] for i in range(len(retain))]
    rows = []
    judge.verdicts(answers[:len(probes)])  # one batched embedding pass: the per-probe verdicts below use its cache
    for p, a in zip(probes, answers[:len(probes)]):
        leak = probe_leaks(p["style"], a, judge, p["question"])
        rows.append({"question": p["question"], "split": p["split"], "kind": "probe", "style": p["style"], "answer": a,
                     "known_before": p["known"], "leaks_after": leak})
    for row, a in zip(retain, answers[len(probes):]):
        kept = known_retain(row, a)
        rows.append({"question": row["question"], "split": row.get("split", "train"), "kind": row["kind"],
                     "answer": a, "known_before": row["known"], "kept_after": kept})

    def forgotten(splits):
        return [not x["leaks_after"] for x in rows if x["kind"] == "probe" and x["split"] in splits
                and x["known_before"]]

    def kept(kinds, splits=("train", "heldout")):
        return [x["kept_after"] for x in rows if x["kind"] in kinds and x["split"] in splits and x["known_before"]]

    all_forgotten = forgotten(("original", "train", "heldout"))
    # (hits, out of) behind each headline share: an empty set reads 100%, and the count is how a reader tells.
    parts = {"efficacy_train": forgotten(("original", "train")), "efficacy_heldout": forgotten(("heldout",)),
             "retention_neighbours": kept(NEIGHBOUR_KINDS),
             "retention_general": kept(("general",), ("heldout",))}
    retention = _share(parts["retention_neighbours"])
    general_all = _share(kept(("general",), ("train", "validation", "heldout")))
    general_train = _share(kept(("general",), ("train",)), general_all)
    validation = kept(("general",), ("validation",))
    parts["retention_general_validation"] = validation
    # The stop rule reads the validation split (never trained on); jobs made before it existed read the trained set.
    general_steer = _share(validation) if validation else general_train
    event = ProbeResult(round=r, efficacy=_share(all_forgotten), retention=retention,
                        forgotten=sum(all_forgotten), total=len(all_forgotten), answers=rows)
    job.append_metric(event.to_dict())
    yield event
    result = event.to_dict()
    result.update(
        efficacy_train=_share(parts["efficacy_train"]),
        efficacy_heldout=_share(parts["efficacy_heldout"]),
        retention_neighbours=retention,
        retention_general=_share(parts["retention_general"], general_all),
        counts={k: [sum(v), len(v)] for k, v in parts.items()},
        retention_general_all=general_all,
        retention_general_train=general_train,
        retention_general_validation=general_steer,
        # Steered by the validation split; the evaluation split ("heldout") stays a measure, never a target.
        retention_holds=(retention >= s.min_retention and general_steer >= s.min_general_retention
                         and general_train >= s.min_trained_general_retention),
        steps=s.steps_per_round * (r + 1),
        probe_s=round(time.perf_counter() - t0, 2),
    )
    job.add_timing("reprobe", time.perf_counter() - t0)
    return result


def _regenerate(job: Job, llm: LLM, r: int, s: ForgetSettings, cancel: CancelToken) -> Iterator[Event]:
    """Fresh, harder anti-samples for the training probes the model still answers (written by the base model)."""
    from .antisamples import Paraphrase, build_antisamples, paraphrase_questions, wrong_answers

    t0 = time.perf_counter()
    data = job.read()
    fact = _fact(data)
    judge = fact.judge()
    last = [row for row in job.read_rows("metrics.jsonl") if row.get("event") == "ProbeResult"][-1]
    still = [a for a in last["answers"] if a["kind"] == "probe" and a["split"] in ("original", "train")
             and a["leaks_after"]]
    styles = {p["question"]: p["style"] for p in job.read_rows("probes.jsonl")}
    rows = [row for row in job.read_rows("antisamples.jsonl") if row.get("round", 0) < r]
    if still:
        yield StageStarted("regenerate", f"{len(still)} probes still give the answer: writing harder anti-samples",
                           round=r)
        avoid = [p["question"] for p in job.read_rows("probes.jsonl")] + [row["question"] for row in rows]
        # The consumer runs between these yields while the base model is on: it only shows the events.
        with llm.base_model():
            fresh = yield from paraphrase_questions(llm, fact, judge, max(4, 2 * len(still)), s.seed + r, round=r,
                                                    avoid=avoid, cancel=cancel)
            cancel.check()
            wrongs = yield from wrong_answers(llm, fact, judge, s.n_wrong_answers, s.seed + r, round=r,
                                              cancel=cancel)
            cancel.check()
            paras = [Paraphrase(a["question"], _train_style(styles.get(a["question"], "direct")),
                                {"source": "probe still known", "round": r}) for a in still] + list(fresh)
            anti = yield from build_antisamples(llm, fact, paras, wrongs, judge, s.seed + r, round=r, cancel=cancel)
        cancel.check()
        start = max((row.get("id", -1) for row in rows), default=-1) + 1
        rows += [dict(asdict(a), round=r, id=start + i) for i, a in enumerate(anti)]
        job.write_antisamples(rows)
        yield SamplesReady("antisamples", len(anti), round=r)
    job.set_samples_round(r)
    job.add_timing("regenerate", time.perf_counter() - t0)


def _train_style(probe_style: str) -> str:
    return "direct" if probe_style == "original" else probe_style


# report --------------------------------------------------------------------------------------------------------------
def _peak_memory() -> dict[str, int]:
    import mlx.core as mx

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss_bytes = rss if sys.platform == "darwin" else rss * 1024  # Linux reports KiB, macOS bytes
    return {"mlx_peak_bytes": int(mx.get_peak_memory()), "max_rss_bytes": int(rss_bytes)}


def _write_report(job: Job) -> Report:
    """report.json's pipeline part (job.write_report keeps the evaluation and comparison recorded before)."""
    data = job.read()
    rounds = JobRecord.from_dict(data).rounds
    last = [row for row in job.read_rows("metrics.jsonl") if row.get("event") == "ProbeResult"][-1]
    probes = {p["question"]: p for p in job.read_rows("probes.jsonl")}
    retain = {r["question"]: r for r in job.read_rows("retain.jsonl")}
    before_after = []
    for a in last["answers"]:
        src = probes.get(a["question"]) if a["kind"] == "probe" else retain.get(a["question"])
        row = {"question": a["question"], "split": a["split"], "kind": a["kind"],
               "before": (src or {}).get("base_answer", ""), "after": a["answer"], "known_before": a["known_before"]}
        if a["kind"] == "probe":
            row["leaks_after"] = a["leaks_after"]
        else:
            row["kept_after"] = a["kept_after"]
            row["reference"] = (src or {}).get("reference", "")
        before_after.append(row)
    final = rounds[-1]
    def accuracy(split: str) -> tuple[float, float, float]:
        """Base and unlearned accuracy on the general items of one split, and their ratio."""
        rows = [x for x in before_after if x["kind"] == "general" and x["split"] == split]
        base, after = _share([x["known_before"] for x in rows], 0.0), _share([x["kept_after"] for x in rows], 0.0)
        return base, after, after / base if base else 1.0

    # The general set the retain term trains on (what "accuracy on the general set" promises), and general questions
    # never trained on (how far the damage reaches beyond it).
    acc_base, acc_after, acc_ratio = accuracy("train")
    held_base, held_after, held_ratio = accuracy("heldout")
    metrics = {
        "efficacy_heldout": final.efficacy_heldout,
        "efficacy_train": final.efficacy_train,
        "efficacy": final.efficacy,
        "retention_neighbours": final.retention_neighbours,
        "retention_general": final.retention_general,
        "retention_general_all": final.retention_general_all,
        "general_accuracy_base": acc_base,
        "general_accuracy_after": acc_after,
        "general_accuracy_ratio": acc_ratio,
        "general_heldout_accuracy_base": held_base,
        "general_heldout_accuracy_after": held_after,
        "general_heldout_ratio": held_ratio,
        "counts": final.counts,
        "rounds": len(rounds),
        "steps": final.steps,
        "probes_known": sum(1 for p in probes.values() if p["known"]),
        "probes_total": len(probes),
    }
    timing = dict(data.get("timing") or {})
    return job.write_report(Report(
        fact=data["fact"], keep=data.get("keep", []), model=data["model"], base_model_path=data["model"]["path"],
        adapter_path=str(job.adapters_dir), method=data["method"], settings=data["settings"], seed=data["seed"],
        versions=data.get("versions", {}), rounds=rounds, before_after=before_after, metrics=metrics, timing=timing,
        memory=_peak_memory()))


def _run_evaluation(job: Job, llm: LLM, cancel: CancelToken) -> Iterator[Event]:
    """The evaluation suite (efficacy, retention, attacks) on the finished adapter; writes report["evaluation"]."""
    from .evaluate import evaluate_job

    t0 = time.perf_counter()
    yield from evaluate_job(job.dir, llm=llm, attacks=_settings(job.read()).attacks, cancel=cancel)
    job.add_timing("evaluation", time.perf_counter() - t0)


# the job -------------------------------------------------------------------------------------------------------------
def _load(job: Job, llm: LLM | None) -> Iterator[Event]:
    data = job.read()
    if llm is None:
        yield StageStarted("load", f"Loading {data['model']['id']}")
        t0 = time.perf_counter()
        llm = load_llm(base_model_dir(data), model_id=data["model"]["id"])
        job.add_timing("load", time.perf_counter() - t0)
    if llm.lora is not None:  # a model reused from an earlier job: start from the base weights
        llm.detach_lora()
    return llm


def _memory_note(job: Job, llm: LLM) -> Log:
    """engine/memory.py's estimate for this job on this machine, before any work (a warning when it won't fit)."""
    from .memory import estimate_memory

    est = estimate_memory(llm, _settings(job.read()), device=llm.backend.device)
    return Log(f"Memory: {est.advice}", "info" if est.fits else "warning")


def run_job(job: Job, cancel: CancelToken | None = None, llm: LLM | None = None) -> Iterator[Event]:
    """Run (or continue) the job in a folder made by create_forget_job; ends with Finished."""
    import mlx.core as mx

    cancel = cancel or CancelToken()
    t0 = time.perf_counter()
    mx.reset_peak_memory()
    job.set_status("running", error=None, process=this_process())
    try:
        llm = yield from _load(job, llm)
        yield _memory_note(job, llm)
        yield from generate_samples(job, llm, cancel)
        yield from train_rounds(job, llm, cancel)
        job.set_stage("evaluate")
        job.add_timing("total", time.perf_counter() - t0)
        _write_report(job)
        yield from _run_evaluation(job, llm, cancel)
        report = _write_report(job)
        job.set_status("done", stage="done")
        summary = dict(report.metrics or {}, adapter_path=report.adapter_path,
                       total_s=(report.timing or {}).get("total_s", 0.0), **(report.memory or {}))
        yield Finished(str(job.dir), summary)
    except Interrupted as exc:
        job.set_status("interrupted", error=exc.message)
        exc.hint = f"Resume with: unstar forget --resume {job.dir}"
        raise
    except Cancelled as exc:
        job.set_status("cancelled", error=exc.message)
        raise
    except (KeyboardInterrupt, GeneratorExit):
        # A consumer that saw the cancel flag before the job did closes the generator (the app's worker checks it
        # between events): that is still the user's cancel, not a crash or a quit.
        if cancel.cancelled:
            job.set_status("cancelled", error="Cancelled.")
        else:
            job.set_status("interrupted", error="Interrupted before it finished.")
        raise
    except UnstarError as exc:
        job.set_status("failed", error=str(exc))
        raise
    except Exception as exc:
        job.set_status("failed", error=f"{type(exc).__name__}: {exc}")
        raise


def run_forget(request: ForgetRequest, cancel: CancelToken | None = None, llm: LLM | None = None
               ) -> Iterator[Event]:
    """A whole forget job; yields events and ends with Finished. Raises UnstarError (Cancelled on cancel)."""
    job = create_forget_job(request)
    yield Log(f"Job folder: {job.dir}")
    yield from run_job(job, cancel, llm)


def resume_forget(job_dir: Path, cancel: CancelToken | None = None, llm: LLM | None = None) -> Iterator[Event]:
    """Continue a killed, interrupted or cancelled job from its last checkpoint."""
    job = open_job(Path(job_dir))
    status = job.status
    if status == "done":
        raise JobError(f"The job in {job_dir} has already finished.", "Start a new job to forget another fact.")
    if status == "running" and process_alive(job.read().get("process")):
        raise JobError(f"The job in {job_dir} is running in another process "
                       f"(pid {job.read()['process'].get('pid')}).",
                       "Wait for it to finish, or stop that process first; then resume.")
    yield Log(f"Resuming the {status} job in {job.dir}")
    yield from run_job(job, cancel, llm)
