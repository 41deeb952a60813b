"""The offline proposal library: on-disk store, builders and generators."""
