"""The one tokenizer shared by indexing and querying; saved with every index so both always agree."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from functools import cached_property

# A compact English stopword list (function words only, so content words like "born" or "region"
# stay searchable).
ENGLISH_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below
    between both but by can could did do does doing down during each few for from further had has have
    having he her here hers herself him himself his how i if in into is it its itself just me more most my
    myself no nor not now of off on once only or other our ours ourselves out over own same she should so
    some such than that the their theirs them themselves then there these they this those through to too
    under until up very was we were what when where which while who whom why will with would you your
    yours yourself yourselves""".split()
)


@dataclass(frozen=True)
class Tokenizer:
    lowercase: bool = True
    pattern: str = r"\w+"
    stopwords: str = "english"  # "none" | "english"
    stemmer: str | None = None  # a PyStemmer language, e.g. "english"

    @classmethod
    def from_config(cls, stopwords: str, stemming: bool) -> "Tokenizer":
        return cls(stopwords=stopwords, stemmer="english" if stemming else None)

    @cached_property
    def _regex(self) -> re.Pattern:
        return re.compile(self.pattern)

    @cached_property
    def _stop(self) -> frozenset[str]:
        return ENGLISH_STOPWORDS if self.stopwords == "english" else frozenset()

    @cached_property
    def _stem(self):
        if self.stemmer is None:
            return None
        try:
            import Stemmer
        except ImportError as exc:  # pragma: no cover - PyStemmer is a declared dependency
            raise ImportError("stemming needs PyStemmer (pip install PyStemmer)") from exc
        return Stemmer.Stemmer(self.stemmer).stemWords

    def __call__(self, text: str) -> list[str]:
        if self.lowercase:
            text = text.lower()
        tokens = [t for t in self._regex.findall(text) if t not in self._stop]
        return self._stem(tokens) if self._stem is not None and tokens else tokens

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Tokenizer":
        return cls(**json.loads(text))
