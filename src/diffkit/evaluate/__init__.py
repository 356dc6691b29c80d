"""Evaluation: feature extractors (FID Inception, domain classifier), sample-quality metrics, memorisation."""
