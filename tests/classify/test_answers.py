"""The answer parser: golden cases for every rule, ambiguous and unparsed answers, synonym tables."""

from __future__ import annotations

import pytest

from medprobe.tasks.answers import AMBIGUOUS, UNPARSED, AnswerError, AnswerParser, SYNONYMS, class_words, parse_answer

BUSI = ["benign", "malignant", "normal"]
CXR = ["NORMAL", "PNEUMONIA"]
COVID = ["NonCOVID", "COVID"]
LESIONS = ["normal", "round_lesion", "spiculated_lesion"]

GOLDEN = [
    # (answer, classes, dataset, label, method)
    ("Benign.", BUSI, "busi", 0, "exact"),
    ("  MALIGNANT ", BUSI, "busi", 1, "exact"),
    ("The answer is normal", BUSI, "busi", 2, "exact"),
    ("Round_lesion", LESIONS, "synthetic-lesions", 1, "exact"),
    ("spiculated lesion", LESIONS, "synthetic-lesions", 2, "exact"),
    ("NonCOVID", COVID, "covid-ct", 0, "exact"),
    ("non-covid", COVID, "covid-ct", 0, "exact"),
    ("B", BUSI, "busi", 1, "letter"),
    ("(c)", BUSI, "busi", 2, "letter"),
    ("Option A", BUSI, "busi", 0, "letter"),
    ("b) malignant", BUSI, "busi", 1, "letter"),
    ("This lesion is malignant.", BUSI, "busi", 1, "mention"),
    ("A benign lesion", BUSI, "busi", 0, "mention"),
    ("It is not malignant, it is benign.", BUSI, "busi", 0, "mention"),
    ("<think>could be benign</think><answer>malignant</answer>", BUSI, "busi", 1, "exact"),
    ("Yes, pneumonia is present", CXR, "chest-xray", 1, "mention"),
    ("cancer", BUSI, "busi", 1, "synonym"),
    ("no lesion is seen", BUSI, "busi", 2, "synonym"),
    ("No pneumonia.", CXR, "chest-xray", 0, "synonym"),
    ("There is no evidence of pneumonia", CXR, "chest-xray", 0, "synonym"),
    ("COVID-19", COVID, "covid-ct", 1, "mention"),  # the synonym "covid 19" holds the class name
    ("coronavirus infection", COVID, "covid-ct", 1, "synonym"),
    ("Negative for COVID", COVID, "covid-ct", 0, "synonym"),
    ("a round mass", LESIONS, "synthetic-lesions", 1, "synonym"),
    ("a stellate lesion", LESIONS, "synthetic-lesions", 2, "synonym"),
    ("not pneumonia", CXR, "chest-xray", 0, "negation"),
    ("malignnat", BUSI, "busi", 1, "fuzzy"),
    ("pnuemonia", CXR, "chest-xray", 1, "fuzzy"),
    ("spicualted", LESIONS, "synthetic-lesions", 2, "fuzzy"),
]


@pytest.mark.parametrize("answer, classes, dataset, label, method", GOLDEN)
def test_golden_answers(answer, classes, dataset, label, method):
    assert parse_answer(answer, classes, dataset) == (label, method)


@pytest.mark.parametrize(
    "answer, classes, dataset",
    [
        ("benign or malignant", BUSI, "busi"),
        ("Options: benign, malignant, normal", BUSI, "busi"),  # the options echoed back
        ("B. benign", BUSI, "busi"),  # the letter says malignant, the words say benign
        ("not malignant", BUSI, "busi"),  # leaves benign and normal
        ("COVID-19 or normal", COVID, "covid-ct"),
    ],
)
def test_ambiguous_answers_give_no_label(answer, classes, dataset):
    assert parse_answer(answer, classes, dataset) == (None, AMBIGUOUS)


@pytest.mark.parametrize(
    "answer",
    ["", "   ", "No.", "xyz qwe", "abnormal", "what what what", "E"],  # E: a letter beyond the 3 options
)
def test_unparsed_answers(answer):
    assert parse_answer(answer, LESIONS, "synthetic-lesions") == (None, UNPARSED)


def test_every_builtin_table_is_consistent_with_its_classes():
    for name, table in SYNONYMS.items():
        parser = AnswerParser(list(table), name)
        assert parser.dropped == [], name
        for cls in table:  # every class can be reached through its own name
            assert parser.parse(cls).label == list(table).index(cls)


def test_borrowed_synonyms_and_conflicts():
    # an imagefolder with BUSI's class names borrows BUSI's synonyms
    assert parse_answer("carcinoma", BUSI, "my-folder") == (1, "synonym")
    # a borrowed synonym that names another class is left out, and said so
    parser = AnswerParser(["NonCOVID", "COVID", "normal"], "other")
    assert parser.parse("normal") == (2, "exact")
    assert any("'normal'" in d for d in parser.dropped)


def test_extra_synonyms_and_bad_classes():
    assert parse_answer("fibroadenoma-like", BUSI, "busi").label == 0
    assert parse_answer("bi-rads 5", BUSI, "busi", synonyms={"malignant": ["bi rads 5"]}) == (1, "synonym")
    with pytest.raises(AnswerError, match="not one of the classes"):
        AnswerParser(BUSI, "busi", synonyms={"cyst": ["x"]})
    with pytest.raises(AnswerError, match="indistinguishable"):
        AnswerParser(["round_lesion", "round-lesion"])
    with pytest.raises(AnswerError, match="at least one class"):
        AnswerParser([])


def test_class_words():
    assert class_words("round_lesion") == "round lesion"
    assert class_words("NonCOVID") == "non covid"
    assert class_words("PNEUMONIA") == "pneumonia"
