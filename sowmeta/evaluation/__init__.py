"""Scoring an image set: ``evaluate`` and its report (``evaluation.py``), the scores each computed by a named
network (``metrics.py``), and how photograph-like the pixels are (``naturalness.py``)."""

from .evaluation import (
    AccuracyScore,
    ClassDistances,
    DistanceScores,
    DiversityScore,
    EvaluationReport,
    InceptionScoreResult,
    evaluate,
    save_class_sheets,
)

__all__ = ["AccuracyScore", "InceptionScoreResult", "DistanceScores", "DiversityScore", "ClassDistances", "EvaluationReport", "evaluate", "save_class_sheets"]
