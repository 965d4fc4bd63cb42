"""WordNet's nouns, read from Princeton's own database files: which words name things, their base
forms ("knives" -> knife, "dining tables" -> dining_table), synonyms and what each is a kind of
("puppy" is a dog, "woman" a person, "apple" a fruit). Object matching uses it to read a request or
a caption as a person would.

The files are looked for where WordNet is commonly installed: $LENSGRAPH_WORDNET, NLTK's data
(`python -m nltk.downloader wordnet`), Debian's and Ubuntu's `wordnet-base` (/usr/share/wordnet).
Without them matching falls back to word forms and the text encoder, with a warning.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "LENSGRAPH_WORDNET"
HYPERNYMS = ("@", "@i")
MEMBERS = ("%m",)  # member meronyms: "people" has persons as members, a "herd" cattle
# Base forms of a regular plural (WordNet's own "morphy" rules for nouns).
SUFFIXES = (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y"))
SENSES = 3
"""Senses of a word considered, most frequent first: rarer ones (a "dog" that is a frump) mislead more than they find."""


def candidate_folders() -> list[Path]:
    folders = [Path(os.environ[ENV])] if os.environ.get(ENV) else []
    nltk_roots = [Path(p) for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    nltk_roots += [Path.home() / "nltk_data", Path("/usr/share/nltk_data"), Path("/usr/local/share/nltk_data"),
                   Path("/usr/lib/nltk_data"), Path("/usr/local/lib/nltk_data")]
    folders += [root / "corpora" / "wordnet" for root in nltk_roots]
    folders += [Path("/usr/share/wordnet"), Path("/usr/local/share/wordnet"), Path("/opt/homebrew/share/wordnet")]
    return folders


class Lexicon:
    """WordNet's noun database in one folder (index.noun, data.noun, noun.exc)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._index: dict[str, tuple[int, ...]] = {}
        self._frequency: dict[str, int] = {}  # how often the noun's senses were seen in WordNet's tagged texts
        with open(folder / "index.noun", encoding="utf-8") as f:
            for line in f:
                if line.startswith(" "):  # the licence header
                    continue
                fields = line.split()
                count = int(fields[2])
                self._index[fields[0]] = tuple(int(o) for o in fields[-count:])
                self._frequency[fields[0]] = int(fields[-count - 1])
        self._exceptions: dict[str, str] = {}
        exc = folder / "noun.exc"
        if exc.is_file():
            for line in exc.read_text(encoding="utf-8").splitlines():
                parts = line.split()
                if len(parts) >= 2:
                    self._exceptions.setdefault(parts[0], parts[1])
        self._data = os.open(folder / "data.noun", os.O_RDONLY)  # read with pread: safe from any thread
        self._other_words: set[str] = set()  # adjectives, adverbs and verbs: known words, never "corrected"
        for pos in ("adj", "adv", "verb"):
            path = folder / f"index.{pos}"
            if path.is_file():
                with open(path, encoding="utf-8") as f:
                    self._other_words.update(line.split(" ", 1)[0] for line in f if not line.startswith(" "))

    def lemmas(self, phrase: str) -> list[str]:
        """The noun's base forms as WordNet spells them ("Dining Tables" -> dining_table; "people" ->
        people, person), exceptions first; empty when it is no noun WordNet knows."""
        key = "_".join(phrase.lower().split())
        if not key:
            return []
        head, _, last = key.rpartition("_")
        found = [f"{head}_{base}" if head else base for base in self._bases(last)]
        return [lemma for lemma in dict.fromkeys(found) if lemma in self._index]

    def _bases(self, word: str) -> list[str]:
        bases = [self._exceptions[word]] if word in self._exceptions else []
        bases.append(word)
        bases += [word[: -len(suffix)] + ending for suffix, ending in SUFFIXES if word.endswith(suffix) and len(word) > len(suffix) + 1]
        return bases

    def known(self, word: str) -> bool:
        """Whether WordNet knows the word as a noun, an adjective, an adverb or a verb (in a regular form)."""
        if self.lemmas(word) or word in self._other_words:
            return True
        stems = [word[: -len(end)] + add for end, add in (("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"), ("es", ""), ("s", ""))
                 if word.endswith(end)]
        return any(stem in self._other_words for stem in stems)

    def correct(self, word: str, keep: Callable[[str], bool] = lambda lemma: True) -> str | None:
        """The noun one slip of the fingers away from a word WordNet does not know ("caar" -> car,
        "tiolet" -> toilet, "peson" -> person), among those `keep` accepts, or None. Among several,
        the most frequent in WordNet's tagged texts."""
        word = word.lower()
        if len(word) < 3 or not word.isalpha() or self.known(word):
            return None
        letters = "abcdefghijklmnopqrstuvwxyz"
        splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
        variants = {a + b[1:] for a, b in splits if b}
        variants |= {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
        variants |= {a + c + b[1:] for a, b in splits if b for c in letters}
        variants |= {a + c + b for a, b in splits for c in letters}
        found = {lemma: self._frequency[lemma] for v in variants for lemma in self.lemmas(v)[:1] if keep(lemma)}
        return max(sorted(found), key=found.__getitem__) if found else None

    def is_noun(self, phrase: str) -> bool:
        return bool(self.lemmas(phrase))

    def senses(self, phrase: str, limit: int = SENSES) -> tuple[int, ...]:
        """The most frequent senses of each base form."""
        return tuple(dict.fromkeys(o for lemma in self.lemmas(phrase) for o in self._index[lemma][:limit]))

    @lru_cache(maxsize=65536)
    def _pointers(self, offset: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The synset's hypernyms and members."""
        chunk = b""
        while b"\n" not in chunk:  # a data line: offset lex_filenum type w_cnt (word lex_id)* p_cnt (ptr offset pos st)* ...
            more = os.pread(self._data, 4096, offset + len(chunk))
            if not more:
                break
            chunk += more
        fields = chunk.split(b"\n", 1)[0].decode("utf-8").split(" | ")[0].split()
        words = int(fields[3], 16)
        at = 4 + 2 * words
        pointers = int(fields[at])
        hypernyms, members = [], []
        for i in range(pointers):
            symbol, target, pos = fields[at + 1 + 4 * i: at + 4 + 4 * i]
            if pos == "n" and symbol in HYPERNYMS + MEMBERS:
                (hypernyms if symbol in HYPERNYMS else members).append(int(target))
        return tuple(hypernyms), tuple(members)

    @lru_cache(maxsize=65536)
    def ancestors(self, offset: int) -> frozenset[int]:
        """The synset and everything it is a kind of."""
        seen, todo = {offset}, [offset]
        while todo:
            for parent in self._pointers(todo.pop())[0]:
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return frozenset(seen)

    def members(self, offset: int) -> tuple[int, ...]:
        """What a group is made of ("people": persons)."""
        return self._pointers(offset)[1]

    def is_a(self, specific: str, general: str) -> bool:
        """Whether `specific` names the same thing as `general`, a kind of it or a group of them
        ("puppy" -> dog, "sofa" -> couch, "apples" -> fruit, "people" -> person), by their most
        frequent senses."""
        wanted = set(self.senses(general))
        if not wanted:
            return False
        return any(wanted & (self.ancestors(s) | {a for m in self.members(s) for a in self.ancestors(m)})
                   for s in self.senses(specific))


_loaded: dict[str, Lexicon | None] = {}


def load_lexicon() -> Lexicon | None:
    """The first WordNet found (see the module's docstring), loaded once per process; None, with one
    warning, when there is none."""
    key = os.environ.get(ENV, "")
    if key not in _loaded:
        found = next((f for f in candidate_folders() if (f / "index.noun").is_file() and (f / "data.noun").is_file()), None)
        if found is None:
            log.warning("WordNet not found (looked in %s): objects are matched by word forms and the text encoder only. "
                        "Install it with `apt-get install wordnet-base` or `python -m nltk.downloader wordnet`, or set %s.",
                        ", ".join(str(f) for f in candidate_folders()), ENV)
        _loaded[key] = Lexicon(found) if found else None
    return _loaded[key]
