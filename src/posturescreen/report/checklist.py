"""The map from CLAIM 2024 and TRIPOD+AI items to the report's sections."""

CLAIM_TRIPOD = [
    ("Title/abstract: study design and results stated", "CLAIM 1-2, TRIPOD+AI 1-2",
     "header, results"),
    ("Data sources, eligibility, cohort flow", "CLAIM 7-9, 33; TRIPOD+AI 5, 20", "data"),
    ("Reference standard / outcome definition", "CLAIM 14-16; TRIPOD+AI 6", "data, methods"),
    ("Data partitions, subject-level separation", "CLAIM 21; TRIPOD+AI 10", "data"),
    ("Preprocessing", "CLAIM 12-13; TRIPOD+AI 9", "methods"),
    ("Model, initialisation, training details", "CLAIM 22-25; TRIPOD+AI 12", "methods"),
    ("Model selection and threshold on validation data", "CLAIM 26, 29; TRIPOD+AI 12", "methods"),
    ("Performance metrics with uncertainty", "CLAIM 28, 35; TRIPOD+AI 12, 23", "results"),
    ("Discrimination: ROC curves", "TRIPOD+AI 23", "roc"),
    ("Calibration", "TRIPOD+AI 12e, 23", "calibration"),
    ("Error analysis: confusion matrices", "CLAIM 37", "confusion"),
    ("Statistical comparison of models", "CLAIM 30", "comparisons"),
    ("Comparison with a simple clinical baseline (posture angles)", "TRIPOD+AI 12, 23",
     "posture"),
    ("Sensitivity analyses (e.g. the choice of negatives)", "TRIPOD+AI 12, 23",
     "sensitivity"),
    ("Model explanation / interpretability", "CLAIM 31, 38", "cams"),
    ("Limitations", "CLAIM 39; TRIPOD+AI 27", "limitations"),
    ("Software, versions, code and seeds", "CLAIM 23, 42; TRIPOD+AI 18", "header"),
]
