"""Tests of slowlearn.data."""
