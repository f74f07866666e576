"""qifusion.train package."""
