"""dsqlops: operations and cost observability for Amazon Aurora DSQL."""

__version__ = "0.1.0"
