"""qifusion.export package."""
