"""Retrieval: exact sparse BM25 (sharded, memory-mapped), dense FAISS, hybrid fusion, batch retrieval."""
