"""KARD's reranker: a cross-encoder trained so that, from the question alone, it ranks passages as
BM25 would rank them for the teacher's rationale."""
