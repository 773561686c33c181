"""Monitoring of past scoring runs: data drift, holdout lift and realized model quality."""
