"""The answer parser: a generated answer (free text) -> a class index, and how it was found.

``medprobe classify --mode generate`` asks the closed-set question of
:func:`medprobe.prompts.classification_question` and parses what the model wrote. The parser is
deterministic and versioned (:data:`PARSER_VERSION` is part of the classify run key); every
answer gets a label or is *unparsed*, and unparsed answers are counted and scored as wrong,
never dropped.

Rules, in order (the first that decides wins):

1. **Clean-up.** A ``<answer>…</answer>`` block, when present, is the answer (reasoning models
   such as MedVLM-R1 think first); ``<think>…</think>`` blocks are removed. The text is
   Unicode-normalised (NFKC), lower-cased, ``_`` / ``-`` / ``/`` become spaces, apostrophes are
   dropped (``isn't`` -> ``isnt``), every other punctuation mark becomes a boundary token.
2. **exact** -- the whole answer is a class name, once punctuation and one leading ``the
   answer is`` / ``answer is`` / ``final answer`` / ``answer`` / ``it is`` / ``this is`` are removed. Class names are compared in words: ``round_lesion``
   -> ``round lesion``, ``NonCOVID`` -> ``non covid`` (camel case split; the joined spelling
   ``noncovid`` is accepted too).
3. **letter** -- the answer is an option letter: ``B``, ``(b)``, ``b)``, ``B.`` or ``option B``
   / ``answer: B`` at the start. Letters count the classes in the order the question lists
   them (A = the first class). A letter beyond the number of classes is ignored.
4. **mention** / **synonym** -- class names and the dataset's synonyms (:data:`SYNONYMS`) are
   searched as whole-word phrases. Overlapping matches keep the longest (``no pneumonia`` is a
   synonym of NORMAL and hides the ``pneumonia`` inside it). A match is *negated* when one of the
   three words before it (not crossing punctuation) is a negation (:data:`NEGATIONS`): ``not
   malignant`` is no vote for malignant. If the remaining matches name exactly one class, that
   class wins: method ``mention`` when a class name matched (alone or inside a synonym such as
   ``benign lesion``), ``synonym`` when only synonyms did.
   If they name several classes the answer is **ambiguous** (unparsed). A letter that
   disagrees with a named class is ambiguous too. A synonym that would name two classes (or
   another class's name) is left out (:attr:`AnswerParser.dropped`); class names never are.
5. **negation** -- no positive match, but the negated classes leave exactly one class
   (``not pneumonia`` on a two-class dataset).
6. **fuzzy** -- no match at all: every run of 1 to 4 words of the answer is compared with every
   class name and synonym of at least 4 characters that starts with the same letter and differs
   in length by at most 2 (``difflib`` ratio); the best ratio must reach :data:`FUZZY_CUTOFF`
   (0.8) and belong to one class only (``malignnat``, ``pnuemonia``; never ``abnormal`` ->
   ``normal``).
7. Otherwise **unparsed**.

::

    from medprobe.tasks.answers import parse_answer
    parse_answer("The lesion is malignant.", ["benign", "malignant", "normal"], dataset="busi")
    # Parsed(label=1, method='mention')

The returned :class:`Parsed` is a ``(label, method)`` tuple; ``label`` is ``None`` exactly when
``method`` is ``ambiguous`` or ``unparsed``.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from typing import Iterable, Mapping, NamedTuple, Sequence

from ..registry import MedprobeError

#: bump when a rule or a synonym changes what an answer parses to (part of the classify run key)
PARSER_VERSION = "1"
#: methods that give a label, in rule order
METHODS = ("exact", "letter", "mention", "synonym", "negation", "fuzzy")
AMBIGUOUS = "ambiguous"
UNPARSED = "unparsed"
FUZZY_CUTOFF = 0.8
FUZZY_MIN_CHARS = 4
FUZZY_MAX_LENGTH_GAP = 2
NEGATION_WINDOW = 3
NEGATIONS = frozenset({"not", "no", "non", "without", "nor", "neither", "isnt", "arent", "doesnt", "never"})

#: dataset name (``Dataset.name``) -> class name -> synonyms (plain words; compared after clean-up)
SYNONYMS: dict[str, dict[str, tuple[str, ...]]] = {
    "busi": {
        "benign": (
            "benign lesion", "benign mass", "benign tumor", "benign tumour", "non cancerous", "noncancerous",
            "not cancer", "fibroadenoma", "cyst", "benign finding",
        ),
        "malignant": (
            "malignancy", "cancer", "cancerous", "carcinoma", "malignant tumor", "malignant tumour",
            "malignant lesion", "malignant mass", "breast cancer", "suspicious for malignancy",
        ),
        "normal": (
            "no lesion", "no mass", "no tumor", "no tumour", "healthy", "normal breast", "normal tissue",
            "unremarkable", "no abnormality", "no abnormalities", "no finding", "no findings",
        ),
    },
    "chest-xray": {
        "NORMAL": (
            "no pneumonia", "no evidence of pneumonia", "without pneumonia", "healthy", "clear lungs",
            "lungs are clear", "unremarkable", "no abnormality", "no abnormalities", "no consolidation",
            "negative for pneumonia", "no acute findings",
        ),
        "PNEUMONIA": (
            "pneumonic", "bacterial pneumonia", "viral pneumonia", "lung infection", "consolidation",
            "infiltrate", "infiltrates", "positive for pneumonia",
        ),
    },
    "covid-ct": {
        "NonCOVID": (
            "not covid", "no covid", "covid negative", "negative for covid", "negative for covid 19",
            "non covid 19", "no covid 19", "not covid 19", "covid 19 negative", "healthy", "normal", "negative",
        ),
        "COVID": (
            "covid 19", "covid19", "sars cov 2", "coronavirus", "covid positive", "positive for covid",
            "positive for covid 19", "covid 19 positive", "covid pneumonia", "positive",
        ),
    },
    "synthetic-lesions": {
        "normal": ("no lesion", "no mass", "healthy", "unremarkable", "no abnormality", "no abnormalities"),
        "round_lesion": (
            "round", "circular", "oval", "round mass", "circumscribed lesion", "well circumscribed",
            "smooth lesion", "smooth mass",
        ),
        "spiculated_lesion": (
            "spiculated", "spiculated mass", "spiky", "stellate", "stellate lesion", "irregular lesion",
            "irregular mass", "star shaped",
        ),
    },
}


class AnswerError(MedprobeError):
    """The class list or the synonym table cannot be parsed against (names the class / phrase)."""


class Parsed(NamedTuple):
    """``label``: class index or ``None``; ``method``: one of :data:`METHODS`, ``ambiguous``, ``unparsed``."""

    label: int | None
    method: str


# -- normalisation ---------------------------------------------------------------------------------
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_THINK = re.compile(r"<think>.*?(</think>|$)", re.S | re.I)
_ANSWER_TAG = re.compile(r"<answer>(.*?)(</answer>|$)", re.S | re.I)
_TOKEN = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")
_LEAD = ("the answer is", "answer is", "final answer", "answer", "it is", "this is")
_LETTER_WHOLE = re.compile(r"^\(?([a-z])\)?\s*[.:)]?$")
_LETTER_LEAD = re.compile(r"^(?:(?:option|answer|choice)\s*:?\s*\(?([a-z])\)?(?![a-z0-9])|\(([a-z])\)|([a-z])[.):](?=\s|$))")


def class_words(name: str) -> str:
    """A class name as lower-case words: ``round_lesion`` -> ``round lesion``, ``NonCOVID`` -> ``non covid``."""
    return " ".join(_words(_CAMEL.sub(" ", name)))


def _clean(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)
    tag = _ANSWER_TAG.search(text)
    if tag:
        text = tag.group(1)
    text = _THINK.sub(" ", text)
    text = text.lower().replace("'", "").replace("\u2019", "")
    return re.sub(r"[_\-/]", " ", text)


def _tokens(text: str) -> list[str]:
    """Words and single punctuation marks (boundaries) of cleaned text."""
    return _TOKEN.findall(text)


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", _clean(text))


# -- the parser ------------------------------------------------------------------------------------
class AnswerParser:
    """Parses answers against one class list (and the synonyms of one dataset).

    Args:
        classes: class names in the order the question lists them (index = label).
        dataset: ``Dataset.name`` choosing the synonym table; a dataset without a table borrows
            the synonyms of any table class with the same name (an imagefolder with
            ``benign/malignant/normal`` folders gets the BUSI synonyms).
        synonyms: class name -> extra synonyms (added to the table's).

    Raises :class:`AnswerError` for an empty class list or two classes with the same words.
    """

    def __init__(
        self,
        classes: Sequence[str],
        dataset: str | None = None,
        synonyms: Mapping[str, Iterable[str]] | None = None,
    ) -> None:
        self.classes = list(classes)
        if not self.classes:
            raise AnswerError("the answer parser needs at least one class")
        self.dataset = dataset
        names = [class_words(c) for c in self.classes]
        for i, n in enumerate(names):
            if not n:
                raise AnswerError(f"class {self.classes[i]!r} has no letters or digits to match in an answer")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise AnswerError(f"classes {self.classes} are indistinguishable in words: {dup}")
        #: phrase (word tuple) -> (class index, is a class name)
        self.phrases: dict[tuple[str, ...], tuple[int, bool]] = {}
        #: synonyms left out because they would name two classes (reasons, for the run record)
        self.dropped: list[str] = []
        self._conflicts: set[tuple[str, ...]] = set()
        for i, n in enumerate(names):
            self._add(n, i, True, f"class {self.classes[i]!r}")
            joined = n.replace(" ", "")
            if joined != n:
                self._add(joined, i, True, f"class {self.classes[i]!r}")
        table = synonym_table(dataset, self.classes)
        for cls, extra in (synonyms or {}).items():
            if cls not in self.classes:
                raise AnswerError(f"synonyms given for {cls!r}, which is not one of the classes {self.classes}")
            table[cls] = tuple(table.get(cls, ())) + tuple(extra)
        for cls, phrases in table.items():
            i = self.classes.index(cls)
            for phrase in phrases:
                words = " ".join(_words(phrase))
                # a synonym holding the class's own name ("benign lesion") counts as naming it
                holds_name = f" {names[i]} " in f" {words} "
                self._add(words, i, holds_name, f"synonym {phrase!r} of {cls!r}")
        self._exact = {n: i for i, n in enumerate(names)}
        self._exact.update({n.replace(" ", ""): i for i, n in enumerate(names)})
        self._max_len = max(len(p) for p in self.phrases)
        self._fuzzy = [(" ".join(p), i) for p, (i, _) in self.phrases.items() if len(" ".join(p)) >= FUZZY_MIN_CHARS]

    def _add(self, phrase: str, index: int, is_name: bool, what: str) -> None:
        key = tuple(phrase.split())
        if not key:
            raise AnswerError(f"{what} is empty after clean-up")
        if key in self._conflicts:
            return
        old = self.phrases.get(key)
        if old is not None and old[0] != index:
            if is_name and old[1]:
                raise AnswerError(f"{what} ({phrase!r}) also names class {self.classes[old[0]]!r}")
            if old[1]:  # a synonym never overrides another class's name
                self.dropped.append(f"{what}: names class {self.classes[old[0]]!r}")
                return
            if not is_name:  # a synonym of two classes votes for neither
                self.dropped.append(f"{what}: also a synonym of {self.classes[old[0]]!r}")
                self._conflicts.add(key)
                del self.phrases[key]
                return
        if old is None:  # class names are added before synonyms
            self.phrases[key] = (index, is_name)

    # -- rules ---------------------------------------------------------------------------------
    def __call__(self, text: str | None) -> Parsed:
        return self.parse(text)

    def parse(self, text: str | None) -> Parsed:
        """``text`` -> :class:`Parsed` (see the module docstring for the rules)."""
        if not text or not text.strip():
            return Parsed(None, UNPARSED)
        cleaned = _clean(text)
        tokens = _tokens(cleaned)
        words = [t for t in tokens if t[0].isalnum()]
        if not words:
            return Parsed(None, UNPARSED)
        stripped = _strip_lead(words)
        exact = self._exact.get(" ".join(stripped)) if stripped else None
        if exact is not None:
            return Parsed(exact, "exact")
        letter = self._letter(cleaned.strip())
        positive, negated, by_name = self._mentions(tokens)
        if letter is not None:
            if positive and positive != {letter}:
                return Parsed(None, AMBIGUOUS)
            return Parsed(letter, "letter")
        if len(positive) == 1:
            (label,) = positive
            return Parsed(label, "mention" if by_name else "synonym")
        if len(positive) > 1:
            return Parsed(None, AMBIGUOUS)
        if negated:
            left = set(range(len(self.classes))) - negated
            if len(left) == 1:
                return Parsed(left.pop(), "negation")
            return Parsed(None, AMBIGUOUS)
        return self._fuzzy_match(words)

    def _letter(self, cleaned: str) -> int | None:
        m = _LETTER_WHOLE.match(cleaned) or _LETTER_LEAD.match(cleaned)
        if not m:
            return None
        letter = next(g for g in m.groups() if g)
        index = ord(letter) - ord("a")
        return index if index < len(self.classes) else None

    def _mentions(self, tokens: list[str]) -> tuple[set[int], set[int], bool]:
        """(classes matched positively, classes only matched negated, a class *name* decided)."""
        spans: list[tuple[int, int, int, bool]] = []  # start, end (token indices), class, is name
        n = len(tokens)
        for start in range(n):
            if not tokens[start][0].isalnum():
                continue
            for length in range(min(self._max_len, n - start), 0, -1):
                seg = tokens[start : start + length]
                if not all(t[0].isalnum() for t in seg):
                    continue
                hit = self.phrases.get(tuple(seg))
                if hit is not None:
                    spans.append((start, start + length, hit[0], hit[1]))
                    break
        # longest match wins where spans overlap
        spans.sort(key=lambda s: (-(s[1] - s[0]), s[0]))
        kept: list[tuple[int, int, int, bool]] = []
        for s in spans:
            if all(s[1] <= k[0] or s[0] >= k[1] for k in kept):
                kept.append(s)
        positive: dict[int, bool] = {}
        negated: set[int] = set()
        for start, _end, label, is_name in kept:
            if _negated(tokens, start):
                negated.add(label)
            else:
                positive[label] = positive.get(label, False) or is_name
        by_name = len(positive) == 1 and next(iter(positive.values()))
        return set(positive), negated - set(positive), by_name

    def _fuzzy_match(self, words: list[str]) -> Parsed:
        best, labels = 0.0, set()
        for length in range(1, 5):
            for start in range(0, len(words) - length + 1):
                gram = " ".join(words[start : start + length])
                if len(gram) < FUZZY_MIN_CHARS:
                    continue
                for phrase, label in self._fuzzy:
                    if phrase[0] != gram[0] or abs(len(phrase) - len(gram)) > FUZZY_MAX_LENGTH_GAP:
                        continue  # typos keep the first letter: "abnormal" is no misspelt "normal"
                    ratio = difflib.SequenceMatcher(None, gram, phrase).ratio()
                    if ratio > best + 1e-12:
                        best, labels = ratio, {label}
                    elif abs(ratio - best) <= 1e-12:
                        labels.add(label)
        if best < FUZZY_CUTOFF:
            return Parsed(None, UNPARSED)
        if len(labels) > 1:
            return Parsed(None, AMBIGUOUS)
        return Parsed(labels.pop(), "fuzzy")


def _strip_lead(words: list[str]) -> list[str]:
    text = " ".join(words)
    for lead in _LEAD:
        if text.startswith(lead + " "):
            return text[len(lead) + 1 :].split()
    return words


def _negated(tokens: list[str], start: int) -> bool:
    seen = 0
    i = start - 1
    while i >= 0 and seen < NEGATION_WINDOW:
        t = tokens[i]
        if not t[0].isalnum():
            return False
        if t in NEGATIONS:
            return True
        seen += 1
        i -= 1
    return False


def synonym_table(dataset: str | None, classes: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Class name -> synonyms for ``classes`` (see :class:`AnswerParser` for the lookup)."""
    if dataset in SYNONYMS:
        table = SYNONYMS[dataset]
        return {c: tuple(table.get(c, ())) for c in classes if table.get(c)}
    out: dict[str, tuple[str, ...]] = {}
    wanted = {class_words(c): c for c in classes}
    for table in SYNONYMS.values():
        for cls, phrases in table.items():
            target = wanted.get(class_words(cls))
            if target is not None:
                out[target] = tuple(dict.fromkeys((*out.get(target, ()), *phrases)))
    return out


def parse_answer(
    text: str | None,
    classes: Sequence[str],
    dataset: str | None = None,
    synonyms: Mapping[str, Iterable[str]] | None = None,
) -> Parsed:
    """Parse one answer (builds an :class:`AnswerParser`; reuse one for many answers)."""
    return AnswerParser(classes, dataset, synonyms).parse(text)
