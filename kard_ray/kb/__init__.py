"""Knowledge base: ingest documents and chunk them into passages (Ray Data)."""
