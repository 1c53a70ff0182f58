"""The extraction engine: capture hooks, readouts, the feature store, extraction plans and runs."""
