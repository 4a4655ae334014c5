"""Reporting: the test report, plots, the model card and the explanation page."""
