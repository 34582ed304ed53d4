"""AlignX Studio web app: layout and small callbacks over ``alignx`` (no model logic here).

``app.ui.build_demo(ctx)`` builds the page, one module per tab in ``app.tabs``; ``app.py`` at
the repository root parses the command line, loads the model once and launches.
"""
