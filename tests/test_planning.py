"""The planning call's reply parsing and its consistency checks (pure functions, no data needed)."""

from __future__ import annotations

import json

import pytest

from lensgraph.pipeline.reasoning.objects import content_words, forms, negated, question_object
from lensgraph.pipeline.reasoning.planning import CHECKS, Plan, check_plan, parse_plan, request_words


def word_mentions(phrase: str, text: str) -> bool:
    """Words and plural forms only (no WordNet, no encoder): what these tests' fixtures are about."""
    have = {f for w in content_words(text) for f in forms(w)}
    wanted = content_words(phrase)
    return bool(wanted) and all(forms(w) & have for w in wanted)

from lensgraph.pipeline.models.prompts import load_prompt_set

PLAN = {
    "edits": [{"type": "addition", "text": "an oven"}, {"type": "retention", "text": "people at a table"}],
    "questions": [{"question": "Is there an oven?", "expected": "yes"}],
    "descriptions": {"core": "an oven", "attributes": "a kitchen with an oven", "full": "People at a table near an oven."},
}
CAPTION = "A family sitting at a table with a birthday cake."


def test_a_schema_constrained_reply_parses_whole():
    plan = parse_plan(json.dumps(PLAN), CAPTION, "also has an oven")
    assert plan.edits[0] == {"type": "addition", "text": "an oven"}
    assert plan.questions == [{"question": "Is there an oven?", "expected": "yes"}]
    assert plan.descriptions == ["an oven", "a kitchen with an oven", "People at a table near an oven."]
    assert plan.planned and not plan.warnings


def test_the_default_prompt_has_the_compact_plan_schema():
    prompt = load_prompt_set("default")["reason"]
    assert prompt.schema["required"] == ["add", "remove", "change", "target"]
    assert prompt.schema["properties"]["add"]["maxItems"] == 4


def test_a_compact_plan_becomes_edits_questions_and_a_description():
    reply = {"add": ["a dog"], "remove": ["the cat"], "change": ["a blue bench"], "target": "A dog on a blue bench."}
    plan = parse_plan(json.dumps(reply), CAPTION, "a dog instead of the cat, and paint the bench blue")
    assert plan.edits == [{"type": "addition", "text": "a dog"}, {"type": "removal", "text": "the cat"},
                          {"type": "modification", "text": "a blue bench"}]
    assert plan.questions == [{"question": "Is there a dog?", "expected": "yes"}, {"question": "Is there the cat?", "expected": "no"},
                              {"question": "Is there a blue bench?", "expected": "yes"}]
    assert plan.descriptions == ["A dog on a blue bench."] and plan.derived and not plan.warnings
    # the questions follow the edits after the checks change them
    fixed = check_plan(plan, CAPTION, "with a dog", word_mentions, ["edits_in_instruction"])
    assert [q["question"] for q in fixed.questions] == ["Is there a dog?", "Is there a blue bench?"]
    empty = parse_plan('{"add": [], "remove": [], "change": [], "target": ""}', CAPTION, "also has an oven")
    assert empty.descriptions == [CAPTION + " also has an oven"] and empty.warnings


@pytest.mark.parametrize("reply", [
    "Here is the plan:\n```json\n" + json.dumps(PLAN) + "\n```",  # JSON mode ignored: fenced
    json.dumps(PLAN)[:-40],  # cut by max_tokens: repaired
    "Sure! " + json.dumps(PLAN) + " Hope this helps.",  # prose around it
])
def test_fallbacks_recover_the_plan(reply):
    plan = parse_plan(reply, CAPTION, "also has an oven")
    assert plan.edits[0]["text"] == "an oven" and plan.descriptions[0] == "an oven"


def test_garbage_falls_back_to_the_caption_and_instruction_with_a_warning():
    plan = parse_plan("I cannot help with that.", CAPTION, "also has an oven")
    assert plan.descriptions == [CAPTION + " also has an oven"] and plan.edits == [] and plan.questions == []
    assert plan.warnings and "no usable descriptions" in plan.warnings[0]
    assert not plan.planned


def test_questions_missing_from_a_plan_are_derived_from_its_edits():
    reply = dict(PLAN, questions=[])
    plan = parse_plan(json.dumps(reply), CAPTION, "also has an oven")
    assert plan.planned and any("no usable questions" in w for w in plan.warnings)
    fixed = check_plan(plan, CAPTION, "also has an oven")
    assert fixed.questions == [{"question": "Is there an oven?", "expected": "yes"}]
    assert any("added a question" in f for f in fixed.fixes)


def test_words():
    assert content_words("Is there a wine glass?") == ["wine", "glass"]
    assert content_words("Are there any dogs in the image?") == ["dogs"]
    assert question_object("Does the image show two red buses?") == "red buses"
    assert word_mentions("a bus", "Two buses parked") and word_mentions("glass", "wine glasses")
    assert word_mentions("the dogs", "A dog on a couch") and not word_mentions("a cat", "A dog on a couch")
    assert negated("a street with no cars", ["car"]) and not negated("a street with cars", ["car"])


def test_a_removal_of_what_the_reference_does_not_show_is_an_addition():
    plan = Plan([{"type": "removal", "text": "an oven"}], [{"question": "Is there an oven?", "expected": "no"}], ["x"])
    fixed = check_plan(plan, CAPTION, "also has an oven", word_mentions, CHECKS)
    assert fixed.edits == [{"type": "addition", "text": "an oven"}]
    assert fixed.questions == [{"question": "Is there an oven?", "expected": "yes"}]
    assert len(fixed.fixes) == 2
    # the reference does show it: the removal stands
    cake = Plan([{"type": "removal", "text": "the cake"}], [{"question": "Is there a cake?", "expected": "no"}], ["x"])
    assert check_plan(cake, CAPTION, "without the cake", word_mentions, CHECKS).edits[0]["type"] == "removal"
    # a blank reference shows nothing, but a negated thing is a legitimate removal
    blank = Plan([{"type": "removal", "text": "people"}], [{"question": "Are there people?", "expected": "no"}], ["x"])
    assert check_plan(blank, "A blank image.", "an empty beach with no people", word_mentions, CHECKS).edits[0]["type"] == "removal"
    assert check_plan(blank, "A blank image.", "a beach with people", word_mentions, CHECKS).edits[0]["type"] == "addition"


def test_the_reference_check_uses_the_given_matcher():
    plan = Plan([{"type": "removal", "text": "the person"}], [], ["x"])
    words_only = check_plan(plan, "A man riding a skateboard.", "the person, please", word_mentions, ["removal_in_reference"])
    assert words_only.edits[0]["type"] == "addition"  # "person" is not a word of the caption
    synonyms = check_plan(plan, "A man riding a skateboard.", "the person, please",
                          mentions=lambda phrase, text: "person" in phrase and ("man" in text or "person" in text),
                          checks=["removal_in_reference"])
    assert synonyms.edits[0]["type"] == "removal"


def test_an_addition_the_instruction_negates_is_a_removal():
    plan = Plan([{"type": "addition", "text": "cars"}], [], ["x"])
    assert check_plan(plan, "A street.", "the same street but no cars").edits[0]["type"] == "removal"


def test_off_topic_and_unplanned_negative_questions_are_dropped():
    plan = Plan(
        [{"type": "addition", "text": "a bus"}],
        [{"question": "Is there a bus?", "expected": "yes"},
         {"question": "Is there a pillow?", "expected": "yes"},  # copied from an example
         {"question": "Is there a cake?", "expected": "no"}],  # nothing removes the cake
        ["x"],
    )
    fixed = check_plan(plan, CAPTION, "add a bus", word_mentions)
    assert fixed.questions == [{"question": "Is there a bus?", "expected": "yes"}]
    untouched = check_plan(plan, CAPTION, "add a bus", checks=())
    assert untouched.questions == plan.questions and untouched.fixes == []


def test_each_check_can_be_turned_off_alone():
    plan = Plan([{"type": "removal", "text": "an oven"}], [{"question": "Is there an oven?", "expected": "no"}], ["x"])
    without = check_plan(plan, CAPTION, "also has an oven", word_mentions, [c for c in CHECKS if c != "removal_in_reference"])
    assert without.edits[0]["type"] == "removal" and without.questions[0]["expected"] == "no"
    with pytest.raises(ValueError, match="unknown plan checks"):
        check_plan(plan, CAPTION, "x", checks=["nope"])


def test_a_two_call_reply_gets_no_questions_from_the_checks():
    two_call = {k: v for k, v in PLAN.items() if k != "questions"}
    plan = check_plan(parse_plan(json.dumps(two_call), CAPTION, "also has an oven"), CAPTION, "also has an oven", word_mentions)
    assert not plan.planned and plan.questions == []  # the propose stage asks for them


def test_an_edit_the_instruction_never_mentions_is_dropped():
    plan = Plan([{"type": "addition", "text": "a kite"}, {"type": "removal", "text": "the wave"}],
                [{"question": "Is there a kite?", "expected": "yes"}, {"question": "Is there a wave?", "expected": "no"}],
                ["x"])
    fixed = check_plan(plan, "Men surfing a big wave.", "also has a kite", word_mentions)
    assert fixed.edits == [{"type": "addition", "text": "a kite"}]
    assert fixed.questions == [{"question": "Is there a kite?", "expected": "yes"}]
    # what counts as mentioned is the matcher's call: a paraphrase found by the text encoder is kept
    puppy = Plan([{"type": "addition", "text": "a dog"}], [], ["x"])
    assert check_plan(puppy, "A cat.", "a puppy instead", word_mentions).edits == []
    assert check_plan(puppy, "A cat.", "a puppy instead", mentions=lambda p, t: "dog" in p and "puppy" in t).edits


def test_a_request_in_another_language_keeps_the_plans_english_reading():
    plan = parse_plan('{"add": [], "remove": ["the kite"], "change": [], "target": "A man holding a tennis racket."}',
                      "A man flying a kite on a beach.", "把风筝换成网球拍")
    plan.edits.append({"type": "addition", "text": "a tennis racket"})
    plan = Plan(plan.edits, [], plan.descriptions, derived=True)
    # read as English, the request names neither thing: both edits would be dropped
    assert check_plan(plan, "A man flying a kite on a beach.", "swap it please", word_mentions).edits == []
    fixed = check_plan(plan, "A man flying a kite on a beach.", "把风筝换成网球拍", word_mentions)
    assert fixed.edits == [{"type": "removal", "text": "the kite"}, {"type": "addition", "text": "a tennis racket"}]
    assert [q["expected"] for q in fixed.questions] == ["no", "yes"]
    assert "reads as zh" in fixed.fixes[0]
    # verification trusts the questions about the plan's reading as named by the request
    assert request_words("把风筝换成网球拍", fixed.edits) == "the kite; a tennis racket"
    assert request_words("swap the kite for a racket", fixed.edits) == "swap the kite for a racket"
