"""Evidence and re-ranking (pure functions, no data needed): answer probabilities from logprobs,
the LLM-free caption verifier, the fusion rule, listwise judge parsing, result evidence, diagnostics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lensgraph.pipeline.evaluation.diagnostics import diagnostics, edits_agree, questions_agree
from lensgraph.pipeline.reasoning.evidence import (
    CaptionMatcher,
    answer_probability,
    centred_table,
    choice_probabilities,
    fuse,
    parse_choice,
    question_trust,
    question_weights,
    result_evidence,
    tally_verification,
)
from lensgraph.pipeline.models.calls import Reply


def centred_evidence(probabilities):
    """Per candidate, the mean over questions of its centred probability: every question weighing alike."""
    return centred_table(probabilities).mean(axis=1)


def lp(**probabilities: float) -> dict[str, float]:
    return {token.replace("_", " "): math.log(p) for token, p in probabilities.items()}


def test_answer_probability_from_logprobs():
    reply = Reply("Yes", logprobs=(lp(Yes=0.6, No=0.3, _yes=0.05, Maybe=0.05),))
    assert answer_probability(reply, True) == pytest.approx(0.65 / 0.95)
    # the answer comes after a leading space or a quote: the first position that offers yes/no counts
    later = Reply(' "No"', logprobs=(lp(_=0.9, **{'"': 0.1}), lp(No=0.8, Yes=0.2)))
    assert answer_probability(later, False) == pytest.approx(0.2)
    # words that merely start like yes/no are not answers
    assert answer_probability(Reply("Yesterday", logprobs=(lp(Yesterday=0.9, Nope=0.1),)), None) is None


def test_answer_probability_without_logprobs_is_the_parsed_word():
    assert answer_probability(Reply("Yes."), True) == 1.0
    assert answer_probability(Reply("No"), False) == 0.0
    assert answer_probability(Reply("hmm"), None) is None


def test_listwise_choice_parsing_and_probabilities():
    assert parse_choice("2", 3) == 2 and parse_choice("Image 3 fits best", 3) == 3
    assert parse_choice("2 > 1 > 3", 3) == 2 and parse_choice("7", 3) is None and parse_choice("none", 3) is None
    assert parse_choice("", 3) is None
    reply = Reply("2", logprobs=(lp(**{"2": 0.6, "1": 0.3, "9": 0.05, "x": 0.05}),))
    probs = choice_probabilities(reply, 3, 2)
    assert probs == pytest.approx([1 / 3, 2 / 3, 0.0])
    assert choice_probabilities(Reply("3"), 3, 3) == [0.0, 0.0, 1.0]
    assert choice_probabilities(Reply("garbage"), 3, None) is None


def test_caption_matcher_words_then_encoder():
    words_only = CaptionMatcher(lexicon=None)
    assert words_only.probability("wine glass", "Two wine glasses on a table") == 0.95
    assert words_only.probability("wine glass", "A glass of water") == 0.8  # the head of the name: partly
    assert words_only.probability("wine bottle", "A glass of water") == 0.0
    assert words_only.probability("oven", "A dog on a couch") == 0.0
    assert words_only.probability("", "anything") is None

    vectors = {"person": [1.0, 0.0], "man": [0.9, math.sqrt(1 - 0.81)]}

    def embed(texts):
        return np.array([vectors.get(t, [0.0, 1.0]) for t in texts])

    matcher = CaptionMatcher(embed=embed, midpoint=0.6, width=0.05, lexicon=None)
    assert matcher.probability("person", "a man on a bench") > 0.99  # cos 0.9, far above the midpoint
    assert matcher.probability("person", "a dog on a bench") < 0.01


def test_uninformative_evidence_leaves_the_order_unchanged():
    order, scores = ["a", "b", "c", "d"], [0.9, 0.8, 0.7, 0.6]
    same = centred_evidence([[0.7, 0.2]] * 4)
    assert np.allclose(same, 0)
    assert fuse(order, scores, same, weight=100.0)[0] == order
    unknown = centred_evidence([[None, None]] * 4)
    assert fuse(order, scores, unknown, weight=5.0)[0] == order


def test_strong_evidence_moves_a_candidate_in_proportion():
    order, scores = ["a", "b", "c", "d"], [0.9, 0.8, 0.7, 0.6]
    evidence = centred_evidence([[0.1], [0.1], [0.1], [0.95]])
    assert fuse(order, scores, evidence, weight=0.1)[0] == order  # weak weight: a nudge, not a jump
    moved, fused = fuse(order, scores, evidence, weight=5.0)
    assert moved[0] == "d" and moved[1:] == ["a", "b", "c"] and fused == sorted(fused, reverse=True)
    partly = fuse(order, scores, evidence, weight=2.0)[0]
    assert partly.index("d") < 3 and partly.index("d") > 0


def test_one_question_cannot_move_a_candidate_past_a_margin_retrieval_was_sure_of():
    order, scores = ["a", "b", "c", "d", "e"], [1.0, 0.9, 0.5, 0.45, 0.4]  # a and b far ahead of the rest
    p_yes = {"a": [0.0], "b": [0.0], "c": [0.0], "d": [0.0], "e": [1.0]}  # the question favours e entirely
    question = [{"question": "Is there a kite?", "expected": "yes"}]
    z = (np.array(scores) - np.mean(scores)) / np.std(scores)
    unbounded = tally_verification(order, scores, p_yes, question, weight=100.0)
    assert unbounded.order[0] == "e"  # the old rule: one answer outweighs everything retrieval knew
    margin = 1.0
    assert z[1] - z[4] > margin and z[2] - z[4] < margin
    bounded = tally_verification(order, scores, p_yes, question, weight=100.0, margin=margin)
    assert bounded.order[:2] == ["a", "b"]  # retrieval was sure: kept
    assert bounded.order[2] == "e"  # within the margin: moved past c and d
    # two questions may move it further: the bound is per question
    two = {c: ps * 2 for c, ps in p_yes.items()}
    both = tally_verification(order, scores, two, question * 2, weight=100.0, margin=margin)
    assert both.scores[both.order.index("e")] > bounded.scores[bounded.order.index("e")] + 0.5


def test_questions_weigh_by_how_far_the_plan_is_trusted():
    assert question_weights([1.0, 0.0], weight=8.0, margin=10.0) == [4.0, 0.0]
    assert question_weights([1.0, 0.5], weight=8.0, margin=3.0) == [3.0, 2.0]
    assert question_weights([], 8.0, 1.0) == []
    questions = [{"question": "Is there a cat?", "expected": "yes"}, {"question": "Is there a laptop?", "expected": "yes"}]
    trust = question_trust(questions, "but with a cat too", lambda phrase, text: phrase in text, unnamed=0.25)
    assert trust == [1.0, 0.25]
    # a question about the reference's own laptop, untrusted, cannot outvote the one about the cat
    order, scores = ["ref-like", "cat"], [0.5, 0.5]
    p_yes = {"ref-like": [0.1, 0.95], "cat": [0.95, 0.1]}
    assert tally_verification(order, scores, p_yes, questions, weight=4.0, trust=[1.0, 0.0]).order[0] == "cat"
    assert tally_verification(order, scores, p_yes, questions, weight=4.0, trust=[1.0, 1.0]).order[0] == "ref-like"


def test_a_failed_answer_is_no_evidence_either_way():
    evidence = centred_evidence([[1.0, None], [0.0, None], [0.5, 0.9]])
    assert evidence[0] > evidence[2] > evidence[1]


STATE = {
    "questions": [{"question": "Is there an oven?", "expected": "yes"}, {"question": "Is there a cake?", "expected": "no"}],
    "answers": {"a": ["Yes", "No"], "b": ["No", "Yes"]},
    "probabilities": {"a": [0.9, 0.8], "b": [0.2, 0.1]},
    "verdicts": {"a": {"verdict": True, "p_yes": 0.7, "reply": "Yes"}},
}


def test_result_evidence_and_relevance():
    a = result_evidence(STATE, "a")
    assert a["passed"] == 2 and a["relevance"] == pytest.approx((0.9 + 0.8 + 0.7) / 3)
    assert a["questions"][0] == {"question": "Is there an oven?", "expected": "yes", "answer": "Yes", "p_expected": 0.9}
    assert a["judge"] == {"verdict": True, "p_yes": 0.7}
    b = result_evidence(STATE, "b")
    assert b["passed"] == 0 and b["relevance"] == pytest.approx(0.15) and b["judge"] is None
    assert result_evidence(STATE, "unverified") is None


def test_plan_agreement_rules():
    assert edits_agree("add", [{"type": "addition"}, {"type": "retention"}])
    assert not edits_agree("add", [{"type": "removal"}])
    assert edits_agree("replace", [{"type": "removal"}, {"type": "addition"}])
    assert questions_agree("remove", [{"expected": "no"}, {"expected": "yes"}])
    assert not questions_agree("add", [{"expected": "yes"}, {"expected": "no"}])


def test_diagnostics_on_planted_records():
    records = [
        {"id": "1", "kind": "add", "truth": {"targets": ["t"]}, "edits": [{"type": "addition", "text": "x"}],
         "questions": [{"question": "Is there x?", "expected": "yes"}], "fixes": ["something"],
         "probabilities": {"t": [0.9], "w1": [0.2], "w2": [0.6]},
         "verdicts": {"w1": {"verdict": True, "p_yes": 0.8}, "t": {"verdict": False, "p_yes": 0.3}},
         "rankings": {"retrieve": ["w1", "t", "w2"], "verify": ["t", "w2", "w1"], "judge": ["w1", "t", "w2"]}},
        {"id": "2", "kind": "remove", "truth": {"targets": ["u"]}, "edits": [{"type": "addition", "text": "y"}],
         "questions": [{"question": "Is there y?", "expected": "yes"}],
         "rankings": {"retrieve": ["v", "u"], "verify": ["v", "u"], "judge": ["v", "u"]}},
    ]
    d = diagnostics(records, ["retrieve", "verify", "judge"])
    assert d["plan"]["edits"] == 0.5 and d["plan"]["edits:add"] == "1/1" and d["plan"]["edits:remove"] == "0/1"
    assert d["plan"]["fixed_by_checks"] == 1
    assert d["verify"]["auc"] == 1.0 and d["verify"]["accuracy"] == pytest.approx(2 / 3, abs=1e-3)  # w2 (0.6) is called correct
    assert d["judge"] == {"judged": 2, "said_yes": 0.5, "mean_p_yes": 0.55, "new_rank1_correct": 0, "new_rank1_wrong": 1}
    assert d["first_correct_rank"]["retrieve"]["median"] == 2 and d["first_correct_rank"]["verify"]["median"] == 1.5


def test_tally_verification_fuses_or_counts():
    from lensgraph.pipeline.reasoning.evidence import tally_verification

    questions = [{"question": "A dog?", "expected": "yes"}, {"question": "A cat?", "expected": "no"}]
    order, scores = ["a", "b", "c"], [0.30, 0.29, 0.28]
    p_yes = {"a": [0.2, 0.9], "b": [0.5, 0.5], "c": [0.95, 0.05]}
    fused = tally_verification(order, scores, p_yes, questions, "fuse", 8.0)
    assert fused.probabilities["a"] == [0.2, pytest.approx(0.1)] and fused.matches == {"a": 0, "b": 0, "c": 2}
    assert fused.order[0] == "c" and fused.order[-1] == "a" and len(fused.scores) == 3
    same = tally_verification(order, scores, {i: [0.5, 0.5] for i in order}, questions, "fuse", 8.0)
    assert same.order == order  # no evidence either way: the retrieval order stands
    counted = tally_verification(order, scores, p_yes, questions, "imagescope")
    assert counted.order == ["c", "a", "b"] and counted.scores is None
