"""Question sets and knowledge-base documents, read into one normalised schema."""

from kard_ray.data.kb_sources import Document, load_documents
from kard_ray.data.questions import load_questions
from kard_ray.data.records import MalformedRecord, ReadReport
from kard_ray.data.schema import LETTERS, Question

__all__ = [
    "LETTERS",
    "Document",
    "MalformedRecord",
    "Question",
    "ReadReport",
    "load_documents",
    "load_questions",
]
