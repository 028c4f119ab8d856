"""The annotation page: researchers place landmarks in the browser, a model suggests,
two raters give the inter-rater figures (docs/annotate.md)."""
