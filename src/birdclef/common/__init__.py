"""Layer 0 (common): files, logs, manifests, tags, the metric, the data contract. Imports nothing above it."""
