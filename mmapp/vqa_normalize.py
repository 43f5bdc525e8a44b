"""Answer normalisation of the official VQA evaluation (``vqaEval.py`` of GT-Vision-Lab/VQA, the
VQA v2 version), reproduced behaviour for behaviour, quirks included:

- ``periodStrip`` is ``(?!<=\\d)(\\.)(?!\\d)``: the ``(?!<=\\d)`` is a typo'd look-behind that is in
  fact a look-ahead that never fires, so a period is removed unless a digit follows it
  ("2.5" keeps its period, "ok." and "a.m" lose theirs). The official call passes ``re.UNICODE``
  as the positional *count* argument, so at most 32 periods are removed.
- ``processPunctuation`` decides per punctuation mark from the *original* text: the mark is
  deleted if it touches a space anywhere in the text, or if the text has a digit-comma-digit
  ("1,000"); otherwise it becomes a space ("yes/no" -> "yes no", "1,000" -> "1000").
- ``processDigitArticle`` lower-cases, maps number words ("none" -> "0", "zero".."ten"), drops
  "a"/"an"/"the", then applies the contraction map ("dont" -> "don't"). The map's capitalised
  keys ("Im", "Ive", "Id've") never match after lower-casing: kept as the official code has them.

``normalize_answer`` applies the whole chain (what the official code does to a predicted answer).
The accuracy rule that decides *when* the chain is applied lives in ``vqa_accuracy.py``.
"""

from __future__ import annotations

import re

CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're",
    "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've",
    "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all",
    "yall'll": "y'all'll", "y'allll": "y'all'll", "yall'd've": "y'all'd've",
    "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've",
    "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}

MANUAL_MAP: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}

ARTICLES: tuple[str, ...] = ("a", "an", "the")

PUNCT: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)

PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
COMMA_STRIP = re.compile(r"(\d)(\,)(\d)")
# The official code calls ``periodStrip.sub("", text, re.UNICODE)``: the flag lands in ``count``.
_OFFICIAL_PERIOD_COUNT = int(re.UNICODE)


def clean_whitespace(answer: str) -> str:
    """Newlines and tabs become spaces, then the ends are stripped (the official first step)."""
    return answer.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation`` (see the module docstring for its rules)."""
    out = text
    has_digit_comma = COMMA_STRIP.search(text) is not None
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or has_digit_comma:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=_OFFICIAL_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, drop articles,
    expand contractions; words re-joined by single spaces."""
    words = [MANUAL_MAP.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """Full official normalisation of one answer.

    >>> normalize_answer("Two.")
    '2'
    >>> normalize_answer("a dog")
    'dog'
    >>> normalize_answer("dont")
    "don't"
    """
    return process_digit_article(process_punctuation(clean_whitespace(answer)))


def soft_score(count: int) -> float:
    """Soft training target of an answer given by ``count`` of the 10 annotators: min(count/3, 1).

    (The common training target; the evaluation metric averages over leave-one-out subsets
    instead, see ``vqa_accuracy.accuracy_for``.)
    """
    if count < 0:
        raise ValueError(f"an answer count cannot be negative, got {count}")
    return min(count / 3.0, 1.0)
