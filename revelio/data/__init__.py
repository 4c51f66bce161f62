"""Inputs: anything users call an image (validated, converted) and labelled image datasets."""
