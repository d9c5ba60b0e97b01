"""Local mode: the whole AWS flow on one machine (moto server + embedded PostgreSQL)."""
