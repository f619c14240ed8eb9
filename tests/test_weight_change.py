"""What a job changed in the weights, as sentences (engine/weight_change.py): every kind of job says where and how,
and a malformed or hostile job.json leaves the bad part out instead of crashing or showing it wrong."""

from __future__ import annotations

import math

from unstar_gui.engine.weight_change import describe_change, trace_of

EFFECTS = [0.7, 0.72, 0.02, 0.1, -0.01]
EDIT_JOB = {
    "settings": {"update": "subject_edit", "steps_per_round": 20, "num_layers": 16},
    "placement": {"keys": "down", "window": [1, 2],
                  "traced": {"window": [1, 2], "effects": EFFECTS, "subject": "Japan"}},
    "edits": [{"round": 0, "layer": 1, "rows": 9, "keep_rows": 6, "strength": 1.5, "leak": 0.035}],
}


def test_a_subject_edit_names_its_block_subject_strength_and_leak():
    lines = describe_change(EDIT_JOB)
    assert lines[0] == ("Causal tracing found where the model looks the fact up: around block 1, at the subject "
                        "'Japan'.")
    assert lines[1].startswith("Round 1: a rank-one edit of block 1's MLP at the subject's last token, fitted so "
                               "that 9 paraphrases give the wrong answers while 6 other questions")
    assert "Made 1.5x stronger" in lines[1] and "about 4% of the change" in lines[1]
    assert len(lines) == 2  # no LoRA sentence for an edit
    # nor before its first edit is recorded: the placement alone says where it will go
    assert describe_change({**EDIT_JOB, "edits": []}) == lines[:1]
    short = describe_change({**EDIT_JOB, "edits": [{**EDIT_JOB["edits"][0], "strength": 1.0,
                                                     "trained_forgotten": False}]})
    assert "no stronger one let fewer back, so it keeps its fitted strength." in short[1] and "Made" not in short[1]
    stronger = describe_change({**EDIT_JOB, "edits": [{**EDIT_JOB["edits"][0], "strength": 3.375,
                                                        "trained_forgotten": False}]})
    assert "made 3.375x stronger, the strength that let the fewest back." in stronger[1]
    assert "so the fact stays forgotten" not in stronger[1]
    trace = trace_of(EDIT_JOB)
    assert trace is not None and trace.effects == tuple(EFFECTS) and trace.changed == (1,)
    assert trace.subject == "Japan"
    held = describe_change({**EDIT_JOB, "edits": [{**EDIT_JOB["edits"][0], "essence_rows": 3}]})
    assert "while 6 other questions about the subject keep theirs and what the model says about the subject in " \
           "general is held." in held[1]
    assert "in general is held" not in lines[1]
    exact = describe_change({**EDIT_JOB, "settings": {**EDIT_JOB["settings"], "edit_exact_fit": True}})
    assert "while 6 neighbour questions keep theirs, the change acting on them as it really does." in exact[1]
    second = {**EDIT_JOB["edits"][0], "round": 1, "strength": 1.0, "trained_forgotten": False, "undone": True}
    undone = describe_change({**EDIT_JOB, "edits": [*EDIT_JOB["edits"], second]})
    assert undone[2].startswith("Round 2: a rank-one edit") and undone[2].count("Round") == 1
    assert undone[2].endswith("so it was taken out again: it changes nothing.") and "stronger" not in undone[2]


def test_lora_jobs_say_where_the_adapter_went_and_how_it_was_cut_back():
    last = {"settings": {"num_layers": 16}, "placement": {"keys": "all", "window": None}}
    assert describe_change(last) == ["The adapter covers every linear module of the last 16 blocks."]
    assert trace_of(last) is None
    traced = {"settings": {"steps_per_round": 20},
              "placement": {"keys": "mlp", "window": [2, 5], "traced": {"effects": EFFECTS, "subject": "Paris"}},
              "early_stops": [{"round": 0, "step": 5}],
              "adapter_scales": [{"round": 0, "factor": 0.625, "edge": 0.5}, {"round": 1, "factor": 1.0}]}
    lines = describe_change(traced)
    assert lines[1] == "A LoRA adapter trains only the MLPs (gate, up and down projections) of blocks 2-4."
    assert lines[2].startswith("Round 1 stopped early after 5 of 20 steps")
    assert lines[3].startswith("Round 1: the adapter is applied at 62% of its trained strength")
    assert len(lines) == 4  # a factor of 1 is no scaling: nothing to say
    assert trace_of(traced).changed == (2, 3, 4)
    assert describe_change({}) == []
    every = describe_change({"settings": {"num_layers": -1}, "placement": {"keys": "mlp"}})
    assert every == ["The adapter covers the MLPs (gate, up and down projections) of every block."]


def test_hostile_job_json_is_left_out_not_shown_and_never_crashes():
    hostile = [
        {"placement": "blocks 1-3", "edits": "many", "early_stops": {"round": 0}},
        {"placement": {"window": ["a", 3], "traced": {"effects": ["x", 1]}}, "edits": [None, {"round": "1"}]},
        {"placement": {"window": [5, 2], "traced": {"effects": [math.nan, 0.1]}},
         "edits": [{"round": 0, "layer": 1, "leak": math.inf, "strength": True, "rows": 1e30}]},
        {"placement": {"window": [0, 1], "traced": {"effects": [0.1] * 100000}}, "settings": ["not", "a", "dict"]},
        {"adapter_scales": [{"round": 0, "factor": -3}, "x"], "early_stops": [{"round": 0, "step": 0}]},
    ]
    for job in hostile:
        lines = describe_change(job)
        assert all(isinstance(line, str) and "nan" not in line and "inf" not in line for line in lines)
        assert trace_of(job) is None
    # the malformed edit is left out, the well-formed part of the same record stays
    lines = describe_change(hostile[2])
    assert lines == ["Round 1: a rank-one edit of block 1's MLP at the subject's last token."]
