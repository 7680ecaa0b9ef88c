"""The evaluation harness: the five methods on the same test questions, retrieval recall, error classes."""
