"""The teacher LLM side: prompts, the rate-limited client and its Ray Data worker, the response cache,
imported rationales, and the reference teacher for the synthetic world."""
