"""Models: the CNN registry, linear angle/fusion models, training, precision."""
