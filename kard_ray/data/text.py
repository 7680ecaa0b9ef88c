"""Text normalisation shared by everything that compares passages with gold facts."""

from __future__ import annotations


def normalize_for_match(text: str) -> str:
    """Case-, whitespace- and final-period-insensitive form (OBQA's fact1 ends in '.'; the book does not)."""
    return " ".join(text.lower().split()).rstrip(" .")


def contains_fact(passage: str, fact: str) -> bool:
    """Does a retrieved passage state a gold fact?"""
    return normalize_for_match(fact) in normalize_for_match(passage)
