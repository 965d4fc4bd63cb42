"""Things named in text, matched as a person would (pipeline/reasoning/objects.py, pipeline/reasoning/lexicon.py).

WordNet is read from its own database files; the tests that need it skip, saying so, on a machine
without them (CI installs Debian's wordnet-base)."""

from __future__ import annotations

import os

import pytest

from lensgraph.pipeline.reasoning.lexicon import load_lexicon
from lensgraph.pipeline.reasoning.objects import FULL, PARTIAL, match, negated, request_language, request_objects

LEXICON = load_lexicon()
needs_wordnet = pytest.mark.skipif(LEXICON is None and not os.environ.get("CI"), reason="WordNet is not installed (apt-get install wordnet-base)")


def test_multi_word_objects_and_plurals_without_a_dictionary():
    assert match("wine glass", "Two wine glasses on a table") == FULL
    assert match("a dining table", "people eating at a table") == PARTIAL  # the head of the name
    assert match("dining table", "a dining table with food") == FULL
    assert match("bus", "Two buses parked") == FULL
    assert match("oven", "a dog on a couch") == 0.0


@needs_wordnet
@pytest.mark.parametrize("phrase, text", [
    ("couch", "a cat asleep on the sofa"), ("dog", "a puppy on the grass"), ("tv", "a telly in the corner"),
    ("person", "a woman riding a horse"), ("person", "two men at a bar"), ("person", "people waiting for a bus"),
    ("fruit", "a bowl of apples"), ("table", "a dining table set for dinner"), ("bicycle", "a bike leaning on a wall"),
    ("dining table", "a family at the table"),
])
def test_synonyms_kinds_and_groups_through_wordnet(phrase, text):
    assert match(phrase, text, LEXICON) >= PARTIAL
    assert match(phrase, text, None) < match(phrase, text, LEXICON) or match(phrase, text, None) >= PARTIAL


@needs_wordnet
@pytest.mark.parametrize("phrase, text", [
    ("dog", "a man eating a hot dog"),  # a hot dog is no dog
    ("cat", "a dog on a couch"), ("dining table", "a plate of food"), ("apple", "a bowl of fruit"),  # fruit is not always apple
])
def test_what_wordnet_does_not_make_a_match(phrase, text):
    assert match(phrase, text, LEXICON) == 0.0


@needs_wordnet
@pytest.mark.parametrize("instruction, expected", [
    ("also has an oven", {"oven": False}),
    ("swap the dog for a horse", {"dog": True, "horse": False}),
    ("has a wine glass instead of the bowl", {"wine glass": False, "bowl": True}),
    ("replace the dining table with a couch", {"dining table": True, "couch": False}),
    ("the person is gone", {"person": True}),
    ("without any people", {"people": True}),
    ("same but bird not dog", {"bird": False, "dog": True}),
    ("keep the truck, lose the person", {"truck": False, "person": True}),
    ("but with a cat too", {"cat": False}),
    ("is there a version with a red car?", {"red car": False}),
])
def test_the_things_a_request_names_and_which_it_wants_gone(instruction, expected):
    found = {o.text: o.removal for o in request_objects(instruction, LEXICON)}
    assert found == expected


def test_without_wordnet_a_request_names_nothing_but_negation_still_reads():
    assert request_objects("add a dog", None) == []
    assert negated("a street with no cars", ["car"]) and not negated("a street with cars", ["car"])
    assert negated("swap the dog for a horse", ["dog"]) and not negated("swap the dog for a horse", ["horse"])


@needs_wordnet
@pytest.mark.parametrize("typed, meant", [("caar", "car"), ("tiolet", "toilet"), ("peson", "person"), ("oevn", "oven"),
                                          ("skatteboard", "skateboard"), ("chir", "chair")])
def test_a_misspelt_thing_is_read_as_the_thing(typed, meant):
    assert LEXICON.correct(typed) == meant
    assert [o.text for o in request_objects(f"also has a {typed}", LEXICON)] == [meant]
    assert match(f"a {typed}", f"a photo with a {meant} in it", LEXICON) == FULL


@needs_wordnet
@pytest.mark.parametrize("word", ["tiny", "wooden", "parked", "riding", "shiny"])
def test_known_words_are_never_corrected(word):
    assert LEXICON.correct(word) is None


@pytest.mark.parametrize("text, language", [
    ("also has an oven", None), ("without the caar", None), ("man riding horse beach", None),
    ("add a bed", None), ("add a teddy bear", None),  # fastText alone reads these as Russian
    ("got one like this w/o the car?", None), ("", None),
    ("il y a aussi un four", "fr"), ("entferne das Sandwich", "de"), ("quita la manzana", "es"),
    ("把风筝换成网球拍", "zh"), ("去掉碗", "und"),
])
def test_the_language_of_a_request(text, language):
    assert request_language(text) == language
