"""qifusion.decode package."""
