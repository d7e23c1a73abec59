"""The `fleet` and `kubectl-fleet` command line."""
