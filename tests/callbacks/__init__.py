"""Tests of slowlearn.callbacks."""
