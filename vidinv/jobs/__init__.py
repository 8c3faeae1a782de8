"""The commands' jobs: each a `run(config, *, quiet) -> summary line` function."""
