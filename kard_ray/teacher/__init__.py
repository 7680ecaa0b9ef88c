"""The teacher LLM side: the reference teacher server for the synthetic world (and, later, the client)."""
