"""Using a finished study: bundles, export, prediction, the web page."""
