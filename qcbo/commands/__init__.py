"""Subcommands of the `qcbo` CLI, one module each (see `qcbo.cli`)."""
