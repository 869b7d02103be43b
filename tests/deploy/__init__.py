"""Tests of slowlearn.deploy."""
