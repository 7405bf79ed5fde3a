"""The local DSQL sandbox: control plane (moto server), PostgreSQL, the DSQL wire front, metering."""
