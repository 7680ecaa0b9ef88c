"""Ray Serve applications: the self-hosted teacher (OpenAI-compatible chat) and, later, the KARD graph."""
