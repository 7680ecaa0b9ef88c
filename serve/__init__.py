"""Ray Serve applications: the KARD answer service (``app``) and the self-hosted teacher (``teacher``)."""
