"""The DSQL control plane (boto3 ``dsql``): clusters, waits, policies, tags, streams.

Core functions take a boto3 ``dsql`` client (built by :meth:`dsqlops.aws.AwsContext.dsql`) and
return dataclasses; they never print and never import click.
"""
