"""Holds for the SMS and number-order sagas, driven by messaging events."""
