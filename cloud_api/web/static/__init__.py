"""The dashboard's HTML, CSS and JavaScript (a package so that importlib.resources finds them)."""
