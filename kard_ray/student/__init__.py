"""The student: input formats, model families, Ray Train fine-tuning and batched generation."""
