"""qifusion.models package."""
