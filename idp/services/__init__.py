"""Domain services, each behind an interface in ``interfaces.py``."""
