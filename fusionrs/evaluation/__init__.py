"""Evaluation: retrieval (six directions, R@K, Mean R), zero-shot classification, reports."""
