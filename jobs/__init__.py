"""Ray-job entrypoints: ``python -m jobs.<stage> --config ...``, the same command on a laptop and
under ``ray job submit``. Each parses arguments, loads the typed config, calls ``init_ray()`` and
runs one stage."""
