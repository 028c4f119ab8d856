"""Data in: manifests, safe image reading, the decoded-image cache."""
