"""The study report: one self-contained HTML file laid out for a reviewer checking CLAIM
2024 / TRIPOD+AI items (build), its figures (figures), the checklist map (checklist), and
MLflow logging (tracking)."""

from posturescreen.report.build import build_report

__all__ = ["build_report"]
