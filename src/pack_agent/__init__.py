"""pack-agent: traction-battery traceability and scrapping notices on the vehicle."""

__version__ = "0.1.0"
