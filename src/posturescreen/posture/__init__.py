"""Posture geometry: the pose estimator, pose tables, angles, agreement."""
