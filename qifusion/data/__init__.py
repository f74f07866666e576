"""qifusion.data package."""
