"""A study's stages: cohort preparation, tasks, folds, splits, jobs, executors, results."""
