"""Tests of slowlearn.cli."""
