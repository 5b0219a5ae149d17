"""amberscan: finds illegal amber mining in aerial imagery."""

__version__ = "0.1.0"
