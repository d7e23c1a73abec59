"""fleet: turns Cluster API GPU workload clusters into a ready ML platform."""

__version__ = "0.1.0"
