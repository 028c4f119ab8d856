"""The clinician's web page and JSON API (FastAPI)."""
