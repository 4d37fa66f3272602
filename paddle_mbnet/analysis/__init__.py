"""Measuring the models: complexity as the papers count it, the papers' figures, timing helpers, the comparison."""
