"""The ``sheaf`` command line (click + rich). Each subcommand lives in its own module."""
