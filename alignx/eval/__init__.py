"""Evaluation: metrics, judges, suites, runner, reports, sweeps (see docs/METHOD.md)."""
