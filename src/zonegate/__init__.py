"""zonegate: a high-availability, multi-datacenter access layer."""

__version__ = "0.1.0"
