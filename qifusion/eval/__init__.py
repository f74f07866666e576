"""qifusion.eval package."""
