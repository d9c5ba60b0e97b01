"""One construct per component of the pipeline; :mod:`infra.stack` composes them."""
