"""Plugin modules for the tests, imported by name (this folder is put on ``sys.path`` by the tests using them)."""
