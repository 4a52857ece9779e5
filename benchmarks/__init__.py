"""Measurement scripts (not tests) and the peer-comparison helpers they share with the tests."""
