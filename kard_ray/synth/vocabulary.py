"""Word material for the synthetic world: invented names and the sentence templates that state facts.

Names are built from syllables so that no pretrained model has seen them; templates vary the
wording so that retrieval and students cannot rely on one fixed surface form.
"""

from __future__ import annotations

import random
import re

ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "sk",
          "t", "th", "tr", "v", "vr", "z", "zh"]
VOWELS = ["a", "e", "i", "o", "u", "ae", "ai", "ei", "ou", "y"]
CODAS = ["", "", "n", "r", "l", "s", "th", "x", "k", "m", "nd", "rt"]
TOWN_SUFFIXES = ["ford", "holm", "wick", "stead", "moor", "bury", "mere", "gate"]
REGION_SUFFIXES = ["ia", "land", "mark", "vale", "reach", "march"]

OCCUPATIONS = [
    "glassblower", "cartographer", "beekeeper", "clockmaker", "ferryman", "stonemason", "herbalist",
    "bookbinder", "shipwright", "weaver", "astronomer", "lamplighter", "cooper", "falconer",
    "chandler", "tanner", "luthier", "potter", "saddler", "vintner",
]
PRODUCTS = [
    "copper bells", "blue wool", "smoked eels", "salt cheese", "rope bridges", "amber jewellery",
    "paper lanterns", "pear cider", "slate roofs", "honey cakes", "iron kettles", "river pearls",
    "painted kites", "walnut furniture", "wax candles", "linen sails", "glass beads", "goat leather",
    "plum brandy", "felt hats",
]


def fix_articles(text: str) -> str:
    """'a astronomer' -> 'an astronomer' (occupations are lowercase; names are capitalised)."""
    return re.sub(r"\ba ([aeiou])", r"an \1", text)


def invented_word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS) for _ in range(syllables))


def unique_names(rng: random.Random, count: int, make, taken: set[str]) -> list[str]:
    out: list[str] = []
    while len(out) < count:
        name = make()
        if name not in taken and len(name) > 3:
            taken.add(name)
            out.append(name)
    return out


# Knowledge-base sentences stating each relation. {P} person, {T} town, {R} region, {O} occupation,
# {X} product.
KB_TEMPLATES = {
    "born_in": [
        "{P} was born in {T}.",
        "{P} was born in the town of {T}.",
        "{T} is the birthplace of {P}.",
        "The parish records of {T} list {P} among the children born there.",
        "{P} is a native of {T}.",
    ],
    "occupation": [
        "{P} works as a {O}.",
        "By trade, {P} is a {O}.",
        "{P} earns a living as a {O}.",
        "For many years {P} has been a {O}.",
    ],
    "region": [
        "{T} lies in the region of {R}.",
        "{T} is a town in {R}.",
        "The town of {T} belongs to the {R} region.",
        "{T} sits within the borders of {R}.",
    ],
    "known_for": [
        "{T} is known for its {X}.",
        "{T} is famous for {X}.",
        "Merchants travel to {T} for its {X}.",
        "The people of {T} are proud of their {X}.",
    ],
}

# Paragraphs that share the questions' words but state no answer: the lexical traps that make
# question-only BM25 weak and give a reranker something to learn.
PERSON_DISTRACTORS = [
    "{P} rarely talks about the town where they were born.",
    "Nobody in the region seems to know what {P} does for a living.",
    "{P} once wrote a long letter about the work they do and the region they travel through.",
    "{P} has a cousin who was born in a distant town far from any region they know.",
    "Neighbours say {P} is known for kindness more than for any trade or occupation.",
    "{P} visited many towns in the region last spring, asking which town was the oldest.",
    "Some claim {P} was born on a boat, but the town and region of that story are unknown.",
]
FRIEND_DISTRACTOR = "{Q}, a childhood friend of {P}, was born in {T}."
TOWN_DISTRACTORS = [
    "Travellers from every region pass through {T} on market days.",
    "Many people who were born in {T} later left for other towns.",
]

QUESTION_TEMPLATES = {
    "born_town": ["In which town was {P} born?", "Where was {P} born?", "What is the birthplace of {P}?"],
    "occupation": ["What does {P} do for a living?", "What is the occupation of {P}?",
                   "What work does {P} do?"],
    "born_region": ["In which region was {P} born?", "Which region is {P} from?",
                    "{P} was born in which region?"],
    "hometown_product": ["What is the hometown of {P} known for?",
                         "What is the town where {P} was born famous for?"],
}
ONE_HOP = ("born_town", "occupation")
TWO_HOP = ("born_region", "hometown_product")

# The reference teacher's wording: deliberately different from the KB's, as a real teacher's is.
RATIONALE_TEMPLATES = {
    "born_in": ["{P} was born in {T}.", "{P} comes from the town of {T}.", "The birthplace of {P} is {T}."],
    "occupation": ["{P} works as a {O}.", "{P} is a {O} by trade.", "The occupation of {P} is {O}."],
    "region": ["{T} is located in {R}.", "{T} is part of the {R} region.", "{T} is a town of {R}."],
    "known_for": ["{T} is known for its {X}.", "{T} is famous for {X}.", "{T} is renowned for {X}."],
}
CONCLUSIONS = ["So the answer is ({L}) {A}.", "Therefore, the answer is ({L}) {A}.",
               "Thus the answer is ({L}) {A}."]
