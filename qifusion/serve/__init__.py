"""qifusion.serve package."""
