"""Development tools: demo, chart, private broker, local bus, simulator.

Everything a developer, a test or the demo needs and a gateway does not: the
daemon never imports this package (``tests/cli/test_cli_imports.py`` holds it to
that). ``localbus`` stays importable as python-can's ``localbus`` interface.
May import every other package.
"""
