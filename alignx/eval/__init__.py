"""Evaluation: metrics, judges, suites, runner, reports, sweeps (see docs/method/eval.md)."""
