"""The stages wired together: plan, pair, load, coregister, label, annotate, validate, shard."""
