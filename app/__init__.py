"""sfgeval web application: blind pairwise human studies of CFG vs SFG images.

How `app` and `sampler` meet (`sampler` never imports `app`):

- The request-serving code (`app.main`, `app.web`, and what they import) shares exactly one
  thing with `sampler`: the generator's manifest (`sampler.manifest`, pure Python, no torch),
  which `app.studies.importer` validates and imports.
- `app.cli` is the one declared meeting point of the two command sets: it mounts the sampler's
  commands (`sampler.cli`: generate, prompts, metrics) in the `sfgeval` group and `demo` calls
  `sampler.generate` (with `sampler.prompts` for its prompt records). `sampler.cli` imports torch only inside its command functions, so torch is
  loaded by a command that needs it, never by the server. No other `app` module imports `sampler`
  beyond `sampler.manifest`.

`app.statistics.simulation` is a library for users (not used on a request path): seeded simulated rating
rows with a known true effect, for checking and benchmarking the statistics or trying the report.
"""
