"""posturescreen: posture-photo deep-learning studies with subject-grouped CV and honest CIs."""

__version__ = "0.1.0"
