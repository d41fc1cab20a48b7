"""nonsite: non-site (AI camera) enforcement — sidewalk parking, street vending, stray dogs."""

__version__ = "0.1.0"
