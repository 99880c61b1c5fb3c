"""pack-agent: traction-battery traceability and scrapping notices on the vehicle.

``__version__`` is the installed distribution's version (``importlib.metadata``, so
it cannot drift from ``pyproject.toml``), or ``0+unknown`` when the package runs
from a source tree that is not installed. It is looked up on first use, not at
import: ``import pack_agent`` stays cheap for the commands that never show it.
"""

DISTRIBUTION = "pack-agent"


def __getattr__(name: str) -> str:
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version(DISTRIBUTION)
    except PackageNotFoundError:
        found = "0+unknown"
    globals()["__version__"] = found  # looked up once
    return found
