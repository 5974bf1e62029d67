"""sfgeval web application: blind pairwise human studies of CFG vs SFG images.

Nothing in this package imports torch on a request path; the generator's manifest
(`sampler.manifest`, pure Python) is the only thing it shares with `sampler`.
"""
