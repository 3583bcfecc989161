"""Perfect10k: command line, settings and Dagster instance set-up."""
