"""Tests of slowlearn.models."""
