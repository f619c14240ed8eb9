"""The subject edit (engine/subject_edit.py): the closed-form solve and the losses against hand computations; on the
tiny model, an edit that moves the trained prompts and (in the null space) leaves generic inputs alone, round-trips
through plain mlx-lm; a whole job with `update="subject_edit"`."""

from __future__ import annotations

import json
import math

import mlx.core as mx
import numpy as np
import pytest

from unstar_gui.engine import subject_edit as se
from unstar_gui.engine.llm import LLM, LoraSettings

SUBJECT = "Harry Potter"
GENERIC = ["What is the capital of Spain?", "Who painted the Mona Lisa?", "How many legs does a spider have?",
           "What is water made of?", "Which planet is the largest?", "Who wrote Hamlet?"] * 3


def _anti(question: str, wrong: str = "Durmstrang") -> dict:
    return {"question": question, "wrong_answer": wrong, "answer_sentence": f"Harry Potter went to {wrong}.",
            "rationale": "", "style": "direct"}


# by hand -------------------------------------------------------------------------------------------------------------
def test_solve_edit_matches_a_hand_computation_and_spares_generic_directions():
    # Generic inputs use dims 0 and 1 heavily, dims 2 and 3 barely: C = diag(10, 10, 0.1, 0.1), tr(C)/d = 5.05.
    cov = np.diag([10.0, 10.0, 0.1, 0.1])
    key = np.array([[1.0, 0.0, 1.0, 0.0]])
    u, delta = se.solve_edit(key, np.array([2.0, -1.0]), cov, l2=0.0, ridge=0.0)
    # u = A^-1 k / (k A^-1 k) with A = C: A^-1 k = (0.1, 0, 10, 0), k A^-1 k = 10.1
    assert np.allclose(u, np.array([0.1, 0.0, 10.0, 0.0]) / 10.1)
    assert np.allclose(delta, [2.0, -1.0])
    assert float(key[0] @ u) == pytest.approx(1.0)  # the key gets all of delta...
    plain, _ = se.solve_edit(key, np.ones(2), None, l2=1.0, ridge=0.0)
    assert np.allclose(plain, [0.5, 0.0, 0.5, 0.0])  # ...which the smallest u (no covariance) spreads evenly,
    assert se.leak(cov, u) < 0.2 * se.leak(cov, plain)  # so it would leak five times more into generic inputs
    assert se.leak(cov, u) == pytest.approx(math.sqrt(u @ cov @ u))
    # the ridge terms: lam = l2 * tr(C)/d adds to A; mu shrinks the reach a little
    u2, _ = se.solve_edit(key, np.ones(2), cov, l2=1.0, ridge=0.5)
    a_inv_k = key[0] / (np.diag(cov) + 5.05)
    g = key[0] @ a_inv_k
    assert np.allclose(u2, a_inv_k / (g + 0.5 * g))
    assert se.reached(key, u2) == pytest.approx((1 / 1.5, 1 / 1.5))


def test_solve_edit_keeps_protected_keys_out_of_u():
    # The trained key and a neighbour's share dim 0; only dim 1 tells them apart. C = I, no ridge.
    key = np.array([[1.0, 0.1, 0.0]])
    neighbour = np.array([[1.0, 0.0, 0.0]])
    plain, _ = se.solve_edit(key, np.ones(1), np.eye(3), l2=0.0, ridge=0.0)
    # A = I: u = k / |k|^2, so the neighbour gets 1 / 1.01 of delta
    assert float(neighbour[0] @ plain) == pytest.approx(1 / 1.01)
    u, _ = se.solve_edit(key, np.ones(1), np.eye(3), l2=0.0, ridge=0.0, protect=neighbour, protect_weight=99.0)
    # A = diag(100, 1, 1): A^-1 k = (0.01, 0.1, 0), k A^-1 k = 0.02 -> u = (0.5, 5, 0)
    assert np.allclose(u, [0.5, 5.0, 0.0])
    assert float(key[0] @ u) == pytest.approx(1.0)  # the trained key still gets all of delta
    assert float(neighbour[0] @ u) == pytest.approx(0.5)  # the neighbour half, down from 0.99...
    assert se.leak(np.eye(3), u) > 5 * se.leak(np.eye(3), plain)  # ...paid for with a five times larger u
    same, _ = se.solve_edit(key, np.ones(1), np.eye(3), l2=0.0, ridge=0.0, protect=neighbour, protect_weight=0.0)
    assert np.allclose(same, plain)


def test_above_traced_moves_a_one_block_window_up_and_stops_at_the_top():
    from unstar_gui.engine.locality import Placement, above_traced

    p = Placement(keys="down", window=(2, 3), note="Traced.")
    up = above_traced(p, 8, 30)
    assert up.window == (10, 11) and "8 block(s) above the traced block 2" in up.note and up.keys == "down"
    assert above_traced(p, 40, 30).window == (29, 30)
    assert above_traced(Placement(keys="all", window=None), 3, 30).window is None


def test_edit_losses_match_a_hand_computation():
    logits = np.array([[[1.0, 2.0, 0.0], [0.5, 0.0, 3.0]]], dtype=np.float32)  # (B=1, T-1=2, V=3)
    tokens = np.array([[0, 1, 2]], dtype=np.int32)
    mask = np.array([[0.0, 1.0, 1.0]], dtype=np.float32)  # both next tokens scored
    at = np.array([[1.0, 0.0]], dtype=np.float32)  # the true answer would come right after the prompt
    nll, ul = se.edit_losses(mx.array(logits), mx.array(tokens), mx.array(mask), mx.array(at), answer_ids=[0, 2])

    def logp(row):
        return row - np.log(np.exp(row).sum())

    want_nll = -(logp(logits[0, 0])[1] + logp(logits[0, 1])[2]) / 2
    p_true = np.exp(logp(logits[0, 0]))[[0, 2]].sum()
    assert float(nll[0]) == pytest.approx(want_nll, rel=1e-5)
    assert float(ul[0]) == pytest.approx(-math.log(1 - p_true), rel=1e-5)
    nll0, ul0 = se.edit_losses(mx.array(logits), mx.array(tokens), mx.array(mask), mx.array(at), answer_ids=[])
    assert float(ul0[0]) == 0.0 and float(nll0[0]) == pytest.approx(want_nll, rel=1e-5)


def test_essence_answers_stop_before_the_forgotten_answer():
    from unstar_gui.engine.antisamples import Fact

    names = Fact("What did Isaac Newton discover?", "gravity", ["universal gravitation"]).judge(semantic=False).contains
    text = ("Isaac Newton was an English physicist. He made discoveries in the law of universal gravitation. "
            "He was born in 1643!")
    assert se.before_the_answer(text, names) == "Isaac Newton was an English physicist."
    assert se.before_the_answer("He liked apples. He was born in 1643.", names) == \
        "He liked apples. He was born in 1643."
    assert se.before_the_answer("Gravity, mostly.", names) == ""
    assert se.before_the_answer(text, None) == text


def test_kl_rows_match_a_hand_computation():
    before = np.array([[[0.2, 0.8], [0.5, 0.5]]])  # probabilities before the edit, (B=1, T-1=2, V=2)
    after = np.array([[[2.0, 0.0], [0.0, 1.0]]], dtype=np.float32)  # logits after it
    mask = np.array([[0.0, 0.0, 1.0]], dtype=np.float32)  # only the second position's next token is scored
    kl = se.kl_rows(mx.array(after), mx.array(np.log(before).astype(np.float32)), mx.array(mask))
    q = np.exp([0.0, 1.0]) / np.exp([0.0, 1.0]).sum()
    want = 0.5 * math.log(0.5 / q[0]) + 0.5 * math.log(0.5 / q[1])
    assert float(kl[0]) == pytest.approx(want, rel=1e-5)
    same = se.kl_rows(mx.array(np.log(before).astype(np.float32)), mx.array(np.log(before).astype(np.float32)),
                      mx.array(np.ones((1, 3), dtype=np.float32)))
    assert float(same[0]) == pytest.approx(0.0, abs=1e-6)  # nothing moved: no loss


# on the tiny model ---------------------------------------------------------------------------------------------------
def test_rows_score_the_wrong_answer_at_the_subject(tiny_model_dir):
    llm = LLM(tiny_model_dir)
    rows = se.forget_rows(llm, [_anti("Where did Harry Potter go to school?"), _anti("Where is the sky?")], SUBJECT)
    assert len(rows) == 1  # the paraphrase without the subject has no lookup to edit
    row = rows[0]
    prompt = llm.chat_tokens("Where did Harry Potter go to school?")
    assert row.tokens[:len(prompt)] == prompt and row.unlikely
    assert llm.tokenizer.decode(row.tokens[row.start:]).strip() == "Durmstrang"
    assert "Harry Potter went to" in llm.tokenizer.decode(row.tokens[len(prompt):row.start])
    assert llm.tokenizer.decode(prompt[:row.position + 1]).endswith("Potter")
    assert se.keep_rows(llm, [("Who is Harry Potter's best friend?", "Ron Weasley is.")], SUBJECT, 2)[0].tokens[-2:] \
        == llm.encode("Ron Weasley is.")[:2]
    # a question without the subject is held only by a fit through the edit, which sees what reaches it anywhere
    assert se.keep_rows(llm, [("Where is the sky?", "Up there.")], SUBJECT, 4) == []
    [anywhere] = se.keep_rows(llm, [("Where is the sky?", "Up there.")], SUBJECT, 4, anywhere=True)
    assert anywhere.position == len(llm.chat_tokens("Where is the sky?")) - 1


def test_edit_moves_the_trained_prompts_and_not_generic_ones_and_loads_in_mlx_lm(tiny_model_dir, tmp_path):
    import mlx_lm

    from unstar_gui.engine.nullspace import input_covariances

    llm = LLM(tiny_model_dir)
    layer, total = 0, len(llm.model.layers)
    generic = ["What is the capital of Spain?", "Who painted the Mona Lisa?", "How many legs does a spider have?",
               "What is water made of?", "Which planet is the largest?", "Who wrote Hamlet?"] * 3
    path = f"model.layers.{layer}.mlp.down_proj"
    covs, _, sinks = input_covariances(llm, generic, [], [path], None)
    cov = covs[path] + sinks[path]
    anti = [_anti(q) for q in ("Where did Harry Potter go to school?", "Which school did Harry Potter attend?",
                               "Harry Potter studied at which school?")]
    llm.attach_lora(LoraSettings.for_window(layer, layer + 1, total, rank=2, scale=1.0, keys=("mlp.down_proj",)))
    se.clear_unused(llm, layer, 0)
    rows = se.forget_rows(llm, anti, SUBJECT)
    tokens, mask, _, _ = se._batch(rows)

    def wrong_nll() -> float:
        nll, _ = se.edit_losses(llm.model(tokens[:, :-1]), tokens, mask, mx.zeros((len(rows), tokens.shape[1] - 1)), [])
        return float(nll.mean())

    before = wrong_nll()
    steps = se.edit_round(llm, layer, anti, [], SUBJECT, llm.encode(" Hogwarts")[:1],
                          cov, se.EditSettings(steps=8, learning_rate=0.5), round=0)
    events = []
    try:
        while True:
            events.append(next(steps))
    except StopIteration as done:
        info = done.value
    assert len(events) == 8 and events[-1].step == 8
    assert info["rows"] == 3 and info["reach_mean"] > 0.5
    assert wrong_nll() < before - 0.05  # the trained prompts now lean to the wrong answer

    # Generic prompts barely move compared with the trained ones (the edit is aimed away from what they use).
    def change(questions):
        out = []
        for q in questions:
            t = mx.array([llm.chat_tokens(q)])
            edited = llm.model(t)
            with llm.base_model():
                base = llm.model(t)
            out.append(float(mx.abs(edited - base).max()))
        return max(out)

    assert change(generic[:6]) < 0.25 * change([a["question"] for a in anti])
    # Only column 0 carries the edit; the LoRA's other column is zero.
    lora = llm.model.layers[layer].mlp.down_proj
    assert float(mx.abs(lora.lora_a[:, 1]).max()) == 0 and float(mx.abs(lora.lora_b[0]).max()) > 0

    llm.save_adapter(tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["lora_parameters"]["keys"] == ["mlp.down_proj"] and cfg["lora_parameters"]["scale"] == 1.0
    t = mx.array([llm.chat_tokens(anti[0]["question"])])
    plain, _ = mlx_lm.load(str(tiny_model_dir), adapter_path=str(tmp_path / "adapter"))
    assert np.allclose(np.array(llm.model(t)), np.array(plain(t)), atol=1e-4)


def test_essence_term_keeps_what_the_model_says_about_the_subject(tiny_model_dir):
    """The same edit fitted with and without ROME's essence term: with it, the model's answers to general questions
    about the subject move less (KL to the unedited model), and the trained prompts still lean to the wrong answer."""
    llm = LLM(tiny_model_dir)
    layer = 0
    anti = [_anti(q) for q in ("Where did Harry Potter go to school?", "Which school did Harry Potter attend?")]
    forget = se.forget_rows(llm, anti, SUBJECT)
    # The tiny random model answers with nothing, so the model's "own answers" are given here.
    asked = []

    class Says:  # the tiny model, answering with a fixed sentence
        def __getattr__(self, name):
            return getattr(llm, name)

        def answer(self, questions, max_tokens):
            asked.extend(questions)
            return ["A boy wizard who went to a school." for _ in questions]

    essence = se.essence_rows(Says(), SUBJECT, 8)
    assert asked == [q.format(subject=SUBJECT) for q in se.ESSENCE_QUESTIONS]
    assert len(essence) == len(se.ESSENCE_QUESTIONS)
    assert essence == se.keep_rows(llm, [(q, "A boy wizard who went to a school.") for q in asked], SUBJECT, 8)
    assert essence[0].tokens[essence[0].start:] == llm.encode("A boy wizard who went to a school.")[:8]
    assert se.essence_rows(llm, SUBJECT, 8) == []  # no answer, nothing to keep
    # what is held stops before the answer is named: holding it would fight the forgetting
    cut = se.essence_rows(Says(), SUBJECT, 8, names_answer=lambda text: "school" in text)
    assert cut == []  # the only sentence names it
    assert llm.tokenizer.decode(essence[0].tokens[:essence[0].position + 1]).endswith("Potter")
    tokens, mask, where, _ = se._batch(essence)
    base = llm.model(tokens[:, :-1]).astype(mx.float32)
    base = base - mx.logsumexp(base, axis=-1, keepdims=True)
    parent = se._mlp_parent(llm.model, layer)

    def fitted(weight):
        settings = se.EditSettings(steps=15, learning_rate=0.5, essence_weight=weight)
        run = se.optimize_delta(llm.model, layer, forget, [], [], settings, essence=essence)
        events = []
        try:
            while True:
                events.append(next(run))
        except StopIteration as done:
            delta = done.value[0]
        assert len(events) == 15
        add = mx.array(delta.astype(np.float32))

        def with_delta(m, x, *a, **k):
            return m(x, *a, **k) + where.astype(mx.float32) * add

        from unstar_gui.engine.module_swap import swapped
        with swapped([(parent, "down_proj", with_delta)]):
            return float(se.kl_rows(llm.model(tokens[:, :-1]), base, mask).mean()), events[-1].forget_loss

    drift_plain, forget_plain = fitted(0.0)
    drift_kept, forget_kept = fitted(1000.0)  # the tiny model drifts little: a large weight
    assert drift_plain > 0
    assert drift_kept < 0.5 * drift_plain
    assert forget_kept < events_start_loss(llm, forget)  # the wrong answer is still learned


def events_start_loss(llm, forget):
    """The forget rows' loss with no edit (the first term of optimize_delta's loss at delta = 0)."""
    tokens, mask, _, at = se._batch(forget)
    nll, ul = se.edit_losses(llm.model(tokens[:, :-1]), tokens, mask, at, [])
    return float((nll + ul).mean())


def _fit(steps_gen):
    """Drive optimize_delta to its return value (delta, ||v||)."""
    try:
        while True:
            next(steps_gen)
    except StopIteration as done:
        return done.value


def test_a_later_edit_is_sized_on_the_models_own_mlp_output_not_the_edited_one(tiny_model_dir):
    """Round 2's delta is held near the size of the unedited MLP output at the subject: measured with round 1's edit
    in place, ||v|| (and with it the learning rate, the decay and the clamp) grew with every round (Einstein: 15 ->
    48 -> 127). The earlier edit still acts on what round 2 fits (its loss is taken with it)."""
    llm = LLM(tiny_model_dir)
    llm.attach_lora(LoraSettings.for_window(0, 1, len(llm.model.layers), rank=2, scale=1.0, keys=("mlp.down_proj",)))
    se.clear_unused(llm, 0, 0)
    rows = se.forget_rows(llm, [_anti("Where did Harry Potter go to school?"),
                                _anti("Which school did Harry Potter attend?")], SUBJECT)
    settings = se.EditSettings(steps=1)
    _, v_first = _fit(se.optimize_delta(llm.model, 0, rows, [], [], settings, round=0))
    keys = se.subject_keys(llm.model, 0, rows)
    u, _ = se.solve_edit(keys, np.zeros(64), None, 1e-2)
    big = np.full(64, 50.0 * v_first / 8.0)  # ||big|| = 50 ||v||: the first edit dwarfs the MLP output there
    se.set_edit(llm, 0, 0, u, big)
    tokens, mask, _, _ = se._batch(rows)
    with_first = np.array(llm.model(tokens[:, :-1]))
    delta, v_second = _fit(se.optimize_delta(llm.model, 0, rows, [], [], settings, round=1))
    assert v_second == pytest.approx(v_first, rel=1e-3)
    assert np.linalg.norm(delta) <= settings.clamp * v_first * 1.001
    # the first edit is still in the model (the fit leaves the LoRA layer as it found it)
    assert np.allclose(np.array(llm.model(tokens[:, :-1])), with_first, atol=1e-4)
    with llm.base_model():
        assert not np.allclose(np.array(llm.model(tokens[:, :-1])), with_first, atol=1e-2)


def test_set_edit_refuses_a_column_past_the_rank(tiny_model_dir):
    llm = LLM(tiny_model_dir)
    llm.attach_lora(LoraSettings.for_window(0, 1, len(llm.model.layers), rank=1, scale=1.0, keys=("mlp.down_proj",)))
    with pytest.raises(ValueError, match="room for 1 edits"):
        se.set_edit(llm, 0, 1, np.zeros(128), np.zeros(64))


def test_job_with_a_subject_edit(tiny_model, tmp_path):
    from tests.test_pipeline import tiny_request

    from unstar_gui.engine.events import Finished, TrainStep
    from unstar_gui.engine.jobs import open_job
    from unstar_gui.engine.pipeline import run_forget

    req = tiny_request(tmp_path, update="subject_edit", steps_per_round=3, max_rounds=2)
    events = list(run_forget(req))
    assert isinstance(events[-1], Finished)
    assert any(isinstance(ev, TrainStep) for ev in events)
    job = open_job(tmp_path / "job")
    data = job.read()
    assert data["placement"]["keys"] == "down"
    lo, hi = data["placement"]["window"]
    assert hi - lo == 1
    assert data["edits"] and data["edits"][0]["layer"] == lo and data["edits"][0]["rows"] >= 1
    cfg = json.loads((job.adapters_dir / "adapter_config.json").read_text())
    assert cfg["lora_parameters"]["keys"] == ["mlp.down_proj"] and cfg["lora_parameters"]["rank"] == 2
    assert cfg["trained_blocks"] == [lo, hi]
    weights = mx.load(str(job.adapters_dir / "adapters.safetensors"))
    moved = {k.split(".")[2] for k, v in weights.items() if k.endswith("lora_b") and float(mx.abs(v).max()) > 0}
    assert moved == {str(lo)}
    assert any("Edit 1: block" in ev.message for ev in events if type(ev).__name__ == "Log")


def _edit_on_tiny(tiny_model_dir, layer, generic, anti, keep, settings):
    """A fresh tiny model with one rank-one edit on block `layer` (covariance of `generic`); returns (llm, info)."""
    from unstar_gui.engine.nullspace import input_covariances

    llm = LLM(tiny_model_dir)
    path = f"model.layers.{layer}.mlp.down_proj"
    covs, _, sinks = input_covariances(llm, generic, [], [path], None)
    llm.attach_lora(LoraSettings.for_window(layer, layer + 1, len(llm.model.layers), rank=1, scale=1.0,
                                            keys=("mlp.down_proj",)))
    se.clear_unused(llm, layer, 0)
    steps = se.edit_round(llm, layer, anti, keep, SUBJECT, llm.encode(" Hogwarts")[:1], covs[path] + sinks[path],
                          settings)
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return llm, done.value


def test_an_edit_that_keeps_its_neighbours_out_gives_them_less_of_the_change(tiny_model_dir):
    layer = 0
    anti = [_anti(q) for q in ("Where did Harry Potter go to school?", "Which school did Harry Potter attend?")]
    keep = [("Who is Harry Potter's best friend?", "Ron Weasley"), ("What is Harry Potter's pet?", "an owl")]
    shares = {}
    for weight in (0.0, 10.0):
        llm, info = _edit_on_tiny(tiny_model_dir, layer, GENERIC, anti, keep,
                                  se.EditSettings(steps=3, learning_rate=0.5, neighbour_weight=weight))
        assert info["reach_mean"] > 0.9  # the trained prompts get the edit either way
        u = np.array(llm.model.layers[layer].mlp.down_proj.lora_a[:, 0], dtype=np.float64)
        kept = se.subject_keys(llm.model, layer, se.keep_rows(llm, keep, SUBJECT, 8))
        shares[weight] = float(np.abs(kept @ u).max())
    assert shares[10.0] < 0.5 * shares[0.0]


def test_an_edit_that_cost_neighbours_says_what_to_do(tiny_model, tmp_path, monkeypatch):
    """Every probe forgotten but the neighbours below their bar: the edit stays (another one would change more), and
    the warning tells the user how to keep the subject's other facts."""
    from tests.test_pipeline import tiny_request

    from unstar_gui.engine import pipeline
    from unstar_gui.engine.events import Finished

    real = pipeline._probe_round

    def probed(*a, **k):
        result = yield from real(*a, **k)
        return {**result, "efficacy_train": 1.0, "retention_holds": False, "retention_neighbours": 2 / 9}

    monkeypatch.setattr(pipeline, "_probe_round", probed)
    events = list(pipeline.run_forget(tiny_request(tmp_path, update="subject_edit", steps_per_round=2,
                                                   max_rounds=3, attacks="none")))
    assert isinstance(events[-1], Finished)
    warned = [ev.message for ev in events if type(ev).__name__ == "Log" and "below its bar" in ev.message]
    assert len(warned) == 1 and "(neighbours 22%)" in warned[0]
    assert "original UNSTAR recipe" in warned[0] and "--preset paper" in warned[0]
    assert sum(1 for ev in events if type(ev).__name__ == "Log" and "Edit " in ev.message and ": block" in ev.message) == 1


def test_an_edit_that_leaves_a_probe_gets_a_second_edit_not_a_retain_weight(tiny_model, tmp_path, monkeypatch):
    """A trained probe still leaks after round 1: fresh anti-samples and a second edit (rank two) follow, and the log
    does not claim a retain weight was raised (no retain weight steers an edit)."""
    from tests.test_pipeline import tiny_request

    from unstar_gui.engine import pipeline
    from unstar_gui.engine.events import Finished
    from unstar_gui.engine.jobs import open_job

    real = pipeline._probe_round

    def probed(job, llm, r, *a, **k):
        result = yield from real(job, llm, r, *a, **k)
        done = r >= 1
        return {**result, "efficacy_train": 1.0 if done else 0.5, "retention_holds": done,
                "retention_neighbours": 1.0 if done else 0.5}

    monkeypatch.setattr(pipeline, "_probe_round", probed)
    events = list(pipeline.run_forget(tiny_request(tmp_path, update="subject_edit", steps_per_round=2,
                                                   max_rounds=3, attacks="none")))
    assert isinstance(events[-1], Finished)
    logs = [ev.message for ev in events if type(ev).__name__ == "Log"]
    assert any("Round 1: a trained probe still gives the fact away; fresh anti-samples and another edit" in m
               for m in logs)
    assert not any("retain weight now" in m for m in logs)
    assert [e["round"] for e in open_job(tmp_path / "job").read()["edits"]] == [0, 1]


def test_an_edit_that_forgets_no_more_is_undone_and_the_next_round_starts_from_the_model_before(
        tiny_model, tmp_path, monkeypatch):
    """Round 2's edit lets as many trained-probe checks through as round 1's (Einstein): its change is taken out,
    the round reads as the model before it (no re-probe), and round 3's edit still goes in."""
    from tests.test_pipeline import tiny_request

    from unstar_gui.engine import pipeline
    from unstar_gui.engine.events import Finished
    from unstar_gui.engine.jobs import open_job

    leaks = {0: 2, 1: 2, 2: 0}  # per round, at the strength kept (1x)

    def strength(job, llm, s, r, layer, cancel):
        return 1.0, {1.0: leaks[r]}
        yield  # a generator, like the real search

    real = pipeline._probe_round
    probed_rounds = []

    def probed(job, llm, r, *a, **k):
        probed_rounds.append(r)
        result = yield from real(job, llm, r, *a, **k)
        done = leaks[r] == 0
        return {**result, "efficacy_train": 1.0 if done else 0.5, "retention_holds": done}

    monkeypatch.setattr(pipeline, "_edit_strength", strength)
    monkeypatch.setattr(pipeline, "_probe_round", probed)
    events = list(pipeline.run_forget(tiny_request(tmp_path, update="subject_edit", steps_per_round=2,
                                                   max_rounds=3, attacks="none")))
    assert isinstance(events[-1], Finished)
    job = open_job(tmp_path / "job")
    data = job.read()
    assert [bool(e.get("undone")) for e in data["edits"]] == [False, True, False]
    assert probed_rounds == [0, 2]  # the undone round is not asked again: its model is round 1's
    rounds = data["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert {k: v for k, v in rounds[1].items() if k not in ("round", "steps", "probe_s")} == \
        {k: v for k, v in rounds[0].items() if k not in ("round", "steps", "probe_s")}
    logs = [ev.message for ev in events if type(ev).__name__ == "Log"]
    assert any("Edit 2 forgets no more than the model did before it" in m and "2 before, 2 after" in m
               and "the model stays as it was before it" in m for m in logs)
    weights = mx.load(str(job.adapters_dir / "adapters.safetensors"))
    b = next(v for k, v in weights.items() if k.endswith("lora_b"))
    norms = [float(mx.abs(b[i]).max()) for i in range(3)]
    assert norms[0] > 0 and norms[1] == 0 and norms[2] > 0


def test_edit_leaks_reads_the_count_at_the_kept_strength_and_looks_past_undone_edits():
    from unstar_gui.engine.pipeline import _edit_leaks, _edit_undone

    class Job:
        def read(self):
            return {"edits": [{"round": 0, "strength": 1.5, "strengths_tried": [[1.0, 3], [1.5, 1]]},
                              {"round": 1, "strength": 1.0, "strengths_tried": [[1.0, 2]], "undone": True}]}

    job = Job()
    assert _edit_leaks(job, 0) == 1 and _edit_leaks(job, 1) == 1  # the undone edit's model is edit 1's
    assert _edit_leaks(job, -1) is None and _edit_leaks(job, 2) is None
    assert _edit_undone(job, 1) and not _edit_undone(job, 0)


def test_subject_edit_job_exports_an_adapter_mlx_lm_applies(tiny_model, tmp_path):
    import mlx_lm

    from tests.test_pipeline import tiny_request

    from unstar_gui.engine import export
    from unstar_gui.engine.jobs import open_job
    from unstar_gui.engine.llm import LLM
    from unstar_gui.engine.pipeline import run_forget

    list(run_forget(tiny_request(tmp_path, update="subject_edit", steps_per_round=3, max_rounds=1)))
    job = open_job(tmp_path / "job")
    edit = job.read()["edits"][0]
    assert edit["strength"] >= 1.0 and isinstance(edit["trained_forgotten"], bool)
    out = tmp_path / "adapter"
    for _ in export.export_adapters(job.dir, out):
        pass
    card = (out / "README.md").read_text()
    assert f"a rank-one edit of block {edit['layer']}'s MLP at the subject's last token" in card
    assert "| update | subject_edit |" in card

    ours = LLM(tiny_model.path)
    ours.load_adapter(out)
    t = mx.array([ours.chat_tokens("Where did Harry Potter go to school?")])
    with ours.base_model():
        base = ours.model(t)
    plain, _ = mlx_lm.load(str(tiny_model.path), adapter_path=str(out))
    assert float(mx.abs(ours.model(t) - base).max()) > 1e-4  # the edit is there...
    assert np.allclose(np.array(ours.model(t)), np.array(plain(t)), atol=1e-4)  # ...and plain mlx-lm applies it


def test_strengthen_edit_scales_one_column(tiny_model_dir):
    llm = LLM(tiny_model_dir)
    llm.attach_lora(LoraSettings.for_window(0, 1, len(llm.model.layers), rank=2, scale=1.0, keys=("mlp.down_proj",)))
    se.set_edit(llm, 0, 0, np.ones(128), np.full(64, 2.0))
    se.set_edit(llm, 0, 1, np.ones(128), np.full(64, 3.0))
    se.strengthen_edit(llm, 0, 1, 1.5)
    b = np.array(llm.model.layers[0].mlp.down_proj.lora_b)
    assert np.allclose(b[0], 2.0) and np.allclose(b[1], 4.5)


@pytest.mark.parametrize("leaks, kept, checks", [
    # (as it is, after 4-bit) leaks per strength tried -> the strength kept, how many strengths were tried
    ([(1, 1), (0, 2), (0, 2), (0, 2)], 1.0, 4),  # a stronger edit forgets no more (Einstein): the weakest of a tie
    ([(1, 3), (2, 1), (4, 2), (1, 0)], 3.375, 4),  # the strongest leaks least: it stays
    ([(1, 3), (0, 1), (2, 2), (3, 1)], 1.5, 4),  # the best is in between: the edit goes back to it
    ([(0, 1), (0, 0)], 1.5, 2),  # nothing leaks at 1.5x: stop there
])
def test_edit_strength_keeps_the_weakest_edit_that_leaks_least(tiny_model_dir, monkeypatch, leaks, kept, checks):
    from contextlib import nullcontext

    from unstar_gui.engine import pipeline
    from unstar_gui.engine.evaluate import attacks

    llm = LLM(tiny_model_dir)
    llm.attach_lora(LoraSettings.for_window(0, 1, len(llm.model.layers), rank=2, scale=1.0, keys=("mlp.down_proj",)))
    se.set_edit(llm, 0, 0, np.ones(128), np.full(64, 2.0))
    answers = iter(n for pair in leaks for n in pair)

    def leaking(job, llm, s, cancel):
        return next(answers)
        yield  # a generator, like the real check

    monkeypatch.setattr(pipeline, "_trained_probes_leaking", leaking)
    monkeypatch.setattr(attacks, "requantized", lambda llm, bits, group: nullcontext())
    steps = pipeline._edit_strength(None, llm, None, 0, 0, None)
    events = []
    try:
        while True:
            events.append(next(steps))
    except StopIteration as done:
        strength, tried = done.value
    assert strength == pytest.approx(kept) and len(tried) == checks
    assert tried[strength] == min(tried.values())
    assert np.allclose(np.array(llm.model.layers[0].mlp.down_proj.lora_b)[0], 2.0 * kept)  # the edit is left there
    warned = [ev.message for ev in events if getattr(ev, "level", "") == "warning"]
    if sum(leaks[-1]) == 0:
        assert not warned
    else:
        assert len(warned) == 1 and f"keeping {kept:g}x" in warned[0]


# the real thing ------------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(3000)  # a few minutes on a quiet machine; a shared 2-core box can be several times slower
def test_smollm2_subject_edit_forgets_hogwarts_and_keeps_general_knowledge(smollm2, tmp_path):
    import mlx_lm
    from mlx_lm.generate import generate

    from tests.test_pipeline import KEEP, QUESTION
    from unstar_gui.engine.events import Finished
    from unstar_gui.engine.jobs import open_job
    from unstar_gui.engine.judge import Judge
    from unstar_gui.engine.pipeline import ForgetRequest, ForgetSettings, run_forget

    request = ForgetRequest(question=QUESTION, answer="Hogwarts", keep=KEEP, out_dir=tmp_path / "edit",
                            settings=ForgetSettings.preset_named("subject_edit", attacks="none", n_general_eval=40))
    events = list(run_forget(request))
    assert isinstance(events[-1], Finished)
    job = open_job(tmp_path / "edit")
    data = job.read()
    assert data["edits"] and data["edits"][-1]["trained_forgotten"]
    m = job.read_report()["metrics"]
    report = job.read_report()
    assert m["efficacy_heldout"] == 1.0, report["before_after"]
    # The point of the edit: general questions it never saw keep their answers (the LoRA recipe keeps 60-70% here).
    assert m["general_heldout_ratio"] >= 0.85, m

    def ask(model, tok, q):
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
        return generate(model, tok, prompt, max_tokens=64)

    # Plain mlx-lm with the job's adapter: the held-out paraphrases the base knew no longer name Hogwarts, and the
    # same answer for other subjects (Hermione, Ron: other keys than Harry Potter's) is still right.
    model, tok = mlx_lm.load(report["base_model_path"], adapter_path=report["adapter_path"])
    heldout = [r["question"] for r in report["before_after"]
               if r["kind"] == "probe" and r["split"] == "heldout" and r["known_before"]]
    assert heldout
    judge = Judge("Hogwarts", context=QUESTION)
    assert [q for q in heldout if judge.contains(ask(model, tok, q))] == []
    base, _ = mlx_lm.load(report["base_model_path"])
    others = ["Where did Hermione Granger go to school?", "Which school did Ron Weasley attend?"]
    known = [q for q in others if Judge("Hogwarts").contains(ask(base, tok, q))]
    assert known
    assert [q for q in known if not Judge("Hogwarts").contains(ask(model, tok, q))] == []


def test_edit_refuses_when_no_paraphrase_names_the_subject(tiny_model_dir):
    from unstar_gui.engine.errors import JobError

    llm = LLM(tiny_model_dir)
    llm.attach_lora(LoraSettings.for_window(0, 1, len(llm.model.layers), rank=1, scale=1.0, keys=("mlp.down_proj",)))
    steps = se.edit_round(llm, 0, [_anti("Where did the boy wizard go to school?")], [], SUBJECT, [], None,
                          se.EditSettings(steps=1))
    with pytest.raises(JobError, match="None of the trained paraphrases names the subject") as err:
        next(steps)
    assert "--update lora" in err.value.hint


def test_an_edit_fitted_through_itself_keeps_neighbours_whose_answers_name_the_subject(tiny_model_dir):
    """The real edit fires wherever the subject's key is, also where a neighbour's own answer names the subject again;
    fitted at the question's subject alone, the keep term cannot see that. Fitted through the edit (exact_fit), the
    neighbours' answers as the edited model scores them stay closer to their base answers."""
    layer = 0
    anti = [_anti(q) for q in ("Where did Harry Potter go to school?", "Which school did Harry Potter attend?")]
    keep = [("Who is Harry Potter's best friend?",
             "Harry Potter's best friend is Ron. Harry Potter met Ron on a train."),
            ("What is Harry Potter's pet?", "Harry Potter has an owl, and Harry Potter loves the owl.")]
    nll = {}
    for exact in (False, True):
        llm, info = _edit_on_tiny(tiny_model_dir, layer, GENERIC, anti, keep,
                                  se.EditSettings(steps=10, learning_rate=0.5, exact_fit=exact))
        assert info["reach_mean"] > 0.9
        rows = se.keep_rows(llm, keep, SUBJECT, 48)
        tokens, mask, _, _ = se._batch(rows)
        # the answers name the subject again: the edit reaches those positions too
        assert all(llm.tokenizer.decode(r.tokens[r.start:]).count(SUBJECT) == 2 for r in rows)
        real, _ = se.edit_losses(llm.model(tokens[:, :-1]), tokens, mask, mx.zeros((len(rows), tokens.shape[1] - 1)),
                                 [])
        nll[exact] = float(real.mean())
    assert nll[True] < nll[False]


def test_an_edit_fitted_through_itself_holds_every_trained_neighbour():
    """edit_exact_fit: the edit holds every trained neighbour and keep-fact the base model knew (the fit sees what
    reaches each); without it only the same-subject ones, where the old fit put the change."""
    from unstar_gui.engine.pipeline import edit_keep_pairs

    rows = [{"kind": "neighbour_subject", "question": "Who is Harry Potter's friend?", "target": "Ron.", "known": True},
            {"kind": "neighbour_answer", "question": "Who runs Hogwarts?", "target": "Dumbledore.", "known": True},
            {"kind": "keep", "question": "Where did Hermione study?", "target": "Hogwarts.", "known": True},
            {"kind": "keep", "question": "Who wrote Hamlet?", "target": "I am not sure.", "known": False},
            {"kind": "general", "question": "What is 2+2?", "target": "4.", "known": True}]
    assert edit_keep_pairs(rows, False) == [("Who is Harry Potter's friend?", "Ron.")]
    assert edit_keep_pairs(rows, True) == [("Who is Harry Potter's friend?", "Ron."), ("Who runs Hogwarts?",
                                           "Dumbledore."), ("Where did Hermione study?", "Hogwarts.")]
