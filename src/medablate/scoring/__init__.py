"""Scoring predictions: clinical metrics, thresholds chosen on validation; used by training and analysis alike.
"""
